"""What "no row lost, none written twice" means, checked against the database.

A test keeps a Sent book of every message it handed to the function (in any event, any
number of times); once every message SQS would still redeliver has been redelivered until
it was answered as done, user_logins must hold exactly one row for each valid message
(compared column by column with tests/rig/expect.py) and the ledger exactly its messageId.

    book = exactly_once.Sent()
    book.add(messages)                               # message dicts as events/generate.py makes
    listed = exactly_once.listed_for(messages)       # what an answer must list
    exactly_once.assert_database(db, book)           # db: rig.pg.Server
"""
from . import expect
from .harness import ROW_COLUMNS, row_key


def is_valid(message):
    return expect.row(message["body"], message["sentTimestamp"]) is not None


def listed_for(messages, fifo=False):
    """The messageIds an answer must list for these records, on a healthy database:
    the rejected ones; with FIFO, every record from the first rejected one on."""
    out = set()
    stopped = False
    for m in messages:
        if stopped or not is_valid(m):
            out.add(m["messageId"])
            stopped = stopped or fifo
    return out


class Sent:
    """Every message handed to the function, by messageId (the first body sent wins: a
    redelivery carries the same body)."""

    def __init__(self):
        self.messages = {}

    def add(self, messages):
        for m in messages:
            self.messages.setdefault(m["messageId"], m)

    def valid(self):
        return [m for m in self.messages.values() if is_valid(m)]

    def expected_rows(self):
        return sorted((expect.row(m["body"], m["sentTimestamp"]) for m in self.valid()),
                      key=row_key)


def assert_database(db, book, where=""):
    """user_logins and login_etl_ledger hold exactly one row for each valid message of
    the book, and nothing else."""
    cols = ", ".join(ROW_COLUMNS).replace("create_date", "create_date::text AS create_date")
    got = sorted(db.query(f"SELECT {cols} FROM user_logins"), key=row_key)
    want = book.expected_rows()
    prefix = f"{where}: " if where else ""
    if got != want:
        gk, wk = [row_key(r) for r in got], [row_key(r) for r in want]
        extra = [r for r, k in zip(got, gk) if k not in set(wk)]
        missing = [r for r, k in zip(want, wk) if k not in set(gk)]
        twice = len(got) - len(set(gk))
        raise AssertionError(
            f"{prefix}user_logins holds {len(got)} rows, {len(want)} expected: "
            f"{len(missing)} missing, {len(extra)} unexpected, {twice} written twice; "
            f"first missing {missing[:2]}, first unexpected {extra[:2]}")
    ids = [r["message_id"] for r in db.query("SELECT message_id FROM login_etl_ledger")]
    want_ids = {m["messageId"] for m in book.valid()}
    assert len(ids) == len(set(ids)), f"{prefix}an id is in the ledger twice"
    assert set(ids) == want_ids, (
        f"{prefix}ledger: {len(set(ids) - want_ids)} unexpected ids, "
        f"{len(want_ids - set(ids))} missing")
