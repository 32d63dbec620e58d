"""core/errors.py: every error carries the SIP answer and verstat of its step (RFC 8224 §6.2.2,
§13.2; ATIS-1000082 error table)."""

from __future__ import annotations

import pytest

from stirshaken.core import errors as E


@pytest.mark.parametrize("cls, code, reason, verstat", [
    (E.MissingIdentityError, 428, "Use Identity Header", E.VERSTAT_NONE),
    (E.StaleDateError, 403, "Stale Date", E.VERSTAT_NONE),
    (E.BadIdentityInfoError, 436, "Bad Identity Info", E.VERSTAT_NONE),
    (E.FetchError, 436, "Bad Identity Info", E.VERSTAT_NONE),
    (E.UnsupportedCredentialError, 437, "Unsupported Credential", E.VERSTAT_NONE),
    (E.UntrustedCertificateError, 437, "Unsupported Credential", E.VERSTAT_FAILED),
    (E.InvalidIdentityError, 438, "Invalid Identity Header", E.VERSTAT_NONE),
    (E.SignatureError, 438, "Invalid Identity Header", E.VERSTAT_FAILED),
])
def test_each_error_carries_its_answer(cls, code, reason, verstat) -> None:
    err = cls("what went wrong")
    assert (err.sip_code, err.reason, err.verstat) == (code, reason, verstat)
    assert err.description == "what went wrong"
    assert str(err) == f"{code} {reason}: what went wrong"
    assert isinstance(err, E.StirShakenError)


def test_reason_phrases_are_the_rfc_ones() -> None:
    assert E.SIP_REASONS == {403: "Stale Date", 428: "Use Identity Header", 436: "Bad Identity Info",
                             437: "Unsupported Credential", 438: "Invalid Identity Header"}
