"""Secrets at run time: DB_SECRET_ID and MASKING_KEY_SECRET_ID read through
a stand-in for the AWS Parameters and Secrets Lambda Extension on loopback,
on the first invocation, then cached; and its error answers."""
import json
import threading
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
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                sid = parse_qs(url.query).get("secretId", [None])[0]
                outer.requests.append((url.path, sid, self.headers.get("X-Aws-Parameters-Secrets-Token")))
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != TOKEN:
                    return self._send(401, "unauthorized: missing or wrong token")
                if url.path != "/secretsmanager/get" or sid not in outer.secrets:
                    return self._send(400, f"ResourceNotFoundException: {sid}")
                doc = {"ARN": sid, "Name": sid.split(":")[-1], "SecretString": outer.secrets[sid],
                       "VersionId": "v1", "VersionStages": ["AWSCURRENT"]}
                self._send(200, json.dumps(doc))

            def _send(self, status, text):
                body = text.encode()
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
