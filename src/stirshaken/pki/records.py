"""Access and audit records of the PKI services (STI-PA, STI-CA, STI-CR).

* **Access**: one record per HTTP request on the ``stirshaken.pki.access`` logger (INFO), written
  by :func:`access_log`, an aiohttp middleware each service puts first in its application:
  ``service`` (``pa``, ``ca``, ``cr``), ``method``, ``path`` (without the query string, at most
  200 characters), ``status``, ``latency`` (seconds) and ``source`` (the peer address).  Nothing
  else of the request is recorded: no header (``Authorization`` holds access, upload and SPC
  tokens), no body (passwords), no query (a client may put a secret there by mistake).
* **Audit**: one record per security event on the ``stirshaken.pki.audit`` logger (INFO, WARNING
  for refusals), written by :func:`audit`: ``service``, ``event`` (also the message) and the
  event's own fields, e.g. ``login ok`` / ``login failed`` (``user``, ``source``, ``reason``),
  ``token issued`` (``user``, ``spc``, ``jti``, ``exp``), ``certificate issued`` /
  ``certificate revoked`` (``serial``, ``spc``, ``account``), ``upload`` / ``upload refused``
  (``file``, ``owner``, ``new``, ``source``).  Callers pass identifiers, never a secret: no password, access
  token, SPC token, upload token or key.  :func:`audit` refuses field names that say otherwise
  (:data:`SECRET_FIELDS`), so a mistake fails in the tests instead of leaking in production.

Both are ordinary loggers: ``stirshaken pa|ca|cr serve`` writes them to stderr with the other log
lines (JSON, or text with ``key=value`` fields; ``--log-format``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

__all__ = ["ACCESS", "AUDIT", "SECRET_FIELDS", "access_log", "audit"]

ACCESS = logging.getLogger("stirshaken.pki.access")
AUDIT = logging.getLogger("stirshaken.pki.audit")

#: field names an audit record may not have: what they name is a secret
SECRET_FIELDS = frozenset({"password", "token", "access_token", "accesstoken", "authorization", "secret", "hmac_key", "key"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: names an ``extra`` field cannot have (attributes of every LogRecord)
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def audit(service: str, event: str, *, warning: bool = False, **fields: Any) -> None:
    """Write the audit record of a security ``event`` of ``service`` (``pa``, ``ca``, ``cr``);
    ``warning`` for a refusal.  ``fields`` are identifiers (user, SPC, serial, jti, source...);
    one named as a secret raises :class:`ValueError`."""
    bad = SECRET_FIELDS.intersection(k.lower() for k in fields)
    if bad:
        raise ValueError(f"audit record {event!r} may not carry {sorted(bad)}")
    clash = _RESERVED.intersection(fields)
    if clash:  # logging would raise KeyError for these
        raise ValueError(f"audit record {event!r}: {sorted(clash)} are names of LogRecord attributes")
    AUDIT.log(logging.WARNING if warning else logging.INFO, event, extra={"service": service, "event": event, **fields})


def access_log(service: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The aiohttp middleware writing the access record of each request to ``service``; put it
    first in the application's middlewares, so that it sees the final status (an error turned into
    a response by the service's own middleware, or a 500 for an exception that escapes)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if ACCESS.isEnabledFor(logging.INFO):
                ACCESS.info("request", extra={"service": service, "method": request.method, "path": request.path[:200],
                                              "status": status, "latency": round(time.perf_counter() - t0, 6),
                                              "source": request.remote or "-"})

    return middleware
