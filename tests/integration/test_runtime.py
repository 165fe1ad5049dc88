"""The Runtime API client (runtime/rt.c, runtime/http.c, runtime/http_parse.c) driven for real:
build/asan/rig/rt_echo against tests/rig/runtime_api.py in every variant, plus
one valgrind session of a plain build.

rt_echo answers {"len":N,"sum":S,...} (S: sum of the event's bytes mod 2^32),
so every test checks that the exact bytes arrived.

    tests/run.py -k test_runtime            (or -k test_runtime.NAME)
"""
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from rig import paths, runtime_api

ROOT = paths.ROOT
ECHO = paths.BUILD / "asan" / "rig" / "rt_echo"
LIMIT = 6 * 1024 * 1024
SECRET = b"PII-MARKER-424cdd21"  # put in events; must never show up in a log

if not ECHO.exists():
    subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "build/asan/rig/rt_echo"],
                   check=True, stdout=subprocess.DEVNULL)


class Echo:
    """An rt_echo process with its output in temporary files."""

    def __init__(self, address, *args, env=None, binary=ECHO, wrapper=()):
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        e = dict(os.environ, AWS_LAMBDA_RUNTIME_API=address)
        e.pop("_X_AMZN_TRACE_ID", None)
        e.update(env or {})
        self.proc = subprocess.Popen([*wrapper, str(binary), *args], env=e, stdout=self.out,
                                     stderr=self.err)

    def wait(self, timeout=30):
        """Waits for the exit; checks the output; returns the exit status."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"rt_echo still running after {timeout}s\n{self.logs()}")
        self.check_output()
        return rc

    def text(self, f):
        f.seek(0)
        return f.read().decode(errors="replace")

    def logs(self):
        return f"--- stdout\n{self.text(self.out)[-3000:]}\n--- stderr\n{self.text(self.err)[-3000:]}"

    def log_lines(self):
        return [json.loads(line) for line in self.text(self.out).splitlines() if line.strip()]

    def check_output(self):
        out, err = self.text(self.out), self.text(self.err)
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehavior"):
            assert bad not in err, f"sanitizer report\n{self.logs()}"
        assert SECRET.decode() not in out + err, "event contents in the logs"
        for line in out.splitlines():  # one JSON object a line
            if line.strip():
                json.loads(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


def event_bytes(n, seed=0):
    """n bytes of event: JSON-ish text with the secret marker, padded at random."""
    head = b'{"Records":[{"body":"' + SECRET + b'"}],"pad":"'
    if n <= len(head) + 2:
        return (head + b'"}')[:n]
    rnd = random.Random(seed)
    pad = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(min(n, 4096)))
    body = (pad * (n // len(pad) + 1))[: n - len(head) - 2]
    return head + body + b'"}'


def check_echo(res, event):
    assert res.kind == "response", res
    j = res.json()
    assert j["len"] == len(event), (j["len"], len(event))
    assert j["sum"] == sum(event) & 0xFFFFFFFF, "event bytes differ"
    assert j["request_id"] == res.request_id, j
    return j


def run_session(emu, events, *args, timeout=60, env=None):
    """Runs rt_echo for exactly len(events) invocations; returns the results."""
    with Echo(emu.address, "--max", str(len(events)), *args, env=env) as echo:
        rids = [emu.enqueue(e) for e in events]
        results = [emu.wait_result(r, timeout) for r in rids]
        assert echo.wait(timeout) == 0, echo.logs()
        for e, r in zip(events, results):
            if not e.startswith(b"ERROR"):
                check_echo(r, e)
        return results, echo


SIZES = [0, 1, 2, 17, 1000, 65535, 65536, 65537, 300_000]


def test_several_invocations_on_one_connection():
    with runtime_api.Emulator() as emu:
        events = [event_bytes(n, i) for i, n in enumerate(SIZES * 3)]
        run_session(emu, events)
        assert emu.connections == 1, f"{emu.connections} connections: keep-alive not used"
        assert len(emu.next_requests) == len(events)


def test_invocation_headers_reach_the_handler():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address, "--max", "4") as echo:
            arn = "arn:aws:lambda:eu-west-1:123456789012:function:login-etl:live"
            rid = emu.enqueue(b"{}", deadline_ms=1893456000123, function_arn=arn,
                              request_id="a/b c%d?+&#x")
            j = emu.wait_result(rid, 30).json()
            assert j["deadline_ms"] == 1893456000123 and j["function_arn"] == arn, j
            assert j["request_id"] == "a/b c%d?+&#x", j  # percent-encoded in the path
            # A malformed deadline: the handler gets now + 15 min and a warning is logged.
            rid = emu.enqueue(b"{}", deadline_ms="soon")
            j = emu.wait_result(rid, 30).json()
            now = int(time.time() * 1000)
            assert now + 14 * 60_000 < j["deadline_ms"] < now + 16 * 60_000, j
            rid = emu.enqueue(b"{}", deadline_ms="-5")
            emu.wait_result(rid, 30)
            # 0 is no deadline either: the runtime alone decides what that means.
            rid = emu.enqueue(b"{}", deadline_ms="0")
            j = emu.wait_result(rid, 30).json()
            now = int(time.time() * 1000)
            assert now + 14 * 60_000 < j["deadline_ms"] < now + 16 * 60_000, j
            assert echo.wait() == 0
            assert any("Deadline" in line["message"] for line in echo.log_lines())


def test_chunked_bodies():
    with runtime_api.Emulator() as emu:
        emu.chunked = True
        events = [event_bytes(n, i) for i, n in enumerate(SIZES)]
        run_session(emu, events)
        emu.chunk_ext = True
        run_session(emu, events[:5])


def test_lowercase_header_names():
    with runtime_api.Emulator() as emu:
        emu.lowercase_headers = True
        events = [event_bytes(n, i) for i, n in enumerate(SIZES)]
        results, _ = run_session(emu, events)
        emu.chunked = True
        run_session(emu, events)


def test_server_closes_after_each_answer_silently():
    with runtime_api.Emulator() as emu:
        emu.close_after_response = True
        events = [event_bytes(n, i) for i, n in enumerate(SIZES)]
        run_session(emu, events)
        # Every /next and every post had to find a fresh connection.
        assert emu.connections >= 2 * len(events), emu.connections


def test_server_closes_after_each_answer_with_header():
    with runtime_api.Emulator() as emu:
        emu.close_after_response = True
        emu.close_header = True
        events = [event_bytes(n, i) for i, n in enumerate(SIZES)]
        run_session(emu, events)
        assert emu.connections == 2 * len(events), emu.connections
        emu.close_after_response = False
        emu.keepalive = False
        emu.chunked = True
        run_session(emu, events)


def test_5mb_event():
    with runtime_api.Emulator() as emu:
        big = event_bytes(5 * 1024 * 1024, 7)
        run_session(emu, [big, b"{}", big])
        emu.chunked = True
        run_session(emu, [big, b"{}"])


def test_event_over_the_limit_gets_an_error_and_the_loop_goes_on():
    with runtime_api.Emulator() as emu:
        exact = event_bytes(LIMIT, 1)
        over = event_bytes(LIMIT + 1, 2)
        with Echo(emu.address, "--max", "6") as echo:
            for chunked in (False, True):
                emu.chunked = chunked
                r_over = emu.enqueue(over)
                r_next = emu.enqueue(b'{"after":"over"}')
                r_exact = emu.enqueue(exact)
                res = emu.wait_result(r_over, 60)
                assert res.kind == "error", res
                assert res.headers["lambda-runtime-function-error-type"] == \
                    "Runtime.PayloadTooLarge", res.headers
                j = res.json()
                assert j["errorType"] == "Runtime.PayloadTooLarge" and j["errorMessage"], j
                check_echo(emu.wait_result(r_next, 60), b'{"after":"over"}')
                check_echo(emu.wait_result(r_exact, 60), exact)
            assert echo.wait(60) == 0, echo.logs()


def test_drop_mid_body_then_normal_service():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address, "--max", "4") as echo:
            for chunked in (False, True):
                emu.chunked = chunked
                emu.drop_mid_body_once = True
                ev = event_bytes(200_000, 3)
                rid = emu.enqueue(ev)
                check_echo(emu.wait_result(rid, 30), ev)
                rid = emu.enqueue(b"{}")
                check_echo(emu.wait_result(rid, 30), b"{}")
            assert echo.wait() == 0, echo.logs()
        # each dropped /next was asked again
        assert len(emu.next_requests) >= 6, emu.next_requests


def test_response_post_failing_then_redelivered():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address, "--max", "4") as echo:
            for close in (False, True):
                emu.close_after_response = close  # the failing post on a reused or fresh conn
                emu.fail_response_once = True
                ev = event_bytes(1000, 4)
                rid = emu.enqueue(ev)
                new = emu.wait_redelivery(rid, 30)
                check_echo(emu.wait_result(new, 30), ev)
                assert rid not in emu.results
            assert echo.wait() == 0, echo.logs()


def test_handler_error_and_oversized_answer():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address, "--max", "3") as echo:
            rid = emu.enqueue(b"ERROR please " + SECRET)
            res = emu.wait_result(rid, 30)
            assert res.kind == "error"
            assert res.headers["lambda-runtime-function-error-type"] == "TestError"
            j = res.json()
            assert j == {"errorMessage": "the event asked for an error (32 bytes)",
                         "errorType": "TestError"}, j
            rid = emu.enqueue(b"BIGANSWER")
            res = emu.wait_result(rid, 30)
            assert res.kind == "error" and res.json()["errorType"] == "Runtime.ResponseTooLarge"
            rid = emu.enqueue(b"{}")
            check_echo(emu.wait_result(rid, 30), b"{}")
            assert echo.wait() == 0, echo.logs()
            errors = [l for l in echo.log_lines() if l["level"] == "ERROR"]
            assert any(l.get("errorType") == "TestError" and l.get("requestId") for l in errors)


def test_trace_id_is_exported_to_the_handler():
    with runtime_api.Emulator() as emu:
        trace = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
        with Echo(emu.address, "--max", "4", env={"_X_AMZN_TRACE_ID": "inherited"}) as echo:
            j = emu.wait_result(emu.enqueue(b"{}", trace_id=trace), 30).json()
            assert j["trace_id"] == trace and j["env_trace"] == trace, j
            j = emu.wait_result(emu.enqueue(b"{}", trace_id=""), 30).json()
            assert j["trace_id"] == "" and j["env_trace"] is None, j  # unset when absent
            j = emu.wait_result(emu.enqueue(b"{}", trace_id="Root=2"), 30).json()
            assert j["env_trace"] == "Root=2", j
            j = emu.wait_result(emu.enqueue(b"{}"), 30).json()
            assert j["env_trace"].startswith("Root=1-"), j
            assert echo.wait() == 0, echo.logs()


def test_next_without_request_id_is_skipped():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address, "--max", "1") as echo:
            emu.enqueue(b"{}", request_id="")
            rid = emu.enqueue(b'{"second":1}')
            check_echo(emu.wait_result(rid, 30), b'{"second":1}')
            assert echo.wait() == 0, echo.logs()
            assert any("request id" in l["message"] for l in echo.log_lines()), echo.logs()


def test_init_error():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address, "--init-fail") as echo:
            err = emu.wait_init_error(10)
            assert echo.wait() != 0
        assert err.headers["lambda-runtime-function-error-type"] == "TestInitError"
        j = err.json()
        assert j["errorType"] == "TestInitError" and "initialisation" in j["errorMessage"], j


def test_api_not_listening_at_start():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Echo(f"127.0.0.1:{port}", "--max", "2") as echo:
        time.sleep(0.3)
        assert echo.proc.poll() is None, "gave up at once"
        with runtime_api.Emulator(port=port) as emu:
            for i in range(2):
                check_echo(emu.wait_result(emu.enqueue(b"late %d" % i), 30), b"late %d" % i)
            assert echo.wait() == 0, echo.logs()
            warns = [l for l in echo.log_lines() if l["message"] == "cannot connect"]
            assert warns, echo.logs()


def test_api_gone_for_good():
    with runtime_api.Emulator() as emu:
        with Echo(emu.address) as echo:
            check_echo(emu.wait_result(emu.enqueue(b"{}"), 30), b"{}")
            emu.wait_polling(2)
            emu.close()
            t0 = time.monotonic()
            rc = echo.wait(30)
            took = time.monotonic() - t0
            assert rc != 0
            assert took < 15, f"took {took:.1f}s to give up"
            msgs = [l["message"] for l in echo.log_lines()]
            assert msgs.count("cannot connect") == 10, msgs
            assert "runtime loop stopped" in msgs


def test_broken_api_does_not_make_it_spin():
    """A listener that accepts and closes at once, or answers 500."""
    for mode in ("close", "500"):
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(64)
        accepted = []

        def serve():
            while True:
                try:
                    c, _ = lst.accept()
                except OSError:
                    return
                accepted.append(time.monotonic())
                if mode == "500":
                    c.recv(65536)
                    c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                c.close()

        threading.Thread(target=serve, daemon=True).start()
        try:
            with Echo("127.0.0.1:%d" % lst.getsockname()[1]) as echo:
                t0 = time.monotonic()
                assert echo.wait(30) != 0
                took = time.monotonic() - t0
        finally:
            lst.close()
        if mode == "close":
            assert 2 < took < 15 and len(accepted) <= 12, (took, len(accepted))
        else:
            assert took < 5 and len(accepted) == 1, (took, len(accepted))


def _serve_canned(responses):
    """A listener that answers its i-th connection's first request with
    responses[i] and closes it; after the last it stops listening.  Returns
    (address, list of requests received, thread)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    got = []

    def read_request(c):
        data = b""
        while b"\r\n\r\n" not in data:
            piece = c.recv(65536)
            if not piece:
                return data
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
                while len(body) < n:
                    piece = c.recv(65536)
                    if not piece:
                        break
                    body += piece
        return head

    def serve():
        try:
            for r in responses:
                c, _ = lst.accept()
                c.settimeout(10)
                try:
                    got.append(read_request(c).split(b"\r\n")[0])
                    c.sendall(r)
                    c.shutdown(socket.SHUT_WR)
                    c.recv(1)
                except OSError:
                    pass
                finally:
                    c.close()
        finally:
            lst.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return "127.0.0.1:%d" % lst.getsockname()[1], got, t


def test_hostile_api_responses_do_not_crash_it():
    ok_next = (b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: id-1\r\n"
               b"Content-Length: 2\r\n\r\n{}")
    h = b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: id-2\r\n"
    batches = [
        [b"garbage\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
         h + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
         h + b"Content-Length: -1\r\n\r\n", h + b"Content-Length: 100\r\n\r\nonly ten..",
         b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
         h + b"X: a\r\n folded\r\nContent-Length: 0\r\n\r\n"],
        [h + b"X: a\rb\r\nContent-Length: 0\r\n\r\n", h + b"X: a\0b\r\nContent-Length: 0\r\n\r\n",
         h + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
         h + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
         h + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
         h + b"Transfer-Encoding: gzip\r\n\r\n",
         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",  # no request id
         b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: " + b"x" * 2000 +
         b"\r\nContent-Length: 0\r\n\r\n"],
        # invocations whose posts get hostile answers; the event over the limit
        # is refused with an /error post that gets garbage back
        [ok_next, b"HTTP/1.1 202 Accepted\r\nContent-Length: 99999999\r\n\r\n{}", ok_next,
         b"nonsense", h + b"Content-Length: 99999999999\r\n\r\n", b"HTTP/1.1 4",
         ok_next, b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         ok_next, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"],
    ]
    for batch in batches:
        address, got, t = _serve_canned(batch)
        with Echo(address) as echo:
            assert echo.wait(30) != 0, echo.logs()
            t.join(5)
            assert len(got) == len(batch), (len(got), len(batch), echo.logs())
            assert echo.log_lines(), "nothing logged"


def test_emulator_answers_like_aws():
    import http.client
    with runtime_api.Emulator() as emu:
        c = http.client.HTTPConnection(emu.host, emu.port, timeout=10)
        c.request("POST", runtime_api.PREFIX + "/invocation/nope/response", body=b"{}")
        r = c.getresponse()
        assert r.status == 400 and json.loads(r.read())["errorType"] == "InvalidRequestID"
        c.request("GET", runtime_api.PREFIX + "/nothing")
        r = c.getresponse()
        r.read()
        assert r.status == 404
        rid = emu.enqueue({"a": 1})
        c.request("GET", runtime_api.PREFIX + "/invocation/next")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read()) == {"a": 1}
        assert r.getheader("Lambda-Runtime-Aws-Request-Id") == rid
        for status in (202, 400):  # a second answer for the same id is refused
            c.request("POST", runtime_api.PREFIX + f"/invocation/{rid}/response", body=b"ok")
            r = c.getresponse()
            r.read()
            assert r.status == status, r.status
        assert emu.wait_result(rid, 1).body == b"ok"
        c.close()


def test_throughput_small_events():
    """A figure, not a gate: invocations a second through the emulator (ASan build)."""
    n = 2000
    with runtime_api.Emulator() as emu:
        rids = [emu.enqueue(b'{"Records":[]}') for _ in range(n)]
        t0 = time.monotonic()
        with Echo(emu.address, "--max", str(n)) as echo:
            assert echo.wait(120) == 0, echo.logs()
        took = time.monotonic() - t0
        assert all(emu.results[r].kind == "response" for r in rids)
        print(f"     {n} invocations in {took:.2f}s: {n / took:.0f}/s (asan build)")


def test_valgrind_session():
    if not shutil.which("valgrind"):
        raise AssertionError("valgrind is not installed (tools/test-deps.sh installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "rt_echo_plain"
        srcs = sorted(str(p) for d in ("base", "runtime") for p in (ROOT / d).glob("*.c"))
        subprocess.run(["gcc", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g",
                        "-Ibase", "-Iruntime", *srcs, "tests/rig/rt_echo.c", "-o", str(exe)],
                       cwd=ROOT, check=True)
        vg = ["valgrind", "--error-exitcode=99", "--leak-check=full",
              "--errors-for-leak-kinds=definite,indirect", "--track-fds=no", "-q"]
        with runtime_api.Emulator() as emu:
            big = event_bytes(5 * 1024 * 1024, 9)
            plan = [  # (variant settings, event)
                ({}, b"{}"), ({}, big), ({}, event_bytes(LIMIT + 1, 10)), ({}, b"ERROR x"),
                ({}, b"BIGANSWER"), ({"chunked": True}, event_bytes(100_000, 11)),
                ({"chunked": True, "lowercase_headers": True}, b"{}"),
                ({"close_after_response": True}, b"{}"), ({"drop_mid_body_once": True}, b"{}"),
                ({"fail_response_once": True}, b"{}"), ({}, event_bytes(3000, 12)),
            ]
            n = len(plan) + 1  # the redelivered event is one more invocation
            with Echo(emu.address, "--max", str(n), binary=exe, wrapper=vg) as echo:
                for settings, ev in plan:
                    emu.chunked = emu.lowercase_headers = emu.close_after_response = False
                    for k, v in settings.items():
                        setattr(emu, k, v)
                    rid = emu.enqueue(ev)
                    if settings.get("fail_response_once"):
                        rid = emu.wait_redelivery(rid, 60)
                    emu.wait_result(rid, 120)
                rc = echo.wait(120)
                assert rc == 0, f"valgrind exit {rc}\n{echo.logs()}"
                assert echo.text(echo.err).strip() == "", echo.logs()
