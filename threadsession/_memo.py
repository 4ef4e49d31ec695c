"""A bounded memo for answers that depend only on their key (a URL, a header, a host)."""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["MAX_KEY_LENGTH", "Memo", "Originals"]

K = TypeVar("K")
V = TypeVar("V")

_LIMIT = 4096  # entries kept before the memo starts over
# Longer URLs and header values are not remembered: 4,096 entries stay a few MiB at most.
MAX_KEY_LENGTH = 2048


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


class Originals:
    """requests' own versions of the names a shortcut stands in for, read when it is defined.

    ``in_force(cls)`` tells whether every one is still what requests calls: module functions and
    class attributes by the names requests calls them through (``requests.models.parse_url``), and
    ``methods`` as looked up on ``cls`` (a ``PreparedRequest`` subclass may override them). A
    test's patch, an add-on's replacement or an override of any of them sends the call down
    requests' own path, where it is called. Names this requests version lacks are left out.
    """

    __slots__ = ("_groups", "_methods")

    def __init__(
        self, names: Iterable[tuple[object, str]], methods: Iterable[str] = (), base: object = None
    ) -> None:
        by_owner: dict[int, tuple[object, list[str]]] = {}
        for owner, name in names:
            if hasattr(owner, name):
                by_owner.setdefault(id(owner), (owner, []))[1].append(name)
        groups = [(owner, attrgetter(*group)) for owner, group in by_owner.values()]
        self._groups = tuple((owner, get, get(owner)) for owner, get in groups)
        present = [name for name in methods if hasattr(base, name)]
        get_methods = attrgetter(*present) if present else None
        self._methods = (get_methods, get_methods(base) if get_methods else None)

    def in_force(self, cls: object = None) -> bool:
        """Tell whether requests' versions are all in force (``cls``: where methods are read)."""
        # One attrgetter call per owner, compared as a tuple (functions and classes compare by
        # identity): it runs on every request, so it stays in C.
        try:
            for owner, get, originals in self._groups:
                if get(owner) != originals:
                    return False
            get_methods, methods = self._methods
            return get_methods is None or get_methods(cls) == methods
        except AttributeError:  # a name deleted since: requests' own path will say what is wrong
            return False
