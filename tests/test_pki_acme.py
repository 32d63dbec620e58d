"""The typed ACME messages of stirshaken.pki.acme (RFC 8555 §7.1, RFC 9447/9448) and the outbound
HTTP helpers of stirshaken.net.http: round trips, the exact wire form, and one specific
``malformed`` line per malformed document."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from stirshaken.net.http import ResponseTooLargeError, client_session, read_capped
from stirshaken.pki.ca import CAConfig
from stirshaken.pki.spc_token import TokenValidator
from stirshaken.pki.acme import (
    Account,
    AccountUpdate,
    AcmeProblem,
    Authorization,
    Challenge,
    Directory,
    DirectoryMeta,
    Finalize,
    Identifier,
    NewAccount,
    NewOrder,
    Order,
    OrderList,
    Revocation,
    TkauthAnswer,
    rfc3339,
)

T0 = dt.datetime(2025, 1, 31, 12, 0, 0, tzinfo=dt.timezone.utc)
T1 = T0 + dt.timedelta(days=90)
ID = Identifier("MAigBhYEMTIzNA")
ERROR = {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "SPC token has expired", "status": 403}
CHALLENGE = Challenge(
    type="tkauth-01", tkauth_type="atc", token_authority="https://pa.example", url="https://ca.example/acme/chall/1",
    token="tok", status="valid", validated=T0,
)

MESSAGES: list[Any] = [
    Directory("https://ca/n", "https://ca/a", "https://ca/o", revoke_cert="https://ca/r",
              meta=DirectoryMeta(external_account_required=False, website="https://ca")),
    Directory("https://ca/n", "https://ca/a", "https://ca/o"),
    ID,
    NewAccount(contact=("mailto:noc@sp.example",), terms_of_service_agreed=True),
    NewAccount(only_return_existing=True),
    NewAccount(external_account_binding={"protected": "e30", "payload": "e30", "signature": "AA"}),
    AccountUpdate(status="deactivated"),
    AccountUpdate(contact=("tel:+12155551212",)),
    Account(status="valid", contact=("mailto:noc@sp.example",), orders="https://ca/acct/1/orders"),
    OrderList(("https://ca/order/1", "https://ca/order/2")),
    NewOrder((ID,), not_before=T0, not_after=T1),
    NewOrder((ID,)),
    Order(status="valid", expires=T1, identifiers=(ID,), authorizations=("https://ca/authz/1",),
          finalize="https://ca/order/1/finalize", not_before=T0, not_after=T1, certificate="https://ca/cert/1"),
    Order(status="invalid", identifiers=(ID,), authorizations=(), finalize="https://ca/f", error=ERROR),
    CHALLENGE,
    Challenge(type="tkauth-01", url="https://ca/chall/2", status="invalid", error=ERROR),
    Authorization(status="valid", expires=T1, identifier=ID, challenges=(CHALLENGE,)),
    TkauthAnswer("eyJ.eyJ.sig"),
    Finalize("MIIB"),
    Revocation("MIIC", reason=1),
    Revocation("MIIC"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Any) -> None:
    wire = orjson.loads(orjson.dumps(msg.to_json()))
    assert type(msg).from_json(wire) == msg
    assert type(msg).from_json(wire).to_json() == msg.to_json()


def test_dates_before_year_1000_round_trip() -> None:
    """Fuzz finding (make fuzz, acme): strftime's %Y wrote year 855 as "855", which from_json
    rejects; dates are written with four-digit years (RFC 3339 §5.6)."""
    early = dt.datetime(855, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    order = NewOrder(identifiers=(ID,), not_before=early, not_after=T1)
    assert order.to_json()["notBefore"] == "0855-01-02T03:04:05Z"
    assert NewOrder.from_json(order.to_json()) == order
    assert rfc3339(dt.datetime(2030, 1, 2, 3, 4, 5, 999999, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == "2030-01-02T01:04:05Z"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_date_outside_the_utc_years_is_malformed(when: str) -> None:
    """Fuzz finding (make fuzz, acme): a date valid in its own offset but outside years 1-9999 in
    UTC raised OverflowError instead of the malformed problem."""
    with pytest.raises(AcmeProblem, match="notBefore: .* outside the years 1-9999 in UTC") as info:
        NewOrder.from_json({"identifiers": [ID.to_json()], "notBefore": when})
    assert info.value.kind == "malformed" and info.value.status == 400


@pytest.mark.parametrize("when", ["2030-01-02T03:04,05Z", "20300102T030405Z", "2030-W01-1T03:04:05Z", "2030-01-02T03Z"])
def test_iso_8601_forms_outside_rfc_3339_are_malformed(when: str) -> None:
    """Fuzz finding (make fuzz, acme): ``fromisoformat`` took ISO 8601 forms RFC 3339 §5.6 has
    not ("03:04,05" became 03:04:00.05), and the message did not round-trip."""
    with pytest.raises(AcmeProblem, match="is not an RFC 3339 date-time"):
        NewOrder.from_json({"identifiers": [ID.to_json()], "notBefore": when})


def test_fractional_seconds_are_dropped_so_messages_round_trip() -> None:
    order = NewOrder.from_json({"identifiers": [ID.to_json()], "notBefore": "2030-01-02t03:04:05.99z"})
    assert order.not_before == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert NewOrder.from_json(order.to_json()) == order


def test_wire_form_is_what_the_ca_always_sent() -> None:
    # member names, order and date format as RFC 8555 §7.1 and RFC 9448 §5 spell them
    assert orjson.dumps(MESSAGES[0].to_json()) == (
        b'{"newNonce":"https://ca/n","newAccount":"https://ca/a","newOrder":"https://ca/o","revokeCert":"https://ca/r",'
        b'"meta":{"externalAccountRequired":false,"website":"https://ca"}}'
    )
    assert list(CHALLENGE.to_json()) == ["type", "tkauth-type", "token-authority", "url", "token", "status", "validated"]
    assert CHALLENGE.to_json()["validated"] == "2025-01-31T12:00:00Z"
    assert list(MESSAGES[12].to_json()) == [
        "status", "expires", "identifiers", "authorizations", "finalize", "notBefore", "notAfter", "certificate"]
    assert MESSAGES[12].to_json()["identifiers"] == [{"type": "TNAuthList", "value": "MAigBhYEMTIzNA"}]
    assert Account(status="valid").to_json() == {"status": "valid", "contact": []}
    assert NewAccount(only_return_existing=True).to_json() == {"onlyReturnExisting": True}
    assert TkauthAnswer("t").to_json() == {"atc": "t"}
    assert MESSAGES[13].problem is not None and MESSAGES[13].problem.kind == "unauthorized"
    # an offset date-time is normalised to UTC; unknown members are ignored (RFC 8555 §7.1)
    order = NewOrder.from_json({"identifiers": [ID.to_json()], "notAfter": "2025-01-31T14:00:00+02:00", "x": 1})
    assert order.not_after == T0


@pytest.mark.parametrize(
    ("kind", "doc", "detail"),
    [
        (NewOrder, None, "payload: must be a JSON object"),
        (NewOrder, [], "payload: must be a JSON object"),
        (NewOrder, {}, "identifiers: is missing"),
        (NewOrder, {"identifiers": "MAA"}, "identifiers: must be a list"),
        (NewOrder, {"identifiers": []}, "identifiers: must be a non-empty list"),
        (NewOrder, {"identifiers": ["MAA"]}, "identifiers[0]: must be a JSON object"),
        (NewOrder, {"identifiers": [{"type": "TNAuthList"}]}, "identifiers[0].value: is missing"),
        (NewOrder, {"identifiers": [{"type": 5, "value": "x"}]}, "identifiers[0].type: must be a string"),
        (NewOrder, {"identifiers": [ID.to_json()], "notAfter": "yesterday"}, "notAfter: 'yesterday' is not an RFC 3339 date-time"),
        (NewOrder, {"identifiers": [ID.to_json()], "notBefore": 1700000000}, "notBefore: must be an RFC 3339 date-time string"),
        (NewOrder, {"identifiers": [ID.to_json()], "notBefore": "2025-01-31T12:00:00"}, "notBefore: needs a time zone (RFC 3339 §5.6)"),
        (NewAccount, {"contact": "mailto:a@b"}, "contact: must be a list of strings"),
        (NewAccount, {"contact": ["mailto:a@b", 7]}, "contact: must be a list of strings"),
        (NewAccount, {"onlyReturnExisting": "yes"}, "onlyReturnExisting: must be true or false"),
        (NewAccount, {"termsOfServiceAgreed": 1}, "termsOfServiceAgreed: must be true or false"),
        (NewAccount, {"externalAccountBinding": "jws"}, "externalAccountBinding: must be a flattened JWS object"),
        (AccountUpdate, {"status": 0}, "status: must be a string"),
        (TkauthAnswer, {}, "atc: must be the SPC token as a non-empty string (RFC 9448 §5)"),
        (TkauthAnswer, {"atc": ""}, "atc: must be the SPC token as a non-empty string (RFC 9448 §5)"),
        (TkauthAnswer, {"atc": {"token": "x"}}, "atc: must be the SPC token as a non-empty string (RFC 9448 §5)"),
        (Finalize, {}, "csr: is missing"),
        (Finalize, {"csr": ["MII"]}, "csr: must be a string"),
        (Revocation, {"reason": 1}, "certificate: is missing"),
        (Revocation, {"certificate": "MII", "reason": "1"}, "reason: must be an integer CRLReason code (RFC 5280 §5.3.1)"),
        (Revocation, {"certificate": "MII", "reason": True}, "reason: must be an integer CRLReason code (RFC 5280 §5.3.1)"),
        (Directory, {"newNonce": "n", "newAccount": "a"}, "newOrder: is missing"),
        (Directory, {"newNonce": "n", "newAccount": "a", "newOrder": "o", "meta": []}, "meta: must be a JSON object"),
        (Order, {"status": "valid", "identifiers": [ID.to_json()], "authorizations": [], "finalize": 3}, "finalize: must be a string"),
        (Order, {"status": "invalid", "identifiers": [ID.to_json()], "authorizations": [], "finalize": "f", "error": "bad"},
         "error: must be a problem document (JSON object)"),
        (Authorization, {"status": "pending", "identifier": ID.to_json(), "challenges": [{"type": "tkauth-01", "url": "u"}]},
         "challenges[0].status: is missing"),
        (Authorization, {"status": "pending", "challenges": []}, "identifier: must be a JSON object"),
        (OrderList, {"orders": [1]}, "orders: must be a list of strings"),
    ],
)
def test_malformed(kind: Any, doc: Any, detail: str) -> None:
    with pytest.raises(AcmeProblem) as info:
        kind.from_json(doc)
    assert (info.value.kind, info.value.status, info.value.detail) == ("malformed", 400, detail)


# --- net/http: the session factory and the size cap ----------------------------------------------------


@pytest.fixture
async def body_server() -> Any:
    async def fixed(_r: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000)

    async def streamed(r: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length
        await resp.prepare(r)
        for _ in range(10):
            await resp.write(b"y" * 100)
        await resp.write_eof()
        return resp

    async def big(_r: web.Request) -> web.Response:
        return web.Response(body=b"z" * (256 * 1024 + 1))

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/streamed", streamed)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    await runner.cleanup()


async def test_read_capped(body_server: str) -> None:
    async with client_session(timeout=5, connect_timeout=2) as s:
        for path in ("/fixed", "/streamed"):
            async with s.get(body_server + path) as resp:
                assert len(await read_capped(resp, 1000)) == 1000
        async with s.get(body_server + "/fixed") as resp:
            with pytest.raises(ResponseTooLargeError) as info:
                await read_capped(resp, 999)
        assert (info.value.limit, info.value.declared, str(info.value)) == (999, 1000, "response larger than 999 bytes (1000)")
        async with s.get(body_server + "/streamed") as resp:
            with pytest.raises(ResponseTooLargeError) as info:
                await read_capped(resp, 999, chunk_size=64)
        assert (info.value.limit, info.value.declared, str(info.value)) == (999, None, "response larger than 999 bytes")


async def test_client_session_timeouts() -> None:
    s = client_session(timeout=5, connect_timeout=None, limit=7)
    try:
        assert (s.timeout.total, s.timeout.sock_connect, s.timeout.connect) == (5, None, None)
        assert s.connector is not None and s.connector.limit == 7
    finally:
        await s.close()
    s = client_session()  # aiohttp's own defaults: 300 s total, 30 s to connect
    try:
        assert (s.timeout.total, s.timeout.sock_connect) == (300, 30)
    finally:
        await s.close()


async def test_spc_token_fetch_is_capped_not_truncated(body_server: str, tmp_path: Path) -> None:
    # the STI-CA's token x5u / revocation-list fetch refuses a body over 256 KiB (it used to read
    # one truncated chunk and go on parsing it)
    cfg = CAConfig(base_url="https://ca.example", state_dir=tmp_path, token_authority=body_server, crl_url="https://pa/crl")
    tv = TokenValidator(cfg, None)  # type: ignore[arg-type]  # the database is not used to fetch
    try:
        assert len(await tv._fetch(body_server + "/fixed")) == 1000
        with pytest.raises(AcmeProblem) as info:
            await tv._fetch(body_server + "/big")
        assert (info.value.kind, info.value.status) == ("unauthorized", 403)
        assert info.value.detail == f"{body_server}/big: response larger than 262144 bytes (262145)"
        assert (tv.session().timeout.total, tv.session().timeout.sock_connect) == (5, None)
    finally:
        await tv.close()
