"""The static bootstrap in an almost empty root, as Lambda runs it: only the
binary, /etc/hosts and /etc/resolv.conf; Postgres reached by host name."""
import os
import shutil
import subprocess
import tempfile

from events.generate import event_bytes, make_event, make_messages
from rig import pg, proc, runtime_api, paths


def test_static_bootstrap_in_an_empty_root_reaches_postgres_by_name():
    assert os.geteuid() == 0, "chroot needs root (CI runs as root)"
    subprocess.run(["make", "-C", str(paths.ROOT), "--no-print-directory", "build/bootstrap"],
                   check=True, capture_output=True)
    db = pg.server()
    db.reset()
    root = tempfile.mkdtemp(prefix="lambda-root-")
    try:
        os.makedirs(os.path.join(root, "etc"))
        shutil.copy(paths.RELEASE, os.path.join(root, "bootstrap"))
        with open(os.path.join(root, "etc", "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.1 login-db.internal login-db\n")
        shutil.copy("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"))
        assert sorted(os.listdir(root)) == ["bootstrap", "etc"]
        messages = make_messages(50, seed=3, invalid_rate=0)
        with runtime_api.Emulator() as emu:
            env = {"PATH": "/", "AWS_LAMBDA_RUNTIME_API": emu.address,
                   "MASKING_KEY": proc.MASKING_KEY, "MASKING_KEY_ID": proc.MASKING_KEY_ID,
                   **db.env(host="login-db.internal")}
            def enter_root():
                os.chroot(root)
                os.chdir("/")

            p = subprocess.Popen(["/bootstrap"], env=env, preexec_fn=enter_root,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                rid = emu.enqueue(event_bytes(make_event(messages)))
                res = emu.wait_result(rid, timeout=30)
                assert res.kind == "response", res.body
                assert res.json() == {"batchItemFailures": []}
            finally:
                p.kill()
                out = p.communicate()[0].decode(errors="replace")
            assert int(db.scalar("SELECT count(*) FROM user_logins")) == 50, out
    finally:
        shutil.rmtree(root, ignore_errors=True)
