"""Outbound HTTP: the one place TLS contexts, timeouts and size caps for clients are made.

Every outbound client of the stack gets its session from :func:`client_session`, so a TLS or
timeout rule is written once.  Timeouts per client (total / connect, seconds):

* x5u, CRL and CA-list fetching (:mod:`stirshaken.vs.x5u`): the policy's (4 / 2 by default);
* the STI-CA's SPC-token x5u and revocation-list fetches (:mod:`stirshaken.pki.spc_token`): 5 / -;
* the SP's certificate flow against the STI-PA, STI-CA and STI-CR (:mod:`stirshaken.pki.enrollment`): 30 / -;
* the STI-CA's STI-CR publisher (:mod:`stirshaken.pki.cr`), the CLI and the testbed: 300 / 30
  (aiohttp's defaults, :data:`DEFAULT_TIMEOUT` / :data:`DEFAULT_CONNECT_TIMEOUT`).

The SSRF address policy of the STI-VS fetchers (:class:`stirshaken.vs.x5u.GuardedResolver`) plugs
in as the session's ``resolver``; :func:`read_capped` reads a body under a size cap.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Mapping

import aiohttp
from aiohttp.abc import AbstractResolver

#: default total seconds for one request (aiohttp's own default, kept for the clients that never set one)
DEFAULT_TIMEOUT = 300.0
#: default seconds to open a connection (aiohttp's own default ``sock_connect``)
DEFAULT_CONNECT_TIMEOUT = 30.0
#: default cap on concurrent connections of one session (aiohttp's own default)
DEFAULT_LIMIT = 100


class ResponseTooLargeError(Exception):
    """A response body exceeded the cap given to :func:`read_capped`.

    ``limit``: the cap in bytes; ``declared``: the ``Content-Length`` the server announced when it
    alone gave the excess away (None when the body was cut off while streaming).
    """

    def __init__(self, limit: int, declared: int | None = None):
        self.limit = limit
        self.declared = declared
        super().__init__(f"response larger than {limit} bytes" + (f" ({declared})" if declared is not None else ""))


def client_ssl_context(ca_bundle: str | Path | None, *, minimum_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A TLS client context that verifies servers against ``ca_bundle`` (a PEM file) or, when it
    is empty or None, the system store.  Hostname checking stays on (RFC 9110 §4.3.4);
    ``minimum_version`` raises the lowest TLS version accepted (the STI-VS asks for TLS 1.2,
    ATIS-1000074 §5.3.1)."""
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    if minimum_version is not None:
        ctx.minimum_version = minimum_version
    return ctx


def client_session(
    *,
    ca_bundle: str | Path | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    resolver: AbstractResolver | None = None,
    use_dns_cache: bool = True,
    limit: int = DEFAULT_LIMIT,
    headers: Mapping[str, str] | None = None,
    auto_decompress: bool = True,
) -> aiohttp.ClientSession:
    """An :class:`aiohttp.ClientSession` for an outbound client.

    ``ca_bundle`` (PEM file) or ``ssl_context`` choose the trusted roots (system store by
    default); ``timeout`` is the total seconds per request and ``connect_timeout`` the seconds to
    open the TCP (and TLS) connection (aiohttp ``sock_connect``), None for no limit;
    ``resolver`` replaces DNS resolution (the STI-VS's SSRF-guarded resolver; pass
    ``use_dns_cache=False`` with it so every connection is checked); ``limit`` caps concurrent
    connections; ``headers`` are sent with every request; ``auto_decompress=False`` hands bodies
    over as sent (a size cap then counts wire bytes).  Must be called with a running event loop.
    """
    ctx = ssl_context if ssl_context is not None else client_ssl_context(ca_bundle)
    conn_kwargs: dict[str, Any] = {"ssl": ctx, "limit": limit, "use_dns_cache": use_dns_cache}
    if resolver is not None:
        conn_kwargs["resolver"] = resolver
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(**conn_kwargs),
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout),
        headers=headers,
        auto_decompress=auto_decompress,
    )


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int, *, chunk_size: int = 16384) -> bytes:
    """The whole body of ``resp``, at most ``max_bytes`` bytes.

    Raises :class:`ResponseTooLargeError` as soon as the announced ``Content-Length`` or the bytes
    received exceed the cap (the rest is never read); transport errors propagate as aiohttp raises
    them.
    """
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise ResponseTooLargeError(max_bytes, resp.content_length)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(chunk_size)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLargeError(max_bytes)
        chunks.append(chunk)


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LIMIT",
    "DEFAULT_TIMEOUT",
    "ResponseTooLargeError",
    "client_session",
    "client_ssl_context",
    "read_capped",
]
