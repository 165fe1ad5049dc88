"""The sample events in events/ (the ones `sam local invoke -e` takes) run
through the real bootstrap, each with the answer events/README.md promises."""
import json

from events.generate import SAMPLE_ANSWERS
from rig import expect, paths
from rig.harness import Etl, row_key


def _load(name):
    return (paths.EVENTS / name).read_bytes()


def _expected_rows(event):
    rows = []
    for r in event["Records"]:
        row = expect.row(r["body"], int(r["attributes"]["SentTimestamp"]))
        if row is not None:
            rows.append(row)
    return sorted(rows, key=row_key)


def test_batch_then_replay_then_fifo_then_empty():
    with Etl() as etl:
        batch = _load("batch.json")
        assert etl.answer(batch) == set(SAMPLE_ANSWERS["batch.json"])
        want = _expected_rows(json.loads(batch))
        assert sorted(etl.rows(), key=row_key) == want
        # The replayed batch (same messageIds, received again) adds nothing.
        assert etl.answer(_load("replay.json")) == set(SAMPLE_ANSWERS["replay.json"])
        assert etl.count() == len(want)
        # FIFO: the third record fails, so it and everything after it are listed.
        fifo = _load("fifo.json")
        assert etl.answer(fifo) == set(SAMPLE_ANSWERS["fifo.json"])
        records = json.loads(fifo)["Records"]
        assert etl.count() == len(want) + 2 and len(records) == 5
        assert etl.answer(_load("empty.json")) == set()
        assert etl.count() == len(want) + 2


def test_batch_spans_midnight_utc():
    # create_date comes from SentTimestamp in UTC, not from the time of processing.
    with Etl() as etl:
        etl.answer(_load("batch.json"))
        dates = {r["create_date"] for r in etl.rows()}
        assert dates == {"2024-06-10", "2024-06-11"}, dates
