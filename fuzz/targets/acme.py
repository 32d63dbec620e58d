"""The ACME messages (RFC 8555 §7.1, RFC 9447, RFC 9448): ``from_json`` of every message of
:mod:`stirshaken.pki.acme`, the external account binding (a flattened JWS, §7.3.4), the problem
documents a server answers (§6.7) and the TNAuthList identifier value inside an order.

The input is a JSON document (anything else is what the STI-CA answers ``malformed`` before
parsing a message).  Properties: ``from_json`` raises only :class:`AcmeProblem` ``malformed``
(HTTP 400) with one line; a parsed message round-trips (``from_json(to_json(m)) == m``) and its
``to_json`` serializes; ``AcmeProblem.from_document`` takes anything.
"""

from __future__ import annotations

import orjson

from fuzz.harness import Finding, Target, one_line, same, typed
from fuzz.material import Material
from stirshaken.core.errors import TNAuthListError
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.pki import acme

MESSAGES = (acme.Directory, acme.DirectoryMeta, acme.Identifier, acme.NewAccount, acme.AccountUpdate, acme.Account, acme.OrderList,
            acme.NewOrder, acme.Order, acme.Challenge, acme.Authorization, acme.TkauthAnswer, acme.Finalize, acme.Revocation)


def _parse(cls, doc):
    try:
        return cls.from_json(doc)
    except acme.AcmeProblem as exc:
        one_line(exc)
        if exc.kind != "malformed" or exc.status != 400:
            raise Finding(f"{cls.__name__}.from_json: problem {exc.kind} {exc.status}, not malformed 400") from exc
        return None


def check(data: bytes) -> None:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    for value in [doc] + (list(doc.values()) if isinstance(doc, dict) else []):
        for cls in MESSAGES:
            msg = _parse(cls, value)
            if msg is None:
                continue
            out = msg.to_json()
            orjson.dumps(out)
            same(f"{cls.__name__} round trip", cls.from_json(out), msg)
            for ident in getattr(msg, "identifiers", ()) + ((msg.identifier,) if hasattr(msg, "identifier") else ()):
                typed(TNAuthListError, TNAuthList.from_identifier, ident.value)
            problem = getattr(msg, "problem", None)
            if problem is not None:
                orjson.dumps(problem.to_json())
        eab = _parse(acme.ExternalAccountBinding, value)
        if eab is not None:
            eab.mac_ok(b"k" * 32)
        problem = acme.AcmeProblem.from_document(value if isinstance(value, dict) else None, 400)
        str(problem)
        problem.type
        if isinstance(value, str):
            typed(ValueError, acme.eab_hmac_key, value)


def seeds(m: Material) -> list[bytes]:
    import datetime as dt

    from stirshaken.core.jose import jwk_of

    ident = acme.Identifier(TNAuthList.for_spc("1234").to_base64url())
    t = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    chal = acme.Challenge(type=acme.TKAUTH01, url="https://ca/chall/1", status="pending", token="tok", tkauth_type="atc",
                          token_authority="https://pa/", validated=t, error={"type": acme.ERR + "unauthorized", "detail": "no"})
    docs = [
        acme.Directory("https://ca/nonce", "https://ca/acct", "https://ca/order", "https://ca/revoke", None,
                       acme.DirectoryMeta(True, "https://w", "https://tos", ("ca",))).to_json(),
        acme.NewAccount(("mailto:a@b",), True, False, acme.make_eab("kid-1", b"k" * 32, jwk_of(m.sp_key), "https://ca/acct")).to_json(),
        acme.Order("pending", (ident,), ("https://ca/authz/1",), "https://ca/fin", t, t, t, "https://ca/cert", None).to_json(),
        acme.Authorization("pending", ident, (chal,), t, False).to_json(),
        acme.NewOrder((ident,), t, t).to_json(),
        {"atc": "a.b.c"}, {"csr": "MII"}, {"certificate": "MII", "reason": 1}, {"status": "deactivated", "contact": []},
        {"type": acme.ERR + "badNonce", "detail": "x", "status": 400, "subproblems": []},
        {"externalAccountBinding": acme.make_eab("kid", b"k" * 32, jwk_of(m.sp_key), "https://ca/acct")},
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]
    return [orjson.dumps(d) for d in docs]


TARGET = Target(
    name="acme",
    check=check,
    seeds=seeds,
    tokens=(b'"status"', b'"identifiers"', b'"identifier"', b'"type"', b'"value"', b'"TNAuthList"', b'"challenges"', b'"url"',
            b'"token"', b'"validated"', b'"expires"', b'"notBefore"', b'"notAfter"', b'"error"', b'"contact"', b'"meta"',
            b'"externalAccountBinding"', b'"protected"', b'"payload"', b'"signature"', b'"2030-01-02T03:04:05Z"',
            b'"0001-01-01T00:00:00+01:00"', b'"9999-12-31T23:59:59-01:00"', b"{", b"}", b"[", b"]", b":", b",", b"null",
            b"true", b"false", b"0", b"-1"),
    max_len=4096,
    examples=450,
)
