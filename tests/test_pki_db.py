"""State in the database: restart persistence (SQLite), the PostgreSQL run of the core flow and
exactly-one issuance under concurrent finalization (RFC 8555 §7.4, conditional UPDATE)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from stirshaken.core import certificates as certs
from stirshaken.pki.enrollment import obtain_certificate
from stirshaken.pki.pa_client import PAClient
from stirshaken.pki.store import Database, sqlite_url
from stirshaken.core.keys import load_private_key
from stirshaken.lab.testbed import provision, run_cases
from stirshaken.core.tnauthlist import TNAuthList

from tests.test_pki_support import ERR, RawAcme, csr_der, postgres_database, running_testbed, session_for


async def test_sqlite_restart_loses_nothing(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        tb.pa.add_account("sp-extra", "s3cret", ocn="1234")  # type: ignore[union-attr]
        st = await obtain_certificate(tb.acme_config("sp"))
        async with session_for(tb) as s:
            acme = RawAcme(tb, s, key=load_private_key(tb.state_dir / "sp" / "account.key"))
            kid = await acme.register()
            token = await acme.spc_token()
            order_url, order = await acme.new_order()
            assert (await acme.answer(order, token))["status"] == "valid"
            _s, _h, done = await acme.finalize(order, csr_der())
            cert_url = done["certificate"]
            _s, _h, chain_before = await acme.post(cert_url)
        await tb.revoke_via_acme("sp")
        urls = dict(tb.urls)
    assert (tmp_path / "testbed.db").exists()
    async with running_testbed(tmp_path) as tb:
        assert tb.urls == urls  # same ports and URLs after the restart
        async with session_for(tb) as s:
            acme = RawAcme(tb, s, key=load_private_key(tb.state_dir / "sp" / "account.key"))
            status, headers, _b = await acme.post(acme.url("new-account"), {"onlyReturnExisting": True}, use_jwk=True)
            assert status == 200 and headers["Location"] == kid  # account kept
            acme.kid = kid
            status, _h, order = await acme.post(order_url)
            assert status == 200 and order["status"] == "valid" and order["certificate"] == cert_url  # order kept
            status, _h, chain_after = await acme.post(cert_url)
            assert status == 200 and chain_after == chain_before  # certificate kept
            # the used jti is still remembered: replay is refused after the restart
            _o, order2 = await acme.new_order()
            chall = await acme.answer(order2, token)
            assert chall["status"] == "invalid" and chall["error"]["type"] == ERR + "unauthorized" and "jti" in chall["error"]["detail"]
            # the PA's accounts, issued tokens and revocations survive too
            pa = PAClient(tb.urls["pa"], s)
            await pa.login("sp-extra", "s3cret")
            jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
            assert tb.pa.db.pa_token(jti) is not None  # type: ignore[union-attr]
            async with s.get(tb.pa.crl_url) as r:  # type: ignore[union-attr]
                crl = certs.load_crl(await r.read())
            assert crl.get_revoked_certificate_by_serial_number(st.serial) is not None
            # and the STI-CR still serves the chain
            async with s.get(st.x5u) as r:  # type: ignore[arg-type]
                assert r.status == 200


async def test_postgresql_core_flow(tmp_path: Path) -> None:
    """The whole testbed (PA, CA, CR state) on the real PostgreSQL at 127.0.0.1:5432."""
    with postgres_database() as url:
        async with running_testbed(tmp_path, db_url=url) as tb:
            assert tb.pa.db.engine.dialect.name == "postgresql"  # type: ignore[union-attr]
            good, revoked = await provision(tb)
            verdicts = await run_cases(tb, good, revoked)
            assert [v.ok for v in verdicts] == [True] * 4, verdicts
            assert tb.pa.db.ca_count_certificates() == 2  # type: ignore[union-attr]


async def _concurrent_finalize(tmp_path: Path, db_url: str | None) -> None:
    async with running_testbed(tmp_path, db_url=db_url) as tb:
        async with session_for(tb) as s:
            acme = RawAcme(tb, s)
            await acme.register()
            order_url, order = await acme.ready_order()
            csr = csr_der()
            nonces = [await acme.nonce() for _ in range(12)]
            results = await asyncio.gather(
                *(acme.post(order["finalize"], {"csr": base64.urlsafe_b64encode(csr).rstrip(b"=").decode()}, nonce=n) for n in nonces)
            )
            ok = [r for r in results if r[0] == 200]
            refused = [r for r in results if r[0] != 200]
            assert len(ok) == 1, [r[0] for r in results]
            assert all(r[0] == 403 and r[2]["type"] == ERR + "orderNotReady" for r in refused)
            assert len(tb.pa.db.ca_certificates_for_order(order_url.rsplit("/", 1)[1])) == 1  # type: ignore[union-attr]
            assert tb.pa.db.ca_count_certificates() == 1  # type: ignore[union-attr]


async def test_concurrent_finalize_sqlite(tmp_path: Path) -> None:
    await _concurrent_finalize(tmp_path, None)


async def test_concurrent_finalize_postgresql(tmp_path: Path) -> None:
    with postgres_database() as url:
        await _concurrent_finalize(tmp_path, url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_record_certificate_exactly_once_across_threads_and_engines(tmp_path: Path, backend: str) -> None:
    """Many threads on separate engines (as separate CA processes would be) race to record a
    certificate for one ready order: the conditional UPDATE in the recording transaction lets
    exactly one win, and only the winner's certificate row exists."""

    def run(url: str) -> None:
        dbs = [Database(url) for _ in range(4)]
        acct, _ = dbs[0].ca_create_account("tp", {"kty": "EC"}, [])
        order, authz = dbs[0].ca_create_order(
            acct.id, "x", TNAuthList.for_spc("1").to_der(), expires=certs.utcnow(), not_before=None, not_after=None,
            challenge_token="t",
        )
        assert dbs[0].ca_authz_result(authz.id, valid=True, error=None)
        assert dbs[0].ca_order(order.id).status == "ready"  # type: ignore[union-attr]
        barrier = threading.Barrier(16)
        rows: list[Any] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            barrier.wait()
            row = dbs[i % 4].ca_record_certificate(order.id, acct.id, 1000 + i, f"chain {i}", certs.utcnow())
            with lock:
                rows.append(row)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [r for r in rows if r is not None]
        assert len(won) == 1 and len(rows) == 16
        assert [r.id for r in dbs[1].ca_certificates_for_order(order.id)] == [won[0].id]
        final = dbs[2].ca_order(order.id)
        assert final is not None and final.status == "valid" and final.cert_id == won[0].id
        assert dbs[3].ca_count_certificates() == 1
        for d in dbs:
            d.close()

    if backend == "sqlite":
        run(sqlite_url(str(tmp_path / "race.db")))
    else:
        with postgres_database() as url:
            run(url)


def test_jti_unique_and_counters(tmp_path: Path) -> None:
    db = Database(sqlite_url(str(tmp_path / "x.db")))
    when = certs.utcnow()
    assert db.ca_use_jti("pa", "j1", when, "a")
    assert not db.ca_use_jti("pa", "j1", when, "b")
    assert [db.next_counter("n") for _ in range(3)] == [1, 2, 3]
    db.cr_put("a.pem", "x", None)
    db.cr_put("a.pem", "y", "o")
    assert db.cr_get("a.pem").chain_pem == "y"  # type: ignore[union-attr]
    db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_cr_name_cannot_be_taken_over_by_a_racing_upload(tmp_path: Path, backend: str) -> None:
    """Issue 17 item 8: STI-CR ownership check and write are one step.  16 threads of two
    uploaders race for one new name: exactly one owner ends up holding it, the other's every
    attempt is refused, and the stored chain is the owner's."""
    from stirshaken.pki.store import NameTakenError

    def run(url: str) -> None:
        dbs = [Database(url) for _ in range(4)]
        barrier = threading.Barrier(16)
        results: list[tuple[str, str]] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            owner = "sp-a" if i % 2 else "sp-b"
            barrier.wait()
            try:
                created = dbs[i % 4].cr_put("race.pem", f"chain of {owner}", owner)
                out = (owner, "created" if created else "updated")
            except NameTakenError:
                out = (owner, "refused")
            with lock:
                results.append(out)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        row = dbs[0].cr_get("race.pem")
        assert row is not None
        winner = row.owner
        assert row.chain_pem == f"chain of {winner}"
        assert [r for r in results if r[1] == "created"] == [(winner, "created")], results
        assert all(r[1] == "refused" for r in results if r[0] != winner), results
        with pytest.raises(NameTakenError):
            dbs[1].cr_put("race.pem", "x", "sp-c")
        for d in dbs:
            d.close()

    if backend == "sqlite":
        run(sqlite_url(str(tmp_path / "cr-race.db")))
    else:
        with postgres_database() as url:
            run(url)
