"""Shared data and builders for the core tests (public vectors of docs/requirements.md#test-vectors, a small PKI).

Imported by the test modules as a plain module (not a conftest, so the other teams' conftest files
stay theirs)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_encode
from stirshaken.core.tnauthlist import TNAuthList

# --- TV-02 / TV-03 (RFC 8225 §7.1 and Appendix A, RFC 8588 §6) ----------------------------------
RFC8225_A1_KEY = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgi7q2TZvN9VDFg8Vy
qCP06bETrR2v8MRvr89rn4i+UAahRANCAAQWfaj1HUETpoNCrOtp9KA8o0V79IuW
ARKt9C1cFPkyd3FBP4SeiNZxQhDrD0tdBHls3/wFe8++K2FrPyQF9vuh
-----END PRIVATE KEY-----
"""
RFC8225_A2_PUB = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8HNbQd/TmvCKwPKHkMF9fScavGeH
78YTU8qLS8I5HLHSSmlATLcslQMhNC/OhlWBYC626nIlo7XeebYS7Sb37g==
-----END PUBLIC KEY-----
"""
RFC8225_71_FULL = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9"
    ".eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6IjE0NDMyMDgzNDUiLCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifX0"
    ".rq3pjT1hoRwakEGjHCnWSwUnshd0-zJ6F1VOgFWSjHBr8Qjpjlk-cpFYpFYsojNCpTzO3QfPOlckGaS6hEck7w"
)
RFC8225_71_COMPACT = "..rq3pjT1hoRwakEGjHCnWSwUnshd0-zJ6F1VOgFWSjHBr8Qjpjlk-cpFYpFYsojNCpTzO3QfPOlckGaS6hEck7w"
RFC8225_APPA_HEADER_B64 = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9"
)
RFC8225_APPA_PAYLOAD_B64 = (
    "eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6MTQ3MTM3NTQxOCwib3JpZyI6eyJ0biI6IjEyMTU1NTUxMjEyIn19"
)
RFC8225_APPA_DERIVED_SIG = "2c_SAul3BxIuvMR3G8VfbFwj6ZoOHBQF-qVaR-Mef0V2ipEhTe0ZYBaLrnhuSRVNwy1Tu-tr334XUBdnPYi3tA"
SHAKEN_EXAMPLE_TOKEN = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MDEzMSJdfSwiaWF0IjoxNDQzMjA4MzQ1LCJvcmlnIjp7InRuIjoiMTIxNTU1NTAxMjEifSwib3JpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0"
    ".PwimjV0wnsRsOCmtANjxRqn2_o1EhP-l8ixwLTIbyhMUF4qiJVy7mRUmup5JAeX8xy4hu4uZYeVmwVJtLuYnpw"
)
# TV-04 RFC 7515 A.3
RFC7515_A3_JWK = {
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",
}
RFC7515_A3_SIGNING_INPUT = (
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)
RFC7515_A3_SIG = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
# TV-06 published real-world tokens
LIBSTIRSHAKEN_TOKEN = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9zaGFrZW4uc2lnbmFsd2lyZS5jbG91ZC9zcC5wZW0ifQ"
    ".eyJhdHRlc3QiOiJCIiwiZGVzdCI6eyJ0biI6WyIwMTI1NjcwMDgwMCJdfSwiaWF0IjoxNjE2NDQyNTIzLCJvcmlnIjp7InRuIjoiMDEyNTY1MDA2MDAifSwib3JpZ2lkIjoiZTMyZjQxODktY2I4Ni00NjBmLWJiOTItYmQzYWNiODlmMjljIn0"
    ".VT_KOQtrCS3WctNBFT7PKcUowTqHI1cZU3XhBaYEji8eH07XE5rYxomns1EnnePpw96zUF7cr-mBBro-wP65jg"
)
PASTEBIN_IDENTITY = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9zdGlyLnRlbC9jLzcwNEoifQ"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjEyNTU1MTIzNCJdfSwiaWF0IjoxNjI5MzU3MzA1LCJvcmlnIjp7InRuIjoiMTkyMDU1NTEyMzQifSwib3JpZ2lkIjoiYzEzNzUwMzUtYWRkOS00OGQzLTgwNTItYzQ4YzI5NzdiYzYwIn0"
    ".kHoGbcXlZ0ZO5vBPPT652UuyocE9sPU8rKXa-Uk2czZWu0Ebcqqfxuf6-kkaF_zoTLiJ3RHdlUueGyBF8iJwHg"
    ";info=<https://stir.tel/c/704J>;alg=ES256;ppt=shaken"
)
# vectors/README.md: orig and dest given as JSON strings
SIGNALWIRE_BAD_PASSPORT = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cDovLzMuMTcuMTc3LjE3NC9zdGlyX3NoYWtlbi9zcC5wZW0ifQ"
    ".eyJhdHRlc3QiOiJCIiwiZGVzdCI6IntcInRuXCI6XCIxMDEwXCJ9IiwiaWF0IjoxNTk1Njk0NTc0LCJvcmlnIjoie1widG5cIjpcIjkwMDU1NTEyMTJcIn0iLCJvcmlnaWQiOiI5ODYyNzk4NDItNzk4OTQzMjgtNDUyNTQtNDI1NDM1MjUyNDMifQ"
    ".ALWvxCXnY6QAMhMDQgG69yjpuQNHTnwBTf8i7La0eY0hV4hXiuWbD6HStXtzrFO4KD5Nmq_lPasTn70h00n0nQ"
)
SIGNALWIRE_SPC_TOKEN = (
    "eyJhbGciOiJFUzI1NiIsImlzc3VlciI6IlNpZ25hbFdpcmUgU1RJLVBBIFRlc3QiLCJ0eXAiOiJKV1QiLCJ4NXUiOiJwYS5zaGFrZW4uc2lnbmFsd2lyZS5jbG91ZC9wYS5wZW0ifQ"
    ".eyJub3RBZnRlciI6IjEgeWVhciBmcm9tIG5vdyIsIm5vdEJlZm9yZSI6InRvZGF5Iiwic3BjIjoiMSIsInR5cGUiOiJzcGMtdG9rZW4ifQ"
    ".l61Y8K1bwZw9APXsrAQPZVPAkx5UIucwNKzRWxn0N5DcdVWaEgA_i5tW65f_aeqA46CTP789l4o6rFpiN7IZUA"
)
# TV-07 TNAuthList DER examples
TNAUTH_PYASN1_HEX = "302ba0071605626f677573a1123010160a3537313535353132313202020314a20c160a37303335353531323132"
TNAUTH_PYASN1_B64 = "MCugBxYFYm9ndXOhEjAQFgo1NzE1NTUxMjEyAgIDFKIMFgo3MDM1NTUxMjEy"
TNAUTH_818H_B64 = "MAigBhYEODE4SA=="
TNAUTH_1234_HEX = "3008a006160431323334"
TNAUTH_709J_HEX = "3008a00616043730394a"


def a1_key() -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(RFC8225_A1_KEY, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def a2_pub() -> ec.EllipticCurvePublicKey:
    pub = serialization.load_pem_public_key(RFC8225_A2_PUB)
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    return pub


def jws(header: bytes, payload: bytes, sig: bytes = b"\x01" * 64) -> str:
    return b64url_encode(header) + "." + b64url_encode(payload) + "." + b64url_encode(sig)


@dataclass
class Chain:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    sp_key: ec.EllipticCurvePrivateKey
    sp: x509.Certificate

    @property
    def x5u_chain(self) -> list[x509.Certificate]:
        return [self.sp, self.inter]

    def trust(self, **kw) -> certs.TrustStore:
        return certs.TrustStore([self.root], **kw)


def make_chain(spc: str = "1234", *, sp_days: int = 365, sp_not_before: dt.datetime | None = None,
               sp_not_after: dt.datetime | None = None, crl_url: str = "http://127.0.0.1:23999/inter.crl") -> Chain:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certs.create_root(root_key)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = certs.create_intermediate(inter_key, root, root_key, crl_url=crl_url)
    sp_key = ec.generate_private_key(ec.SECP256R1())
    sp = certs.create_sp_certificate(sp_key, inter, inter_key, tnauthlist=TNAuthList.for_spc(spc), crl_url=crl_url,
                                     days=sp_days, not_before=sp_not_before, not_after=sp_not_after)
    return Chain(root_key, root, inter_key, inter, sp_key, sp)
