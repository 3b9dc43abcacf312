"""The proof suite: inboxbot run as a user runs it, against the simulators, under kills,
outages, fuzzed payloads, canary secrets and a destructive rule (``make proof``)."""
