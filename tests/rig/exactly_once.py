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
from collections import Counter

from . import expect, ledger
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
    """user_logins and the ledger (login_etl_ledger_v3) hold exactly one row for each valid message of
    the book, and nothing else."""
    assert_rows(db, book, where)
    prefix = f"{where}: " if where else ""
    ids = ledger.ids(db)
    want_ids = ledger.keys(book.valid())
    assert len(ids) == len(set(ids)), f"{prefix}an id is in the ledger twice"
    assert set(ids) == want_ids, (
        f"{prefix}ledger: {len(set(ids) - want_ids)} unexpected ids, "
        f"{len(want_ids - set(ids))} missing")


def assert_rows(db, book, where=""):
    """user_logins holds exactly one row for each valid message of the book, and nothing
    else (compared column by column, as multisets)."""
    cols = ", ".join(ROW_COLUMNS).replace("create_date", "create_date::text AS create_date")
    got = sorted(db.query(f"SELECT {cols} FROM user_logins"), key=row_key)
    want = book.expected_rows()
    prefix = f"{where}: " if where else ""
    if got != want:
        # Counted as multisets: realistic data has rows equal in every column.
        gk, wk = Counter(map(row_key, got)), Counter(map(row_key, want))
        by_key = {row_key(r): r for r in got + want}
        missing, extra = wk - gk, gk - wk
        twice = sum(n - 1 for k, n in gk.items() if n > 1 and n > wk.get(k, 0))
        raise AssertionError(
            f"{prefix}user_logins holds {len(got)} rows, {len(want)} expected: "
            f"{sum(missing.values())} missing, {sum(extra.values())} unexpected "
            f"(of which {twice} are copies of an expected row); "
            f"first missing {[by_key[k] for k in list(missing)[:2]]}, "
            f"first unexpected {[by_key[k] for k in list(extra)[:2]]}")
