"""The SHAKEN certificate profile of ATIS-1000080 v005 §6.4.1 / §6.4.1.1 (docs/requirements.md
CM-01..CM-14): the policy OIDs, the SP subject rule and :func:`check_profile`, which names every
deviation of a certificate from the profile of its role (root, intermediate, SP or delegate,
RFC 9060).
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from stirshaken.core.certificates.loading import check_parsable
from stirshaken.core.errors import CertificateError, TNAuthListError
from stirshaken.core.tnauthlist import MALFORMED_EXTENSIONS, TNAUTHLIST_OID, from_certificate


#: US SHAKEN Certificate Policy OIDs (CP v1.1-v1.4, docs/requirements.md CM-11).
SHAKEN_CP_ARC = "2.16.840.1.114569.1.1."
SHAKEN_CP_OID = x509.ObjectIdentifier("2.16.840.1.114569.1.1.3")
ANY_POLICY_OID = x509.ObjectIdentifier("2.5.29.32.0")

_ALLOWED_EXTENSIONS = {
    ExtensionOID.KEY_USAGE,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    TNAUTHLIST_OID,
}


#: the subject attributes an SP certificate may carry (ATIS-1000080 §6.4.1): C, O and CN required,
#: ST, L and OU optional
_SUBJECT_REQUIRED = ((NameOID.COUNTRY_NAME, "C"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.COMMON_NAME, "CN"))
_SUBJECT_OPTIONAL = {NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU"}


def check_sp_subject(subject: x509.Name, spc: str | None) -> list[str]:
    """Every way ``subject`` falls short of the SP certificate subject rule of ATIS-1000080 §6.4.1
    (CM-06): exactly one C, O and CN; the CN contains ``SHAKEN`` and, for an SP certificate, the
    SPC (``spc``; None for a delegate certificate, RFC 9060, whose CN need only be present);
    ST, L and OU are allowed, nothing else.  Each finding is one line naming the attribute; an
    empty list means the subject conforms.  The STI-CA's finalize (``badCSR``) and
    :func:`check_profile` both use this one rule."""
    out: list[str] = []
    for oid, label in _SUBJECT_REQUIRED:
        n = len(subject.get_attributes_for_oid(oid))
        if n == 0:
            out.append(f"CM-06 subject lacks {label}")
        elif n > 1:
            out.append(f"CM-06 subject has {n} {label} attributes, expected one")
    for attr in subject:
        if attr.oid not in _SUBJECT_OPTIONAL and all(attr.oid != oid for oid, _ in _SUBJECT_REQUIRED):
            name = getattr(attr.oid, "_name", None) or attr.oid.dotted_string
            out.append(f"CM-06 subject attribute {name} is not allowed (only C, O, CN, ST, L, OU)")
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns and spc is not None:
        cn = str(cns[0])
        if "SHAKEN" not in cn:
            out.append(f"CM-06 CN {cn[:60]!r} does not contain 'SHAKEN'")
        elif not re.search(rf"(?<![0-9A-Za-z]){re.escape(spc)}(?![0-9A-Za-z])", cn.replace("SHAKEN", " ", 1)):
            # the SPC as a whole token: 'SHAKEN 12345' names SPC 12345, not 1234
            out.append(f"CM-06 CN {cn[:60]!r} does not contain the SPC {spc!r}")
    return out


def _role(cert: x509.Certificate) -> str:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, *MALFORMED_EXTENSIONS):
        return "sp"
    if not bc.ca:
        return "sp"
    return "root" if cert.issuer == cert.subject else "intermediate"


def check_profile(cert: x509.Certificate, role: str | None = None, *, issuer: x509.Certificate | None = None) -> list[str]:
    """Every deviation of ``cert`` from the ATIS-1000080 profile for its role.

    ``role`` is ``"root"``, ``"intermediate"`` or ``"sp"``; guessed from basicConstraints when
    None.  Each finding names the rule (CM-xx of docs/requirements.md#cm).  An empty list means conformant.
    With ``issuer`` (the issuing certificate) the issuer name (CM-05) and the authority key
    identifier (CM-10) are compared with it as well.
    """
    try:
        check_parsable(cert)
    except CertificateError as exc:
        return [f"certificate cannot be parsed: {exc.description}"]
    role = role or _role(cert)
    out: list[str] = []
    if cert.version != x509.Version.v3:
        out.append("CM-01 version is not v3")
    if cert.serial_number <= 0:
        out.append("CM-02 serial number is not positive")
    elif cert.serial_number.bit_length() < 64:
        out.append("CM-02 serial number has fewer than 64 bits")
    if cert.signature_algorithm_oid != x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        out.append("CM-03 signature algorithm is not ecdsa-with-SHA256")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        out.append("CM-04 public key is not P-256")
    subject = cert.subject
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if role != "sp":
        for oid, label in ((NameOID.COMMON_NAME, "CN"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.COUNTRY_NAME, "C")):
            if not subject.get_attributes_for_oid(oid):
                out.append(f"CM-06 subject lacks {label}")
    try:
        exts = cert.extensions
    except MALFORMED_EXTENSIONS as exc:
        return out + [f"extensions cannot be parsed: {exc}"]
    present = {e.oid: e for e in exts}

    bc = present.get(ExtensionOID.BASIC_CONSTRAINTS)
    if bc is None:
        out.append("CM-07 basicConstraints missing")
    else:
        if not bc.critical:
            out.append("CM-07 basicConstraints not critical")
        if bc.value.ca != (role != "sp"):
            out.append(f"CM-07 basicConstraints CA={bc.value.ca} for a {role} certificate")
    ku = present.get(ExtensionOID.KEY_USAGE)
    if ku is None:
        out.append("CM-08 keyUsage missing")
    else:
        if not ku.critical:
            out.append("CM-08 keyUsage not critical")
        v = ku.value
        flags = {
            "digitalSignature": v.digital_signature,
            "keyCertSign": v.key_cert_sign,
            "cRLSign": v.crl_sign,
            "keyEncipherment": v.key_encipherment,
            "contentCommitment": v.content_commitment,
            "dataEncipherment": v.data_encipherment,
            "keyAgreement": v.key_agreement,
        }
        on = {k for k, f in flags.items() if f}
        want = {"digitalSignature"} if role == "sp" else {"keyCertSign"}
        if on != want:
            out.append(f"CM-08 keyUsage is {sorted(on)}, expected only {sorted(want)}")
    ski = present.get(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if ski is None:
        out.append("CM-09 subjectKeyIdentifier missing")
    elif ski.value.digest != x509.SubjectKeyIdentifier.from_public_key(pub).digest:  # type: ignore[arg-type]
        out.append("CM-09 subjectKeyIdentifier is not the SHA-1 of the public key")
    aki = present.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if aki is None and role != "root":
        out.append("CM-10 authorityKeyIdentifier missing")
    elif aki is not None and role == "root" and ski is not None and aki.value.key_identifier != ski.value.digest:
        out.append("CM-10 root authorityKeyIdentifier differs from its subjectKeyIdentifier")
    cp = present.get(ExtensionOID.CERTIFICATE_POLICIES)
    if role == "root":
        if cp is not None:
            out.append("CM-11 root carries certificatePolicies")
    elif cp is None:
        out.append("CM-11 certificatePolicies missing")
    else:
        oids = [p.policy_identifier.dotted_string for p in cp.value]
        ok = len(oids) == 1 and (
            oids[0].startswith(SHAKEN_CP_ARC) or (role == "intermediate" and oids[0] == ANY_POLICY_OID.dotted_string)
        )
        if not ok:
            out.append(f"CM-11 certificatePolicies must hold exactly one SHAKEN policy OID, found {oids}")
        if cp.critical:
            out.append("CM-11 certificatePolicies is critical")
    dp = present.get(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    if role == "root":
        if dp is not None:
            out.append("CM-12 root carries cRLDistributionPoints")
    elif dp is None:
        out.append("CM-12 cRLDistributionPoints missing")
    else:
        points = list(dp.value)
        if len(points) != 1:
            out.append("CM-12 cRLDistributionPoints must hold exactly one DistributionPoint")
        elif not points[0].full_name or not any(
            isinstance(n, x509.UniformResourceIdentifier) and n.value.lower().startswith(("http://", "https://"))
            for n in points[0].full_name
        ):
            out.append("CM-12 DistributionPoint has no HTTP(S) URL")
    tn_ext = present.get(TNAUTHLIST_OID)
    if role == "sp":
        if tn_ext is None:
            out.append("CM-13 TNAuthList missing")
        else:
            if tn_ext.critical:
                out.append("CM-13 TNAuthList is critical")
            try:
                tnal = from_certificate(cert)
                assert tnal is not None
                entries = tnal[0].entries
                if tnal[0].spc is None:  # a delegate certificate (RFC 9060): TN and range entries only
                    out.extend(check_sp_subject(subject, None))
                elif len(entries) != 1:
                    out.append("CM-13 TNAuthList must hold exactly one SPC entry")
                elif not tnal[0].spc.isalnum() or tnal[0].spc != tnal[0].spc.upper():
                    out.append("CM-13 SPC must be digits and upper-case letters")
                else:
                    out.extend(check_sp_subject(subject, tnal[0].spc))
            except TNAuthListError as exc:
                out.append(f"CM-13 TNAuthList is malformed: {exc.description}")
    else:
        if tn_ext is not None:
            out.append("CM-13 CA certificate carries TNAuthList")
        if cns and "SHAKEN" not in cns[0].upper():
            out.append("CM-06 CA CN does not contain 'SHAKEN'")
        if role == "root" and cns and "ROOT" not in cns[0].upper():
            out.append("CM-06 root CN does not contain 'ROOT'")
    for oid, ext in present.items():
        if oid not in _ALLOWED_EXTENSIONS:
            out.append(f"CM-14 extension {oid.dotted_string} is not allowed")
        elif ext.critical and oid not in (ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE) and oid != TNAUTHLIST_OID:
            out.append(f"CM-08 only basicConstraints and keyUsage may be critical ({oid.dotted_string} is)")
    if role == "root" and cert.issuer != cert.subject:
        out.append("CM-05 root issuer differs from its subject")
    if issuer is not None:
        if cert.issuer != issuer.subject:
            out.append("CM-05 issuer is not the subject of the issuing certificate")
        try:
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except (x509.ExtensionNotFound, *MALFORMED_EXTENSIONS):
            issuer_ski = None
        if aki is not None and issuer_ski is not None and aki.value.key_identifier != issuer_ski:
            out.append("CM-10 authorityKeyIdentifier is not the issuer's subjectKeyIdentifier")
    return out
