"""ATIS-1000082 request bodies: :meth:`stirshaken.serve.rest.RestAPI.handle` for
``POST /stir/v1/signing`` and ``/stir/v1/verification`` with a signing service over the material
(the verification request is parsed and checked up to the verifier, which is not configured:
no x5u is fetched).

The first byte picks the path and the request headers (tenant, Content-Type, Accept); the rest
is the body.  Properties: every answer is a reply of the §8.2.4.6 table with a JSON body, never
``POL5000`` (an internal error, which the API logs with its exception); a 200 signing answer is
an Identity header whose PASSporT decodes, verifies with the signer's key and carries the
requested numbers.
"""

from __future__ import annotations

import logging
import time

import orjson

from fuzz.harness import Finding, Target, same
from fuzz.material import ORIGID, Material, material
from stirshaken.core.identity import parse_identity
from stirshaken.core.passport import decode
from stirshaken.serve.config import load_config
from stirshaken.serve.metrics import Metrics
from stirshaken.serve.rest import EXCEPTIONS, SIGNING_PATH, VERIFICATION_PATH, RestAPI
from stirshaken.serve.signing import SigningService

_API: list[RestAPI] = []


class _Errors(logging.Handler):
    """Keeps the exception of each ``log.exception`` of the API (the cause of a POL5000)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.seen.append(record.exc_info[1])


_ERRORS = _Errors()


def api() -> RestAPI:
    if not _API:
        m = material()
        cfg = load_config(m.config_path)
        _API.append(RestAPI(signing=SigningService(cfg.signing), verifier=None, metrics=Metrics()))
        log = logging.getLogger("stirshaken.serve.rest")
        log.addHandler(_ERRORS)
        log.propagate = False  # the request errors of the fuzz run are not worth printing
        log.setLevel(logging.INFO)
    return _API[0]


def check(data: bytes) -> None:
    rest = api()
    mode, body = (data[0], data[1:]) if data else (0, b"")
    path = VERIFICATION_PATH if mode & 1 else SIGNING_PATH
    headers = {"content-type": ("application/json", "application/json; charset=utf-8", "text/plain", "")[(mode >> 1) & 3],
               "accept": ("application/json", "*/*", "application/xml;q=1, application/json;q=0", "")[(mode >> 3) & 3]}
    if mode & 0x20:
        headers["x-tenant"] = "other" if mode & 0x40 else "nobody"
    if mode & 0x80:
        headers["x-requestid"] = "fuzz-1"
    _ERRORS.seen.clear()
    reply = rest.handle("POST", path, headers, body, True, "127.0.0.1")
    if not isinstance(reply, tuple):
        raise Finding(f"an awaitable answer without a verifier: {reply!r:.100}")
    status, out, _hdrs = reply
    if _ERRORS.seen:
        raise Finding(f"internal error (POL5000) for body {body[:200]!r}") from _ERRORS.seen[0]
    doc = orjson.loads(out)
    if status != 200:
        kind = next(iter(doc["requestError"].values()))
        mid = kind["messageId"]
        if mid not in EXCEPTIONS or EXCEPTIONS[mid][0] != status or mid == "POL5000":
            raise Finding(f"answer {status} {mid} for body {body[:200]!r}")
        for v in kind.get("variables", ()):
            if not isinstance(v, str) or "\n" in v:
                raise Finding(f"variable {v!r:.100} is not one line")
        return
    if path != SIGNING_PATH:
        raise Finding("a 200 verification answer without a verifier")
    identity = doc["signingResponse"]["identity"]
    header = parse_identity(identity)
    passport = decode(header.token)
    passport.verify(material().sp_key.public_key())  # both tenants of the material sign with the SP key
    req = orjson.loads(body)["signingRequest"]
    same("attest", passport.attest, req["attest"])
    same("iat", passport.iat, req["iat"])
    same("number of dest TNs", len(passport.dest_tns), len(req["dest"]["tn"]))


def seeds(m: Material) -> list[bytes]:
    now = int(time.time())
    sreq = {"signingRequest": {"attest": "A", "dest": {"tn": ["12155551213"]}, "iat": now, "orig": {"tn": "12155551212"}, "origid": ORIGID}}
    sreq2 = {"signingRequest": {"attest": "B", "dest": {"tn": ["+1 (215) 555-1213", "12155551214"]}, "iat": now, "orig": {"tn": "1999555"}, "ppt": "shaken"}}
    vreq = {"verificationRequest": {"from": {"tn": "12155551212"}, "to": {"tn": ["12155551213"]}, "time": now, "identity": m.identity()}}
    return [b"\x00" + orjson.dumps(sreq), b"\x60" + orjson.dumps(sreq2), b"\x80" + orjson.dumps(sreq), b"\x01" + orjson.dumps(vreq),
            b"\x01" + orjson.dumps({"verificationRequest": {**vreq["verificationRequest"], "to": {"tn": "12155551213"}, "time": 1}})]


TARGET = Target(
    name="rest",
    check=check,
    seeds=seeds,
    tokens=(b'"signingRequest"', b'"verificationRequest"', b'"attest"', b'"dest"', b'"orig"', b'"tn"', b'"iat"', b'"origid"',
            b'"ppt"', b'"from"', b'"to"', b'"time"', b'"identity"', b"{", b"}", b"[", b"]", b":", b",", b"null", b"true", b"0",
            b"-1", b"1e30", b'"A"', b'"+1"', b'"\\u0000"'),
    max_len=4096,
    examples=500,
)
