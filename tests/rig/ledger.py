"""The function's ledger as the tests see it: its table, and the uuid key and day slot
the function stores for a message (the same rules as function/pg_tuple.c, pg_ledger_key and
pg_ledger_slot, written again here so that the tests check them).

    ledger.LEDGER                     # the table's name
    ledger.key("SOME-ID")             # the uuid text the ledger holds for that messageId
    ledger.keys(messages)             # the set of keys of message dicts
    ledger.slot(sent_ms)              # its slot (18 without a SentTimestamp)
"""
import hashlib
import re
import uuid

LEDGER = "login_etl_ledger_v3"
SLOTS = 18
SLOT_NONE = 18
MARKER_V1 = "00000000-0000-0000-0000-000000000000"
MARKER_V2 = "00000000-0000-0000-0000-000000000001"
MARKERS = (MARKER_V1, MARKER_V2)
# SQS's form: a lowercase canonical UUID; version 0 is reserved for the markers.
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[1-9a-f][0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def key(message_id):
    if _CANONICAL.fullmatch(message_id):
        return message_id
    h = bytearray(hashlib.sha256(message_id.encode("utf-8")).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x80
    h[8] = (h[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(h)))


def keys(messages):
    return {key(m["messageId"]) for m in messages}


def slot(sent_ms):
    return SLOT_NONE if sent_ms is None or sent_ms < 0 else (sent_ms // 86400000) % SLOTS


def ids(db, where="TRUE"):
    """The message keys the ledger holds (markers left out), as a list."""
    return [r["message_id"] for r in db.query(
        f"SELECT message_id FROM {LEDGER} WHERE message_id NOT IN "
        f"('{MARKER_V1}', '{MARKER_V2}') AND ({where})")]
