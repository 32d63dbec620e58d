"""A bounded map for the caches a caller owns and passes to the core.

The core keeps no cache of its own at module level: a function that can reuse earlier work (the
parsed parameter tail of an Identity header, a decoded JOSE header) takes an optional
:class:`BoundedCache` from its caller (the STI-VS :class:`~stirshaken.vs.verifier.Verifier`, a
benchmark, a test) and computes the general way without one.  Entries hold only results that
passed their checks, so a hit gives exactly what the general path would compute.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``max_size`` entries; storing one more drops the oldest stored.

    :meth:`get` is the ``get`` of the underlying ``dict`` itself (a hit costs one C call, no
    Python frame: it sits on the verification hot path), so a lookup does not refresh an entry;
    an entry dropped while still in use is simply stored again on its next miss.  Safe to share
    between threads in the sense that a race only ever loses an entry (the caller then computes
    the value again); values must be immutable.

    :raises ValueError: ``max_size`` below 1.
    """

    __slots__ = ("max_size", "_data", "get")

    def __init__(self, max_size: int = 4096) -> None:
        if max_size < 1:
            raise ValueError("BoundedCache max_size must be at least 1")
        self.max_size = max_size
        self._data: dict[K, V] = {}
        #: ``get(key)``: the value stored for ``key``, or None
        self.get: Callable[[K], V | None] = self._data.get

    def put(self, key: K, value: V) -> None:
        """Store ``value`` for ``key``, first dropping the oldest entries when full."""
        data = self._data
        if key not in data:
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


__all__ = ["BoundedCache"]
