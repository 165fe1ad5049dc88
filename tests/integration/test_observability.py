"""What operators correlate on: every log line of an invocation carries its
requestId, its X-Ray trace id (Lambda-Runtime-Trace-Id) when Lambda sent one,
and whether it is the execution environment's first invocation (coldStart);
the metrics line has a ColdStart metric."""
import json
import subprocess

from events.generate import event_bytes, make_event, make_messages
from rig.harness import Etl

TRACE_1 = "Root=1-674a1b2c-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"
TRACE_2 = "Root=1-674a1b2d-fedcba9876543210fedcba98;Parent=0123456789abcdef;Sampled=0"


def _lines_of(logs, request_id):
    return [l for l in logs if isinstance(l, dict) and l.get("requestId") == request_id
            and "_aws" not in l]


def test_log_lines_carry_the_trace_id_and_the_cold_start_flag():
    messages = make_messages(30, seed=41, invalid_rate=0.2)
    with Etl() as etl:
        rids = []
        for i, trace in enumerate((TRACE_1, TRACE_2, "")):  # "": no trace header at all
            batch = make_event(messages[i * 10:(i + 1) * 10], receive_count=1)
            rid = etl.emu.enqueue(event_bytes(batch), trace_id=trace)
            res = etl.emu.wait_result(rid, timeout=60)
            assert res.kind == "response", res.body[:300]
            rids.append(rid)
        logs = etl.boot.logs()
        for rid, trace, cold in zip(rids, (TRACE_1, TRACE_2, None), (True, False, False)):
            lines = _lines_of(logs, rid)
            # At least "batch done"; with rejected records also "record rejected".
            assert any(l["message"] == "batch done" for l in lines), lines
            for l in lines:
                assert l["coldStart"] is cold, l
                if trace is None:
                    assert "traceId" not in l, l
                else:
                    assert l["traceId"] == trace, l
        # Lines outside an invocation (start-up) carry neither.
        for l in logs:
            if isinstance(l, dict) and "requestId" not in l and "_aws" not in l:
                assert "traceId" not in l and "coldStart" not in l, l


def test_metrics_line_has_a_cold_start_metric():
    with Etl() as etl:
        for i in range(2):
            etl.answer(event_bytes(make_event(make_messages(5, seed=50 + i, invalid_rate=0))))
        metrics = etl.boot.metrics()
        assert [m["ColdStart"] for m in metrics] == [1, 0]
        for m in metrics:
            (directive,) = m["_aws"]["CloudWatchMetrics"]
            names = {d["Name"]: d["Unit"] for d in directive["Metrics"]}
            assert names["ColdStart"] == "Count"
            # Every declared metric has its value in the line (EMF's rule).
            assert all(isinstance(m[n], int) for n in names), json.dumps(m)


def _release(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[1]  # "login-etl <release> (<arch>)"


def test_every_line_and_the_metrics_line_carry_the_version():
    messages = make_messages(20, seed=43, invalid_rate=0.3)
    with Etl() as etl:
        release = _release(etl.boot.binary)
        assert release and release != "unknown", release
        etl.answer(event_bytes(make_event(messages)))
        logs = etl.boot.logs()
        lines = [l for l in logs if isinstance(l, dict)]
        assert len(lines) == len(logs), [l for l in logs if not isinstance(l, dict)]
        assert any(l.get("message") == "record rejected" for l in lines)
        for l in lines:
            assert l.get("version") == release, l
        (m,) = etl.boot.metrics()
        # A property of the line: neither a dimension (the metrics' cardinality stays
        # one series per function) nor a metric.
        (directive,) = m["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["FunctionName"]]
        assert "version" not in {d["Name"] for d in directive["Metrics"]}
        assert m["RecordsReceived"] == 20
    # AWS_LAMBDA_LOG_FORMAT=Text: "... key=value" lines end with version=.
    with Etl(env={"AWS_LAMBDA_LOG_FORMAT": "Text"}) as etl:
        etl.answer(event_bytes(make_event(messages[:3])))
        text = [l for l in etl.boot.logs() if isinstance(l, str) and " batch done " in l]
        assert len(text) == 1 and text[0].endswith(f" version={release}"), text
