"""Valgrind (memcheck) on the plain build (build/plain/bootstrap: dynamic, -O1 -g, no
sanitizer; valgrind cannot see the static binary's malloc) and its verdict.

    argv = valgrind.command(log_path) + [str(paths.PLAIN)]
    v = valgrind.verdict(log_path)      # {"errors": 0, "definite": 0, ...}
    valgrind.assert_clean(log_path, exit_status)

What counts: memcheck errors (invalid reads and writes, uses of uninitialised values,
bad frees) and "definitely" or "indirectly" lost blocks.  "Still reachable" blocks at
exit (memory a library keeps in a global until the process ends) and "possibly lost"
ones are reported but do not count.  libpq, OpenSSL and glibc give a clean report when
the bootstrap exits by itself (LOGIN_ETL_MAX_INVOCATIONS), because it frees everything
it owns first: the ordinary runs need no suppression.  Runs with an allocation made to
fail (tests/integration/test_faults.py) reach error paths of OpenSSL that leak;
command(suppress=True) hides exactly those, listed with the reasons in
tests/rig/valgrind.supp.
"""
import re
import shutil
import subprocess
from pathlib import Path

from . import paths

# --soname-synonyms=somalloc=nouserintercepts: valgrind replaces glibc's malloc only,
# and leaves alone a malloc defined elsewhere (tests/rig/preload/failmalloc.c's, which
# hands the work on to glibc, so that valgrind still sees every block).
SUPPRESSIONS = Path(__file__).resolve().parent / "valgrind.supp"
ARGS = ["--error-exitcode=99", "--leak-check=full", "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite,indirect", "--num-callers=40",
        "--soname-synonyms=somalloc=nouserintercepts"]


def available():
    return shutil.which("valgrind") is not None


def require():
    if not available():
        raise AssertionError("valgrind is not installed (tools/test-deps.sh installs it)")


def plain_bootstrap():
    """build/plain/bootstrap, the build valgrind can read, made first when it is missing."""
    if not paths.PLAIN.exists():
        subprocess.run(["make", "-C", str(paths.ROOT), "--no-print-directory",
                        "build/plain/bootstrap"], check=True, stdout=subprocess.DEVNULL)
    return paths.PLAIN


def command(log_path, suppress=False):
    """The argv prefix that runs a program under memcheck, its report in log_path;
    suppress: with the suppressions for OpenSSL's leaks on allocation failure."""
    extra = [f"--suppressions={SUPPRESSIONS}"] if suppress else []
    return ["valgrind", *ARGS, *extra, f"--log-file={log_path}", "--"]


def _bytes_blocks(text, kind):
    m = re.search(kind + r": ([\d,]+) bytes in ([\d,]+) blocks", text)
    if not m:
        return 0, 0
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def verdict(log_path):
    """What the memcheck log says: errors, and the blocks of each leak kind.
    finished is False when the process did not get to valgrind's exit report (it was
    killed): then nothing about leaks is known."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    errors = re.findall(r"ERROR SUMMARY: ([\d,]+) errors", text)
    out = {"finished": "HEAP SUMMARY" in text and bool(errors),
           "errors": int(errors[-1].replace(",", "")) if errors else None,
           "text": text}
    for key, kind in (("definite", "definitely lost"), ("indirect", "indirectly lost"),
                      ("possible", "possibly lost"), ("reachable", "still reachable")):
        out[key + "_bytes"], out[key] = _bytes_blocks(text, kind)
    m = re.search(r"total heap usage: ([\d,]+) allocs", text)
    out["allocs"] = int(m.group(1).replace(",", "")) if m else None
    return out


def assert_clean(log_path, status, expect_status=0):
    """Fails unless the process exited by itself with expect_status (valgrind's own is
    99) and the log shows no error and no definite or indirect leak.  Returns the
    verdict."""
    v = verdict(log_path)
    report = v["text"][-6000:]
    assert v["finished"], f"valgrind did not finish (exit {status}):\n{report}"
    assert v["errors"] == 0, f"valgrind: {v['errors']} errors:\n{report}"
    assert v["definite"] == 0 and v["indirect"] == 0, (
        f"valgrind: {v['definite']} definitely and {v['indirect']} indirectly lost "
        f"blocks:\n{report}")
    assert status == expect_status, f"exit status {status} under valgrind:\n{report}"
    return v


def summary(v):
    """One line of a verdict, for a test's report."""
    return (f"{v['errors']} errors, {v['definite']} definitely, {v['indirect']} indirectly "
            f"and {v['possible']} possibly lost blocks, {v['reachable']} still reachable; "
            f"{v['allocs']:,} allocations")
