"""The test rig: real parts started by the tests themselves (a private PostgreSQL, a Lambda
Runtime API emulator, the real bootstrap, pgbouncer, an RDS IAM token check) and the
independent oracles the results are compared with.  tests/README.md ("The rig") lists the
parts and what the fixtures guarantee.
"""
