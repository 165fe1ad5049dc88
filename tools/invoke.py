#!/usr/bin/env python3
"""`make invoke EVENT=events/batch.json`: one event through the real bootstrap
against the demo's database, printed the way `sam local invoke` prints it:
the function's log lines between START and END, a REPORT line, then the
answer JSON alone on stdout (so `make invoke ... | jq` works).

No AWS account and no Docker: the demo's private PostgreSQL (tools/demo.py,
kept in .demo/, started here when it is not running), the demo's masking key
(.demo/masking-key, key id "demo"), and the Runtime API emulator of the tests.
The REPORT line's figures are this machine's: Init Duration is process start to
the first /next, Duration is event handed over to answer posted, Max Memory
Used is the process's peak resident set.

    python3 tools/invoke.py events/batch.json [--bootstrap build/bootstrap] [--timeout 60]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

import demo  # noqa: E402
from rig import runtime_api  # noqa: E402

FUNCTION_NAME = "login-etl-local"
MEMORY_MB = 512  # what template.yaml's MemorySize defaults to; nothing is limited here


def main():
    ap = argparse.ArgumentParser(description="one event through bootstrap, like sam local invoke")
    ap.add_argument("event", help="a JSON event file, e.g. events/batch.json")
    ap.add_argument("--bootstrap", default=str(ROOT / "build" / "bootstrap"))
    ap.add_argument("--timeout", type=int, default=60, help="the function timeout, seconds")
    args = ap.parse_args()

    event = Path(args.event).read_bytes()
    try:
        json.loads(event)
    except ValueError as e:
        sys.exit(f"invoke: {args.event} is not JSON: {e}")

    db = demo.demo_db()  # started when it is not running
    print(f"invoke: demo database {db.url().replace(demo.pg.PASSWORD, '***')}", file=sys.stderr)
    emu = runtime_api.Emulator()
    env = dict(db.env(), PATH="/usr/bin:/bin", AWS_LAMBDA_RUNTIME_API=emu.address,
               AWS_LAMBDA_FUNCTION_NAME=FUNCTION_NAME, MASKING_KEY=demo.demo_key(),
               MASKING_KEY_ID="demo", LOGIN_ETL_MAX_INVOCATIONS="1")
    t0 = time.monotonic()
    proc = subprocess.Popen([args.bootstrap], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        emu.wait_polling(1, timeout=30)
        init_ms = (emu.next_requests[0][0] - t0) * 1000
        rid = emu.enqueue(event, timeout_s=args.timeout)
        sent = time.monotonic()
        res = emu.wait_result(rid, timeout=args.timeout + 30)
        duration_ms = (res.time - sent) * 1000
        # LOGIN_ETL_MAX_INVOCATIONS=1: the process exits after its answer.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        logs = proc.stdout.read().decode("utf-8", "replace")
    except TimeoutError as e:
        proc.kill()
        logs = proc.stdout.read().decode("utf-8", "replace")
        sys.stderr.write(logs)
        sys.exit(f"invoke: {e}")
    finally:
        emu.close()

    err = sys.stderr
    print(f"START RequestId: {rid} Version: $LATEST", file=err)
    err.write(logs)
    print(f"END RequestId: {rid}", file=err)
    print(f"REPORT RequestId: {rid}\tInit Duration: {init_ms:.2f} ms\tDuration: {duration_ms:.2f} ms"
          f"\tBilled Duration: {math.ceil(duration_ms)} ms\tMemory Size: {MEMORY_MB} MB"
          f"\tMax Memory Used: {math.ceil(usage.ru_maxrss / 1024)} MB", file=err)
    sys.stdout.write(res.body.decode("utf-8", "replace") if isinstance(res.body, bytes) else res.body)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0 if res.kind == "response" else 1


if __name__ == "__main__":
    sys.exit(main())
