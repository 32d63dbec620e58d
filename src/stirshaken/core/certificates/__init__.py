"""STI certificates (ATIS-1000080 v005 §6.4.1, RFC 5280), one module per concept, every public name
re-exported here:

* :mod:`~stirshaken.core.certificates.loading`: reading certificates, CSRs and CRLs (RFC 5280
  §§4-5, RFC 2986, PEM of RFC 7468), :func:`content_problem` naming a file of the wrong kind;
* :mod:`~stirshaken.core.certificates.profile`: the SHAKEN certificate profile of ATIS-1000080
  §6.4.1 / §6.4.1.1, :func:`check_profile` and :func:`check_sp_subject` (docs/requirements.md
  CM-01..CM-14);
* :mod:`~stirshaken.core.certificates.issuance`: building CSRs, root, intermediate, SP and
  delegate (RFC 9060) certificates with that profile, and CRLs;
* :mod:`~stirshaken.core.certificates.validation`: path validation with revocation (RFC 5280 §6,
  ATIS-1000080 §6.3.3), :class:`TrustStore` and :class:`ValidatedCredential`.

Pure: nothing here fetches, sleeps or logs; the caller brings the bytes, the CRLs and the time.
"""

from stirshaken.core.certificates.issuance import (
    build_csr,
    create_crl,
    create_delegate_certificate,
    create_intermediate,
    create_root,
    create_sp_certificate,
    make_name,
    random_serial,
    within_authority,
)
from stirshaken.core.certificates.loading import (
    check_parsable,
    content_problem,
    csr_tnauthlist,
    load_certificates,
    load_crl,
    load_csr,
    pem,
    utcnow,
)
from stirshaken.core.certificates.profile import ANY_POLICY_OID, SHAKEN_CP_ARC, SHAKEN_CP_OID, check_profile, check_sp_subject
from stirshaken.core.certificates.validation import TrustStore, ValidatedCredential, crl_urls, signing_certificate_fault

__all__ = [
    "ANY_POLICY_OID",
    "SHAKEN_CP_ARC",
    "SHAKEN_CP_OID",
    "TrustStore",
    "ValidatedCredential",
    "build_csr",
    "check_parsable",
    "check_profile",
    "check_sp_subject",
    "content_problem",
    "create_crl",
    "create_delegate_certificate",
    "create_intermediate",
    "create_root",
    "create_sp_certificate",
    "crl_urls",
    "csr_tnauthlist",
    "load_certificates",
    "load_crl",
    "load_csr",
    "make_name",
    "pem",
    "random_serial",
    "signing_certificate_fault",
    "utcnow",
    "within_authority",
]
