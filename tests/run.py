#!/usr/bin/env python3
"""The one test runner: C unit tests, libFuzzer smoke runs and the Python
integration tests that drive the real bootstrap.  Ends with the line
`N passed, N failed` and exits non-zero when anything failed.

    tests/run.py                       everything
    tests/run.py --only integration    one kind (unit, fuzz, integration)
    tests/run.py -k replay             only tests whose name contains "replay"
"""
import argparse
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT))
# The tools the tests run from Python packages (moto_server, cfn-lint) are the
# ones next to this interpreter: build/venv/bin when `make test` runs it
# (tools/venv.sh installed them there), first on PATH for every child process.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

results = []  # (kind, name, ok, seconds, detail)


def record(kind, name, ok, seconds, detail=""):
    results.append((kind, name, ok, seconds, detail))
    mark = "ok  " if ok else "FAIL"
    print(f"{mark} {kind:<11} {name} ({seconds:.1f}s)", flush=True)
    if not ok and detail:
        print("     " + detail.rstrip().replace("\n", "\n     "), flush=True)


def selected(name, args):
    return not args.k or any(k in name for k in args.k)


def run_unit(args):
    from rig import paths
    _run_unit_dir(args, ROOT / "build" / "asan" / "tests", [], "", "make test-build")
    # The other architecture's static unit tests under qemu-user (make cross-test-build).
    _run_unit_dir(args, paths.CROSS_TESTS, [paths.QEMU], f"{paths.OTHER_ARCH} ",
                  "make cross-test-build")


def _run_unit_dir(args, directory, wrapper, prefix, how):
    bins = sorted(directory.glob("test_*"))
    if not bins:
        record("unit", f"{prefix}build", False, 0, f"no unit test binaries in {directory}: run `{how}`")
    for b in bins:
        if not b.is_file() or not os.access(b, os.X_OK):
            continue
        t0 = time.time()
        r = subprocess.run(wrapper + [str(b)], capture_output=True, text=True, timeout=600)
        dt = time.time() - t0
        cases = 0
        for line in r.stdout.splitlines():
            m = re.match(r"(ok|not ok) - (.*)", line)
            if not m:
                continue
            name = f"{prefix}{b.name}: {m.group(2)}"
            if not selected(name, args):
                continue
            cases += 1
            detail = "\n".join(l for l in r.stdout.splitlines()
                               if l.startswith("#   ") and m.group(2) in l)
            record("unit", name, m.group(1) == "ok", 0.0, detail)
        if r.returncode != 0 and (cases == 0 or "not ok" not in r.stdout):
            # Crashed (a sanitizer report) rather than failing a case.
            record("unit", f"{prefix}{b.name} (process)", False, dt,
                   f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")


def run_fuzz(args):
    bins = sorted((ROOT / "build" / "fuzz" / "bin").glob("fuzz_*"))
    for b in bins:
        name = f"{b.name} for {args.fuzz_seconds}s"
        if not selected(name, args):
            continue
        seeds = TESTS / "fuzz" / "corpus" / b.name.removeprefix("fuzz_")
        work = Path(tempfile.mkdtemp(prefix="fuzz-"))
        try:
            corpus = work / "corpus"
            if seeds.is_dir():
                shutil.copytree(seeds, corpus)
            else:
                corpus.mkdir()
            t0 = time.time()
            cmd = [str(b), str(corpus), f"-max_total_time={args.fuzz_seconds}",
                   "-rss_limit_mb=2048", "-timeout=10", f"-artifact_prefix={work}/",
                   "-print_final_stats=1"]
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=args.fuzz_seconds + 300)
            dt = time.time() - t0
            runs = re.findall(r"stat::number_of_executed_units:\s+(\d+)", r.stderr)
            crashes = list(work.glob("crash-*")) + list(work.glob("leak-*")) + \
                list(work.glob("timeout-*")) + list(work.glob("oom-*"))
            ok = r.returncode == 0 and not crashes
            detail = "" if ok else r.stderr[-4000:]
            if crashes:
                keep = ROOT / "build" / "fuzz" / "crashes"
                keep.mkdir(parents=True, exist_ok=True)
                for c in crashes:
                    shutil.copy(c, keep / f"{b.name}-{c.name}")
                detail += f"\ncrash inputs kept in {keep}"
            record("fuzz", f"{name}, {runs[0] if runs else '?'} runs", ok, dt, detail)
        finally:
            shutil.rmtree(work, ignore_errors=True)


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("test took longer than its time limit")


def run_integration(args):
    signal.signal(signal.SIGALRM, _alarm)
    for path in sorted((TESTS / "integration").glob("test_*.py")):
        modname = f"integration.{path.stem}"
        try:
            mod = importlib.import_module(modname)
        except Exception:
            record("integration", path.stem, False, 0, traceback.format_exc())
            continue
        tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)
                 and getattr(f, "__module__", None) == mod.__name__]
        tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
        for n, f in tests:
            name = f"{path.stem}.{n}"
            if not selected(name, args):
                continue
            limit = getattr(f, "time_limit", 300)
            t0 = time.time()
            signal.alarm(limit)
            try:
                f()
                ok, detail = True, ""
            except Exception:
                ok, detail = False, traceback.format_exc()
            finally:
                signal.alarm(0)
            record("integration", name, ok, time.time() - t0, detail)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["unit", "fuzz", "integration"], action="append")
    ap.add_argument("-k", action="append", help="run only tests whose name contains this")
    ap.add_argument("--fuzz-seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 20)))
    args = ap.parse_args()
    kinds = args.only or ["unit", "fuzz", "integration"]
    t0 = time.time()
    if "unit" in kinds:
        run_unit(args)
    if "fuzz" in kinds:
        run_fuzz(args)
    if "integration" in kinds:
        run_integration(args)
    passed = sum(1 for r in results if r[2])
    failed = len(results) - passed
    if failed:
        print("\nFailed:")
        for kind, name, ok, _, _ in results:
            if not ok:
                print(f"  {kind} {name}")
    print(f"\n({time.time() - t0:.0f}s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
