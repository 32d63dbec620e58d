"""core/memo.py: the bounded map the callers own and pass to the core (no module-level caches)."""

from __future__ import annotations

import pytest

from stirshaken.core.memo import BoundedCache


def test_bounded_cache_keeps_its_bound() -> None:
    c = BoundedCache[int, int](3)
    for i in range(10):
        c.put(i, i * i)
    assert len(c) == 3 and c.get(9) == 81 and c.get(0) is None and 7 in c
    c.put(9, 0)  # replacing a key drops nothing
    assert len(c) == 3 and c.get(7) == 49 and c.get(9) == 0
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_clear_empties_and_get_stays_bound() -> None:
    c = BoundedCache[str, str](2)
    c.put("a", "1")
    get = c.get
    c.clear()
    assert len(c) == 0 and get("a") is None
    c.put("b", "2")
    assert get("b") == "2"  # get is the live dict's get, also after clear()
