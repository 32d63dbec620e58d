"""The verification decision of an STI-VS (RFC 8224 §6.2, ATIS-1000074 §5.3.1, ATIS-1000082).

One module per stage, every public name re-exported here:

* :mod:`~stirshaken.core.verification.results`: the policy, the checks and the result types;
* :mod:`~stirshaken.core.verification.preparation`: step 1, :func:`prepare`;
* :mod:`~stirshaken.core.verification.completion`: step 2, :func:`complete`;
* :mod:`~stirshaken.core.verification.richcalldata`: step 2b, :func:`check_rich_call_data`
  (RFC 9795 ``rcdi`` digests, with the content the caller fetched for :func:`rcd_fetches`);
* :mod:`~stirshaken.core.verification.decision`: the call's verdict, :func:`decide`.

Sans-I/O: nothing here fetches, sleeps or logs.  Verifying one Identity header is two steps so
that the caller owns the I/O between them (the h11 pattern):

1. :func:`prepare` parses the header and its PASSporT and checks everything that does not need the
   credential: syntax (E4-E7), JOSE header (E9-E13), claims (E14), freshness of iat and Date
   (E3/E15), orig/dest against the SIP request (E16).  It returns a :class:`Prepared` naming the
   x5u to dereference.
2. The caller obtains a :class:`~stirshaken.core.certificates.ValidatedCredential` for that x5u (from a
   file, a cache or a fetch plus :meth:`TrustStore.validate`), or the error that prevented it,
   and calls :func:`complete`, which checks authority and the signature (E17, E18).

:func:`decide` folds the results of every Identity header of a request into one
:class:`VerificationResult` (verstat, SIP code and reason, the RFC 9410 Reason header value).

Several Identity headers (RFC 8224 §4, RFC 8946 §4): every header is evaluated.  With
``targets`` (the request's called TNs: To and Request-URI), :func:`decide` resolves the
destination binding of the whole set (see :func:`bind_destinations`):

* a SHAKEN PASSporT passes when its ``dest`` names a request target directly, or when a chain of
  valid ``div`` PASSporTs leads from one of its ``dest`` values to a request target;
* a ``div`` PASSporT (RFC 8946 §3/§4) must carry the same ``orig`` as the SHAKEN one, its ``div``
  claim must be a ``dest`` of the SHAKEN PASSporT (or of an earlier ``div`` in the chain), and the
  last ``div`` of a chain must have a ``dest`` that is a request target.  Rationale: on
  retargeting, the retargeting entity signs "the call for <div> now goes to <dest>"; the
  original SHAKEN PASSporT still names the original called number, so its ``dest`` can only be
  matched through the ``div`` claim, while the request (R-URI, and To when it was changed)
  carries the new target, which the ``div`` PASSporT's ``dest`` must match.  Because To usually
  stays unchanged on retargeting (RFC 3261 §8.1.1.2) while the R-URI changes, both are targets;
* an ``rcd`` PASSporT (RFC 9795) must match the request's ``orig`` and a request target or the
  destination of the SHAKEN PASSporT it accompanies.

The per-header outcome is in :attr:`VerificationResult.passports`; failing headers also produce
RFC 9410 Reason values with ``ppi`` naming the PASSporT.
"""

from stirshaken.core.errors import BadIdentityInfoError
from stirshaken.core.verification.completion import check_authority, complete, failed, verify_prepared_or_error
from stirshaken.core.verification.decision import bind_destinations, chain_div, decide, reason_header, verify_offline
from stirshaken.core.verification.preparation import check_freshness, prepare
from stirshaken.core.verification.richcalldata import carries_rcd, check_rich_call_data, rcd_fetches
from stirshaken.core.verification.results import (
    DEFAULT_POLICY,
    Check,
    PassportResult,
    Prepared,
    VerificationCache,
    VerificationPolicy,
    VerificationResult,
)

__all__ = [
    "BadIdentityInfoError",
    "Check",
    "DEFAULT_POLICY",
    "bind_destinations",
    "carries_rcd",
    "chain_div",
    "check_rich_call_data",
    "check_authority",
    "VerificationCache",
    "PassportResult",
    "Prepared",
    "VerificationPolicy",
    "VerificationResult",
    "check_freshness",
    "complete",
    "decide",
    "failed",
    "prepare",
    "rcd_fetches",
    "reason_header",
    "verify_offline",
    "verify_prepared_or_error",
]
