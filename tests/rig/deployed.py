"""A database set up exactly as docs/deploy.md ("1. The database: roles, tables, grants")
says: a fresh PostgreSQL server of its own, its SQL blocks run as written with psql, in
their order, by a master user that is no superuser (CREATEDB and CREATEROLE, like RDS's).

    db = deployed.Database(auth="secret")    # blocks 1, 2a, 3, 4; auth="iam": 2b for 2a
    db.env("login_etl")                       # libpq variables to log in as that role
    db.psql("SELECT ...", role="alice")       # stdout of psql -At
    db.destroy()
"""
import json
import os
import subprocess
import tempfile

from . import docblocks, pg

MASTER = "master"
PASSWORDS = {MASTER: "master-test-password", "login_etl": "login-etl-test-password",
             "alice": "alice-test-password"}
# What the blocks read with \getenv.
ENVIRONMENT = {"LOGIN_ETL_PASSWORD": PASSWORDS["login_etl"],
               "ANALYST_PASSWORD": PASSWORDS["alice"]}


def deploy_sql(auth):
    """docs/deploy.md's SQL blocks in order: 2a for auth "secret", 2b for "iam"."""
    skip = "-- 2b." if auth == "secret" else "-- 2a."
    out = [b for b in docblocks.blocks("docs/deploy.md", "sql") if not b.first.startswith(skip)]
    numbers = [b.first.split(".")[0] for b in out]
    assert numbers == ["-- 1", "-- 2a" if auth == "secret" else "-- 2b", "-- 3", "-- 4"], \
        f"docs/deploy.md's SQL blocks are no longer 1, 2a/2b, 3, 4: {out}"
    return out


class Database:
    def __init__(self, auth="secret"):
        self.srv = pg.Server()
        try:
            self._fresh(auth)
            for block in deploy_sql(auth):
                r = self.run_file(block.text, MASTER, "postgres", extra_env=ENVIRONMENT)
                if r.returncode != 0:
                    raise AssertionError(f"{block.where()} failed as written:\n{r.stderr}")
        except BaseException:
            self.srv.destroy()
            raise

    def _fresh(self, auth):
        """Takes back what the rig adds to a new server (its role and database), and adds
        the master user (and, for IAM, RDS's rds_iam role, which the master user may grant)."""
        su = dict(user=pg.SUPERUSER, password=pg.SUPERPASS, db="postgres")
        self.srv.psql(f"DROP DATABASE {pg.DATABASE}", **su)
        self.srv.psql(f"DROP ROLE {pg.USER}", **su)
        self.srv.psql(f"CREATE ROLE {MASTER} LOGIN CREATEDB CREATEROLE "
                      f"PASSWORD '{PASSWORDS[MASTER]}'", **su)
        if auth == "iam":
            # RDS's master user may grant rds_iam on every version (block 2b does): it
            # holds the role WITH ADMIN OPTION through rds_superuser.  CREATEROLE alone
            # was enough up to PostgreSQL 15; from 16 on (Debian 13 installs 17) only a
            # role with ADMIN OPTION may grant a role it did not create.
            self.srv.psql("CREATE ROLE rds_iam NOLOGIN", **su)
            self.srv.psql(f"GRANT rds_iam TO {MASTER} WITH ADMIN OPTION", **su)

    def env(self, role, db="logins"):
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.srv.port), "PGUSER": role,
                "PGPASSWORD": PASSWORDS[role], "PGDATABASE": db, "PGSSLMODE": "disable",
                "PGCONNECT_TIMEOUT": "5"}

    def run_file(self, sql, role, db="logins", extra_env=None):
        """Runs a psql script (meta-commands allowed) as role; returns the CompletedProcess."""
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(sql)
        try:
            env = dict(os.environ, **self.env(role, db), **(extra_env or {}))
            return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-f",
                                   f.name], env=env, capture_output=True, text=True,
                                  timeout=120)
        finally:
            os.unlink(f.name)

    def psql(self, sql, role=MASTER):
        """stdout of an SQL text run as role; raises when it fails."""
        r = self.run_file(sql, role)
        if r.returncode != 0:
            raise RuntimeError(f"psql as {role} failed: {r.stderr.strip()}")
        return r.stdout

    def refused(self, sql, role):
        """The error of an SQL text that must fail as role (AssertionError if it runs)."""
        r = self.run_file(sql, role)
        assert r.returncode != 0, f"{role} may run: {sql}"
        return r.stderr

    def query(self, sql, role=MASTER):
        """Rows of one SELECT as dicts (pg.Server.query's form, for rig.exactly_once)."""
        return json.loads(self.psql(f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({sql}) t",
                                    role))

    def scalar(self, sql, role=MASTER):
        return self.psql(sql, role).strip()

    def destroy(self):
        self.srv.destroy()
