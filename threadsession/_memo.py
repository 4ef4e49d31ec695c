"""A bounded memo for answers that depend only on their key (a URL, a header, a host)."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Memo"]

K = TypeVar("K")
V = TypeVar("V")

_LIMIT = 4096  # entries kept before the memo starts over


class Memo(dict[K, V]):
    """A dict that starts over when full, so distinct keys (unique URLs) cannot grow it forever.

    Safe from any thread without a lock: each operation is one dict call under the GIL, and a
    race at most computes an answer twice or drops one. Only pure answers go in: a lost entry is
    computed again, never wrong.
    """

    __slots__ = ()

    def put(self, key: K, value: V) -> V:
        """Remember ``value`` under ``key`` and return it."""
        if len(self) >= _LIMIT:
            self.clear()
        self[key] = value
        return value
