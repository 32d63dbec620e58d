"""stirshaken: STIR/SHAKEN signing (STI-AS) and verification (STI-VS) for SIP calls.

The names below are the library's public API (``from stirshaken import Signer, Verifier``);
everything else is reachable through its layer (``stirshaken.core``, ``stirshaken.vs``,
``stirshaken.serve``, ``stirshaken.pki``) but may change between releases.

* :class:`Signer`: signs calls into SIP Identity header values (RFC 8224 §4, RFC 8225, RFC 8588).
* :class:`Verifier` / :class:`VerifierConfig` / :class:`CallInfo`: verifies the Identity headers
  of a call (RFC 8224 §6.2, ATIS-1000074 §5.3, ATIS-1000082), blocking or with ``await``;
  returns a :class:`VerificationResult` (with one :class:`PassportResult` per PASSporT).
* :func:`decode_unverified`: decodes a PASSporT and checks its form, header and claims, but
  **not** its signature or certificate: for display and troubleshooting only.
* :func:`load_private_key` / :func:`generate_private_key`: P-256 keys for ES256.
* :class:`StirShakenError` and its subclasses: each carries the SIP code, reason phrase and
  verstat a verifier answers with.

Names are loaded on first use, so ``import stirshaken`` stays cheap and the signing path does not
load the verifier's HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_ERRORS = (
    "StirShakenError",
    "MissingIdentityError",
    "StaleDateError",
    "BadIdentityInfoError",
    "UnsupportedCredentialError",
    "InvalidIdentityError",
    "IdentityHeaderSyntaxError",
    "PassportFormatError",
    "PassportEncodingError",
    "PassportJSONError",
    "CompactFormError",
    "MissingClaimError",
    "InvalidClaimError",
    "UnsupportedAlgorithmError",
    "UnsupportedTypeError",
    "UnsupportedPPTError",
    "MissingHeaderParameterError",
    "X5UMismatchError",
    "SignatureError",
    "IdentityMismatchError",
    "CertificateError",
    "UntrustedCertificateError",
    "TNAuthListError",
    "FetchError",
    "ReplayError",
    "VERSTAT_PASSED",
    "VERSTAT_FAILED",
    "VERSTAT_NONE",
)

#: public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "Signer": ("stirshaken.core.passport", "Signer"),
    "PASSporT": ("stirshaken.core.passport", "PASSporT"),
    "decode_unverified": ("stirshaken.core.passport", "decode"),
    "load_private_key": ("stirshaken.core.keys", "load_private_key"),
    "generate_private_key": ("stirshaken.core.keys", "generate_private_key"),
    "VerificationResult": ("stirshaken.core.verification", "VerificationResult"),
    "PassportResult": ("stirshaken.core.verification", "PassportResult"),
    "Verifier": ("stirshaken.vs.verifier", "Verifier"),
    "VerifierConfig": ("stirshaken.vs.config", "VerifierConfig"),
    "CallInfo": ("stirshaken.vs.verifier", "CallInfo"),
    **{name: ("stirshaken.core.errors", name) for name in _ERRORS},
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'stirshaken' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from stirshaken.core.errors import *  # noqa: F403
    from stirshaken.core.keys import generate_private_key, load_private_key
    from stirshaken.core.passport import PASSporT, Signer
    from stirshaken.core.passport import decode as decode_unverified
    from stirshaken.core.verification import PassportResult, VerificationResult
    from stirshaken.vs.config import VerifierConfig
    from stirshaken.vs.verifier import CallInfo, Verifier
