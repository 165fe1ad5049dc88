"""Cross-checks the project's masking (function/mask.c, docs/behaviour.md, "Masking")
against implementations that share none of its code:

* Python's `cryptography` AESSIV (OpenSSL's SIV mode, reached through another
  binding), and
* a from-scratch AES-SIV written below from RFC 5297 (S2V, CMAC, CTR) on top
  of nothing but the raw AES block cipher, checked first against the RFC's
  own test vectors.

Both directions are covered: values masked by the C code are compared with
Python's, and values Python masks are recovered by the C code.  The C code
computes AES-SIV itself over AES-ECB (function/siv.c, siv_ecb_*), reusing its
AES contexts from one value to the next; besides the masked values, its raw
AES-SIV is checked here in the general case (any length, associated data,
32/48/64-byte keys), which masking never reaches.  The C side is
tests/rig/mask_tool.c (built with `make build/asan/rig/mask_tool`; set
MASK_TOOL to use another build of it).  The `bootstrap mask` / `bootstrap
unmask` commands are tested through the rig (which calls mask_cli() directly)
and, when build/asan/bootstrap exists, through the real binary.

Run alone with `python3 tests/run.py -k test_mask_crosscheck`.
"""

import base64
import json
import os
import random
import socket
import subprocess
from pathlib import Path

from cryptography.exceptions import InternalError
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from rig import expect
from rig.expect import b64, pad

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
BOOTSTRAP = BUILD / "asan" / "bootstrap"

KEY_A = bytes(random.Random("key-a").getrandbits(8) for _ in range(64))
KEY_B = bytes(random.Random("key-b").getrandbits(8) for _ in range(64))
ID_A, ID_B = "k1", "Prod2025"

_tool_path = None


# --- an independent AES-SIV, from RFC 5297 -------------------------------------------------


def _aes_block(key, block):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def _dbl(block):
    """Doubling in GF(2^128), RFC 5297 section 2.3."""
    x = int.from_bytes(block, "big") << 1
    if x >> 128:
        x ^= (1 << 128) | 0x87
    return x.to_bytes(16, "big")


def _cmac(key, msg):
    """AES-CMAC (RFC 4493)."""
    k1 = _dbl(_aes_block(key, bytes(16)))
    k2 = _dbl(k1)
    blocks = max(1, (len(msg) + 15) // 16)
    last = msg[(blocks - 1) * 16:]
    if len(last) == 16:
        last = _xor(last, k1)
    else:
        last = _xor(last + b"\x80" + bytes(15 - len(last)), k2)
    x = bytes(16)
    for i in range(blocks - 1):
        x = _aes_block(key, _xor(x, msg[i * 16:(i + 1) * 16]))
    return _aes_block(key, _xor(x, last))


def _s2v(key, strings):
    d = _cmac(key, bytes(16))
    for s in strings[:-1]:
        d = _xor(_dbl(d), _cmac(key, s))
    sn = strings[-1]
    if len(sn) >= 16:
        t = sn[:-16] + _xor(sn[-16:], d)
    else:
        t = _xor(_dbl(d), sn + b"\x80" + bytes(15 - len(sn)))
    return _cmac(key, t)


def reference_siv(key, plaintext, ads=()):
    """RFC 5297 SIV-Encrypt: returns V || C."""
    k1, k2 = key[: len(key) // 2], key[len(key) // 2:]
    v = _s2v(k1, list(ads) + [plaintext])
    q = int.from_bytes(v, "big") & ~((1 << 63) | (1 << 31))
    stream = b"".join(
        _aes_block(k2, ((q + i) % (1 << 128)).to_bytes(16, "big"))
        for i in range((len(plaintext) + 15) // 16)
    )
    return v + _xor(plaintext, stream)


# --- docs/behaviour.md, "Masking", in Python: tests/rig/expect.py -------------------------


def py_mask(key, key_id, v):
    return expect.mask_raw(v, key_id, AESSIV(key))


def canonical(text):
    """What `bootstrap mask` masks: the canonical form of an IP address (the function's
    rule), any other text as it is."""
    return expect.canonical_ip(text) or text


# --- test values ---------------------------------------------------------------------------


def _device_id(rnd):
    return b"%03d-%02d-%04d" % (rnd.randrange(1000), rnd.randrange(100), rnd.randrange(10000))


def _values():
    rnd = random.Random(5297)
    vals = []
    for _ in range(120):
        vals.append(socket.inet_ntoa(rnd.getrandbits(32).to_bytes(4, "big")).encode())
    vals += [b"0.0.0.0", b"255.255.255.255", b"199.172.111.135"]
    for _ in range(120):
        words = [rnd.getrandbits(16) if rnd.random() < 0.6 else 0 for _ in range(8)]
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        vals.append(socket.inet_ntop(socket.AF_INET6, raw).encode())
    vals += [b"::", b"::1", b"2001:db8::1", b"::ffff:1.2.3.4", b"fe80::1"]
    for _ in range(120):
        vals.append(_device_id(rnd))
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF),
              (0x10000, 0x10FFF)]
    for _ in range(120):
        n = rnd.choice([1, 2, 5, 15, 16, 17, 40, 100, 127, 128])
        chars = []
        for _ in range(n):
            lo, hi = rnd.choice(ranges)
            chars.append(chr(rnd.randint(lo, hi)))
        vals.append("".join(chars).encode())
    vals.append(("\U0001F600" * 128).encode())  # 512 bytes: the longest allowed
    vals += [bytes(range(1, n + 1)) for n in range(0, 34)]  # every padding length
    vals += [b"a" * n for n in (500, 510, 511, 512)]
    vals += [b"has space", b"tab\there", b"\x00nul\x00inside", b"\xff\xfe not utf-8"]
    return vals


# --- running the C side --------------------------------------------------------------------


def _tool():
    global _tool_path
    if _tool_path is None:
        if os.environ.get("MASK_TOOL"):
            _tool_path = Path(os.environ["MASK_TOOL"])
        else:
            r = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory",
                                "build/asan/rig/mask_tool"],
                               capture_output=True, text=True)
            assert r.returncode == 0, \
                "cannot build build/asan/rig/mask_tool:\n" + r.stdout + r.stderr
            _tool_path = BUILD / "asan" / "rig" / "mask_tool"
    assert _tool_path.exists(), f"{_tool_path} is missing"
    return _tool_path


def _run_requests(lines):
    """Sends request lines to mask_tool; returns its answer lines, one per request."""
    r = subprocess.run([str(_tool())], input="".join(l + "\n" for l in lines),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mask_tool exited {r.returncode}: {r.stderr[-2000:]}"
    answers = r.stdout.split("\n")[:-1]
    assert len(answers) == len(lines), f"{len(lines)} requests, {len(answers)} answers"
    return answers


def _env(key=KEY_A, key_id=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASKING_KEY", "MASKING_KEY_ID", "MASKING_KEY_SECRET_ID")}
    if key is not None:
        env["MASKING_KEY"] = key if isinstance(key, str) else key.hex()
    if key_id is not None:
        env["MASKING_KEY_ID"] = key_id
    env.update(extra)
    return env


def _assert_no_key(text, key_hex, what):
    for i in range(0, len(key_hex) - 15, 8):
        assert key_hex[i:i + 16] not in text, f"{what} shows part of the masking key"


# --- tests ---------------------------------------------------------------------------------


def test_reference_siv_matches_rfc5297_vectors():
    """The from-scratch reference reproduces RFC 5297 A.1 and A.2, so it can judge the C code."""
    h = bytes.fromhex
    a1 = reference_siv(h("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
                       h("112233445566778899aabbccddee"),
                       [h("101112131415161718191a1b1c1d1e1f2021222324252627")])
    assert a1.hex() == "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c", a1.hex()
    a2 = reference_siv(
        h("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f"),
        h("7468697320697320736f6d6520706c61696e7465787420746f20656e63727970"
          "74207573696e67205349562d414553"),
        [h("00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100"),
         h("102030405060708090a0"), h("09f911029d74e35bd84156c5635688c0")])
    assert a2.hex() == ("7bdb6e3b432667eb06f4d14bff2fbd0fcb900f2fddbe404326601965c889bf17"
                        "dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c485b62a3fd5c0d"), a2.hex()
    for n in (1, 15, 16, 17, 48):  # and agrees with AESSIV on a 512-bit key
        pt = bytes(range(n))
        assert reference_siv(KEY_A, pt) == AESSIV(KEY_A).encrypt(pt, None), f"{n} bytes"


def test_mask_matches_independent_siv():
    """The C masking of a few hundred values equals both Python computations."""
    vals = _values()
    reqs = []
    expect = []
    for i, v in enumerate(vals):
        key, kid = (KEY_A, ID_A) if i % 3 else (KEY_B, ID_B)  # switching keys mid-stream
        reqs.append(f"m {key.hex()} {kid} {v.hex()}")
        expect.append((v, key, kid))
    answers = _run_requests(reqs)
    ref_checked = 0
    for (v, key, kid), got in zip(expect, answers):
        want = py_mask(key, kid, v)
        assert got == "OK " + want, f"mask({v!r}) with {kid}: C gave {got!r}, Python {want!r}"
        if len(v) <= 128 or len(v) in (511, 512):
            ref = kid + ":" + b64(reference_siv(key, pad(v)))
            assert ref == want, f"reference SIV disagrees with AESSIV for {v!r}"
            ref_checked += 1
        if len(v) <= 15:
            assert len(got) - 3 == len(kid) + 1 + 43, f"{v!r}: length {len(got) - 3}"
    assert len(vals) > 500 and ref_checked > 450, (len(vals), ref_checked)


def test_mask_every_length_in_one_stream():
    """Every input length 0..512, three random values each, in one process that switches
    keys every few values: the C masking equals AESSIV for all 1,539 and the reference for
    every fifth, and the C code recovers every value Python masked."""
    rnd = random.Random(20240)
    vals = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in range(513) for _ in range(3)]
    keys = [(KEY_A, ID_A) if (i // 7) % 2 == 0 else (KEY_B, ID_B) for i in range(len(vals))]
    answers = _run_requests([f"m {k.hex()} {kid} {v.hex()}" for v, (k, kid) in zip(vals, keys)])
    for i, (v, (key, kid), got) in enumerate(zip(vals, keys, answers)):
        want = py_mask(key, kid, v)
        assert got == "OK " + want, f"mask of {len(v)} bytes: C gave {got!r}, Python {want!r}"
        if i % 5 == 0:
            assert kid + ":" + b64(reference_siv(key, pad(v))) == want, f"reference, {len(v)} B"
    answers = _run_requests([f"u {k.hex()} {kid} {py_mask(k, kid, v)}"
                             for v, (k, kid) in zip(vals, keys)])
    for v, got in zip(vals, answers):
        assert got == "OK " + v.hex(), f"unmask of {len(v)} bytes gave {got!r}"


def _py_siv(key, pt, ads):
    """AESSIV, or the reference where this cryptography refuses an empty plaintext:
    with ValueError, or, in the cryptography 38 of Debian 12, with InternalError
    (OpenSSL's error surfacing as it is)."""
    try:
        return AESSIV(key).encrypt(pt, list(ads) or None)
    except (ValueError, InternalError):
        assert not pt
        return reference_siv(key, pt, ads)


def test_raw_siv_general_case():
    """siv_ecb_encrypt/decrypt beyond what masking uses: plaintexts of any length (0 to
    2,100 bytes, so not only whole blocks, and past the 1 KiB CTR batch), 0 to 3
    associated-data components (empty ones too), AES-128/192/256-SIV keys, the keys
    switching under the same process.  Compared with AESSIV and the reference, then
    opened by the C code; a flipped bit, dropped or changed associated data fail."""
    rnd = random.Random(4493)
    keys = [bytes(rnd.getrandbits(8) for _ in range(kl)) for kl in (32, 48, 64) for _ in range(2)]
    lengths = list(range(0, 81)) + [127, 128, 129, 255, 256, 528, 1023, 1024, 1025, 2100]
    cases = []
    for n in lengths:
        for _ in range(2):
            key = rnd.choice(keys)
            ads = [bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 15, 16, 17, 40])))
                   for _ in range(rnd.randrange(4))]
            cases.append((key, ads, bytes(rnd.getrandbits(8) for _ in range(n))))

    def ads_field(ads):
        return ",".join(a.hex() for a in ads) if ads else "-"

    answers = _run_requests([f"s {k.hex()} {ads_field(a)} {pt.hex()}" for k, a, pt in cases])
    sealed = []
    for i, ((key, ads, pt), got) in enumerate(zip(cases, answers)):
        want = _py_siv(key, pt, ads)
        assert got == "OK " + want.hex(), \
            f"siv of {len(pt)} bytes, {len(ads)} AD, {len(key)}-byte key: C gave " \
            f"{got[:60]!r}..., Python {want.hex()[:57]!r}..."
        if len(pt) <= 300 or i % 4 == 0:
            assert reference_siv(key, pt, ads) == want, f"reference, {len(pt)} bytes"
        sealed.append(want)

    reqs, expect = [], []
    for (key, ads, pt), ct in zip(cases, sealed):
        reqs.append(f"o {key.hex()} {ads_field(ads)} {ct.hex()}")
        expect.append("OK " + pt.hex())
        bit = random.Random(len(reqs)).randrange(len(ct) * 8)
        bad = bytearray(ct)
        bad[bit // 8] ^= 1 << (bit % 8)
        reqs.append(f"o {key.hex()} {ads_field(ads)} {bytes(bad).hex()}")
        expect.append("ERR RC_CRYPTO")
        other = ads[:-1] if ads else [b""]
        reqs.append(f"o {key.hex()} {ads_field(other)} {ct.hex()}")
        expect.append("ERR RC_CRYPTO")
        if ads and ads[0]:
            changed = [bytes([ads[0][0] ^ 0x80]) + ads[0][1:]] + ads[1:]
            reqs.append(f"o {key.hex()} {ads_field(changed)} {ct.hex()}")
            expect.append("ERR RC_CRYPTO")
    answers = _run_requests(reqs)
    for req, want, got in zip(reqs, expect, answers):
        assert got == want or (want.startswith("ERR") and got.startswith(want + ":")), \
            f"{req[:90]}...: {got[:90]!r}, want {want!r}"
    assert len(cases) == 2 * len(lengths) and len(reqs) > 3 * len(cases)


def test_mask_lengths_and_limits():
    """Every IPv4 and ddd-dd-dddd masks to KEY_ID:43 characters; 513 bytes is refused."""
    rnd = random.Random(7)
    vals = [socket.inet_ntoa(rnd.getrandbits(32).to_bytes(4, "big")).encode() for _ in range(200)]
    vals += [_device_id(rnd) for _ in range(200)]
    answers = _run_requests([f"m {KEY_A.hex()} {ID_A} {v.hex()}" for v in vals] +
                            [f"m {KEY_A.hex()} {ID_A} {(b'x' * 513).hex()}"])
    for v, got in zip(vals, answers):
        assert got.startswith("OK k1:") and len(got) == 3 + 3 + 43, f"{v!r} -> {got!r}"
    assert answers[-1].startswith("ERR RC_TOOBIG"), answers[-1]


def test_unmask_recovers_python_masked_values():
    """Python masks with AESSIV, the C code recovers every value exactly."""
    vals = _values()
    reqs = [f"u {KEY_A.hex()} {ID_A} {py_mask(KEY_A, ID_A, v)}" for v in vals]
    reqs += [f"u {KEY_B.hex()} {ID_B} {py_mask(KEY_B, ID_B, v)}" for v in vals[:50]]
    answers = _run_requests(reqs)
    for v, got in zip(vals + vals[:50], answers):
        assert got == "OK " + v.hex(), f"unmask of Python's mask({v!r}) gave {got!r}"


def test_unmask_refuses_what_it_must():
    v = b"593-47-5928"
    good = py_mask(KEY_A, ID_A, v)
    body = good.split(":", 1)[1]
    flip = body[:5] + ("A" if body[5] != "A" else "B") + body[6:]
    cases = [
        ("control", good, "OK " + v.hex()),
        ("one character changed", "k1:" + flip, "ERR RC_CRYPTO"),
        ("masked under another key", py_mask(KEY_B, ID_A, v), "ERR RC_CRYPTO"),
        ("masked with associated data",
         "k1:" + b64(AESSIV(KEY_A).encrypt(pad(v), [b"ctx"])), "ERR RC_CRYPTO"),
        ("not padded (16 bytes sealed as they are)",
         "k1:" + b64(AESSIV(KEY_A).encrypt(b"0123456789abcdef", None)), "ERR RC_INVALID"),
        ("padded one block too many",
         "k1:" + b64(AESSIV(KEY_A).encrypt(pad(v) + bytes(16), None)), "ERR RC_INVALID"),
        ("other key id", "k2:" + body, "ERR RC_INVALID"),
        ("no key id", body, "ERR RC_INVALID"),
        ("base64 '=' padding", good + "=", "ERR RC_INVALID"),
        ("standard base64 alphabet",
         "k1:" + base64.b64encode(base64.urlsafe_b64decode(body + "=")).decode().rstrip("="),
         None),  # decided below: only a value without '+' or '/' may pass
        ("truncated", good[:-4], "ERR RC_INVALID"),
        ("empty", "", "ERR RC_INVALID"),
    ]
    answers = _run_requests([f"u {KEY_A.hex()} {ID_A} {c[1]}" for c in cases])
    for (name, masked, want), got in zip(cases, answers):
        if want is None:
            want = "OK " + v.hex() if "+" not in masked and "/" not in masked else "ERR RC_INVALID"
        assert got.startswith(want), f"{name}: {masked!r} gave {got!r}, want {want}"
    # A value masked under a key id the tool does not hold names that id.
    assert '"k2"' in answers[6], answers[6]


def _cli_checks(cmd, label):
    """Runs the mask/unmask commands through `cmd` (a list: the program and any
    leading arguments before "mask"/"unmask") and checks them against Python."""

    def run(args, env=None, stdin=None):
        r = subprocess.run(cmd + args, env=env if env is not None else _env(), input=stdin,
                           capture_output=True, timeout=60)
        _assert_no_key(r.stdout.decode("latin-1") + r.stderr.decode("latin-1"), KEY_A.hex(),
                       f"{label} {args}")
        return r

    for value in ["199.172.111.135", "593-47-5928", "2001:DB8::1", "2001:db8:0:0:0:0:0:1",
                  "::FFFF:1.2.3.4", "0:0:0:0:0:0:0:1", "01.2.3.4", "é中😀", "-5", "x" * 512]:
        r = run(["mask", value])
        want = py_mask(KEY_A, ID_A, canonical(value).encode())
        assert r.returncode == 0, f"{label} mask {value!r}: exit {r.returncode}, {r.stderr!r}"
        assert r.stdout.decode() == want + "\n", f"{label} mask {value!r}: {r.stdout!r} != {want}"
        assert r.stderr == b"", f"{label} mask {value!r} wrote to stderr: {r.stderr!r}"

    same = {run(["mask", v]).stdout for v in ("2001:DB8::1", "2001:db8::1", "2001:0db8:0::0:1")}
    assert len(same) == 1, f"{label}: spellings of one IPv6 address mask differently: {same}"

    r = run(["mask", "--raw", "2001:DB8::1"])
    assert r.returncode == 0 and r.stdout.decode() == py_mask(KEY_A, ID_A, b"2001:DB8::1") + "\n", \
        f"{label} mask --raw: {r.stdout!r} {r.stderr!r}"
    r = run(["mask", "--", "-"])
    assert r.returncode == 0 and r.stdout.decode() == py_mask(KEY_A, ID_A, b"-") + "\n", \
        f"{label} mask -- -: {r.stdout!r} {r.stderr!r}"

    r = run(["mask", "x" * 513])
    assert r.returncode == 1 and r.stdout == b"" and b"513" in r.stderr, \
        f"{label} mask of 513 bytes: {r.returncode} {r.stderr!r}"

    for value in [b"199.172.111.135", "é中😀".encode(), b"x" * 512]:
        r = run(["unmask", py_mask(KEY_A, ID_A, value)])
        assert r.returncode == 0 and r.stdout == value + b"\n", \
            f"{label} unmask {value!r}: {r.returncode} {r.stdout!r} {r.stderr!r}"

    masked = py_mask(KEY_A, ID_A, b"593-47-5928")
    tampered = masked[:10] + ("A" if masked[10] != "A" else "B") + masked[11:]
    r = run(["unmask", tampered])
    assert r.returncode == 1 and r.stdout == b"" and b"authenticate" in r.stderr, \
        f"{label} unmask tampered: {r.returncode} {r.stdout!r} {r.stderr!r}"
    r = run(["unmask", py_mask(KEY_A, "k9", b"x")])
    assert r.returncode == 1 and b"k9" in r.stderr, f"{label} unmask other id: {r.stderr!r}"

    # Standard input, one value a line: CR LF and LF, output line N answers input line N.
    lines = ["1.2.3.4", "2001:DB8::1", "593-47-5928", "é中😀", ""]
    text = "\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:]) + "\n"
    r = run(["mask", "-"], stdin=text.encode())
    want = "".join(py_mask(KEY_A, ID_A, canonical(l).encode()) + "\n" for l in lines)
    assert r.returncode == 0 and r.stdout.decode() == want, \
        f"{label} mask -: {r.returncode} {r.stdout!r} {r.stderr!r}"
    good = [py_mask(KEY_A, ID_A, v) for v in (b"a", b"b", b"c")]
    r = run(["unmask", "-"], stdin=f"{good[0]}\n{tampered}\n{good[2]}\r\nnot-masked".encode())
    assert r.returncode == 1, f"{label} unmask - with bad lines: exit {r.returncode}"
    assert r.stdout == b"a\n\nc\n\n", f"{label} unmask -: {r.stdout!r}"
    assert b"line 2" in r.stderr and b"line 4" in r.stderr, f"{label} unmask -: {r.stderr!r}"

    # Key id, configuration and usage errors.
    r = run(["mask", "1.2.3.4"], env=_env(key_id="Prod2025"))
    want = py_mask(KEY_A, "Prod2025", b"1.2.3.4") + "\n"
    assert r.returncode == 0 and r.stdout.decode() == want, \
        f"{label} MASKING_KEY_ID=Prod2025: {r.stdout!r} {r.stderr!r}"
    bad_envs = {
        "no MASKING_KEY": _env(key=None),
        "empty MASKING_KEY": _env(key=""),
        "127 hex characters": _env(key=KEY_A.hex()[:127]),
        "129 hex characters": _env(key=KEY_A.hex() + "0"),
        "non-hex character": _env(key=KEY_A.hex()[:100] + "g" + KEY_A.hex()[101:]),
        "trailing newline": _env(key=KEY_A.hex() + "\n"),
        "empty key id": _env(key_id=""),
        "9-character key id": _env(key_id="abcdefghi"),
        "non-alphanumeric key id": _env(key_id="k-1"),
        "key pasted as the key id": _env(key_id=KEY_A.hex()),
    }
    for name, env in bad_envs.items():
        for sub in ("mask", "unmask"):
            r = run([sub, "1.2.3.4"], env=env)
            assert r.returncode == 2 and r.stdout == b"" and b"MASKING_KEY" in r.stderr, \
                f"{label} {sub} with {name}: exit {r.returncode}, {r.stderr!r}"
    for args in (["mask"], ["unmask"], ["mask", "a", "b"], ["mask", "--bogus", "a"],
                 ["unmask", "--raw", "x"]):
        r = run(args)
        assert r.returncode == 2 and r.stdout == b"", f"{label} {args}: exit {r.returncode}"
    r = run(["mask", "--help"])
    assert r.returncode == 0 and b"inet_pton" in r.stdout and b"MASKING_KEY" in r.stdout, \
        f"{label} mask --help: {r.returncode} {r.stdout!r}"


def _etl_masked_ips(ips, env):
    """Masks each ip through the function's own path (config_load, login_parse,
    row_build, in `mask_tool etl`); returns (exit status, answer lines)."""
    bodies = "".join(json.dumps({"user_id": "u", "ip": ip}) + "\n" for ip in ips)
    r = subprocess.run([str(_tool()), "etl"], input=bodies.encode(), env=env,
                       capture_output=True, timeout=60)
    return r.returncode, r.stdout.decode().splitlines()


# IPv6 spellings, IPv4-mapped, upper case, leading zeros, a zone id, not an address.
_IP_FORMS = ["199.172.111.135", "0.0.0.0", "2001:DB8::1", "2001:db8:0:0:0:0:0:1",
             "2001:0DB8:0000::0001", "::FFFF:1.2.3.4", "::ffff:102:304", "::1", "0:0:0:0:0:0:0:1",
             "::", "FE80::1", "fe80::1%eth0", "1:2:3:4:5:6:7:8", "1::", "::2:3:4:5:6:7:8",
             "01.2.3.4", "1.2.3", " 1.2.3.4", "593-47-5928", "x" * 46]


def _cli_and_function_agree(cmd, label):
    """`mask VALUE` through `cmd` prints, byte for byte, what the function
    stores in masked_ip for the same ip field, under the same settings: with
    the default key id, an explicit one, and an empty one (refused by both)."""
    for key_id in (None, "Prod2025"):
        env = _env(key_id=key_id, PGUSER="nobody")
        status, stored = _etl_masked_ips(_IP_FORMS, env)
        assert status == 0 and len(stored) == len(_IP_FORMS), (status, stored)
        for ip, got in zip(_IP_FORMS, stored):
            r = subprocess.run(cmd + ["mask", "--", ip], env=env, capture_output=True, timeout=60)
            assert r.returncode == 0, f"{label} mask {ip!r}: {r.stderr!r}"
            if got.startswith("OK "):
                assert r.stdout.decode() == got[3:] + "\n", \
                    f"{label} mask {ip!r} (key id {key_id}): {r.stdout!r}, the function {got!r}"
                want_id = key_id or "k1"
                assert got[3:] == py_mask(KEY_A, want_id, canonical(ip).encode()), (ip, got)
            else:
                # Not an address: the function rejects it, the CLI masks the text as it is.
                assert got == "REJECTED ip_invalid", (ip, got)
                assert r.stdout.decode() == py_mask(KEY_A, key_id or "k1", ip.encode()) + "\n"
    env = _env(key_id="", PGUSER="nobody")
    status, out = _etl_masked_ips(["1.2.3.4"], env)
    assert status == 2 and out and out[0].startswith("CONFIG MASKING_KEY_ID"), (status, out)
    r = subprocess.run(cmd + ["mask", "1.2.3.4"], env=env, capture_output=True, timeout=60)
    assert r.returncode == 2 and r.stdout == b"" and b"MASKING_KEY_ID" in r.stderr, \
        f"{label} with an empty key id: {r.returncode} {r.stderr!r}"


def test_cli_masks_as_the_function_stores():
    """`bootstrap mask` (through the rig's mask_cli(), and the real binary when
    built) and the function agree on every form of an ip field."""
    _cli_and_function_agree([str(_tool()), "cli"], "mask_tool cli")
    if BOOTSTRAP.exists():
        _cli_and_function_agree([str(BOOTSTRAP)], "bootstrap")


def test_cli_through_rig():
    """The commands, through mask_cli() as linked into the rig."""
    _cli_checks([str(_tool()), "cli"], "mask_tool cli")


def test_cli_through_bootstrap():
    """The same commands through the real binary, once function/main.c dispatches them."""
    if not BOOTSTRAP.exists():
        print(f"  note: {BOOTSTRAP.relative_to(ROOT)} is not built; "
              "bootstrap mask/unmask not checked")
        return
    _cli_checks([str(BOOTSTRAP)], "bootstrap")
