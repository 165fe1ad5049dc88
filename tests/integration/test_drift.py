"""Schema drift is seen: top-level fields the rules do not know and known fields absent
are counted (RecordsDrifted, FieldsUnknown, FieldMissing by Field), and one log line names
the fields, never a value, keeping only short names of [A-Za-z0-9_.-] (a field name is a
producer's untrusted text). A record drifted (RecordsDrifted, what RecordsDriftedAlarm
watches) when it has an unknown field: a producer renaming ip drifts in every message; one
leaving out an optional field (app_version) in every message does not, its absence only
counted by FieldMissing."""
from events.generate import event_bytes, make_event
from rig.harness import Etl
from rig.messages import msg

FULL = {"user_id": "u-1", "device_type": "ios", "ip": "192.0.2.7", "device_id": "d-1",
        "locale": "en_US", "app_version": "3.1.4"}


def _drift_lines(etl):
    logs = [l for l in etl.boot.logs() if isinstance(l, dict)]
    said = [l for l in logs if l.get("message") == "schema drift"]
    emf = [l for l in logs if "_aws" in l and ("RecordsDrifted" in l or "FieldMissing" in l)]
    return said, emf


def test_a_renamed_field_and_unknown_ones_are_counted_and_named_without_values():
    renamed = dict(FULL, ip_address="203.0.113.9")
    del renamed["ip"]
    sneaky = dict(FULL, **{"203.0.113.77 secret": 1, "x" * 300: 2, "extra_flag": True})
    null_ip = dict(FULL, ip=None)  # null is not absent
    event = make_event([msg("m1", FULL), msg("m2", renamed), msg("m3", renamed),
                        msg("m4", sneaky), msg("m5", null_ip)])
    with Etl() as etl:
        assert etl.answer(event_bytes(event)) == set()
        said, emf = _drift_lines(etl)
        out = etl.boot.output()
    assert len(said) == 1, said
    line = said[0]
    assert line["records"] == 3 and line["unknownFields"] == 5
    assert line["unknown"] == "ip_address,extra_flag,other"
    assert line["missing"] == "ip=2"
    totals = [m for m in emf if "RecordsDrifted" in m]
    assert [(m["RecordsDrifted"], m["FieldsUnknown"]) for m in totals] == [(3, 5)]
    missing = [(m["Field"], m["FieldMissing"]) for m in emf if "FieldMissing" in m]
    assert missing == [("ip", 2)]
    directive = [m for m in emf if "FieldMissing" in m][0]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["FunctionName", "Field"]]
    for value in ("203.0.113.9", "203.0.113.77", "secret", "x" * 41):
        assert value not in out, value


def test_bodies_without_drift_say_nothing():
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event([msg("a", FULL), msg("b", FULL)]))) == set()
        assert _drift_lines(etl) == ([], [])


def _producer(n, change):
    """n messages of one producer whose every body is FULL changed by `change`."""
    out = []
    for i in range(n):
        body = dict(FULL, user_id=f"u-{i}", device_id=f"d-{i}")
        change(body)
        out.append(msg(f"p{i}", body))
    return out


def test_a_producer_leaving_out_app_version_does_not_drift():
    with Etl() as etl:
        event = make_event(_producer(30, lambda b: b.pop("app_version")))
        assert etl.answer(event_bytes(event)) == set()
        said, emf = _drift_lines(etl)
        assert etl.count() == 30
    assert said == [], said
    assert [m for m in emf if "RecordsDrifted" in m] == [], emf
    # The absence stays counted by field, for the dashboard.
    assert [(m["Field"], m["FieldMissing"]) for m in emf] == [("app_version", 30)], emf


def test_a_producer_renaming_ip_drifts_in_every_message():
    def rename(body):
        body["ip_address"] = body.pop("ip")
    with Etl() as etl:
        assert etl.answer(event_bytes(make_event(_producer(30, rename)))) == set()
        said, emf = _drift_lines(etl)
        out = etl.boot.output()
    assert [(l["records"], l["unknown"], l["missing"]) for l in said] == [
        (30, "ip_address", "ip=30")], said
    assert [m["RecordsDrifted"] for m in emf if "RecordsDrifted" in m] == [30], emf
    assert [(m["Field"], m["FieldMissing"]) for m in emf if "FieldMissing" in m] == [("ip", 30)]
    assert "192.0.2.7" not in out
