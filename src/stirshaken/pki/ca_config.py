"""STI-CA settings and key material (RFC 8555, ATIS-1000080 §6.3.5 / §6.4.1, CM-12).

:class:`CAConfig` is every setting of the STI-CA (:mod:`stirshaken.pki.ca`), each relaxation a
named option, off by default; :class:`CAKeys` its root and the intermediate that signs SP
certificates, created in the state directory on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.keys import generate_private_key, load_private_key, write_private_key
from stirshaken.pki.store import sqlite_url


@dataclass
class CAConfig:
    """STI-CA settings.

    ``token_authority``: the STI-PA base URL announced in tkauth-01 challenges.
    ``pa_trust_anchors``: STI-PA root certificates SPC-token signers must chain to;
    ``pa_certs``: STI-PA signing certificates trusted directly (pinned).
    ``x5u_prefixes``: URL prefixes the token ``x5u`` may point at (default: the token authority).
    ``crl_url`` / ``crl_issuer``: the SHAKEN CRL distribution point (CM-12).
    ``ca_bundle``: PEM roots for fetching x5u / revoked tokens over HTTPS.

    Relaxations, each off by default and logged (WARNING) every time it is used:

    ``allow_account_key_reuse``: issue for a CSR whose key is the ordering account's key, which
    RFC 8555 §11.1 says a CA should refuse (``badCSR`` otherwise); some SP clients reuse the key.
    ``allow_header_only_signature``: accept a POST-as-GET whose ES256 signature covers the
    base64url protected header alone instead of ``protected || "." || ""`` (RFC 7515 §5.1), as
    one commercial client signs it (``malformed`` otherwise).

    ``eab_required``: newAccount needs an external account binding (RFC 8555 §7.3.4) made with a
    key minted by ``stirshaken ca eab-create``; the directory says ``externalAccountRequired``.
    """

    base_url: str
    state_dir: Path
    token_authority: str
    crl_url: str
    crl_issuer: x509.Name | None = None
    pa_trust_anchors: list[x509.Certificate] = field(default_factory=list)
    pa_certs: list[x509.Certificate] = field(default_factory=list)
    x5u_prefixes: list[str] | None = None
    ca_bundle: str | None = None
    db_url: str | None = None
    check_token_revocation: bool = True
    cert_days: int = 365
    max_cert_days: int = 398
    order_lifetime: int = 86400
    org: str = "Test STI-CA"
    allow_account_key_reuse: bool = False
    allow_header_only_signature: bool = False
    eab_required: bool = False

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(str(self.state_dir / "ca.db"))


@dataclass
class CAKeys:
    """The STI-CA root and the intermediate that signs SP certificates."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, state_dir: Path, *, crl_url: str, crl_issuer: x509.Name | None, org: str = "Test STI-CA") -> "CAKeys":
        state_dir.mkdir(parents=True, exist_ok=True)
        files = [state_dir / n for n in ("ca-root.pem", "ca-root.key", "ca-intermediate.pem", "ca-intermediate.key")]
        if all(f.exists() for f in files):
            return cls(
                certs.load_certificates(files[0].read_bytes())[0], load_private_key(files[1]),
                certs.load_certificates(files[2].read_bytes())[0], load_private_key(files[3]),
            )
        root_key, inter_key = generate_private_key(), generate_private_key()
        root = certs.create_root(root_key, cn="SHAKEN ROOT CA", org=org)
        inter = certs.create_intermediate(
            inter_key, root, root_key, cn="SHAKEN Intermediate CA", org=org, crl_url=crl_url, crl_issuer=crl_issuer
        )
        write_private_key(files[1], root_key, public=False)
        write_private_key(files[3], inter_key, public=False)
        files[0].write_bytes(certs.pem([root]))
        files[2].write_bytes(certs.pem([inter]))
        return cls(root, root_key, inter, inter_key)


__all__ = ["CAConfig", "CAKeys"]
