"""Limits that keep ``stirshaken serve`` answering under load, faults and hostile peers.

One frozen model, :class:`ConnectionLimits`, holds every tunable of the connection handling of the
HTTP engines (:mod:`stirshaken.serve.rest`) and SIP over TCP (:mod:`stirshaken.serve.sip`); they
are also the options of ``[server]`` of the same names (``ServerConfig`` extends this model).  The engines take an instance (default
``ConnectionLimits()``); :meth:`ConnectionLimits.from_config` picks same-named options from the
``[server]`` and ``[verification]`` sections of a loaded configuration when they exist.

What each limit stops (issue 17):

* ``max_connection_buffer``: a client that pipelines requests without reading the answers, or
  sends bytes while a verification is pending, is no longer read from once this many bytes
  (unsent answers plus unprocessed input) are held for its connection (asyncio flow control:
  ``pause_reading``); reading resumes when the answers drain.
* ``header_timeout`` / ``body_timeout`` / ``keepalive_timeout``: a connection that sends a
  request head (or body) slower than this, or stays idle between requests longer than this, is
  closed ("slowloris").  One sweeper per worker checks every ``sweep_interval`` seconds, so a
  request costs a clock read, not a timer.
* ``sip_tcp_message_timeout`` / ``sip_tcp_idle_timeout``: the same for SIP over TCP; the idle
  timeout is long because proxies keep their connections open (RFC 5626 keep-alives count as
  activity).
* ``max_connections_per_source``: connections from one IP address beyond this are closed at
  accept time, so one host cannot take every connection slot.

Closures are logged once per ``sweep_interval`` per kind, aggregated (a count), never per
connection.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConnectionGuard", "ConnectionLimits", "peer_ip"]

log = logging.getLogger("stirshaken.serve.limits")


class ConnectionLimits(BaseModel):
    """Per-worker connection limits; times in seconds, sizes in bytes.  A value of 0 for a
    timeout or for ``max_connections_per_source`` turns that limit off.

    Raises :class:`pydantic.ValidationError` for a negative value or an unknown field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    header_timeout: float = Field(10.0, ge=0, description="s from the first byte of a request head to its end (HTTP)")
    body_timeout: float = Field(30.0, ge=0, description="s from the end of a request head to the end of its body (HTTP)")
    keepalive_timeout: float = Field(60.0, ge=0, description="s a kept-alive HTTP connection may stay idle between requests")
    max_connections_per_source: int = Field(256, ge=0, description="open connections per source IP address, per worker and listener")
    max_connection_buffer: int = Field(262144, ge=4096, description="bytes held per connection (unsent answers + unread input) before reading pauses")
    sip_tcp_message_timeout: float = Field(10.0, ge=0, description="s from the first byte of a SIP message to its end (TCP)")
    sip_tcp_max_pending: int = Field(256, ge=1, description="SIP requests in flight per TCP connection before reading pauses")
    sip_tcp_idle_timeout: float = Field(600.0, ge=0, description="s a SIP TCP connection may stay without any byte received")
    send_timeout: float = Field(30.0, ge=0, description="s an answer may wait for a client that does not read it (HTTP and SIP TCP)")
    sweep_interval: float = Field(1.0, gt=0, le=60, description="s between two checks of the timeouts (one sweeper per worker)")

    @classmethod
    def from_config(cls, cfg: Any) -> "ConnectionLimits":
        """The limits of a loaded ``serve`` configuration: every field found as an attribute of
        ``cfg.server`` or ``cfg.verification`` (same name) overrides the default."""
        values: dict[str, Any] = {}
        for section in (getattr(cfg, "server", None), getattr(cfg, "verification", None)):
            if section is None:
                continue
            for name in cls.model_fields:
                v = getattr(section, name, None)
                if v is not None and name not in values:
                    values[name] = v
        return cls(**values)


class ConnectionGuard:
    """The runtime side of :class:`ConnectionLimits` for one listener of one worker.

    * counts open connections per source address (:meth:`admit` / :meth:`release`);
    * keeps a coarse clock, :attr:`now` (``time.monotonic`` read once per sweep), which the
      protocols stamp their state changes with: a request costs an attribute read, no timer;
    * every ``sweep_interval`` seconds asks each protocol in :attr:`conns` whether it ran out of
      time (``protocol.expired(now) -> str | None``, the protocol closes itself and names the
      limit), and logs what the limits did at most once per :data:`LOG_EVERY` seconds, as counts.

    Protocols must provide ``expired(now: float) -> str | None``.
    """

    LOG_EVERY = 10.0

    __slots__ = ("limits", "name", "metrics", "conns", "per_source", "now", "counts", "_handle", "_last_log", "_loop")

    def __init__(self, limits: ConnectionLimits, name: str, metrics: Any | None = None):
        self.limits = limits
        self.name = name
        self.metrics = metrics
        self.conns: set[Any] = set()
        self.per_source: dict[str, int] = {}
        self.now = time.monotonic()
        self.counts: dict[str, int] = {}
        self._handle: Any = None
        self._last_log = self.now
        self._loop: Any = None

    def start(self, loop: Any) -> None:
        """Start the sweeper on ``loop`` (idempotent)."""
        if self._handle is None:
            self._loop = loop
            self._handle = loop.call_later(self.limits.sweep_interval, self._sweep)

    def close(self) -> None:
        """Stop the sweeper (a listener's closer: the worker stops)."""
        self.stop()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._log(force=True)

    def admit(self, source: str | None) -> bool:
        """Count a new connection from ``source``; False (not counted) when the source already
        holds ``max_connections_per_source`` connections."""
        if source is None:
            return True
        cap = self.limits.max_connections_per_source
        n = self.per_source.get(source, 0)
        if cap and n >= cap:
            self.note("max_connections_per_source")
            return False
        self.per_source[source] = n + 1
        return True

    def release(self, source: str | None) -> None:
        if source is None:
            return
        n = self.per_source.get(source, 0) - 1
        if n > 0:
            self.per_source[source] = n
        else:
            self.per_source.pop(source, None)

    def note(self, reason: str) -> None:
        """Count one action of a limit (logged aggregated, and as a metric when there is one)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.inc("stirshaken_connection_limits_total", (("listener", self.name), ("limit", reason)))

    def _sweep(self) -> None:
        self.now = now = time.monotonic()
        for conn in list(self.conns):
            try:
                reason = conn.expired(now)
            except Exception:  # noqa: BLE001 - the sweeper must survive any protocol state
                log.exception("connection sweep failed", extra={"listener": self.name})
                continue
            if reason is not None:
                self.note(reason)
        if now - self._last_log >= self.LOG_EVERY:
            self._log()
        self._handle = self._loop.call_later(self.limits.sweep_interval, self._sweep) if self._loop is not None else None

    def _log(self, force: bool = False) -> None:
        if self.counts:
            log.warning("connections limited", extra={"listener": self.name, "closed": dict(self.counts),
                                                      "open": len(self.conns), "sources": len(self.per_source)})
            self.counts = {}
        self._last_log = self.now


def peer_ip(transport: Any) -> str | None:
    """The source IP address of a stream transport (None for a Unix socket or unknown)."""
    p = transport.get_extra_info("peername")
    if isinstance(p, tuple) and p:
        return str(p[0])
    return None
