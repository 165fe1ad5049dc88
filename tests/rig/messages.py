"""SQS messages written by hand for a test, in the form events/generate.py's make_event
takes: {"messageId", "body" (the record's text), "sentTimestamp" (ms)}."""
import json

from events.generate import DEFAULT_START_MS

# The generator's first send time (2024-06-10T08:00:00Z), so hand-written messages fall on
# the same day (and partition) as generated ones.
START_MS = DEFAULT_START_MS


def msg(mid, body, sent=START_MS):
    """A message with this id; body is the record's text as is, or any other value written
    as JSON (so a test can send a body that is not an object, or not JSON at all)."""
    if not isinstance(body, str):
        body = json.dumps(body)
    return {"messageId": mid, "body": body, "sentTimestamp": sent}
