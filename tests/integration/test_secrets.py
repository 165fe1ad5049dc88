"""Secrets at run time: DB_SECRET_ID and MASKING_KEY_SECRET_ID read through
a stand-in for the AWS Parameters and Secrets Lambda Extension on loopback,
on the first invocation, then cached; and its error answers."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from events.generate import event_bytes, make_event, make_messages
from rig import expect, pg, proc, runtime_api
from rig.harness import Etl

TOKEN = "session-token-for-the-test"
DB_SECRET = "arn:aws:secretsmanager:us-east-1:000000000000:secret:login-etl/db-AbCdEf"
KEY_SECRET = "arn:aws:secretsmanager:us-east-1:000000000000:secret:login-etl/key-GhIjKl"
SECRET_KEY = "ab" * 64  # a different key from the rig's default


class Extension:
    """Answers GET /secretsmanager/get?secretId=... like the extension: 200 with
    the GetSecretValue document, 400 for an unknown id, 401 without the token."""

    def __init__(self, secrets):
        self.secrets = dict(secrets)
        self.requests = []
        self.failure = None  # (status, body bytes): every request gets it instead
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                sid = parse_qs(url.query).get("secretId", [None])[0]
                outer.requests.append((url.path, sid, self.headers.get("X-Aws-Parameters-Secrets-Token")))
                if outer.failure:
                    return self._send(*outer.failure)
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != TOKEN:
                    return self._send(401, "unauthorized: missing or wrong token")
                if url.path != "/secretsmanager/get" or sid not in outer.secrets:
                    return self._send(400, f"ResourceNotFoundException: {sid}")
                doc = {"ARN": sid, "Name": sid.split(":")[-1], "SecretString": outer.secrets[sid],
                       "VersionId": "v1", "VersionStages": ["AWSCURRENT"]}
                self._send(200, json.dumps(doc))

            def _send(self, status, text):
                body = text if isinstance(text, bytes) else text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _db_secret(db, **over):
    doc = {"username": pg.USER, "password": pg.PASSWORD, "host": "127.0.0.1", "port": db.port,
           "dbname": pg.DATABASE, "engine": "postgres"}
    doc.update(over)
    return json.dumps(doc)


def _env(port, **over):
    env = {"DB_SECRET_ID": DB_SECRET, "MASKING_KEY_SECRET_ID": KEY_SECRET,
           "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(port), "AWS_SESSION_TOKEN": TOKEN,
           "MASKING_KEY": None, "PGHOST": None, "PGPORT": None, "PGUSER": None,
           "PGPASSWORD": None, "PGDATABASE": None, "PGSSLMODE": "disable"}
    env.update(over)
    return env


def test_secrets_are_read_once_and_used():
    db = pg.server()
    ext = Extension({DB_SECRET: _db_secret(db), KEY_SECRET: SECRET_KEY + "\n"})
    try:
        with Etl(env=_env(ext.port)) as etl:
            msgs = make_messages(60, seed=41, invalid_rate=0)
            for i in range(0, 60, 20):
                assert etl.answer(event_bytes(make_event(msgs[i:i + 20]))) == set()
            assert etl.count() == 60
            # Masked with the key from the secret, not any other.
            from cryptography.hazmat.primitives.ciphers.aead import AESSIV
            siv = AESSIV(bytes.fromhex(SECRET_KEY))
            body = json.loads(msgs[0]["body"])
            want = expect.mask(expect.canonical_ip(body["ip"]), siv=siv)
            got = etl.db.scalar(f"SELECT count(*) FROM user_logins WHERE masked_ip = '{want}'")
            assert int(got) >= 1
            assert sorted(sid for _, sid, _ in ext.requests) == sorted([DB_SECRET, KEY_SECRET])
            out = etl.boot.output()
            assert pg.PASSWORD not in out and SECRET_KEY not in out
    finally:
        ext.close()


def test_extension_errors_fail_the_invocation_and_are_retried():
    db = pg.server()
    ext = Extension({KEY_SECRET: SECRET_KEY})  # the database secret is missing at first
    try:
        with Etl(env=_env(ext.port)) as etl:
            event = event_bytes(make_event(make_messages(5, seed=42, invalid_rate=0)))
            res = etl.invoke(event)
            assert res.kind == "error", res.body
            doc = res.json()
            assert doc["errorType"] == "SecretsUnavailable"
            assert "400" in doc["errorMessage"] and "login-etl/db" in doc["errorMessage"], doc
            # The secret appears (rotation, a late deployment): the next invocation reads it.
            ext.secrets[DB_SECRET] = _db_secret(db)
            assert etl.answer(event) == set()
            assert etl.count() == 5
    finally:
        ext.close()


def test_wrong_token_unreachable_extension_and_bad_secret_contents():
    db = pg.server()
    event = event_bytes(make_event(make_messages(3, seed=43, invalid_rate=0)))
    cases = [
        ({"AWS_SESSION_TOKEN": "wrong"}, {}, "401"),
        ({"AWS_SESSION_TOKEN": None}, {}, "AWS_SESSION_TOKEN"),
        ({}, {DB_SECRET: json.dumps({"password": "x"})}, 'lacks "host"'),
        ({}, {DB_SECRET: json.dumps({"password": "x", "host": "db"})}, 'lacks "username"'),
        ({}, {KEY_SECRET: "00" * 10}, "128"),
        ({}, {DB_SECRET: "not json"}, "JSON"),
    ]
    for env_over, secrets_over, needle in cases:
        ext = Extension({DB_SECRET: _db_secret(db), KEY_SECRET: SECRET_KEY, **secrets_over})
        try:
            with Etl(env=_env(ext.port, **env_over)) as etl:
                res = etl.invoke(event)
                assert res.kind == "error", (env_over, res.body)
                doc = res.json()
                assert doc["errorType"] == "SecretsUnavailable", doc
                assert needle in doc["errorMessage"], (needle, doc)
                assert SECRET_KEY not in etl.boot.output() and pg.PASSWORD not in etl.boot.output()
        finally:
            ext.close()
    # No extension listening at all.
    port = pg.free_port()
    with Etl(env=_env(port)) as etl:
        res = etl.invoke(event, timeout=60)
        assert res.kind == "error" and res.json()["errorType"] == "SecretsUnavailable", res.body


def _drop_function_connections(db):
    """Ends the function's kept connection as a failover or an idle timeout would."""
    db.superuser("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'login-etl'")


def test_rotated_password_is_read_again_in_the_same_process():
    """Secrets Manager rotates the database password (single-user strategy): the kept
    connection still works; once it drops, the next connect is refused (28P01), the
    function reads the secret again and writes the batch in the same invocation.  While
    the extension still serves its cached copy, the invocation fails with a message that
    says so, and the next one after the extension serves the new password succeeds."""
    db = pg.server()
    new_password = "rotated-" + PASSWORD_SUFFIX
    ext = Extension({DB_SECRET: _db_secret(db), KEY_SECRET: SECRET_KEY})
    try:
        with Etl(env=_env(ext.port)) as etl:
            msgs = make_messages(40, seed=44, invalid_rate=0)
            assert etl.answer(event_bytes(make_event(msgs[:10]))) == set()
            pid = etl.boot.proc.pid
            # Rotation: the server has the new password; the extension still serves the
            # old one (its cache), then the connection drops.
            db.superuser(f"ALTER ROLE {pg.USER} PASSWORD '{new_password}'")
            _drop_function_connections(db)
            res = etl.invoke(event_bytes(make_event(msgs[10:20])))
            assert res.kind == "error", res.body
            doc = res.json()
            assert doc["errorType"] == "DatabaseUnavailable", doc
            assert "28P01" in doc["errorMessage"] and "unchanged" in doc["errorMessage"], doc
            # The extension's cache expires: it serves the new password.
            ext.secrets[DB_SECRET] = _db_secret(db, password=new_password)
            assert etl.answer(event_bytes(make_event(msgs[10:20]))) == set()
            # A second rotation, seen by the extension at once.
            db.superuser(f"ALTER ROLE {pg.USER} PASSWORD '{new_password}-2'")
            ext.secrets[DB_SECRET] = _db_secret(db, password=new_password + "-2")
            _drop_function_connections(db)
            assert etl.answer(event_bytes(make_event(msgs[20:40]))) == set()
            assert db.superuser("SELECT count(*) FROM user_logins").strip() == "40"
            assert etl.boot.proc.pid == pid and etl.boot.alive()
            reads = [sid for _, sid, _ in ext.requests if sid == DB_SECRET]
            assert len(reads) == 4, ext.requests  # the first invocation, then once a refusal
            logs = [l for l in etl.boot.logs() if isinstance(l, dict)]
            assert sum(l.get("message", "").startswith("the database refused the credentials")
                       for l in logs) == 3
            out = etl.boot.output()
            assert new_password not in out and pg.PASSWORD not in out
    finally:
        db.superuser(f"ALTER ROLE {pg.USER} PASSWORD '{pg.PASSWORD}'")
        ext.close()


PASSWORD_SUFFIX = "db-password-for-the-rotation-test"


class HangingExtension:
    """Accepts connections and reads requests but never answers (a stuck extension)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


def test_reading_secrets_ends_by_the_deadline():
    """A hanging extension, or none at all (connection refused, retried), with a 3 s
    Lambda timeout: the invocation error is posted before the deadline."""
    pg.server()
    event = event_bytes(make_event(make_messages(3, seed=45, invalid_rate=0)))
    hang = HangingExtension()
    try:
        for port in (hang.port, pg.free_port()):
            with Etl(env=_env(port)) as etl:
                deadline = int(time.time() * 1000) + 3000
                rid = etl.emu.enqueue(event, deadline_ms=deadline)
                res = etl.emu.wait_result(rid, timeout=30)
                answered = time.time() * 1000
                assert res.kind == "error", res.body
                doc = res.json()
                assert doc["errorType"] == "SecretsUnavailable", doc
                assert answered < deadline, f"answered {answered - deadline:.0f} ms late: {doc}"
                print(f"extension {'hanging' if port == hang.port else 'absent'}: error posted "
                      f"{deadline - answered:.0f} ms before a 3 s deadline")
                assert etl.boot.alive()
    finally:
        hang.close()


def _leak_free(etl, results, secrets):
    """Nothing of secrets (byte strings) and no raw 0xFF in the process's output or in the
    documents it posted; every stdout line is valid UTF-8 JSON."""
    with open(etl.boot.out_path, "rb") as f:
        out = f.read()
    with open(etl.boot.err_path, "rb") as f:
        err = f.read()
    for raw in out.splitlines():
        json.loads(raw.decode("utf-8"))  # strict: invalid UTF-8 raises
    for blob, where in [(out, "stdout"), (err, "stderr")] + \
            [(r.body if isinstance(r.body, bytes) else r.body.encode(), f"posted {r.path}")
             for r in results]:
        for s in secrets:
            assert s not in blob, f"{s!r} in {where}: {blob[-600:]!r}"
        assert b"\xff" not in blob, f"a raw 0xFF byte in {where}"


def test_extension_error_bodies_never_reach_logs_or_answers():
    """The extension answers errors (500, 400) whose bodies hold the database password, the
    masking key and a raw 0xFF byte: on the first read of each secret, and on the read
    again after the database refused the credentials.  The posted errorMessage and the log
    lines carry the status code and a fixed reason only, and stay valid UTF-8."""
    db = pg.server()
    new_password = "rotated-" + PASSWORD_SUFFIX + "-leak"
    leaks = [pg.PASSWORD.encode(), new_password.encode(), SECRET_KEY.encode()]
    body = (b'{"message":"\xff\xfe ' + pg.PASSWORD.encode() + b" " + new_password.encode() +
            b" key " + SECRET_KEY.encode() + b'"}')
    event = event_bytes(make_event(make_messages(3, seed=47, invalid_rate=0)))
    ext = Extension({DB_SECRET: _db_secret(db), KEY_SECRET: SECRET_KEY})
    try:
        for status in (500, 400):
            with Etl(env=_env(ext.port)) as etl:
                ext.failure = (status, body)
                res = etl.invoke(event)
                assert res.kind == "error", res.body
                doc = res.json()
                assert doc["errorType"] == "SecretsUnavailable", doc
                assert str(status) in doc["errorMessage"], doc
                _leak_free(etl, list(etl.emu.results.values()), leaks)
        # The read again after a refusal of the credentials (a rotation).
        ext.failure = None
        with Etl(env=_env(ext.port)) as etl:
            assert etl.answer(event) == set()
            db.superuser(f"ALTER ROLE {pg.USER} PASSWORD '{new_password}'")
            _drop_function_connections(db)
            ext.failure = (500, body)
            res = etl.invoke(event_bytes(make_event(make_messages(3, seed=48, invalid_rate=0))))
            assert res.kind == "error", res.body
            doc = res.json()
            assert doc["errorType"] == "DatabaseUnavailable", doc
            assert "28P01" in doc["errorMessage"] and "500" in doc["errorMessage"], doc
            logs = [l for l in etl.boot.logs() if isinstance(l, dict)]
            again = [l for l in logs if l.get("message") == "cannot read the database secret again"]
            assert again and "500" in again[0]["error"], logs[-5:]
            _leak_free(etl, list(etl.emu.results.values()), leaks)
    finally:
        db.superuser(f"ALTER ROLE {pg.USER} PASSWORD '{pg.PASSWORD}'")
        ext.close()


def test_masking_secret_holding_a_keyset_document():
    """The masking secret may hold the keyset document: the function masks with the key its
    "current" names (MASKING_KEY_ID, still the template's, is outweighed and a warning says
    so); MASKING_KEYS_RETIRED may add retired keys, checked at start, and a conflict with
    the secret's keys fails the invocations that read it, naming the id, never a key."""
    from rig import keys
    db = pg.server()
    messages = make_messages(30, seed=45, invalid_rate=0)
    doc = keys.document(keys.NEW, keys.OLD)
    ext = Extension({DB_SECRET: _db_secret(db), KEY_SECRET: doc + "\n"})
    try:
        with Etl(env=_env(ext.port, MASKING_KEY_ID="k1",
                          MASKING_KEYS_RETIRED=f"{keys.NEWER.id}={keys.NEWER.hex}")) as etl:
            assert etl.answer(event_bytes(make_event(messages))) == set()
            for row in etl.rows():
                assert row["masked_ip"].startswith("k2:")
                assert keys.mask(keys.NEW, keys.unmask([keys.NEW], row["masked_ip"])) == \
                    row["masked_ip"]
            logs = [l for l in etl.boot.logs() if isinstance(l, dict)]
            told = [l for l in logs if l.get("message") == "masking keys"]
            assert told and told[0]["current"] == "k2" and \
                sorted(told[0]["retired"].split(",")) == sorted([keys.OLD.id, keys.NEWER.id])
            assert any(l.get("message", "").startswith("MASKING_KEY_ID names another key")
                       and l.get("MASKING_KEY_ID") == "k1" for l in logs), logs
            keys.assert_no_key(etl.boot.output(), "the function")
        # A retired key in the environment under an id the secret holds too.
        with Etl(env=_env(ext.port, MASKING_KEYS_RETIRED=f"{keys.OLD.id}={keys.NEWER.hex}")) as etl:
            res = etl.invoke(event_bytes(make_event(messages[:3])))
            assert res.kind == "error", res.body
            msg = res.json()["errorMessage"]
            assert f'key id "{keys.OLD.id}" appears twice' in msg, msg
            keys.assert_no_key(etl.boot.output() + res.body.decode("latin-1"), "the error")
    finally:
        ext.close()
    # A malformed MASKING_KEYS_RETIRED is an init error before any secret is read.
    with runtime_api.Emulator() as emu:
        boot = proc.Bootstrap(emu.address, db=db, env=_env(1, MASKING_KEYS_RETIRED="k1=00"))
        err = emu.wait_init_error(timeout=20)
        assert boot.wait(timeout=20) != 0
        assert err.json()["errorType"] == "InvalidConfiguration"
        assert "MASKING_KEYS_RETIRED: item 1" in err.json()["errorMessage"], err.json()
