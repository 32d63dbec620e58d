"""Outbound HTTP: the one place TLS contexts, timeouts and size caps for clients are made.

Every outbound client of the stack (x5u, CRL and CA-list fetching in :mod:`stirshaken.vs`; the
STI-PA, STI-CA and STI-CR clients in :mod:`stirshaken.pki`) gets its session here, so a TLS or
timeout rule is written once.  The SSRF address policy of the STI-VS fetchers
(:mod:`stirshaken.vs.x5u`) plugs in as the session's resolver.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp

#: default total time for one request of a PKI client (seconds)
DEFAULT_TIMEOUT = 30.0


def client_ssl_context(ca_bundle: str | Path | None) -> ssl.SSLContext:
    """A TLS client context that verifies servers against ``ca_bundle`` (a PEM file) or, when it
    is empty or None, the system store.  Hostname checking stays on (RFC 9110 §4.3.4)."""
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


def client_session(
    *,
    ca_bundle: str | Path | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float | None = None,
    resolver: Any = None,
    limit: int = 100,
    **kwargs: Any,
) -> aiohttp.ClientSession:
    """An :class:`aiohttp.ClientSession` for an outbound client.

    ``ca_bundle`` or ``ssl_context`` choose the trusted roots (system store by default);
    ``timeout`` is the total seconds per request and ``connect_timeout`` the seconds to connect;
    ``resolver`` replaces DNS resolution (the STI-VS's SSRF-guarded resolver); ``limit`` caps
    concurrent connections.  Must be called with a running event loop.
    """
    ctx = ssl_context if ssl_context is not None else client_ssl_context(ca_bundle)
    conn_kwargs: dict[str, Any] = {"ssl": ctx, "limit": limit}
    if resolver is not None:
        conn_kwargs["resolver"] = resolver
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(**conn_kwargs),
        timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
        **kwargs,
    )


__all__ = ["DEFAULT_TIMEOUT", "client_session", "client_ssl_context"]
