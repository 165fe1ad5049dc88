"""A private PostgreSQL server for the tests: initdb in a temporary directory,
a loopback port, SCRAM passwords, torn down at exit.

    srv = pg.server()              # the shared one, started on first use
    srv.env()                      # PG* variables for the bootstrap
    srv.query("select ...")        # rows as dicts (through psql, JSON-encoded)
    srv.stop(); srv.start()        # outages
    srv.kill()                     # a crash: SIGKILL to the postmaster and its children

The server runs as the postgres user when the tests run as root (initdb refuses
root), always with "/" as its working directory: a repository cloned into a
directory that user cannot enter (/root is 0700 on Debian) must not stop it.
Processes are found through /proc, with no external tool (procps is not part of
a minimal Debian).  server() checks that the shared server is alive before
handing it out and starts it again when a test left it dead, so one test that
breaks it fails alone.
"""
import atexit
import glob
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

USER = "etl"
PASSWORD = "etl-test-password"
DATABASE = "logins"
SUPERUSER = "postgres"
SUPERPASS = "superuser-test-password"


def _bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found; run tools/test-deps.sh as root")
    return os.path.dirname(found[-1])


def _pid_alive(pid):
    """True when process pid exists and is not a zombie.  Cannot fail."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X", "")


def processes_in(directory):
    """The ids of the processes whose working directory is `directory`: a PostgreSQL
    server's postmaster and every child of it run in their data directory, also
    after the postmaster died and they were handed to init.  Cannot fail."""
    want = os.path.realpath(directory)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == want:
                pids.append(int(entry))
        except OSError:
            pass  # gone, or not ours to look at
    return pids


def reachable_by(path, user):
    """True when `user` may enter `path` and every directory above it (the search
    bit for its owner, group or others).  Cannot fail: a path that does not
    exist yet is judged by its nearest existing ancestor."""
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    p = os.path.realpath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    while True:
        st = os.stat(p)
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
        if p == "/":
            return True
        p = os.path.dirname(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """directory=None: a temporary server.  With a directory (the demo's), the
    server is created there once and reused by later runs, on the port it
    was created with."""

    def __init__(self, fsync=False, directory=None, async_commit=False, conf=()):
        self.extra_conf = list(conf)  # more postgresql.conf lines (log_statement, ...)
        self.bindir = _bindir()
        self.dir = directory or tempfile.mkdtemp(prefix="login-etl-pg-")
        os.makedirs(self.dir, exist_ok=True)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        port_file = os.path.join(self.dir, "port")
        existing = os.path.exists(os.path.join(self.data, "PG_VERSION"))
        if existing:
            with open(port_file) as f:
                self.port = int(f.read())
        else:
            self.port = free_port()
            with open(port_file, "w") as f:
                f.write(str(self.port))
        self.fsync = fsync
        self.async_commit = async_commit and not fsync
        self.running = False
        # initdb refuses to run as root: run the server as the postgres user.
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)
        if existing:
            self.running = self._is_running()
            if not self.running:
                self.start()
            return
        self._initdb()
        self.start()
        self._bootstrap_roles()

    def _is_running(self):
        argv = [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "status"]
        if self.as_user:
            argv = ["runuser", "-u", self.as_user, "--"] + argv
        return subprocess.run(argv, capture_output=True, cwd="/").returncode == 0

    def postmaster_pid(self):
        """The postmaster's process id from postmaster.pid, or None without one."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def alive(self):
        """True when the postmaster of this data directory is running.  Cannot fail."""
        pid = self.postmaster_pid()
        return pid is not None and _pid_alive(pid)

    def _run(self, argv, **kw):
        if self.as_user:
            argv = ["runuser", "-u", self.as_user, "--"] + argv
        # "/" as the working directory: the postgres user may not be allowed into
        # ours, and initdb and pg_ctl refuse to run where they cannot return to.
        r = subprocess.run(argv, capture_output=True, text=True, cwd="/", **kw)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def _initdb(self):
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(SUPERPASS + "\n")
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", SUPERUSER,
                   "--pwfile", pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"])
        os.unlink(pwfile)
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.dir}'",
            "password_encryption = 'scram-sha-256'",
            "max_connections = 50",
            "shared_buffers = 128MB",
            "log_min_messages = warning",
            # The test server trades durability for speed: without fsync a
            # commit still reaches the OS before it is acknowledged, so a
            # killed server (the fault tests) keeps every acknowledged
            # commit; only the machine crashing would lose them.  The
            # benchmark also drops that (async_commit), as its floors do,
            # and never kills its server.
            f"fsync = {'on' if self.fsync else 'off'}",
            f"synchronous_commit = {'off' if self.async_commit else 'on'}",
            "full_page_writes = off" if not self.fsync else "full_page_writes = on",
        ] + self.extra_conf
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")

    def start(self):
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log,
                   "-w", "-t", "60", "start"])
        self.running = True

    def stop(self, mode="fast"):
        if self.running:
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode,
                       "-w", "stop"])
            self.running = False

    def kill(self):
        """Kills the postmaster and its children with SIGKILL (a crash) and waits
        until they are gone.  The children are the processes working in the data
        directory: found before the postmaster dies, and again after, for any it
        started meanwhile."""
        pids = set(processes_in(self.data))
        pid = self.postmaster_pid()
        if pid is not None:
            pids.add(pid)
        for _ in range(2):
            for p in sorted(pids):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for _ in range(200):
                if not any(_pid_alive(p) for p in pids):
                    break
                time.sleep(0.025)
            pids = set(processes_in(self.data))
        # A killed postmaster stays a zombie until its parent (init, after pg_ctl
        # left it) reaps it, which some inits do late, and a new postmaster
        # refuses to start while the PID in its lock files (postmaster.pid, and
        # the Unix socket's) exists.  Nothing runs in the data directory any
        # more, so those lock files are stale: remove them.
        if not any(_pid_alive(p) for p in processes_in(self.data)):
            for lock in [os.path.join(self.data, "postmaster.pid")] + \
                    glob.glob(os.path.join(self.dir, ".s.PGSQL.*.lock")):
                try:
                    os.unlink(lock)
                except FileNotFoundError:
                    pass
        self.running = False

    def _bootstrap_roles(self):
        self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", user=SUPERUSER,
                  password=SUPERPASS, db="postgres")
        self.psql(f"CREATE DATABASE {DATABASE} OWNER {USER}", user=SUPERUSER,
                  password=SUPERPASS, db="postgres")

    def env(self, host="127.0.0.1"):
        """libpq environment for the function's database user."""
        return {"PGHOST": host, "PGPORT": str(self.port), "PGUSER": USER,
                "PGPASSWORD": PASSWORD, "PGDATABASE": DATABASE, "PGSSLMODE": "disable",
                "PGCONNECT_TIMEOUT": "5"}

    def url(self, host="127.0.0.1"):
        return f"postgresql://{USER}:{PASSWORD}@{host}:{self.port}/{DATABASE}?sslmode=disable"

    def client_env(self, user=USER, password=PASSWORD, db=DATABASE):
        """This process's environment with the libpq variables that reach this server as
        `user`: for psql and other clients the tests start."""
        return dict(os.environ, PGPASSWORD=password, PGHOST="127.0.0.1", PGPORT=str(self.port),
                    PGUSER=user, PGDATABASE=db, PGSSLMODE="disable")

    def superuser_env(self):
        """client_env() as the server's superuser."""
        return self.client_env(SUPERUSER, SUPERPASS)

    def psql(self, sql, user=USER, password=PASSWORD, db=DATABASE, input=None, check=True):
        """Runs SQL through psql; returns its stdout text."""
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]
        r = subprocess.run(cmd, env=self.client_env(user, password, db), capture_output=True,
                           text=True, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout

    def query(self, sql, **kw):
        """Runs one SELECT; returns its rows as a list of dicts (NULL is None)."""
        out = self.psql(f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) t", **kw)
        return json.loads(out)

    def scalar(self, sql, **kw):
        out = self.psql(sql, **kw).strip()
        return out

    def superuser(self, sql, **kw):
        """psql() as the server's superuser."""
        return self.psql(sql, user=SUPERUSER, password=SUPERPASS, **kw)

    def hold_lock(self, table, mode, seconds, timeout=20):
        """Starts a superuser psql session (application_name "locker") that takes
        `LOCK TABLE table IN mode MODE` and holds it for `seconds`; returns its Popen once
        the server shows the lock granted.  The caller ends it (wait, or kill)."""
        held = "".join(w.capitalize() for w in mode.split()) + "Lock"  # as pg_locks names it
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-c", f"BEGIN; LOCK TABLE {table} IN {mode} MODE; "
             f"SELECT pg_sleep({seconds}); COMMIT;"],
            env=dict(self.superuser_env(), PGAPPNAME="locker"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until = time.monotonic() + timeout
        while self.scalar(f"SELECT count(*) FROM pg_locks WHERE mode = '{held}' "
                          f"AND relation = '{table}'::regclass AND granted") != "1":
            if time.monotonic() > until or locker.poll() is not None:
                locker.kill()
                locker.wait()
                raise AssertionError(f"the {mode} lock on {table} was not granted "
                                     f"within {timeout} s")
            time.sleep(0.05)
        return locker

    def readable_dir(self, name):
        """A directory inside the server's data directory that the server process can read
        and write (server-side COPY to and from files); created if missing."""
        d = os.path.join(self.dir, name)
        os.makedirs(d, exist_ok=True)
        if self.as_user:
            shutil.chown(d, self.as_user, self.as_user)
        return d

    def reset(self):
        """Drops the function's tables so a test starts from an empty database."""
        self.psql("DROP TABLE IF EXISTS user_logins, login_etl_ledger, login_etl_ledger_v2, "
                  "login_etl_ledger_v3, login_etl_rejected")

    def destroy(self):
        try:
            self.stop(mode="immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


_shared = None


def server():
    """The session's shared server, started on first use, removed at exit."""
    global _shared
    if _shared is None:
        _shared = Server()
        atexit.register(_shared.destroy)
    if not _shared.running or not _shared.alive():
        # Left stopped or dead by an earlier test (a crash it caused, a kill that
        # failed half way): clear what is left of it and start it again.
        _shared.kill()
        _shared.start()
    return _shared
