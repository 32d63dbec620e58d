"""core/certificates/ (loading, profile, issuance, validation): CSRs, issuance with the ATIS-1000080 §6.4.1
profile, the profile check, path validation and CRLs."""

from __future__ import annotations

import ast
import datetime as dt
import os
from pathlib import Path
import stat
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from stirshaken.core import certificates as C
from stirshaken.core import keys as K
from stirshaken.core.errors import CertificateError, TNAuthListError, UntrustedCertificateError, VERSTAT_FAILED
from stirshaken.core.tnauthlist import TN, TNAUTHLIST_OID, TNAuthList, TNRange, from_certificate
from tests import _core_support as V
import base64
import string
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from stirshaken.core import passport as pp
from stirshaken.core.b64 import b64url_decode, b64url_decode_valid, b64url_encode
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import TOKEN, IdentityHeader, parse_identity, parse_identity_headers
from stirshaken.core.tn import TNError, canonicalize_tn
from stirshaken.core.tnauthlist import SPC, TN, TNAuthList, TNRange


NOW = dt.datetime.now(dt.timezone.utc)
PACKAGE = Path(C.__file__).parent


def test_certificates_is_a_package_of_its_concepts() -> None:
    """One module per standard concept, every public name of each re-exported by the package, and
    no module importing another's private names (the seams stay seams)."""
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "issuance.py", "loading.py", "profile.py", "validation.py"]
    for name in modules:
        tree = ast.parse((PACKAGE / name).read_text())
        private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.name.startswith("_")]
        assert private == [], name
        if name == "__init__.py":
            continue
        public = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")}
        public |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                   if isinstance(t, ast.Name) and not t.id.startswith("_")}
        assert public <= set(C.__all__), (name, sorted(public - set(C.__all__)))
        for attr in public:
            assert getattr(C, attr) is getattr(getattr(C, name.removesuffix(".py")), attr)


@pytest.fixture(scope="module")
def chain() -> V.Chain:
    return V.make_chain()


def _build(role: str, chain: V.Chain, *, bc_critical=True, ku=None, ku_critical=True, eku=False, tn_critical=False,
           tnal: TNAuthList | None = TNAuthList.for_spc("1234"), cp=True, cp_oids=None, crl=True, serial=None, cn=None,
           ski=True, aki=True, key=None, name=None, version_ca=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key()
    if role == "root":
        issuer_name, issuer_key, issuer_pub = None, key, pub
    else:
        issuer_name, issuer_key, issuer_pub = chain.inter.subject, chain.inter_key, chain.inter_key.public_key()
    default_cn = {"root": "SHAKEN ROOT CA", "intermediate": "SHAKEN Intermediate CA", "sp": "SHAKEN 1234"}[role]
    subject = name or C.make_name(cn or default_cn, "Org")
    ca = role != "sp" if version_ca is None else version_ca
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(pub)
        .serial_number(serial if serial is not None else C.random_serial())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=bc_critical)
        .add_extension(ku or C.issuance._key_usage(ca=ca), critical=ku_critical)
    )
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    if aki:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False)
    if cp:
        oids = cp_oids or [C.SHAKEN_CP_OID]
        b = b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(o, None) for o in oids]), critical=False)
    if crl:
        b = b.add_extension(C.issuance._crl_dp("http://127.0.0.1:23999/x.crl", None), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if tnal is not None and role == "sp":
        b = b.add_extension(x509.UnrecognizedExtension(TNAUTHLIST_OID, tnal.to_der()), critical=tn_critical)
    return b.sign(issuer_key, hashes.SHA256())


def _findings(cert, role=None):
    return C.check_profile(cert, role)


def _has(findings, rule, text=""):
    return any(f.startswith(rule) and text.lower() in f.lower() for f in findings)


def _raises_path(chain_store, certs, at=None) -> str:
    with pytest.raises(UntrustedCertificateError) as ei:
        chain_store.validate(certs, at=at)
    assert ei.value.sip_code == 437 and ei.value.verstat == VERSTAT_FAILED
    text = str(ei.value.description)
    for internal in ("VerificationError", "candidates exhausted", "validation error", "Other("):
        assert internal not in text, text
    return text


def typed(fn, *args, errors=(StirShakenError,)):
    try:
        fn(*args)
    except errors:
        pass


CHAIN = V.make_chain()


CERT_DER = CHAIN.sp.public_bytes(serialization.Encoding.DER)


def test_csr_carries_tnauthlist():
    key = K.generate_private_key()
    csr = C.build_csr(key, spc="1234")
    assert csr.is_signature_valid
    assert C.csr_tnauthlist(csr) == TNAuthList.for_spc("1234")
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SHAKEN 1234"
    loaded = C.load_csr(csr.public_bytes(serialization.Encoding.PEM))
    assert C.csr_tnauthlist(loaded).spc == "1234"
    assert C.csr_tnauthlist(C.load_csr(csr.public_bytes(serialization.Encoding.DER))).spc == "1234"
    tnal = TNAuthList((TN("12155551212"), TNRange("12155550000", 100)))
    assert C.csr_tnauthlist(C.build_csr(key, tnauthlist=tnal)) == tnal
    with pytest.raises(ValueError):
        C.build_csr(key)


def test_csr_errors():
    key = K.generate_private_key()
    plain = x509.CertificateSigningRequestBuilder().subject_name(C.make_name("x", "y")).sign(key, hashes.SHA256())
    with pytest.raises(TNAuthListError):
        C.csr_tnauthlist(plain)
    with pytest.raises(CertificateError):
        C.load_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(CertificateError):
        C.load_csr(b"\x30\x03\x02\x01\x00")


def _csr_with(cri: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR DER over the CertificationRequestInfo ``cri`` (RFC 2986 §4.2), signed with ``key``
    (or a CRL over a TBSCertList: the same SEQUENCE { tbs, algorithm, signature })."""
    from fuzz.targets.certificates import signed

    return signed(cri, key)


@pytest.mark.parametrize("old, new, problem", [
    (bytes.fromhex("03420004"), bytes.fromhex("03420005"), "public key is malformed"),  # no such point encoding (SEC 1 §2.3.3)
    (bytes.fromhex("2a8648ce3d0201"), bytes.fromhex("2b8648ce3d0201"), "Unknown key type"),  # unknown key algorithm OID
    (b"\x0c\x0fSTI Participant", b"\x0d\x0fSTI Participant", "malformed DER"),     # O of the subject: tag 13, not a string
    # the extension request: TNAuthList OID turned into ...1.122, its OCTET STRING into junk
    (bytes.fromhex("06082b0601050507011a041e301c"), bytes.fromhex("06082b0601050507017a6a304441"), "single-valued"),
])
def test_csr_with_a_malformed_field_is_a_certificate_error(old, new, problem):
    """Fuzz findings (make fuzz, certificates): a CSR whose key or subject is malformed raised
    ValueError / UnsupportedAlgorithm from cryptography's lazy parsing, in load_csr or later in the
    STI-CA; load_csr now parses those fields and says so in one line."""
    key = K.generate_private_key()
    cri = C.build_csr(key, tnauthlist=TNAuthList((SPC("1234"), TNRange("12155551200", 100)))).tbs_certrequest_bytes
    assert old in cri
    with pytest.raises(CertificateError, match=f"not a valid CSR: .*{problem}") as info:
        C.load_csr(_csr_with(cri.replace(old, new, 1), key))
    assert "\n" not in str(info.value)


def test_crl_with_a_malformed_issuer_is_a_certificate_error(chain):
    """Fuzz finding (make fuzz, certificates): a CRL whose issuer name is malformed loaded, then
    raised cryptography's ValueError inside TrustStore.validate (revocation check); load_crl now
    parses the fields revocation checking reads."""
    tbs = C.create_crl(chain.inter, chain.inter_key, [(5, NOW)]).tbs_certlist_bytes
    assert b"\x0c\x0bTest STI-CA" in tbs
    bad = _csr_with(tbs.replace(b"\x0c\x0bTest STI-CA", b"\x0d\x0bTest STI-CA", 1), chain.inter_key)
    with pytest.raises(CertificateError, match="not a valid CRL: malformed DER") as info:
        C.load_crl(bad)
    assert "\n" not in str(info.value)


def test_crl_and_csr_of_an_unknown_version_are_certificate_errors(chain):
    """Fuzz finding (make fuzz, certificates): a CRL (or CSR) with an unknown version number
    raised cryptography's InvalidVersion, which is no ValueError, out of load_crl / load_csr."""
    crl = C.create_crl(chain.inter, chain.inter_key, []).public_bytes(serialization.Encoding.DER)
    assert crl[6:9] == b"\x02\x01\x01"  # version v2 (RFC 5280 §5.1.2.1)
    with pytest.raises(CertificateError, match="not a valid CRL: 86 is not a valid CRL version"):
        C.load_crl(crl[:6] + b"\x02\x01\x56" + crl[9:])
    csr = C.build_csr(K.generate_private_key(), spc="1234").public_bytes(serialization.Encoding.DER)
    at = csr.index(b"\x02\x01\x00")  # version v1 (RFC 2986 §4.1)
    with pytest.raises(CertificateError, match="not a valid CSR: 5 is not a valid CSR version"):
        C.load_csr(csr[:at] + b"\x02\x01\x05" + csr[at + 3:])


def test_name_attribute_of_bit_string_type_is_a_certificate_error(chain):
    """Fuzz finding (make fuzz, certificates): a name attribute of type BIT STRING (allowed only
    for X500UniqueIdentifier) made cryptography raise TypeError out of load_certificates."""
    tbs = chain.sp.tbs_certificate_bytes
    cn = b"\x0c\x0bSHAKEN 1234"
    assert cn in tbs
    with pytest.raises(CertificateError, match="not a valid certificate: .*BitString"):
        C.load_certificates(_csr_with(tbs.replace(cn, b"\x03\x0b\x00HAKEN 1234", 1), chain.inter_key))


def test_certificate_with_a_repeated_extension(chain):
    """Fuzz finding (make fuzz, certificates): cryptography's DuplicateExtension is no ValueError,
    so a certificate repeating an extension (RFC 5280 §4.2) escaped check_profile, the TNAuthList
    reader, crl_urls and the path-fault report; each now treats it as malformed extensions."""
    tbs = chain.sp.tbs_certificate_bytes
    aki, ski = b"\x06\x03\x55\x1d\x23", b"\x06\x03\x55\x1d\x0e"  # authorityKeyIdentifier -> a second subjectKeyIdentifier
    assert aki in tbs and ski in tbs
    cert = C.load_certificates(_csr_with(tbs.replace(aki, ski, 1), chain.inter_key))[0]
    assert any(f.startswith("extensions cannot be parsed: Duplicate") for f in C.check_profile(cert, issuer=chain.inter))
    with pytest.raises(TNAuthListError, match="certificate extensions are malformed"):
        from_certificate(cert)
    assert C.crl_urls(cert) == []
    with pytest.raises(CertificateError) as info:
        chain.trust().validate([cert, chain.inter])
    assert "\n" not in str(info.value)


def test_names_with_control_characters_are_escaped_in_errors(chain):
    """Fuzz finding (make fuzz, certificates): a certificate name holding CR went raw into the
    path-validation error (which the STI-VS puts into its answers); it is escaped now."""
    key = K.generate_private_key()
    issuer = C.make_name("SHAKEN Interme\r\ndiate CA", "Test STI-CA")
    now = dt.datetime.now(dt.timezone.utc)
    leaf = (x509.CertificateBuilder().subject_name(C.make_name("SHAKEN 1234", "SP")).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(C.random_serial())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(chain.inter_key, hashes.SHA256()))
    with pytest.raises(UntrustedCertificateError) as info:
        chain.trust().validate([leaf, chain.inter])
    text = str(info.value)
    assert "CN=SHAKEN Interme\\x0d\\x0adiate CA" in text and "\r" not in text and "\n" not in text


def test_sp_from_csr_and_p384_csr_rejected(chain):
    key = K.generate_private_key()
    sp = C.create_sp_certificate(C.build_csr(key, spc="709J"), chain.inter, chain.inter_key, crl_url="http://127.0.0.1:23999/x.crl")
    assert from_certificate(sp) == (TNAuthList.for_spc("709J"), False)
    assert C.check_profile(sp) == []
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(CertificateError):
        C.create_sp_certificate(C.build_csr(p384, spc="1234"), chain.inter, chain.inter_key)  # type: ignore[arg-type]


def test_issued_chain_conforms(chain):
    assert C.check_profile(chain.root) == []
    assert C.check_profile(chain.inter) == []
    assert C.check_profile(chain.sp) == []
    assert C.check_profile(chain.root, "root") == [] and C.check_profile(chain.sp, "sp") == []


def test_issued_sp_details(chain):
    sp = chain.sp
    assert sp.version == x509.Version.v3
    assert sp.serial_number > 0 and sp.serial_number.bit_length() >= 64
    assert sp.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert sp.issuer == chain.inter.subject
    assert sp.subject.rfc4514_string() == "CN=SHAKEN 1234,O=STI Participant,C=US"
    exts = {e.oid: e for e in sp.extensions}
    assert exts[ExtensionOID.BASIC_CONSTRAINTS].critical and not exts[ExtensionOID.BASIC_CONSTRAINTS].value.ca
    ku = exts[ExtensionOID.KEY_USAGE]
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert exts[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value.key_identifier == chain.inter.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    assert [p.policy_identifier for p in exts[ExtensionOID.CERTIFICATE_POLICIES].value] == [C.SHAKEN_CP_OID]
    assert C.crl_urls(sp) == ["http://127.0.0.1:23999/inter.crl"]
    assert not exts[TNAUTHLIST_OID].critical
    assert exts[TNAUTHLIST_OID].value.value == bytes.fromhex(V.TNAUTH_1234_HEX)
    assert C.crl_urls(chain.root) == []
    assert chain.inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert sp.not_valid_after_utc <= chain.inter.not_valid_after_utc


def test_random_serials_differ():
    serials = {C.random_serial() for _ in range(50)}
    assert len(serials) == 50 and all(64 <= s.bit_length() <= 159 for s in serials)


def test_load_certificates_and_pem(chain):
    data = C.pem(chain.x5u_chain)
    assert C.load_certificates(data) == chain.x5u_chain
    assert C.load_certificates(chain.sp.public_bytes(serialization.Encoding.DER)) == [chain.sp]
    for bad in (b"", b"junk", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "text"):
        with pytest.raises(CertificateError):
            C.load_certificates(bad)  # type: ignore[arg-type]


def test_baseline_deviant_builder_is_conformant(chain):
    assert _findings(_build("sp", chain)) == []
    assert _findings(_build("intermediate", chain)) == []
    assert _findings(_build("root", chain, cp=False, crl=False)) == []


@pytest.mark.parametrize(
    "role,kw,rule,text",
    [
        ("sp", dict(bc_critical=False), "CM-07", "not critical"),
        ("intermediate", dict(bc_critical=False), "CM-07", "not critical"),
        ("sp", dict(version_ca=True), "CM-07", "CA=True"),
        ("sp", dict(ku_critical=False), "CM-08", "not critical"),
        ("sp", dict(ku=x509.KeyUsage(True, False, True, False, False, False, False, False, False)), "CM-08", "keyEncipherment"),
        ("intermediate", dict(ku=x509.KeyUsage(True, False, False, False, False, True, True, False, False)), "CM-08", "expected only ['keyCertSign']"),
        ("sp", dict(eku=True), "CM-14", "2.5.29.37"),
        ("sp", dict(tn_critical=True), "CM-13", "critical"),
        ("sp", dict(tnal=None), "CM-13", "missing"),
        ("sp", dict(tnal=TNAuthList.for_spc("12ab"), cn="SHAKEN 12ab"), "CM-13", "upper-case"),
        ("sp", dict(tnal=TNAuthList.for_spc("1234").__class__((TNAuthList.for_spc("1234").entries[0], TN("12155551212")))), "CM-13", "exactly one SPC"),
        ("sp", dict(cp=False), "CM-11", "missing"),
        ("intermediate", dict(cp=False), "CM-11", "missing"),
        ("sp", dict(cp_oids=[C.SHAKEN_CP_OID, x509.ObjectIdentifier("2.16.840.1.114569.1.1.4")]), "CM-11", "exactly one"),
        ("sp", dict(cp_oids=[C.ANY_POLICY_OID]), "CM-11", "exactly one"),
        ("sp", dict(cp_oids=[x509.ObjectIdentifier("1.2.3.4")]), "CM-11", "exactly one"),
        ("root", dict(cp=False, crl=True), "CM-12", "root carries"),
        ("root", dict(cp=True, crl=False), "CM-11", "root carries"),
        ("sp", dict(crl=False), "CM-12", "missing"),
        ("sp", dict(serial=12345), "CM-02", "fewer than 64"),
        ("sp", dict(cn="SHAKEN 9999"), "CM-06", "does not contain the SPC '1234'"),
        ("sp", dict(cn="Acme Telecom"), "CM-06", "does not contain 'SHAKEN'"),
        ("sp", dict(name=x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A"),
                                    x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN 1234"), x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.c")])),
         "CM-06", "emailAddress is not allowed"),
        ("sp", dict(name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN 1234")])), "CM-06", "lacks O"),
        ("sp", dict(name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN 1234")])), "CM-06", "lacks C"),
        ("intermediate", dict(cn="Intermediate CA"), "CM-06", "SHAKEN"),
        ("root", dict(cp=False, crl=False, cn="SHAKEN CA"), "CM-06", "ROOT"),
        ("sp", dict(ski=False), "CM-09", "missing"),
        ("sp", dict(aki=False), "CM-10", "missing"),
    ],
)
def test_each_deviation_is_reported(chain, role, kw, rule, text):
    cert = _build(role, chain, **kw)
    found = _findings(cert, role)
    assert _has(found, rule, text), found


def test_subject_rule_keeps_optional_attributes(chain):
    """ATIS-1000080 §6.4.1: C, O and a CN containing SHAKEN and the SPC; ST, L, OU optional."""
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "NJ"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Bridgewater"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Telecom"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Voice"), x509.NameAttribute(NameOID.COMMON_NAME, "Acme SHAKEN 1234"),
    ])
    assert C.check_sp_subject(name, "1234") == []
    assert not [f for f in _findings(_build("sp", chain, name=name), "sp") if f.startswith("CM-06")]
    assert C.check_sp_subject(name, "5678") == ["CM-06 CN 'Acme SHAKEN 1234' does not contain the SPC '5678'"]
    two_o = x509.Name(list(name) + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Other")])
    assert C.check_sp_subject(two_o, "1234") == ["CM-06 subject has 2 O attributes, expected one"]


@pytest.mark.parametrize("cn,ok", [("SHAKEN 1234", True), ("SHAKEN1234", True), ("SHAKEN-1234 Voice", True), ("SHAKEN (1234)", True),
                                   ("SHAKEN 12345", False), ("SHAKEN 01234", False), ("SHAKEN 1234A", False), ("SHAKEN X1234", False)])
def test_subject_rule_spc_is_a_whole_token(cn, ok):
    """A CN naming another SPC that merely contains this one ('SHAKEN 12345' for SPC 1234) is refused."""
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SP"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    assert (C.check_sp_subject(name, "1234") == []) is ok


def test_delegate_certificate_profile(chain):
    """A TN-only TNAuthList (RFC 9060 delegate): no CM-13 'SPC' finding; the CN need only exist."""
    found = _findings(_build("sp", chain, tnal=TNAuthList((TN("12155551212"),)), cn="Enterprise delegate"), "sp")
    assert not [f for f in found if f.startswith(("CM-13", "CM-06"))], found


def test_several_deviations_all_reported(chain):
    cert = _build("sp", chain, bc_critical=False, eku=True, tn_critical=True, cp=False, serial=7, cn="wrong")
    found = _findings(cert, "sp")
    for rule in ("CM-02", "CM-07", "CM-11", "CM-13", "CM-14"):
        assert _has(found, rule), (rule, found)
    assert len(found) >= 5


def test_ca_with_tnauthlist_and_extra_critical_extension(chain):
    key = ec.generate_private_key(ec.SECP256R1())
    inter = C.create_intermediate(key, chain.root, chain.root_key, crl_url="http://127.0.0.1:23999/x.crl")
    assert C.check_profile(inter) == []
    b = (x509.CertificateBuilder().subject_name(inter.subject).issuer_name(chain.root.subject).public_key(key.public_key())
         .serial_number(C.random_serial()).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1)))
    for ext in inter.extensions:
        b = b.add_extension(ext.value, critical=ext.critical if ext.oid != ExtensionOID.CERTIFICATE_POLICIES else True)
    b = b.add_extension(x509.UnrecognizedExtension(TNAUTHLIST_OID, TNAuthList.for_spc("1234").to_der()), critical=False)
    found = C.check_profile(b.sign(chain.root_key, hashes.SHA256()))
    assert _has(found, "CM-13", "CA certificate carries TNAuthList")
    assert _has(found, "CM-11", "critical") or _has(found, "CM-08", "may be critical")


def test_wrong_key_and_signature_algorithm(chain):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(C.make_name("SHAKEN 1234", "O")).issuer_name(chain.inter.subject)
            .public_key(rsa_key.public_key()).serial_number(C.random_serial()).not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=1)).sign(chain.inter_key, hashes.SHA384()))
    found = C.check_profile(cert, "sp")
    assert _has(found, "CM-03") and _has(found, "CM-04") and _has(found, "CM-07", "missing") and _has(found, "CM-08", "missing")


def test_mkpki_style_sp_profile_findings(chain):
    # the peers' openssl PKI uses CP OID ...1.1.1 and keyUsage cRLSign on CAs; only the latter is a deviation
    cert = _build("intermediate", chain, ku=x509.KeyUsage(False, False, False, False, False, True, True, False, False))
    assert [f for f in C.check_profile(cert) if f.startswith("CM-08")]


def test_validate_good_chain(chain):
    cred = chain.trust().validate(chain.x5u_chain)
    assert cred.leaf == chain.sp and cred.spc == "1234" and cred.chain[-1] == chain.root
    assert cred.public_key.public_numbers() == chain.sp_key.public_key().public_numbers()
    assert cred.not_after == min(c.not_valid_after_utc for c in (chain.sp, chain.inter, chain.root))


def test_validate_failures(chain):
    other = V.make_chain()
    with pytest.raises(UntrustedCertificateError) as ei:
        other.trust().validate(chain.x5u_chain)
    assert ei.value.sip_code == 437 and ei.value.verstat == VERSTAT_FAILED
    with pytest.raises(UntrustedCertificateError):
        chain.trust().validate([chain.sp])  # intermediate missing
    with pytest.raises(CertificateError):
        chain.trust().validate([])
    with pytest.raises(UntrustedCertificateError, match="expired"):
        chain.trust().validate(chain.x5u_chain, at=NOW + dt.timedelta(days=400))
    with pytest.raises(UntrustedCertificateError, match="not valid before"):
        chain.trust().validate(chain.x5u_chain, at=NOW - dt.timedelta(days=1))
    with pytest.raises(UntrustedCertificateError):
        C.TrustStore([])


def test_validate_expired_and_future_leaf(chain):
    expired = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234",
                                      not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1))
    with pytest.raises(UntrustedCertificateError, match="expired"):
        chain.trust().validate([expired, chain.inter])
    future = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234", not_before=NOW + dt.timedelta(days=1))
    with pytest.raises(UntrustedCertificateError, match="not valid before"):
        chain.trust().validate([future, chain.inter])


def test_validate_requires_tnauthlist(chain):
    no_tn = _build("sp", chain, tnal=None)
    with pytest.raises(TNAuthListError) as ei:
        chain.trust().validate([no_tn, chain.inter])
    assert ei.value.sip_code == 437
    tn_only = _build("sp", chain, tnal=TNAuthList((TN("12155551212"),)))
    assert chain.trust().validate([tn_only, chain.inter]).tnauthlist.covers("12155551212")


def test_validate_critical_tnauthlist_rejected(chain):
    # like openssl verify and Go x509 (secsipidx): an unaccounted-for critical extension fails the path
    crit = _build("sp", chain, tn_critical=True)
    with pytest.raises(UntrustedCertificateError, match="critical"):
        chain.trust().validate([crit, chain.inter])
    assert _has(C.check_profile(crit), "CM-13", "critical")


def test_revocation_by_crl(chain):
    revoked = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234")
    crl = C.create_crl(chain.inter, chain.inter_key, [(revoked.serial_number, NOW)])
    store = chain.trust(crls=[crl])
    with pytest.raises(UntrustedCertificateError, match="revoked") as ei:
        store.validate([revoked, chain.inter])
    assert ei.value.sip_code == 437 and ei.value.verstat == VERSTAT_FAILED
    assert store.validate(chain.x5u_chain).spc == "1234"  # not listed
    assert chain.trust().with_crls([crl]).crls == (crl,)
    # an intermediate revoked by the root's CRL
    root_crl = C.create_crl(chain.root, chain.root_key, [(chain.inter.serial_number, NOW)])
    with pytest.raises(UntrustedCertificateError, match="revoked"):
        chain.trust(crls=[root_crl]).validate(chain.x5u_chain)


def test_crl_from_a_stranger_is_ignored(chain):
    other = V.make_chain()
    forged = C.create_crl(other.inter, other.inter_key, [(chain.sp.serial_number, NOW)])
    assert chain.trust(crls=[forged]).validate(chain.x5u_chain).spc == "1234"
    # same issuer name, wrong key: the signature does not verify, so it does not count
    fake_builder = (x509.CertificateRevocationListBuilder().issuer_name(chain.inter.subject)
                    .last_update(NOW - dt.timedelta(minutes=1)).next_update(NOW + dt.timedelta(days=1))
                    .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(chain.sp.serial_number)
                                             .revocation_date(NOW).build()))
    fake = fake_builder.sign(other.inter_key, hashes.SHA256())
    assert chain.trust(crls=[fake]).validate(chain.x5u_chain).spc == "1234"


def test_indirect_crl_signer(chain):
    pa_key = ec.generate_private_key(ec.SECP256R1())
    pa = C.create_root(pa_key, cn="STI-PA CRL ROOT")
    crl = C.create_crl(pa, pa_key, [(chain.sp.serial_number, NOW)])
    assert chain.trust(crls=[crl]).validate(chain.x5u_chain).spc == "1234"  # signer not configured
    with pytest.raises(UntrustedCertificateError, match="revoked"):
        chain.trust(crls=[crl], crl_signers=[pa]).validate(chain.x5u_chain)


def test_load_crl(chain):
    crl = C.create_crl(chain.inter, chain.inter_key)
    assert C.load_crl(crl.public_bytes(serialization.Encoding.PEM)).issuer == chain.inter.subject
    assert C.load_crl(crl.public_bytes(serialization.Encoding.DER)).issuer == chain.inter.subject
    with pytest.raises(CertificateError):
        C.load_crl(b"nope")


def test_issuer_checks(chain):
    assert C.check_profile(chain.sp, issuer=chain.inter) == []
    assert C.check_profile(chain.inter, issuer=chain.root) == []
    other = V.make_chain()
    found = C.check_profile(chain.sp, issuer=other.inter)
    assert _has(found, "CM-10", "issuer's subjectKeyIdentifier")
    wrong_name = _build("intermediate", chain, name=C.make_name("SHAKEN Other CA", "Org"))
    sp = C.create_sp_certificate(chain.sp_key, wrong_name, chain.inter_key, spc="1234", crl_url="http://x/c.crl")
    assert _has(C.check_profile(sp, issuer=chain.inter), "CM-05")


def test_path_error_issuer_not_found(chain):
    text = _raises_path(chain.trust(), [chain.sp])  # the intermediate is not in the chain
    assert text == (
        "Failed to authenticate CA: issuer not found: the chain has no certificate "
        f"CN={chain.inter.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value} "
        f"(the issuer of CN={chain.sp.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value}) and it is not a trust anchor"
    )


def test_path_error_untrusted_root_is_named():
    ours, theirs = V.make_chain(), V.make_chain()
    evil_key = ec.generate_private_key(ec.SECP256R1())
    evil_root = C.create_root(evil_key, cn="Evil Root CA")
    evil_inter = C.create_intermediate(theirs.inter_key, evil_root, evil_key)
    evil_sp = C.create_sp_certificate(theirs.sp_key, evil_inter, theirs.inter_key, spc="1234")
    text = _raises_path(ours.trust(), [evil_sp, evil_inter, evil_root])
    assert text == "Failed to authenticate CA: not trusted: chains to CN=Evil Root CA which is not a trust anchor"


def test_path_error_expired_intermediate_is_named(chain):
    """The leaf is valid (30 days); the intermediate that issued it expired: it is named."""
    old = C.create_intermediate(chain.inter_key, chain.root, chain.root_key, days=1)
    leaf = _build("sp", V.Chain(chain.root_key, chain.root, chain.inter_key, old, chain.sp_key, chain.sp))
    text = _raises_path(chain.trust(), [leaf, old], at=NOW + dt.timedelta(days=3))
    assert text.startswith("Failed to authenticate CA: certificate CN=SHAKEN Intermediate CA expired on ")


def test_path_error_expired_leaf_wins_over_untrusted_root(chain):
    """Two faults: the leaf's validity is checked first (it is the first check of the path)."""
    other = V.make_chain()
    expired = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234",
                                      not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1))
    text = _raises_path(other.trust(), [expired, chain.inter])
    assert "expired on" in text and "CN=" in text and "not trusted" not in text


@pytest.mark.filterwarnings("ignore")  # mutated certificates trigger cryptography deprecation warnings
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda i, v: CERT_DER[:i] + bytes([v]) + CERT_DER[i + 1:], st.integers(0, len(CERT_DER) - 1), st.integers(0, 255)),
    st.builds(lambda n: CERT_DER[:n], st.integers(0, len(CERT_DER))),
    st.builds(lambda b: b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(b) + b"-----END CERTIFICATE-----\n", st.binary(max_size=300)),
    st.builds(lambda i, v: C.pem([CHAIN.sp])[:i] + bytes([v]) + C.pem([CHAIN.sp])[i + 1:], st.integers(0, 600), st.integers(32, 126)),
))
def test_fuzz_load_certificates(data):
    try:
        certs = C.load_certificates(data)
    except StirShakenError:
        return
    for c in certs:  # whatever loads can go through the profile check and a validation attempt
        typed(C.check_profile, c)
        typed(CHAIN.trust().validate, [c, CHAIN.inter])


# --- the signer's guard (issue 12 item 5) ------------------------------------------------------


def test_signing_certificate_fault() -> None:
    """The key must be the leaf's, the leaf valid at the time and carrying TNAuthList; one line each."""
    chain = V.make_chain()
    now = dt.datetime.now(dt.timezone.utc)
    assert C.signing_certificate_fault(chain.sp_key, chain.x5u_chain, now) is None
    other = ec.generate_private_key(ec.SECP256R1())
    assert C.signing_certificate_fault(other, chain.x5u_chain, now).startswith("the private key does not belong to the certificate ")
    assert C.signing_certificate_fault(chain.sp_key, chain.x5u_chain, now + dt.timedelta(days=400)).startswith("certificate ")
    assert " expired on " in C.signing_certificate_fault(chain.sp_key, chain.x5u_chain, now + dt.timedelta(days=400))
    assert " is not valid before " in C.signing_certificate_fault(chain.sp_key, chain.x5u_chain, now - dt.timedelta(days=2))
    # a certificate without TNAuthList (here the intermediate, with its own key) authorizes no number
    fault = C.signing_certificate_fault(chain.inter_key, [chain.inter], now)
    assert fault is not None and fault.endswith("carries no TNAuthList (RFC 8226 §9): it authorizes no telephone number")
    assert C.signing_certificate_fault(chain.sp_key, [], now) == "the certificate file holds no certificate"
