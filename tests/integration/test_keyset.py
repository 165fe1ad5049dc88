"""The masking keyset (function/keyset.h) through the real bootstrap: the function and
`bootstrap mask` mask with the current key only, `bootstrap unmask` recovers a value under
any key of the set, and a bad keyset is a configuration error that names the problem and
never a key.  The masked values are checked with Python's AESSIV (tests/rig/keys.py)."""
import json
import subprocess

from events.generate import event_bytes, make_event, make_messages
from rig import keys, paths, pg, proc, runtime_api
from rig.harness import Etl
from rig.keys import NEW, NEWER, OLD

VALUES = ["199.172.111.135", "2001:db8::1", "593-47-5928", "é中😀", "x" * 159]

# Each form of one keyset: NEW current, OLD and NEWER retired.
KEYSET_FORMS = {
    "hex and MASKING_KEYS_RETIRED": keys.env(NEW, [OLD, NEWER]),
    "document": keys.env(NEW, [OLD, NEWER], as_document=True),
    "document and MASKING_KEYS_RETIRED": dict(keys.env(NEW, [OLD], as_document=True),
                                              MASKING_KEYS_RETIRED=f"{NEWER.id}={NEWER.hex}"),
    "document, MASKING_KEY_ID naming a retired key": dict(
        keys.env(NEW, [OLD, NEWER], as_document=True), MASKING_KEY_ID=OLD.id),
}


def _run(args, settings, stdin=None):
    env = {"PATH": "/usr/bin:/bin", "ASAN_OPTIONS": proc.ASAN_OPTIONS,
           "UBSAN_OPTIONS": proc.UBSAN_OPTIONS}
    env.update({k: v for k, v in settings.items() if v is not None})
    r = subprocess.run([str(paths.ASAN)] + args, env=env, input=stdin, capture_output=True,
                       timeout=60)
    keys.assert_no_key(r.stdout.decode("latin-1") + r.stderr.decode("latin-1"), str(args))
    return r


def test_cli_masks_with_the_current_key_and_unmasks_with_any():
    for form, settings in KEYSET_FORMS.items():
        for v in VALUES:
            r = _run(["mask", "--raw", "--", v], settings)
            assert r.returncode == 0 and r.stdout.decode() == keys.mask(NEW, v) + "\n", \
                (form, v, r.stdout, r.stderr)
            for k in (NEW, OLD, NEWER):
                r = _run(["unmask", keys.mask(k, v)], settings)
                assert r.returncode == 0 and r.stdout.decode() == v + "\n", \
                    (form, k.id, v, r.stdout, r.stderr)
        # One a line, mixed keys, and a key id the set does not hold.
        stray = keys.Key("k9", NEW.hex)
        lines = [keys.mask(OLD, "a"), keys.mask(NEW, "b"), keys.mask(stray, "c"),
                 keys.mask(NEWER, "d")]
        r = _run(["unmask", "-"], settings, stdin="\n".join(lines).encode() + b"\n")
        assert r.returncode == 1 and r.stdout == b"a\nb\n\nd\n", (form, r.stdout, r.stderr)
        assert b"line 3" in r.stderr and b'"k9"' in r.stderr and b"not in the keyset" in r.stderr
        # A retired id's value made with another key than the set's does not authenticate.
        r = _run(["unmask", keys.mask(keys.Key(OLD.id, NEWER.hex), "e")], settings)
        assert r.returncode == 1 and b"authenticate" in r.stderr, (form, r.stderr)


# A keyset that must be refused, and the words the error must hold.
BAD_KEYSETS = [
    ("the current id among the retired", keys.env(NEW, [keys.Key("k2", OLD.hex)]),
     'MASKING_KEYS_RETIRED: item 1: key id "k2" is the current key\'s'),
    ("an id twice", dict(keys.env(NEW), MASKING_KEYS_RETIRED=f"k1={OLD.hex},k1={NEWER.hex}"),
     'item 2: key id "k1" appears twice'),
    ("bad hex in a retired key", dict(keys.env(NEW), MASKING_KEYS_RETIRED=f"k1={OLD.hex[:-1]}"),
     "got 127"),
    ("a bad retired id", dict(keys.env(NEW), MASKING_KEYS_RETIRED=f"k.1={OLD.hex}"),
     "item 1: the key id must be 1 to 8"),
    ("a retired item without id", dict(keys.env(NEW), MASKING_KEYS_RETIRED=OLD.hex),
     "item 1 is not id="),
    ("a document whose current names no key",
     {"MASKING_KEY": json.dumps({"current": "k3", "keys": {"k1": OLD.hex}})},
     '"current" ("k3") names no key'),
    ("a document with an id twice",
     {"MASKING_KEY": '{"current":"k1","keys":{"k1":"%s","k1":"%s"}}' % (OLD.hex, NEW.hex)},
     'key id "k1" appears twice'),
    ("a document with bad hex",
     {"MASKING_KEY": json.dumps({"current": "k1", "keys": {"k1": OLD.hex, "k2": "00"}})},
     '"keys" member 2 (key id "k2"): the masking key must be 128 hexadecimal characters'),
    ("a document that is not JSON", {"MASKING_KEY": '{"current": "k1", "keys": {'},
     "not a JSON object"),
    ("a document and a retired key under its current id",
     dict(keys.env(NEW, [OLD], as_document=True), MASKING_KEYS_RETIRED=f"k2={NEWER.hex}"),
     "is the current key's"),
]


def test_cli_refuses_bad_keysets_naming_the_problem():
    for name, settings, needle in BAD_KEYSETS:
        for sub in ("mask", "unmask"):
            r = _run([sub, "1.2.3.4"], settings)
            assert r.returncode == 2 and r.stdout == b"", (name, sub, r.returncode, r.stderr)
            assert needle.encode() in r.stderr, (name, r.stderr)


def test_function_masks_with_the_current_key_of_each_form():
    messages = make_messages(80, seed=61, invalid_rate=0)
    for form, settings in KEYSET_FORMS.items():
        with Etl(env=settings) as etl:
            assert etl.answer(event_bytes(make_event(messages))) == set()
            rows = etl.rows()
            assert len(rows) == 80
            for row in rows:
                for col in ("masked_ip", "masked_device_id"):
                    if row[col] is not None:
                        assert row[col].startswith("k2:"), (form, row[col])
                        # The value is the current key's mask of what it holds.
                        assert keys.mask(NEW, keys.unmask([NEW], row[col])) == row[col]
            logs = [l for l in etl.boot.logs() if isinstance(l, dict)]
            told = [l for l in logs if l.get("message") == "masking keys"]
            assert len(told) == 1 and told[0]["current"] == "k2", (form, told)
            assert sorted(told[0]["retired"].split(",")) == sorted([OLD.id, NEWER.id]), told
            warned = [l for l in logs if l.get("message", "").startswith("MASKING_KEY_ID names")]
            assert len(warned) == (1 if "naming a retired key" in form else 0), (form, warned)
            keys.assert_no_key(etl.boot.output(), f"the function ({form})")


def test_function_refuses_bad_keysets_at_start():
    db = pg.server()
    for name, settings, needle in BAD_KEYSETS:
        with runtime_api.Emulator() as emu:
            env = dict({"MASKING_KEY_ID": None, "MASKING_KEYS_RETIRED": None}, **settings)
            boot = proc.Bootstrap(emu.address, db=db, env=env)
            err = emu.wait_init_error(timeout=20)
            assert boot.wait(timeout=20) != 0, name
            doc = err.json()
            assert doc["errorType"] == "InvalidConfiguration", (name, doc)
            assert needle in doc["errorMessage"], (name, doc)
            keys.assert_no_key(boot.output() + json.dumps(doc), name)
            assert boot.sanitizer_report() is None
