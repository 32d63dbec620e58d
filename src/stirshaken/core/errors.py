"""Typed errors of the STIR/SHAKEN stack.

Every rule the core checks raises a subclass of :class:`StirShakenError`.  Each error carries the
SIP response code and reason phrase that a verification service answers with (RFC 8224 §6.2.2,
§13.2), the ``verstat`` value it leads to (ATIS-1000082 error table, 3GPP TS 24.229) and a human
description.  Errors are raised where a rule is broken and turned into protocol responses only at
the edge (REST, SIP, CLI).
"""

from __future__ import annotations

#: SIP reason phrases of the STIR response codes (RFC 8224 §6.2.2 and §13.2).
SIP_REASONS: dict[int, str] = {
    403: "Stale Date",
    428: "Use Identity Header",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
}

VERSTAT_PASSED = "TN-Validation-Passed"
VERSTAT_FAILED = "TN-Validation-Failed"
VERSTAT_NONE = "No-TN-Validation"


class StirShakenError(Exception):
    """Base error: a broken STIR/SHAKEN rule with its SIP code, reason phrase and verstat."""

    sip_code: int = 438
    verstat: str = VERSTAT_NONE

    def __init__(self, description: str, *, sip_code: int | None = None, verstat: str | None = None):
        super().__init__(description)
        self.description = description
        if sip_code is not None:
            self.sip_code = sip_code
        if verstat is not None:
            self.verstat = verstat

    @property
    def reason(self) -> str:
        """The SIP reason phrase for :attr:`sip_code`."""
        return SIP_REASONS.get(self.sip_code, "Invalid Identity Header")

    def __str__(self) -> str:
        return f"{self.sip_code} {self.reason}: {self.description}"


class MissingIdentityError(StirShakenError):
    """No Identity header where policy requires one (RFC 8224 §6.2 step 1): 428."""

    sip_code = 428


class StaleDateError(StirShakenError):
    """Date or iat outside the freshness window (RFC 8224 §6.2 step 4): 403 Stale Date."""

    sip_code = 403


class BadIdentityInfoError(StirShakenError):
    """The credential reference (info / x5u) is missing, invalid or cannot be fetched: 436."""

    sip_code = 436


class UnsupportedCredentialError(StirShakenError):
    """The credential is of an unsupported type or not trusted (RFC 8224 §6.2.2): 437."""

    sip_code = 437


class InvalidIdentityError(StirShakenError):
    """The Identity header or its PASSporT is malformed or does not match the request: 438."""

    sip_code = 438


# --- finer-grained errors, each a subclass of the SIP-level class it maps to -------------------


class IdentityHeaderSyntaxError(InvalidIdentityError):
    """The Identity header value does not follow the RFC 8224 §4 ABNF."""


class PassportFormatError(InvalidIdentityError):
    """The PASSporT is not a well-formed JWS (RFC 8225 §6, RFC 7515 §7.1)."""


class PassportEncodingError(PassportFormatError):
    """A base64url segment is not canonical base64url without padding (RFC 7515 §2)."""


class PassportJSONError(PassportFormatError):
    """Header or payload is not a JSON object, or has duplicate member names (RFC 8225 §9)."""


class CompactFormError(InvalidIdentityError):
    """SHAKEN requires the full form of PASSporT (ATIS-1000074 §5.3.3)."""


class MissingClaimError(InvalidIdentityError):
    """A mandatory claim is absent from the PASSporT payload (RFC 8225 §5, RFC 8588)."""


class InvalidClaimError(InvalidIdentityError):
    """A claim has the wrong JSON type or a value outside its definition."""


class UnsupportedAlgorithmError(UnsupportedCredentialError):
    """``alg`` is not ES256 (RFC 8588, ATIS-1000074): ``none`` and HS* included."""


class UnsupportedTypeError(UnsupportedCredentialError):
    """``typ`` is not ``passport`` (RFC 8225 §4.1)."""


class UnsupportedPPTError(InvalidIdentityError):
    """The ``ppt`` extension is unknown or not the expected one (RFC 8225 §8.1)."""


class MissingHeaderParameterError(BadIdentityInfoError):
    """The PASSporT JOSE header lacks alg/typ/ppt/x5u (ATIS-1000082 E9)."""


class X5UMismatchError(BadIdentityInfoError):
    """``x5u`` in the PASSporT header differs from the Identity ``info`` parameter (E10)."""


class SignatureError(InvalidIdentityError):
    """The ES256 signature does not verify (RFC 8224 §6.2 step 5)."""

    verstat = VERSTAT_FAILED


class IdentityMismatchError(InvalidIdentityError):
    """``orig`` or ``dest`` does not match the SIP request (RFC 8224 §6.2, ATIS-1000074 §5.3.1)."""


class CertificateError(UnsupportedCredentialError):
    """The certificate is unusable: bad encoding, profile, dates, chain or revocation."""


class UntrustedCertificateError(CertificateError):
    """The certificate does not chain to a trusted STI-CA, or is revoked (ATIS-1000082 E17)."""

    verstat = VERSTAT_FAILED


class TNAuthListError(CertificateError):
    """The TNAuthList extension is absent or not valid DER for RFC 8226 §9."""


class FetchError(BadIdentityInfoError):
    """The x5u / info URL could not be dereferenced (RFC 8224 §6.2 step 3)."""


class ReplayError(InvalidIdentityError):
    """The same PASSporT was already seen within the freshness window (RFC 8225 §10.1)."""
