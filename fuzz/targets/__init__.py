"""The fuzz targets, one module per parser; :func:`load` returns one, :data:`NAMES` lists them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fuzz.harness import Target

#: every target, in the order ``make fuzz`` runs them
NAMES = (
    "identity",      # core.identity: the Identity header (RFC 8224 §4)
    "passport",      # core.passport / core.jose: the PASSporT compact JWS (RFC 8225, RFC 7515)
    "sip_message",   # core.sip: one SIP message (RFC 3261 §7) and its header values
    "sip_stream",    # core.sip.framing: the TCP/TLS stream framer (RFC 3261 §18.3)
    "tnauthlist",    # core.tnauthlist: TNAuthList DER and the ACME identifier value (RFC 8226 §9, RFC 9448)
    "certificates",  # core.certificates / core.keys: certificates, CRLs, CSRs, private keys
    "config",        # serve.config / vs.config: the TOML configuration
    "rest",          # serve.rest: ATIS-1000082 request bodies
    "http_head",     # serve.http: the lean HTTP/1.1 engine's request heads
    "acme",          # pki.acme: the RFC 8555 messages and the external account binding
)


def load(name: str) -> "Target":
    if name not in NAMES:
        raise ValueError(f"unknown fuzz target {name!r} (known: {', '.join(NAMES)})")
    return importlib.import_module(f"fuzz.targets.{name}").TARGET  # type: ignore[no-any-return]
