"""Masking keysets for the tests, and the masking computed independently of the C code
with `cryptography`'s AESSIV (docs/behaviour.md, "Masking"): what a value must be under
a key, and what a masked value holds.

    keys.OLD, keys.NEW                  two fixed test keys (hex) and their ids
    keys.mask(NEW, "1.2.3.4")           "k2:..." as the function stores it
    keys.unmask(keyring, "k1:...")      the original text, with the key its prefix names
    keys.document(NEW, OLD)             the keyset document, NEW current
    keys.env(NEW, retired=[OLD])        MASKING_KEY, MASKING_KEY_ID, MASKING_KEYS_RETIRED
"""
import base64
import json
from collections import namedtuple

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from . import expect, proc

Key = namedtuple("Key", "id hex")

# The rig's default key (what every other test masks with) is the old one of a
# rotation; NEW and NEWER are fixed test keys too, never production ones.
OLD = Key(proc.MASKING_KEY_ID, proc.MASKING_KEY)
NEW = Key("k2", bytes(range(100, 164)).hex())
NEWER = Key("Prod2026", bytes((i * 37 + 5) % 256 for i in range(64)).hex())


def mask(key, value):
    """The masked form of value (str or bytes) under key (tests/rig/expect.py's oracle)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return expect.mask_raw(value, key.id, AESSIV(bytes.fromhex(key.hex)))


def unmask(keyring, masked):
    """The original text of a masked value, recovered with the key of keyring (a list of
    Key) whose id its prefix names; raises KeyError or cryptography's InvalidTag."""
    kid, body = masked.split(":", 1)
    key = {k.id: k for k in keyring}[kid]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    padded = AESSIV(bytes.fromhex(key.hex)).decrypt(raw, None)
    return padded.rstrip(b"\x00")[:-1].decode("utf-8")


def document(current, *retired):
    """The keyset document a masking secret (or MASKING_KEY) may hold."""
    return json.dumps({"current": current.id,
                       "keys": {k.id: k.hex for k in (current,) + retired}})


def env(current, retired=(), as_document=False):
    """The settings of a keyset: the current key in hex under MASKING_KEY_ID (or the
    document, MASKING_KEY_ID unset), the retired ones in MASKING_KEYS_RETIRED."""
    if as_document:
        return {"MASKING_KEY": document(current, *retired), "MASKING_KEY_ID": None,
                "MASKING_KEYS_RETIRED": None}
    return {"MASKING_KEY": current.hex, "MASKING_KEY_ID": current.id,
            "MASKING_KEYS_RETIRED": ",".join(f"{k.id}={k.hex}" for k in retired) or None}


def assert_no_key(text, what, keyring=(OLD, NEW, NEWER)):
    """No 16 consecutive characters of any key of keyring appear in text."""
    for k in keyring:
        for i in range(0, len(k.hex) - 15, 4):
            assert k.hex[i:i + 16] not in text, f"{what} shows part of key {k.id}"
