"""The STI-PA in its published API shape (docs/pki.md "STI-PA API"): a client written to that
shape, with raw aiohttp requests and the raw access token in ``Authorization`` (no "Bearer"),
as clients written for the production STI-PA call it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.pki.pa import account_key_fingerprint

from tests.test_pki_support import running_testbed, session_for


def _claims(jwt: str) -> dict:
    seg = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


async def test_published_shape_with_raw_token(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        base = tb.urls["pa"]
        fp = account_key_fingerprint(ec.generate_private_key(ec.SECP256R1()))
        tkvalue = TNAuthList.for_spc(tb.ocn).to_base64()
        body = {"atc": {"tktype": "TNAuthList", "tkvalue": tkvalue, "ca": False, "fingerprint": fp}}
        async with session_for(tb) as s:
            async with s.post(f"{base}/api/v1/auth/login", json={"userId": f"sp-{tb.ocn}", "password": tb.sp_password}) as r:
                assert r.status == 200 and r.content_type == "application/json"
                login = await r.json()
            assert login["status"] == "success" and isinstance(login["accessToken"], str)
            raw = {"Authorization": login["accessToken"], "Accept": "application/jose+json"}
            for path in (f"/api/v1/account/{tb.ocn}/token/", f"/api/v1/account/{tb.ocn}/token"):
                async with s.post(base + path, json=body, headers=raw) as r:
                    assert r.status == 200, await r.text()
                    assert r.content_type == "application/jose+json"  # what the client asked for
                    out = json.loads(await r.read())
                assert out["status"] == "success" and tb.ocn in out["message"]
                assert out["crl"] == f"{base}/download/v1/crl"
                assert _claims(out["token"])["atc"]["tkvalue"] == tkvalue
            # without Accept: jose+json the same answer is application/json
            async with s.post(f"{base}/api/v1/account/{tb.ocn}/token", json=body, headers={"Authorization": login["accessToken"]}) as r:
                assert r.status == 200 and r.content_type == "application/json"
            async with s.get(f"{base}/api/v1/ca-list") as r:
                assert r.status == 200 and r.content_type == "application/json"
                ca_list = await r.json()
            assert ca_list["status"] == "success" and "trustList" in _claims(ca_list["caList"])
            async with s.get(f"{base}/download/v1/crl") as r:
                assert r.status == 200 and r.content_type == "application/pkix-crl"
                crl = x509.load_der_x509_crl(await r.read())
            assert crl.issuer == tb.pa.crl_issuer  # type: ignore[union-attr]
            # the root paths stay as aliases
            async with s.get(f"{base}/ca-list") as r:
                assert r.status == 200
            async with s.get(f"{base}/crl") as r:
                assert r.status == 200
            # a wrong raw token: 401 with the error shape; logout ends the session
            async with s.post(f"{base}/api/v1/account/{tb.ocn}/token", json=body, headers={"Authorization": "forged"}) as r:
                assert r.status == 401 and (await r.json())["status"] == "error"
            async with s.post(f"{base}/api/v1/auth/logout", headers={"Authorization": login["accessToken"]}) as r:
                assert r.status == 200
            async with s.post(f"{base}/api/v1/account/{tb.ocn}/token", json=body, headers=raw) as r:
                assert r.status == 401


async def test_login_waits_for_an_sti_pa_that_is_still_starting() -> None:
    """docs/pki.md starts the services and runs `stirshaken acme` right after: a refused first
    connection is retried for a few seconds (PAClient.STARTUP_GRACE), then it is the error."""
    import asyncio
    import socket
    import time

    from aiohttp import web

    from stirshaken.pki.pa_client import PAClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def login(_request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "accessToken": "tok", "message": "ok"})

    app = web.Application()
    app.router.add_post("/api/v1/auth/login", login)
    runner = web.AppRunner(app)

    async def start_late() -> None:
        await asyncio.sleep(1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    starter = asyncio.ensure_future(start_late())
    import aiohttp

    async with aiohttp.ClientSession() as session:
        pa = PAClient(f"http://127.0.0.1:{port}", session)
        t0 = time.monotonic()
        assert await pa.login("u", "p") == "tok"
        assert 0.9 < time.monotonic() - t0 < PAClient.STARTUP_GRACE
        await starter
    await runner.cleanup()
    async with aiohttp.ClientSession() as session:
        pa = PAClient(f"http://127.0.0.1:{port}", session)
        pa.STARTUP_GRACE = 0.5  # nothing listening: refused after the grace
        t0 = time.monotonic()
        with pytest.raises(aiohttp.ClientConnectorError):
            await pa.login("u", "p")
        assert 0.4 < time.monotonic() - t0 < 5


async def test_login_under_attack(tmp_path: Path) -> None:
    """Issue 17 item 8: scrypt runs off the event loop (other requests are answered while logins
    hash), an unknown user and a wrong password get the same answer, and repeated failures are
    throttled per account and per source (429 with Retry-After), the right password included."""
    import asyncio

    async with running_testbed(tmp_path) as tb:
        base = tb.urls["pa"]
        user = f"sp-{tb.ocn}"
        async with session_for(tb) as s:
            async def login(u: str, pw: str) -> tuple[int, dict, str | None]:
                async with s.post(f"{base}/api/v1/auth/login", json={"userId": u, "password": pw}) as r:
                    return r.status, await r.json(), r.headers.get("Retry-After")

            async def ca_list() -> str:
                async with s.get(f"{base}/api/v1/ca-list") as r:
                    assert r.status == 200
                return "ca-list"

            # 4 good logins hashing at once (under the throttle's limit), a cheap request among them
            order: list[str] = []

            async def tagged(coro, tag: str) -> None:
                await coro
                order.append(tag)

            await asyncio.gather(*(tagged(login(user, tb.sp_password), "login") for _ in range(4)), tagged(ca_list(), "ca-list"))
            assert order.index("ca-list") < 3, order  # answered while the logins were still hashing
            wrong = await login(user, "wrong")
            unknown = await login("nobody-here", "wrong")
            assert wrong[:2] == unknown[:2] == (401, {"status": "error", "message": "invalid credentials"})
            for _ in range(3):
                assert (await login(user, "wrong"))[0] == 401
            status, body, retry = await login(user, "wrong")  # the 5th failure locked the account
            assert status == 429 and retry is not None and int(retry) > 0, body
            status, body, retry = await login(user, tb.sp_password)  # locked: not even checked
            assert status == 429 and "too many failed logins" in body["message"]
