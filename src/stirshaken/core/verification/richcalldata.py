"""Step 2b of verifying Identity headers: the integrity of rich call data (RFC 9795;
docs/requirements.md RC-02).

After :func:`~stirshaken.core.verification.completion.complete`, every PASSporT whose signature
verified and that carries an ``rcd`` claim has its ``rcdi`` digests checked
(:func:`stirshaken.core.rcd.verify_rcdi`) against ``jcd`` inline and the content of the URLs
:func:`rcd_fetches` names, which the caller fetched (the VS through the x5u fetcher, with the same
SSRF rules and size cap).  A PASSporT of ``ppt`` ``rcd`` whose rich call data fails becomes a
failed result (438, or the fetch's 436); rich call data inside a PASSporT of another type (a
``shaken`` one) adds a failed ``rcd-integrity`` check and leaves that PASSporT's outcome, and so
the call's verstat, as it was.  Pure: no I/O.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from stirshaken.core.errors import StirShakenError
from stirshaken.core.rcd import RichCallDataError, rcd_urls, verify_rcdi
from stirshaken.core.verification.results import Check, PassportResult


def carries_rcd(results: Sequence[PassportResult]) -> bool:
    """True when a verified PASSporT of ``results`` carries an ``rcd`` claim (else this stage has
    nothing to do: one dict lookup per result)."""
    for r in results:
        p = r.passport
        if p is not None and r.ok and "rcd" in p.claims:
            return True
    return False


def rcd_fetches(results: Sequence[PassportResult]) -> tuple[str, ...]:
    """The URLs whose content the ``rcdi`` digests of the verified PASSporTs cover, each once."""
    out: dict[str, None] = {}
    for r in results:
        p = r.passport
        if p is not None and r.ok and "rcd" in p.claims:
            for url in rcd_urls(p.claims):
                out[url] = None
    return tuple(out)


def check_rich_call_data(results: Sequence[PassportResult], contents: Mapping[str, bytes | StirShakenError]) -> list[PassportResult]:
    """``results`` with the ``rcd-integrity`` check of every verified PASSporT carrying ``rcd``
    (module docstring); ``contents`` maps each URL of :func:`rcd_fetches` to its bytes or to the
    error that prevented fetching it."""
    out: list[PassportResult] = []
    for r in results:
        p = r.passport
        if p is None or not r.ok or "rcd" not in p.claims:
            out.append(r)
            continue
        try:
            check = Check("rcd-integrity", True, verify_rcdi(p.claims, contents))
        except RichCallDataError as err:
            check = Check("rcd-integrity", False, err.description)
            if r.ppt == "rcd":
                out.append(PassportResult(raw=r.raw, ppt=r.ppt, ok=False, checks=r.checks + (check,), passport=p, error=err))
                continue
        out.append(PassportResult(raw=r.raw, ppt=r.ppt, ok=r.ok, checks=r.checks + (check,), passport=p,
                                  credential=r.credential, error=r.error))
    return out


__all__ = ["carries_rcd", "check_rich_call_data", "rcd_fetches"]
