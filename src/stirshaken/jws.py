"""ES256 JWS signed by an ``x5u`` certificate that must chain to configured roots.

Two STI-PA artefacts are such tokens: the trusted STI-CA list a verifier loads
(:mod:`stirshaken.trust`, STANDARDS.md PA-01) and the SPC token an STI-CA checks before issuing
(:mod:`stirshaken.ca`, ATIS-1000080 §6.3.5).  Both callers fetch the signer chain themselves
(their I/O differs) and hand it here; this module does the two checks that must not differ
between them: path validation of the signer against the roots (basicConstraints required on CA
certificates, nothing else imposed: STI-PA certificates vary) and the ES256 signature over the
signing input as received.  Every failure raises ``error(f"{what} ...")`` so each caller keeps
its own error type (and SIP/ACME mapping).
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv

from .errors import SignatureError
from .passport import verify_signature

ErrorFactory = Callable[[str], Exception]


def check_signer_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    error: ErrorFactory,
    what: str,
    root_name: str = "the STI-PA root",
) -> x509.Certificate:
    """Path-validate ``chain`` (signer first, then intermediates) against ``roots`` at ``at``;
    returns the signer certificate."""
    if not roots:
        raise error(f"no trust anchor configured to verify the {what} signer")
    if not chain:
        raise error(f"{what} signer certificate missing")
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(roots)))
        .time(at)
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, xv.Criticality.AGNOSTIC, None),
            ee_policy=xv.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(chain[0], list(chain[1:]))
    except xv.VerificationError as exc:
        raise error(f"{what} signer does not chain to {root_name}: {str(exc)[:160]}") from None
    return chain[0]


def verify_es256_by(signing_input: bytes, signature: bytes, signer: x509.Certificate, *, error: ErrorFactory, what: str) -> None:
    """The raw ES256 ``signature`` over ``signing_input`` must verify with ``signer``'s key."""
    pub = signer.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise error(f"{what} signer key is not an EC key")
    try:
        verify_signature(signing_input, signature, pub)
    except SignatureError:
        raise error(f"{what} signature does not verify with the signer certificate") from None


def verify_x5u_jws(
    signing_input: bytes,
    signature: bytes,
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    error: ErrorFactory,
    what: str,
    pinned: Sequence[x509.Certificate] = (),
    root_name: str = "the STI-PA root",
) -> x509.Certificate:
    """Both checks: the signer (``chain[0]``, fetched from the JWS ``x5u``) has the public key of
    a ``pinned`` certificate or chains to ``roots``, and the signature verifies with it.
    Returns the signer certificate."""
    if not chain:
        raise error(f"{what} signer certificate missing")
    pub = chain[0].public_key()
    if any(p.public_key() == pub for p in pinned):
        signer = chain[0]
    else:
        signer = check_signer_chain(chain, roots, at=at, error=error, what=what, root_name=root_name)
    verify_es256_by(signing_input, signature, signer, error=error, what=what)
    return signer


__all__ = ["check_signer_chain", "verify_es256_by", "verify_x5u_jws"]
