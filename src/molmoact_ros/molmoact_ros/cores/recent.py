"""A small bounded map of the newest requests (request id -> message), oldest forgotten first."""

from __future__ import annotations

from collections import OrderedDict

#: How many requests a stage remembers (perception messages, trace revisions).
MAX_REMEMBERED_REQUESTS = 16


class Recent(OrderedDict):
    """request id -> value, at most ``limit`` entries (the oldest put is dropped first)."""

    def __init__(self, limit: int = MAX_REMEMBERED_REQUESTS):
        super().__init__()
        self.limit = int(limit)

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
