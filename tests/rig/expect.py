"""What the function should make of a message, computed independently of the
C code: the rules of docs/behaviour.md written again in Python, and the masking done
with `cryptography`'s AESSIV.  Integration tests compare the database with
this, column by column."""
import base64
import datetime
import json
import re
import socket

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from .proc import MASKING_KEY, MASKING_KEY_ID

_siv = AESSIV(bytes.fromhex(MASKING_KEY))


def pad(raw):
    """docs/behaviour.md, "Masking": the bytes, 0x80, then zeros to a multiple of 16."""
    p = raw + b"\x80"
    return p + bytes(-len(p) % 16)


def b64(raw):
    """base64url without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mask_raw(raw, key_id=MASKING_KEY_ID, siv=_siv):
    """The masked form of these bytes; siv: an AESSIV of the key (the tests' key by default)."""
    # cryptography's AESSIV gives RFC 5297's layout: the synthetic IV, then the ciphertext.
    return key_id + ":" + b64(siv.encrypt(pad(raw), None))


def mask(value, key_id=MASKING_KEY_ID, siv=_siv):
    """The masked form of a text value, as the function stores it."""
    return mask_raw(value.encode("utf-8"), key_id, siv)


def canonical_ip(text):
    """The function's canonical form of an IP address (inet_pton, then inet_ntop; IPv4
    first), or None when the text is not an address."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):
            pass
    return None


def app_version(v):
    """The integer of an app_version value, or raises ValueError."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError("boolean")
    if isinstance(v, int):
        if v < 0:
            raise ValueError("negative")
        parts = [v, 0, 0]
    elif isinstance(v, str):
        if not re.fullmatch(r"[0-9]+(\.[0-9]+){0,2}", v):
            raise ValueError("format")
        parts = [int(p) for p in v.split(".")] + [0, 0]
    else:
        raise ValueError("type")
    major, minor, patch = parts[:3]
    if minor > 999 or patch > 999:
        raise ValueError("range")
    n = major * 1000000 + minor * 1000 + patch
    if n > 2**31 - 1:
        raise ValueError("range")
    return n


def _text(v, lo, hi, required=False):
    if v is None:
        if required:
            raise ValueError("missing")
        return None
    if not isinstance(v, str) or not (lo <= len(v) <= hi) or "\x00" in v:
        raise ValueError("bad text")
    return v


def row(body, sent_ms):
    """The user_logins row (a dict) for a message body, or None when rejected."""
    try:
        msg = json.loads(body)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    try:
        user_id = _text(msg.get("user_id"), 1, 128, required=True)
        device_type = _text(msg.get("device_type"), 0, 32)
        locale = _text(msg.get("locale"), 0, 32)
        device_id = _text(msg.get("device_id"), 1, 128)
        ip = msg.get("ip")
        if ip is not None:
            if not isinstance(ip, str):
                return None
            ip = canonical_ip(ip)
            if ip is None:
                return None
        version = app_version(msg.get("app_version"))
    except ValueError:
        return None
    day = datetime.datetime.fromtimestamp(sent_ms / 1000, datetime.timezone.utc).date()
    return {
        "user_id": user_id,
        "device_type": device_type,
        "masked_ip": mask(ip) if ip is not None else None,
        "masked_device_id": mask(device_id) if device_id is not None else None,
        "locale": locale,
        "app_version": version,
        "create_date": day.isoformat(),
    }
