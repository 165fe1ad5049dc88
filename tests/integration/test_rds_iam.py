"""RDS IAM database authentication (DB_AUTH=iam).

* The token function/rds_iam.c signs is botocore's generate_db_auth_token,
  byte for byte, for the same fixed instant (tests/rig/iam_token.c prints
  the C side).
* End to end: the real bootstrap, on the real clock, logs in to a Postgres
  that accepts only a valid token over verify-full TLS (tests/rig/iam.py),
  writes a batch, and re-signs a token older than its renewal age before a
  new connection while an open connection stays in use.
* Settings: what DB_AUTH=iam needs is checked at init, and by `bootstrap rekey` and
  `bootstrap reprocess` alike, which log in with a signed token as the function does.
* The CA bundle shipped next to bootstrap (tools/ca-bundle.sh) holds the
  Amazon Trust Services roots an RDS Proxy endpoint chains to, after RDS's
  bundle, and libpq verifies a server with it.
"""
import atexit
import base64
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
import warnings
import zipfile

from events.generate import event_bytes, make_event, make_messages
from rig import iam, paths, pg, proc, runtime_api

RIG = paths.BUILD / "asan" / "rig" / "iam_token"
ACCESS_KEY = "ASIAQEXAMPLEKEY12345"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
# A session token of the length and alphabet STS gives (base64: / + =).
SESSION_TOKEN = ("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+" * 14) + "Zg=="


def _rig(lines):
    r = subprocess.run([str(RIG)], input="".join("\t".join(map(str, l)) + "\n" for l in lines),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_token_matches_botocore_byte_for_byte():
    cases = [
        # host, port, user, region, epoch, access key, secret key, session token
        ("db.example.com", 5432, "iam_user", "us-east-1", 1767225600, "AKIDEXAMPLE", "secret", None),
        ("login-db.cluster-c9akciq32.eu-west-1.rds.amazonaws.com", 5432, "login_etl", "eu-west-1",
         1772323199, ACCESS_KEY, SECRET_KEY, SESSION_TOKEN),
        ("login-proxy.proxy-c9akciq32.ap-southeast-2.rds.amazonaws.com", 5432, "etl", "ap-southeast-2",
         951782400, ACCESS_KEY, SECRET_KEY, SESSION_TOKEN),
        # botocore signs the host lower-cased, but keeps it as given in the token.
        ("Login-DB.Example.COM", 6543, "Mixed.User", "us-west-2", 1700000000, ACCESS_KEY,
         SECRET_KEY, None),
        # Port 443 is https's default: botocore leaves it out of the signed host.
        ("db.example.com", 443, "iam_user", "us-east-1", 1767225600, ACCESS_KEY, SECRET_KEY,
         SESSION_TOKEN),
        ("10.0.12.7", 1, "u", "us-gov-west-1", 4102444799, ACCESS_KEY, SECRET_KEY, None),
        # User names with bytes that are percent-encoded, UTF-8 included.
        ("db.example.com", 5432, "a b+c/d=e&f%g~h-_.é", "eu-central-1", 1767225600, ACCESS_KEY,
         SECRET_KEY + "+/=", "tok+/=="),
    ]
    lines = [c[:7] + ((c[7],) if c[7] else ()) for c in cases]
    got = _rig(lines)
    assert len(got) == len(cases), got
    for case, token in zip(cases, got):
        want = iam.botocore_token(*case)
        assert token == want, f"{case[:5]}:\n  C:        {token}\n  botocore: {want}"
        # Two different instants give two different tokens: the comparison is not vacuous.
        assert iam.botocore_token(*case[:4], case[4] + 1, *case[5:]) != want


def test_token_signing_refuses_empty_parts_without_quoting_the_key():
    out = _rig([("db.example.com", 5432, "u", "us-east-1", 0, "AKID", ""),
                ("", 5432, "u", "us-east-1", 0, "AKID", SECRET_KEY),
                ("db.example.com", 5432, "", "us-east-1", 0, "AKID", SECRET_KEY, SESSION_TOKEN)])
    assert len(out) == 3, out
    for line in out:
        assert line.startswith("ERR invalid configuration: IAM token: an empty"), out
        assert SECRET_KEY not in line and SESSION_TOKEN[:20] not in line


def _etl_env(srv, **over):
    env = {"DB_AUTH": "iam", "DATABASE_URL": srv.url(), "AWS_REGION": iam.REGION,
           "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN,
           "PGHOST": None, "PGPORT": None, "PGUSER": None, "PGPASSWORD": None,
           "PGDATABASE": None, "PGSSLMODE": None}
    env.update(over)
    return env


class _Session:
    """The real bootstrap behind the Runtime API emulator, on an IamServer."""

    def __init__(self, srv, **env):
        self.srv = srv
        self.emu = runtime_api.Emulator()
        self.boot = proc.Bootstrap(self.emu.address, env=_etl_env(srv, **env))

    def invoke(self, event):
        return self.emu.wait_result(self.emu.enqueue(event), timeout=60)

    def answer(self, event):
        res = self.invoke(event)
        assert res.kind == "response", f"{res.kind}: {res.body[:300]!r}\n{self.boot.output()[-2000:]}"
        return json.loads(res.body)["batchItemFailures"]

    def close(self):
        alive = self.boot.alive()
        self.boot.stop()
        self.emu.close()
        assert self.boot.sanitizer_report() is None, self.boot.sanitizer_report()
        assert alive, self.boot.output()[-3000:]
        out = self.boot.output()
        # Neither the key nor a token (its signature) is ever printed.
        assert SECRET_KEY not in out and SESSION_TOKEN[:40] not in out
        for b in self.srv.binds:
            assert b["token"].rsplit("=", 1)[-1] not in out


_srv = None


def _server():
    """One IamServer for this file's end-to-end tests, removed at exit."""
    global _srv
    if _srv is None:
        _srv = iam.IamServer((ACCESS_KEY, SECRET_KEY, SESSION_TOKEN))
        atexit.register(_srv.destroy)
    return _srv


def _batch(seed, n=20):
    return event_bytes(make_event(make_messages(n, seed=seed, invalid_rate=0)))


def test_end_to_end_login_with_a_signed_token_and_renewal():
    srv = _server()
    srv.superuser("DROP TABLE IF EXISTS user_logins, login_etl_ledger, login_etl_ledger_v2, "
                  "login_etl_ledger_v3")
    n = len(srv.binds)
    # Default renewal age (600 s): one token serves every connection.
    s = _Session(srv)
    try:
        assert s.answer(_batch(1)) == []
        assert len(srv.binds) == n + 1 and srv.binds[n]["ok"], srv.binds[n:]
        assert srv.binds[n]["dn"] == f"cn={pg.USER},dc=rds"
        # The connection is TLS, with the token as its password.
        assert srv.scalar("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                          "USING (pid) WHERE a.application_name = 'login-etl' AND s.ssl") == "1"
        assert s.answer(_batch(2)) == []
        assert len(srv.binds) == n + 1  # the open connection is reused
        assert srv.terminate_function_connections() == 1
        assert s.answer(_batch(3)) == []
        assert len(srv.binds) == n + 2, srv.binds[n:]
        assert srv.binds[n + 1]["ok"] and srv.binds[n + 1]["token"] == srv.binds[n]["token"]
    finally:
        s.close()
    assert srv.scalar("SELECT count(*) FROM user_logins") == "60"

    # A 1-second renewal age: an open connection stays in use past it; a
    # new connection gets a token signed again, for a later instant.
    s = _Session(srv, LOGIN_ETL_IAM_RENEW_SECONDS="1")
    try:
        assert s.answer(_batch(4)) == []
        assert len(srv.binds) == n + 3 and srv.binds[n + 2]["ok"], srv.binds[n:]
        first = srv.binds[n + 2]
        time.sleep(1.2)
        assert s.answer(_batch(5)) == []
        assert len(srv.binds) == n + 3  # no new connection, no new token needed
        assert srv.terminate_function_connections() == 1
        assert s.answer(_batch(6)) == []
        assert len(srv.binds) == n + 4, srv.binds[n:]
        second = srv.binds[n + 3]
        assert second["ok"], second
        assert iam.token_epoch(second["token"]) > iam.token_epoch(first["token"])
    finally:
        s.close()
    assert srv.scalar("SELECT count(*) FROM user_logins") == "120"


def test_end_to_end_with_the_settings_the_template_gives():
    # The template sets PG* variables rather than DATABASE_URL.
    srv = _server()
    n = len(srv.binds)
    s = _Session(srv, DATABASE_URL=None, PGHOST=iam.HOST, PGHOSTADDR="127.0.0.1",
                 PGPORT=str(srv.db.port), PGUSER=pg.USER, PGDATABASE=pg.DATABASE,
                 PGSSLMODE="verify-full", PGSSLROOTCERT=srv.ca, PGCONNECT_TIMEOUT="5")
    try:
        assert s.answer(_batch(10, n=5)) == []
        assert len(srv.binds) == n + 1 and srv.binds[n]["ok"], srv.binds[n:]
    finally:
        s.close()


def test_end_to_end_refusals():
    srv = _server()
    n = len(srv.binds)
    # Signed with another key: the server refuses, the batch fails whole.
    s = _Session(srv, AWS_SECRET_ACCESS_KEY=SECRET_KEY[::-1])
    try:
        res = s.invoke(_batch(7))
        assert res.kind == "error", res.body
        assert json.loads(res.body)["errorType"] == "DatabaseUnavailable"
        assert len(srv.binds) > n and not any(b["ok"] for b in srv.binds[n:])
        assert all(b["why"] == "not botocore's token for its instant" for b in srv.binds[n:])
    finally:
        s.close()
    n = len(srv.binds)

    # A server whose certificate is not for the name connected to: verify-full
    # stops the connection before any password is sent.
    s = _Session(srv, DATABASE_URL=srv.url(host="other.iam-test.internal"))
    try:
        res = s.invoke(_batch(8))
        assert res.kind == "error", res.body
        assert "certificate" in json.loads(res.body)["errorMessage"]
        assert len(srv.binds) == n
    finally:
        s.close()


_SETTINGS_URL = ("postgresql://etl@db.example.com/logins?sslmode=verify-full"
                 "&sslrootcert=/var/task/x.pem")
# A setting DB_AUTH=iam refuses, and the word that says which.
_SETTINGS_CASES = [
    ({"DB_AUTH": "IAM"}, "DB_AUTH"),
    ({"DB_SECRET_ID": "arn:aws:secretsmanager:eu-west-1:1:secret:x"}, "DB_SECRET_ID"),
    ({"DATABASE_URL": _SETTINGS_URL.replace("verify-full", "require")}, "verify-full"),
    ({"DATABASE_URL": _SETTINGS_URL.replace("etl@", "etl:pw@")}, "password"),
    ({"AWS_SECRET_ACCESS_KEY": None}, "AWS_SECRET_ACCESS_KEY"),
    ({"AWS_REGION": None}, "AWS_REGION"),
    ({"LOGIN_ETL_IAM_RENEW_SECONDS": "900"}, "LOGIN_ETL_IAM_RENEW_SECONDS"),
]


def test_iam_settings_are_checked_at_init():
    url = _SETTINGS_URL
    base = {"DB_AUTH": "iam", "DATABASE_URL": url, "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "PGHOST": None, "PGPORT": None, "PGUSER": None, "PGPASSWORD": None,
            "PGDATABASE": None, "PGSSLMODE": None}
    for over, word in _SETTINGS_CASES:
        with runtime_api.Emulator() as emu:
            boot = proc.Bootstrap(emu.address, env=dict(base, **over))
            try:
                err = emu.wait_init_error(timeout=20)
                assert err is not None, (over, boot.output()[-2000:])
                doc = json.loads(err.body)
                assert doc["errorType"] == "InvalidConfiguration", doc
                assert word in doc["errorMessage"], (over, doc)
                assert SECRET_KEY not in boot.output()
            finally:
                boot.stop()



# --- the CA bundle ----------------------------------------------------------------------------
# Amazon Trust Services' roots as Mozilla's root store (Debian's ca-certificates) carries
# them: subject common name and SHA-256 of the DER.
ATS_ROOTS = {
    "Amazon Root CA 1": "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
    "Amazon Root CA 2": "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
    "Amazon Root CA 3": "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
    "Amazon Root CA 4": "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
    "Starfield Services Root Certificate Authority - G2":
        "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
}


def _certs(pem_text):
    """(common name, SHA-256 of the DER) of each certificate in a PEM text, in order."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    out = []
    for body in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----",
                           pem_text, re.S):
        der = base64.b64decode("".join(body.split()))
        with warnings.catch_warnings():
            # Starfield Services Root CA - G2 has serial number 0, which RFC 5280 forbids.
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        out.append((cn, hashlib.sha256(der).hexdigest()))
    return out


def test_ca_bundle_adds_the_rds_proxy_roots_after_rds_bundle():
    srv = _server()  # its test CA stands in for RDS's bundle
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bundle.pem")
        subprocess.run([str(paths.ROOT / "tools" / "ca-bundle.sh"), out, srv.ca], check=True,
                       capture_output=True, timeout=120)
        with open(out) as f, open(srv.ca) as g:
            text, rds = f.read(), g.read()
        assert text.startswith(rds)
        got = _certs(text)
        assert got[:len(_certs(rds))] == _certs(rds)
        assert sorted(got[len(_certs(rds)):]) == sorted(ATS_ROOTS.items())

        # libpq reads the whole bundle (comments between certificates included) and
        # verify-full passes with the CA that is in it; the token then logs in.
        n = len(srv.binds)
        s = _Session(srv, DATABASE_URL=srv.url(ca=out))
        try:
            assert s.answer(_batch(9, n=3)) == []
            assert len(srv.binds) == n + 1 and srv.binds[n]["ok"]
        finally:
            s.close()

        # A trust store without one of the roots fails the build, naming it.
        store = os.path.join(d, "store")
        os.mkdir(store)
        pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", text, re.S)
        for i, (pem, (cn, _)) in enumerate(zip(pems, got)):
            if cn != "Amazon Root CA 3":
                with open(os.path.join(store, f"{i}.crt"), "w") as f:
                    f.write(pem)
        r = subprocess.run([str(paths.ROOT / "tools" / "ca-bundle.sh"), out + ".2"],
                           env=dict(os.environ, CA_ROOTS=store), capture_output=True, text=True,
                           timeout=120)
        assert r.returncode != 0 and "Amazon Root CA 3" in r.stderr, r.stderr
        assert not os.path.exists(out + ".2")


def test_package_ships_the_bundle_with_the_rds_proxy_roots():
    r = subprocess.run(["make", "-C", str(paths.ROOT), "package", "CA=none"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    with zipfile.ZipFile(paths.BUILD / "function.zip") as z:
        text = z.read("rds-global-bundle.pem").decode()
    got = dict(_certs(text))
    for cn, fp in ATS_ROOTS.items():
        assert got.get(cn) == fp, cn


def test_rekey_logs_in_with_a_signed_token():
    """`bootstrap rekey` with DB_AUTH=iam signs its own token, as the function does, and
    re-masks what the function wrote under the old key."""
    from rig import keys
    srv = _server()
    srv.superuser("DROP TABLE IF EXISTS user_logins, login_etl_ledger, login_etl_ledger_v2, "
                  "login_etl_ledger_v3")
    s = _Session(srv)
    try:
        assert s.answer(_batch(30)) == []
    finally:
        s.close()
    n = len(srv.binds)
    env = {"PATH": "/usr/bin:/bin", "ASAN_OPTIONS": proc.ASAN_OPTIONS}
    env.update({k: v for k, v in _etl_env(srv).items() if v is not None})
    env.update({k: v for k, v in keys.env(keys.NEW, [keys.OLD]).items() if v is not None})
    r = subprocess.run([str(paths.ASAN), "rekey"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("rekey: done: 20 rows"), r.stdout + r.stderr
    assert len(srv.binds) > n and all(b["ok"] for b in srv.binds[n:]), srv.binds[n:]
    assert SECRET_KEY not in r.stdout + r.stderr and SESSION_TOKEN[:40] not in r.stdout + r.stderr
    ips = srv.scalar("SELECT string_agg(masked_ip, ' ') FROM user_logins").split()
    assert len(ips) == 20 and all(v.startswith("k2:") for v in ips)
    assert all(keys.mask(keys.NEW, keys.unmask([keys.NEW], v)) == v for v in ips)


def _command_env(srv=None, **over):
    """The environment of `bootstrap rekey|reprocess` run by hand: the function's settings
    (DB_AUTH=iam against srv), the masking key, nothing else."""
    env = {"PATH": "/usr/bin:/bin", "ASAN_OPTIONS": proc.ASAN_OPTIONS,
           "MASKING_KEY": proc.MASKING_KEY, "MASKING_KEY_ID": proc.MASKING_KEY_ID}
    base = _etl_env(srv) if srv else {
        "DB_AUTH": "iam", "DATABASE_URL": _SETTINGS_URL, "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    env.update(base)
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def test_rekey_and_reprocess_check_the_iam_settings_as_the_function_does():
    """The commands read the settings with the function's own checks: each setting the
    function refuses at init, they refuse before connecting (exit 2, nothing changed)."""
    for command in ("rekey", "reprocess"):
        for over, word in _SETTINGS_CASES:
            r = subprocess.run([str(paths.ASAN), command], env=_command_env(**over),
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 2, (command, over, r.returncode, r.stdout + r.stderr)
            assert r.stderr.startswith(f"bootstrap {command}: ") and word in r.stderr, (
                command, over, r.stderr)
            assert SECRET_KEY not in r.stdout + r.stderr


def test_reprocess_logs_in_with_a_signed_token():
    """`bootstrap reprocess` with DB_AUTH=iam signs its own token, as the function and the
    rekey do, and loads the records the database refused while a constraint stood."""
    from rig.messages import msg
    srv = _server()
    srv.superuser("DROP TABLE IF EXISTS user_logins, login_etl_ledger, login_etl_ledger_v2, "
                  "login_etl_ledger_v3, login_etl_rejected")
    s = _Session(srv, REJECTED_RECORDS=None)  # the quarantine, the function's default
    refused = [msg(f"iam-r{i}", {"user_id": f"refuse-{i}", "device_type": "ios",
                                 "ip": "192.0.2.7", "device_id": f"d-{i}", "locale": "en_US",
                                 "app_version": "3.1.4"}) for i in range(4)]
    try:
        assert s.answer(_batch(31, n=5)) == []
        srv.superuser("ALTER TABLE user_logins ADD CONSTRAINT no_refuse "
                      "CHECK (user_id NOT LIKE 'refuse-%')")
        assert s.answer(event_bytes(make_event(refused))) == []
    finally:
        s.close()
    assert srv.scalar("SELECT count(*) FROM login_etl_rejected") == "4"
    srv.superuser("ALTER TABLE user_logins DROP CONSTRAINT no_refuse")
    n = len(srv.binds)
    r = subprocess.run([str(paths.ASAN), "reprocess"], env=_command_env(srv), capture_output=True,
                       text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert [l.split() for l in r.stdout.splitlines()[1:]] == [
        ["database_rejected", "4", "4", "0", "0"]], out
    assert len(srv.binds) > n and all(b["ok"] for b in srv.binds[n:]), srv.binds[n:]
    assert SECRET_KEY not in out and SESSION_TOKEN[:40] not in out and "refuse-" not in out
    assert srv.scalar("SELECT count(*) FROM login_etl_rejected") == "0"
    assert srv.scalar("SELECT count(*) FROM user_logins WHERE user_id LIKE 'refuse-%'") == "4"
