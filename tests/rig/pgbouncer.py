"""A private pgbouncer in front of a rig Postgres (tests/rig/pg.py), started by the
test, on a loopback port, torn down at exit.

    bouncer = pgbouncer.Bouncer(srv, pool_size=3)   # pool_mode = transaction
    bouncer.env()              # PG* variables for the bootstrap: the pooler, not the server
    bouncer.stats()            # SHOW POOLS / SHOW STATS rows of the admin console
    bouncer.stop()

Authentication: clients log in to pgbouncer with SCRAM-SHA-256 (the function's
usual password, checked against auth_file, which holds it in plain text so that
pgbouncer can also log in to the server with SCRAM on the client's behalf).
Nothing is trusted: a wrong password is refused by the pooler, as a real proxy
would refuse it.

pgbouncer refuses to run as root; as root the rig runs it as the server's user
(postgres), as pg.py runs the server.
"""
import atexit
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from . import pg

ADMIN = "pgbouncer_admin"
ADMIN_PASSWORD = "bouncer-admin-test-password"


def binary():
    for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", shutil.which("pgbouncer")):
        if p and os.path.exists(p):
            return p
    raise RuntimeError("pgbouncer not found; run tools/test-deps.sh as root")


class Bouncer:
    def __init__(self, server, pool_size=3, max_client_conn=200, pool_mode="transaction",
                 extra=()):
        self.server = server
        self.dir = tempfile.mkdtemp(prefix="login-etl-pgbouncer-")
        self.port = pg.free_port()
        self.log = os.path.join(self.dir, "pgbouncer.log")
        self.ini = os.path.join(self.dir, "pgbouncer.ini")
        self.pidfile = os.path.join(self.dir, "pgbouncer.pid")
        users = os.path.join(self.dir, "userlist.txt")
        with open(users, "w") as f:
            f.write(f'"{pg.USER}" "{pg.PASSWORD}"\n"{ADMIN}" "{ADMIN_PASSWORD}"\n')
        conf = [
            "[databases]",
            f"{pg.DATABASE} = host=127.0.0.1 port={server.port} dbname={pg.DATABASE}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {users}",
            f"admin_users = {ADMIN}",
            f"pool_mode = {pool_mode}",
            f"default_pool_size = {pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {max_client_conn}",
            f"max_db_connections = {pool_size}",
            f"logfile = {self.log}",
            f"pidfile = {self.pidfile}",
            "log_connections = 0",
            "log_disconnections = 0",
            "server_login_retry = 1",
            # A client that waits longer than this for a server connection gets
            # an error: long enough for a fleet queueing behind a small pool.
            "query_wait_timeout = 60",
        ] + list(extra)
        with open(self.ini, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = "postgres"
            pw = pwd.getpwnam(self.as_user)
            for p in (self.dir, self.ini, users):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(users, 0o600)
        self.proc = None
        self.start()
        atexit.register(self.destroy)

    def start(self):
        argv = [binary(), self.ini]
        if self.as_user:
            argv = ["runuser", "-u", self.as_user, "--"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "wb"))
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n"
                                   f"{self.output()[-2000:]}")
            r = subprocess.run(["psql", "-X", "-At", "-c", "SHOW VERSION"],
                               env=self._admin_env(), capture_output=True, text=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not start:\n{self.output()[-2000:]}")

    def output(self):
        out = ""
        for name in ("stderr", "pgbouncer.log")[-1:] if os.path.exists(self.log) else ("stderr",):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def env(self):
        """libpq environment for the function: the server's, with the pooler's address."""
        e = self.server.env()
        e["PGPORT"] = str(self.port)
        return e

    def _admin_env(self):
        return dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER=ADMIN,
                    PGPASSWORD=ADMIN_PASSWORD, PGDATABASE="pgbouncer", PGSSLMODE="disable")

    def admin(self, command):
        """Runs an admin console command (SHOW POOLS, ...); returns rows as dicts."""
        r = subprocess.run(["psql", "-X", "-A", "-F", "\t", "-P", "footer=off", "-c", command],
                           env=self._admin_env(), capture_output=True, text=True, check=True)
        lines = r.stdout.splitlines()
        head = lines[0].split("\t")
        return [dict(zip(head, l.split("\t"))) for l in lines[1:]]

    def pid(self):
        """The pgbouncer process (not the runuser in front of it)."""
        with open(self.pidfile) as f:
            return int(f.read().split()[0])

    def version(self):
        r = subprocess.run(["psql", "-X", "-At", "-c", "SHOW VERSION"], env=self._admin_env(),
                           capture_output=True, text=True, check=True)
        return r.stdout.strip().removeprefix("PgBouncer ").split()[0]

    def pools(self):
        return [p for p in self.admin("SHOW POOLS") if p.get("database") == pg.DATABASE]

    def stats(self):
        return [s for s in self.admin("SHOW STATS") if s.get("database") == pg.DATABASE]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
