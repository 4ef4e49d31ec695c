"""A bounded memo for answers that depend only on their key (a URL, a header, a host)."""

from __future__ import annotations

from operator import attrgetter, is_not, itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

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

    ``in_force(cls)`` tells whether every one is still the same object: module functions, data
    and class attributes by the names requests reads them through (``requests.models.parse_url``,
    ``requests.utils.UNRESERVED_SET``), entries of a dict requests reads (an owner that is a
    dict), and ``methods`` as looked up on ``cls`` (a ``PreparedRequest`` subclass may override
    them). A test's patch, an add-on's replacement (a wrapt proxy, which compares equal to what it
    wraps, included: identity is checked, never ``==``) or an override of any of them sends the
    call down requests' own path, where it is called. Names this requests version lacks are left
    out.
    """

    __slots__ = ("_groups", "_methods")

    def __init__(
        self,
        names: Iterable[tuple[Any, Any]],
        methods: Iterable[str] = (),
        base: object = None,
    ) -> None:
        by_owner: dict[int, tuple[object, list[Any]]] = {}
        for owner, name in names:
            if name in owner if isinstance(owner, dict) else hasattr(owner, name):
                by_owner.setdefault(id(owner), (owner, []))[1].append(name)
        groups = []
        for owner, keys in by_owner.values():
            get = _getter(itemgetter if isinstance(owner, dict) else attrgetter, keys)
            groups.append((owner, get, get(owner)))
        self._groups = tuple(groups)
        present = [name for name in methods if hasattr(base, name)]
        get_methods = _getter(attrgetter, present)
        self._methods = (get_methods, get_methods(base))

    def in_force(self, cls: object = None) -> bool:
        """Tell whether requests' versions are all in force (``cls``: where methods are read)."""
        # One attrgetter call per owner and identity checks, all in C: it runs on every request.
        try:
            for owner, get, originals in self._groups:
                if any(map(is_not, get(owner), originals)):
                    return False
            get_methods, methods = self._methods
            return not any(map(is_not, get_methods(cls), methods))
        except (AttributeError, KeyError):  # deleted since: requests' own path will say what
            return False


def _getter(
    kind: Callable[..., Callable[[Any], Any]], keys: list[Any]
) -> Callable[[Any], tuple[Any, ...]]:
    """``attrgetter``/``itemgetter`` of ``keys`` that always returns a tuple."""
    if len(keys) > 1:
        return kind(*keys)
    if keys:
        one = kind(keys[0])
        return lambda owner: (one(owner),)
    return lambda owner: ()
