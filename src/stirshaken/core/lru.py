"""A small bounded least-recently-used map, for the caches a caller owns and passes to the core.

The core keeps no cache of its own at module level: a function that can reuse earlier work (the
parsed parameter tail of an Identity header, a decoded JOSE header) takes an optional :class:`LRU`
from its caller (the STI-VS :class:`~stirshaken.vs.verifier.Verifier`, a benchmark, a test) and
computes the general way without one.  Entries hold only results that passed their checks, so a
hit gives exactly what the general path would compute.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_MISSING = object()


class LRU(Generic[K, V]):
    """At most ``max_size`` entries; a lookup makes its entry the most recent and an insertion
    beyond the bound drops the least recent one.

    A plain ``dict`` in insertion order underneath (re-inserting moves a key to the end), so a hit
    costs one ``pop`` and one store.  Safe to share between threads in the sense that a race only
    ever loses an entry (the caller then computes the value again); values must be immutable.

    :raises ValueError: ``max_size`` below 1.
    """

    __slots__ = ("max_size", "_data")

    def __init__(self, max_size: int = 4096) -> None:
        if max_size < 1:
            raise ValueError("LRU max_size must be at least 1")
        self.max_size = max_size
        self._data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        """The value stored for ``key`` (now the most recent), or None."""
        data = self._data
        value = data.pop(key, _MISSING)
        if value is _MISSING:
            return None
        data[key] = value  # type: ignore[assignment]
        return value  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        """Store ``value`` for ``key``, dropping the least recently used entry when full."""
        data = self._data
        data.pop(key, None)
        while len(data) >= self.max_size:
            try:
                del data[next(iter(data))]
            except (KeyError, StopIteration, RuntimeError):  # another thread changed it meanwhile
                break
        data[key] = value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


__all__ = ["LRU"]
