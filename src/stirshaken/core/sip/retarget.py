"""Retargeting information of a SIP request: who the call was for before it was diverted.

A call that was retargeted (forwarded, diverted) carries the previous target in one of two
headers, which an authentication service reads to sign a ``div`` PASSporT (RFC 8946 §3):

* ``Diversion`` (RFC 5806 §4)::

      Diversion = "Diversion" HCOLON diversion-params *(COMMA diversion-params)
      diversion-params = name-addr *(SEMI (diversion-reason / diversion-counter / ...))

  Each diverting entity adds its entry on top: the first entry names the target the call was
  most recently diverted *from*.
* ``History-Info`` (RFC 7044 §9.1)::

      History-Info = "History-Info" HCOLON hi-entry *(COMMA hi-entry)
      hi-entry = hi-targeted-to-uri *(SEMI hi-param)
      hi-param = hi-index / hi-target-param / hi-extension
      hi-index = "index" EQUAL indexval
      hi-target-param = rc-param / mp-param / np-param
      mp-param = "mp" EQUAL indexval

  An entry whose target was retargeted to a new URI (a new AoR, a diversion) is followed by one
  carrying ``mp=<index of the retargeted entry>`` (§10.3 "mp": mapped); ``rc`` (a registered
  contact of the same AoR) and ``np`` (no change) are not diversions.  The previous target is the
  entry that the last ``mp`` names.

Pure: :func:`diverted_from` reads parsed :class:`~stirshaken.core.sip.headers.Headers`.
"""

from __future__ import annotations

from stirshaken.core.sip.errors import SipParseError
from stirshaken.core.sip.headers import Headers
from stirshaken.core.sip.values import parse_name_addr

__all__ = ["diverted_from", "has_retargeting"]


def has_retargeting(headers: Headers) -> bool:
    """Whether the request carries a Diversion or History-Info header (cheap: two lookups)."""
    return "Diversion" in headers or "History-Info" in headers


def diverted_from(headers: Headers) -> str | None:
    """The URI the call was last diverted from, or ``None`` when the headers name none (absent,
    malformed, or a History-Info without an ``mp`` entry).  Diversion wins over History-Info when
    both are present (an entity that writes Diversion states the diversion explicitly)."""
    try:
        diversion = headers.get_all("Diversion")
        if diversion:
            return parse_name_addr(diversion[0]).uri
        entries = [parse_name_addr(v) for v in headers.get_all("History-Info")]
    except SipParseError:
        return None
    by_index = {e.params.get("index"): e for e in entries if e.params.get("index")}
    for e in reversed(entries):
        mp = e.params.get("mp")
        if mp:
            prev = by_index.get(mp)
            return prev.uri if prev is not None else None
    return None
