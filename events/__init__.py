"""Sample SQS events and their generator (events/generate.py); a package so that the demo,
the benchmark and the tests can `from events.generate import make_messages, make_event`."""
