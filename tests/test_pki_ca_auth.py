"""STI-CA request authentication: the RFC 8555 §6.5 nonce store (``stirshaken.pki.ca_auth``).

Issue 17 item 7: the store filled up and then scanned every nonce on every answer.  These tests
hold its size bounded and its expiry exact with a controlled clock (no timing assertion; the cost
per answer is measured by ``bench/bench_nonce.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stirshaken.pki.ca_auth import NonceStore

from tests.test_pki_support import ERR, RawAcme, running_testbed, session_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nonces_are_single_use_and_expire() -> None:
    clock = Clock()
    store = NonceStore(lifetime=600, max_size=100, clock=clock)
    a, b = store.issue(), store.issue()
    assert a != b and len(a) == 22
    assert store.consume(a)
    assert not store.consume(a)  # used
    assert not store.consume("never-issued")
    clock.now += 599.9
    c = store.issue()
    clock.now += 0.2  # b is now 600.1 s old, c 0.2 s
    assert not store.consume(b)  # expired
    assert store.consume(c)


def test_expired_nonces_leave_the_store_without_filling_it() -> None:
    """Nonces nobody uses leave at expiry, not only when the store is full: with one answer per
    second and a 60 s lifetime, the store holds about 60 whatever the bound."""
    clock = Clock()
    store = NonceStore(lifetime=60, max_size=10_000, clock=clock)
    sizes = []
    for _ in range(5_000):
        store.issue()
        clock.now += 1
        sizes.append(len(store))
    assert max(sizes) == 60 and sizes[-1] == 60
    old = store.issue()
    clock.now += 61
    assert not store.consume(old)
    store.issue()
    assert len(store) == 1


def test_size_is_bounded_and_the_oldest_goes_first() -> None:
    clock = Clock()
    store = NonceStore(lifetime=600, max_size=1_000, clock=clock)
    issued = []
    for i in range(25_000):  # 25 x the bound, none used, none expired
        issued.append(store.issue())
        assert len(store) <= 1_000
        if i % 7 == 0:
            clock.now += 0.001
    assert len(store) == 1_000
    assert not store.consume(issued[0]) and not store.consume(issued[-1_001])  # dropped for room
    assert store.consume(issued[-1_000]) and store.consume(issued[-1])  # the newest are kept
    assert len(store) == 998


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        NonceStore(lifetime=0)
    with pytest.raises(ValueError):
        NonceStore(max_size=0)


async def test_expired_nonce_is_bad_nonce_through_the_ca(tmp_path: Path) -> None:
    """Through the STI-CA: a nonce older than the store's lifetime is ``badNonce``, and the
    answer brings a fresh one that works (RFC 8555 §6.5)."""
    async with running_testbed(tmp_path) as tb:
        assert tb.ca is not None
        async with session_for(tb) as s:
            acme = RawAcme(tb, s)
            await acme.register()
            nonce = await acme.nonce()
            tb.ca.nonces.clock = lambda: time.monotonic() + tb.ca.nonces.lifetime + 1  # type: ignore[union-attr]
            status, headers, body = await acme.post(acme.url("new-order"), {"identifiers": []}, nonce=nonce)
            assert status == 400 and body["type"] == ERR + "badNonce", body
            fresh = headers["Replay-Nonce"]
            status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": []}, nonce=fresh)
            assert body["type"] != ERR + "badNonce", body
