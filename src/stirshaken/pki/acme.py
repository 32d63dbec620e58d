"""ACME (RFC 8555) as SHAKEN uses it: the names and the problem type shared by the STI-CA
(:mod:`stirshaken.pki.ca`) and the SP-side client (:mod:`stirshaken.pki.acme_client`).

* Media types: ``application/jose+json`` for every request (RFC 8555 §6.2),
  ``application/pem-certificate-chain`` for the certificate (§9.1), ``application/problem+json``
  for errors (§6.7).
* The TNAuthList identifier type (RFC 9448 §3) and the ``tkauth-01`` challenge (RFC 9447 §3).
* :class:`AcmeProblem`: one RFC 8555 §6.7 problem type, raised by the server to answer and by the
  client when a server answered one.
"""

from __future__ import annotations

from typing import Any, Mapping

JOSE_JSON = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
PROBLEM_JSON = "application/problem+json"
#: prefix of every RFC 8555 §6.7 error type
ERR = "urn:ietf:params:acme:error:"
#: RFC 9448 §3 identifier type
TNAUTHLIST = "TNAuthList"
#: RFC 9447 §3 challenge type
TKAUTH01 = "tkauth-01"


class AcmeProblem(Exception):
    """An RFC 8555 §6.7 problem: ``urn:ietf:params:acme:error:<kind>``, a detail and an HTTP status.

    ``kind`` is the short name (``badNonce``, ``unauthorized``, ...); :attr:`type` is the full URN.
    ``status`` is the HTTP status the server answers (or answered) with; 0 for a failure found by
    the client itself.  Extra members (``subproblems``, ``identifier``) travel in ``extra``.
    """

    def __init__(self, kind: str, detail: str, status: int = 400, **extra: Any):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.extra = extra

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None, status: int = 0) -> "AcmeProblem":
        """The problem a server answered (``doc`` as received; anything not a problem becomes
        ``serverInternal``)."""
        doc = doc if isinstance(doc, Mapping) else {}
        t = doc.get("type")
        kind = t[len(ERR):] if isinstance(t, str) and t.startswith(ERR) else (t if isinstance(t, str) and t else "serverInternal")
        detail = doc.get("detail")
        extra = {k: v for k, v in doc.items() if k not in ("type", "detail", "status")}
        return cls(kind, detail if isinstance(detail, str) else "", status, **extra)

    @property
    def type(self) -> str:
        """The full error type URN (RFC 8555 §6.7)."""
        return self.kind if ":" in self.kind else ERR + self.kind

    @property
    def problem(self) -> dict[str, Any]:
        """The problem document (RFC 7807 members plus ``extra``)."""
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "detail": self.detail, "status": self.status, **self.extra}

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" + (f" (HTTP {self.status})" if self.status else "")


__all__ = ["ERR", "JOSE_JSON", "PEM_CHAIN", "PROBLEM_JSON", "TKAUTH01", "TNAUTHLIST", "AcmeProblem"]
