"""The test rig: real parts started by the tests themselves.

- paths: where the builds are
- pg: a private PostgreSQL server (initdb in a temporary directory, loopback, SCRAM)
- runtime_api: a Lambda Runtime API emulator that drives the real bootstrap
- pgbouncer: a private pgbouncer in front of a pg server (transaction pooling)
- statement_log: the server's CSV statement log, and what in it is session state
- proc: starting the bootstrap with a clean environment and collecting its output
"""
