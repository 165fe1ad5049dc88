"""RDS IAM authentication on loopback: a Postgres that checks auth tokens the
way RDS does, and botocore's token for a fixed instant.

RDS checks an IAM token itself when a connection opens: the signature must
be the one the role's key makes for the token's own X-Amz-Date, and that
date must be less than X-Amz-Expires (900 s) old.  The local server does the
same through PostgreSQL's `ldap` authentication: the password the client sends
(over TLS only: the pg_hba line is `hostssl`) goes to a small LDAP server in
this process, whose simple bind accepts it only when it equals, byte for byte,
what botocore's generate_db_auth_token makes for the token's own instant with
the test's credentials, and that instant is within the last 15 minutes.  So
the bootstrap runs on the real clock and nothing in it is stubbed.

    srv = IamServer(creds)        # TLS (a test CA, name HOST) + LDAP token check
    srv.url(...)                  # DATABASE_URL for the bootstrap (no password)
    srv.binds                     # every token the server saw, with its verdict
"""
import datetime
import os
import pwd
import socket
import threading
import time
from unittest import mock
from urllib.parse import parse_qs

from . import pg

HOST = "db.iam-test.internal"  # the certificate's name; resolved through hostaddr
REGION = "eu-west-1"


def botocore_token(host, port, user, region, epoch, access_key, secret_key, session_token=None):
    """botocore's generate_db_auth_token with its clock fixed at `epoch`."""
    import boto3
    import botocore.auth

    session = boto3.session.Session(aws_access_key_id=access_key,
                                    aws_secret_access_key=secret_key,
                                    aws_session_token=session_token, region_name=region)
    client = session.client("rds")
    at = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(tzinfo=None)
    if hasattr(botocore.auth, "get_current_datetime"):
        patch = mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: at)
    else:
        # Older botocore (Debian's python3-botocore) reads datetime.datetime.utcnow().
        class FrozenDatetime(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return at

        patch = mock.patch("botocore.auth.datetime",
                           mock.Mock(datetime=FrozenDatetime, wraps=datetime))
    # botocore's own SigV4 code, also where the awscrt module is installed (Debian's
    # awscli brings it): botocore then signs with awscrt's, which reads its own
    # clock and orders the query differently.
    pure = mock.patch.dict(botocore.auth.AUTH_TYPE_MAPS,
                           {"v4-query": botocore.auth.SigV4QueryAuth})
    with patch, pure:
        return client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user,
                                             Region=region)


def token_epoch(token):
    """The Unix time of a token's X-Amz-Date, or None."""
    query = token.partition("?")[2]
    date = parse_qs(query).get("X-Amz-Date", [None])[0]
    if not date:
        return None
    try:
        t = datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp())


# --- certificates ---------------------------------------------------------------------------

def make_certs(directory, names):
    """A test CA and a server certificate for `names` (DNS), signed by it.
    Returns (ca_path, cert_path, key_path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "login-etl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(directory, n) for n in ("iam-ca.pem", "server.crt", "server.key")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return tuple(paths)


# --- a token-checking LDAP server (simple bind only) ----------------------------------------

def _read_tlv(data, i):
    """One BER element at data[i:]: (tag, value, next index); raises on a short read."""
    tag = data[i]
    n = data[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[i:i + k], "big")
        i += k
    if i + n > len(data):
        raise ValueError("short")
    return tag, data[i:i + n], i + n


def _tlv(tag, value):
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(b)]) + b + value


class TokenLdap:
    """Answers LDAP simple binds: success when the password is a valid IAM token
    for `creds` (see the module's text), invalidCredentials otherwise.  Every
    bind is kept in .binds as dict(dn, token, ok, why)."""

    def __init__(self, creds, host, port, user, region=REGION):
        self.creds, self.host, self.port, self.user, self.region = creds, host, port, user, region
        self.binds = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address_port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def check(self, token):
        """(ok, why) for a presented token."""
        at = token_epoch(token)
        if at is None:
            return False, "no X-Amz-Date"
        age = time.time() - at
        if age > 900:
            return False, f"expired ({age:.0f} s old)"
        if age < -60:
            return False, "dated in the future"
        want = botocore_token(self.host, self.port, self.user, self.region, at, *self.creds)
        if token != want:
            return False, "not botocore's token for its instant"
        return True, "ok"

    def _serve(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while buf:
                    try:
                        tag, msg, end = _read_tlv(buf, 0)
                    except (ValueError, IndexError):
                        break  # wait for more bytes
                    buf = buf[end:]
                    _, msgid, i = _read_tlv(msg, 0)
                    op, body, _ = _read_tlv(msg, i)
                    if op == 0x42:  # unbind
                        return
                    if op != 0x60:  # only bind is spoken here
                        return
                    _, _version, j = _read_tlv(body, 0)
                    _, dn, j = _read_tlv(body, j)
                    auth_tag, password, _ = _read_tlv(body, j)
                    token = password.decode("utf-8", "replace")
                    ok, why = (self.check(token) if auth_tag == 0x80
                               else (False, "not a simple bind"))
                    self.binds.append({"dn": dn.decode(), "token": token, "ok": ok, "why": why})
                    result = _tlv(0x0A, bytes([0 if ok else 49])) + _tlv(0x04, b"") + _tlv(0x04, b"")
                    conn.sendall(_tlv(0x30, _tlv(0x02, msgid) + _tlv(0x61, result)))

    def close(self):
        self.closed = True
        self.sock.close()


# --- the server -----------------------------------------------------------------------------

class IamServer:
    """A private Postgres (tests/rig/pg.py) where the function's user logs in
    with an IAM token, over TLS only, checked by TokenLdap; the superuser
    keeps its SCRAM password for the test's own queries."""

    def __init__(self, creds, user=pg.USER):
        self.db = pg.Server()
        self.creds = creds
        self.user = user
        self.ldap = TokenLdap(creds, HOST, self.db.port, user)
        self.ca, cert, key = make_certs(self.db.dir, [HOST])
        if self.db.as_user:
            pw = pwd.getpwnam(self.db.as_user)
            for p in (cert, key):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(key, 0o600)
        with open(os.path.join(self.db.data, "postgresql.conf"), "a") as f:
            f.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
        hba = os.path.join(self.db.data, "pg_hba.conf")
        with open(hba) as f:
            rest = f.read()
        line = (f'hostssl {pg.DATABASE} {user} 127.0.0.1/32 ldap ldapserver=127.0.0.1 '
                f'ldapport={self.ldap.address_port} ldapprefix="cn=" ldapsuffix=",dc=rds"\n'
                # Without TLS the user cannot log in at all.
                f'host all {user} 127.0.0.1/32 reject\n')
        with open(hba, "w") as f:
            f.write(line + rest)
        self.db.superuser("SELECT pg_reload_conf()")
        self.superuser("SELECT 1")  # the reload is in effect once the next backend starts

    def url(self, host=HOST, ca=None):
        """DATABASE_URL for the bootstrap: no password, verify-full against the
        test CA; the name is `host`, the address loopback (hostaddr)."""
        return (f"postgresql://{self.user}@{host}:{self.db.port}/{pg.DATABASE}"
                f"?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca or self.ca}"
                f"&connect_timeout=5")

    def superuser(self, sql):
        return self.db.superuser(sql)

    def scalar(self, sql):
        return self.superuser(sql).strip()

    def terminate_function_connections(self):
        """Closes the function's server connections, as a proxy or a failover does."""
        return int(self.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'login-etl'"))

    @property
    def binds(self):
        return list(self.ldap.binds)

    def destroy(self):
        self.ldap.close()
        self.db.destroy()
