"""Starting the real bootstrap under test and reading what it printed."""
import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from . import paths

# A fixed test key (never a production one): 64 bytes in hex, and its id.
MASKING_KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" \
              "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff0123456789abcdef0123456789abcdef"
MASKING_KEY_ID = "t1"

ASAN_OPTIONS = "detect_leaks=1:abort_on_error=1:halt_on_error=1:exitcode=86"
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"


def terminate(popen, grace_s=10):
    """Ends a child process as Lambda ends a runtime: SIGTERM, then SIGKILL after
    grace_s.  Returns its exit status."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return popen.returncode


# What Bootstrap runs when a test names no binary: the ASan build, unless
# test_cross_arch.py points this at the other architecture's build and qemu-user
# for the tests it reruns there.
DEFAULT = {"binary": None, "wrapper": None}


class Bootstrap:
    """The bootstrap process, with a clean environment (as in Lambda: only what
    is set here), its stdout and stderr captured in files."""

    def __init__(self, api, env=None, binary=None, valgrind=False, key=True, db=None,
                 max_invocations=None, wrapper=None):
        self.binary = str(binary or DEFAULT["binary"] or paths.ASAN)
        wrapper = wrapper or DEFAULT["wrapper"]
        e = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": api,
             "AWS_LAMBDA_FUNCTION_NAME": "login-etl-test",
             "ASAN_OPTIONS": ASAN_OPTIONS, "UBSAN_OPTIONS": UBSAN_OPTIONS}
        # The tests written for the listing of rejected records run with it; the
        # quarantine's own tests (test_quarantine.py) pass REJECTED_RECORDS=None, the
        # function's default.
        e["REJECTED_RECORDS"] = "retry"
        if key:
            e["MASKING_KEY"] = MASKING_KEY
            e["MASKING_KEY_ID"] = MASKING_KEY_ID
        if db is not None:
            e.update(db.env())
        if max_invocations is not None:
            e["LOGIN_ETL_MAX_INVOCATIONS"] = str(max_invocations)
        e.update(env or {})
        self.env = {k: v for k, v in e.items() if v is not None}
        self.dir = tempfile.mkdtemp(prefix="bootstrap-")
        # The captured output stays while the tests run (they read it after
        # the process ends) and goes when they are done.
        atexit.register(shutil.rmtree, self.dir, True)
        self.out_path = os.path.join(self.dir, "stdout")
        self.err_path = os.path.join(self.dir, "stderr")
        self.valgrind_log = os.path.join(self.dir, "valgrind.log")
        argv = [self.binary]
        if valgrind:
            argv = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                    "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
                    f"--log-file={self.valgrind_log}", "--"] + argv
        if wrapper:
            argv = wrapper + argv
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=self.env, stdout=open(self.out_path, "wb"),
                                     stderr=open(self.err_path, "wb"), stdin=subprocess.DEVNULL)

    def output(self):
        """Everything the process printed so far, stdout then stderr."""
        with open(self.out_path, "rb") as f:
            out = f.read()
        with open(self.err_path, "rb") as f:
            err = f.read()
        return (out + err).decode("utf-8", "replace")

    def logs(self):
        """The JSON log lines on stdout, parsed; anything else is returned as text."""
        lines = []
        with open(self.out_path, "rb") as f:
            for raw in f.read().decode("utf-8", "replace").splitlines():
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    lines.append(raw)
        return lines

    def metrics(self):
        """The invocations' metrics lines (not the schema drift's: test_drift.py)."""
        return [l for l in self.logs() if isinstance(l, dict) and "_aws" in l
                and "RecordsReceived" in l]

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        """Ends the process (SIGTERM, then SIGKILL) and returns its exit status."""
        return terminate(self.proc)

    def sanitizer_report(self):
        out = self.output()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in out:
                return out[out.index(marker) - 200 if out.index(marker) > 200 else 0:][:6000]
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
