#!/usr/bin/env python3
"""Cost of the STI-CA's RFC 8555 §6.5 nonce store per ACME response, empty against full.

    .venv/bin/python bench/bench_nonce.py [--size 100000] [--ops 20000] [--requests 2000] [--rounds 5]

Every STI-CA response carries a fresh ``Replay-Nonce`` (one :meth:`NonceStore.issue`) and every
signed request spends one (one :meth:`NonceStore.consume`).  Clients that fetch a nonce and never
use it (every answer brings one) fill the store up to its bound (``--size``, the default
``MAX_NONCES``); what matters is that an answer costs the same then as with an empty store.

* ``store``: :meth:`issue` + :meth:`consume` of the nonce issued, in µs per pair, with an empty
  store and with one holding ``--size`` unexpired nonces (median of ``--rounds``);
* ``HEAD /acme/new-nonce``: the whole answer through a real STI-CA app (``CertificateAuthority``,
  SQLite in a temporary directory) on a loopback HTTP port, one keep-alive aiohttp client, µs per
  response (client and server on this machine, so only the difference between the two rows is
  the store's);
* ``memory``: traced bytes per nonce held (tracemalloc), the cost of the bound.

Timings on a shared machine drift by some percent; compare the two rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from stirshaken.pki.ca import CAConfig, CertificateAuthority  # noqa: E402
from stirshaken.pki.ca_auth import MAX_NONCES, NonceStore  # noqa: E402


def fill(store: NonceStore, n: int) -> None:
    for _ in range(n):
        store.issue()


def store_cost(size: int, ops: int, rounds: int) -> tuple[float, float]:
    """Median µs per issue+consume pair with an empty store and with ``size`` live nonces
    (rounds interleaved, so a drifting machine load hits both alike)."""
    times: dict[int, list[float]] = {0: [], size: []}
    for _ in range(rounds):
        for prefill in (0, size):
            store = NonceStore(max_size=size)
            fill(store, prefill)
            t0 = time.perf_counter()
            for _ in range(ops):
                store.consume(store.issue())
                store.issue()  # an answer whose nonce the client drops: the store stays full
            times[prefill].append((time.perf_counter() - t0) / ops * 1e6)
    return statistics.median(times[0]), statistics.median(times[size])


async def response_cost(size: int, requests: int, rounds: int) -> tuple[float, float]:
    """Median µs per ``HEAD /acme/new-nonce`` answer with an empty store and a full one
    (rounds interleaved)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = CAConfig(base_url="http://127.0.0.1", state_dir=Path(tmp), token_authority="http://127.0.0.1",
                          crl_url="http://127.0.0.1/crl")
        ca = CertificateAuthority.create(config)
        runner = web.AppRunner(ca.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/acme/new-nonce"
        times: dict[int, list[float]] = {0: [], size: []}
        try:
            async with aiohttp.ClientSession() as s:
                for _ in range(rounds):
                    for prefill in (0, size):
                        ca.nonces = ca.auth.nonces = NonceStore(max_size=size)
                        fill(ca.nonces, prefill)
                        for _ in range(50):  # warm the connection
                            async with s.head(url) as r:
                                assert r.status == 200
                        t0 = time.perf_counter()
                        for _ in range(requests):
                            async with s.head(url) as r:
                                r.headers["Replay-Nonce"]
                        times[prefill].append((time.perf_counter() - t0) / requests * 1e6)
        finally:
            await runner.cleanup()
            ca.db.close()
    return statistics.median(times[0]), statistics.median(times[size])


def bytes_per_nonce(size: int) -> float:
    """Traced memory of a store holding ``size`` nonces, per nonce."""
    store = NonceStore(max_size=size)
    tracemalloc.start()
    fill(store, size)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held / size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=MAX_NONCES, help="the store's bound, and what 'full' holds")
    ap.add_argument("--ops", type=int, default=20000, help="issue+consume pairs per round")
    ap.add_argument("--requests", type=int, default=2000, help="HEAD requests per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    empty, full = store_cost(args.size, args.ops, args.rounds)
    print(f"store   issue+consume+issue  empty {empty:8.2f} µs   full ({args.size:,}) {full:8.2f} µs   x{full / empty:.2f}")
    empty, full = asyncio.run(response_cost(args.size, args.requests, args.rounds))
    print(f"answer  HEAD /acme/new-nonce empty {empty:8.1f} µs   full ({args.size:,}) {full:8.1f} µs   x{full / empty:.2f}")
    print(f"memory  {bytes_per_nonce(args.size):.0f} bytes per nonce held ({args.size:,} held)")


if __name__ == "__main__":
    main()
