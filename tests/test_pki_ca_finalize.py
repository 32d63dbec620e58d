"""The STI-CA never issues what it has not recorded (issue 17 item 7; RFC 8555 §7.4).

* PostgreSQL fails at the moment finalize records the certificate (the table is locked, then every
  connection of the CA's database is terminated and new ones refused): the client gets one
  ``serverInternal`` line, nothing is served or published, the order stays ``ready``; once the
  database is back, finalizing again issues a recorded, revocable certificate.
* ``stirshaken ca serve`` killed with SIGKILL inside finalize (blocked in the recording
  transaction): after a restart certbot's ``acme`` client completes the same order without a new
  SPC token, and the STI-CR holds only the recorded certificate.
* Orders an earlier version left in ``processing`` are completed or put back to ``ready`` at start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import josepy as jose
import orjson
import psycopg
import pytest
import sqlalchemy as sa
from acme import client, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_encode
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.pki.cr import CertificateRepository, DBPublisher
from stirshaken.pki.store import Database, ca_orders, sqlite_url

from tests.test_acme_certbot import TKAuth01Response, TNClient
from tests.test_pki_cli import STIR, _free_ports, _wait
from tests.test_pki_support import ERR, PG_ADMIN, RawAcme, csr_der, postgres_database, running_testbed, session_for


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _lock_waiters(dbname: str) -> int:
    """Backends of ``dbname`` waiting for a lock to write a certificate row (the CA inside its
    recording transaction)."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
            "AND query ILIKE 'INSERT INTO ca_certs%%'", (dbname,)
        ).fetchone()
    return int(row[0]) if row else 0


def _others_on(dbname: str) -> int:
    """Client connections to ``dbname`` (ours are to the admin database)."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'", (dbname,)
        ).fetchone()
    return int(row[0]) if row else 0


def _lock_certificates(dbname: str) -> psycopg.Connection[Any]:
    """A connection holding ``ca_certs`` locked (ACCESS EXCLUSIVE) in an open transaction: the CA
    can read orders and accounts, and blocks when it writes a certificate row."""
    holder = psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{dbname}")
    holder.execute("LOCK TABLE ca_certs IN ACCESS EXCLUSIVE MODE")
    return holder


def _outage_at_recording(dbname: str, locked: threading.Event, done: threading.Event) -> None:
    """Lock the certificate table, wait until the CA blocks writing to it, then take its database
    down: new connections refused, every existing one (the CA's, the lock holder's) terminated."""
    holder = _lock_certificates(dbname)
    locked.set()
    try:
        _wait_for("the CA to block in the recording transaction", lambda: _lock_waiters(dbname) > 0)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
    finally:
        try:
            holder.close()
        except psycopg.Error:
            pass
        done.set()


def _database_back(dbname: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')


async def test_database_outage_at_finalize_issues_nothing_unrecorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with postgres_database() as url:
        dbname = url.rsplit("/", 1)[1]
        async with running_testbed(tmp_path / "tb", db_url=url) as tb:
            assert tb.ca is not None
            # the STI-CR keeps its own database, as in a deployment: it stays up during the outage
            cr_db = Database(sqlite_url(str(tmp_path / "cr.db")))
            repo = CertificateRepository(cr_db, tb.urls["cr"])
            tb.ca.publisher = DBPublisher(repo)
            async with session_for(tb) as s:
                acme = RawAcme(tb, s)
                await acme.register()
                order_url, order = await acme.ready_order()
                locked, done = threading.Event(), threading.Event()
                fault = threading.Thread(target=_outage_at_recording, args=(dbname, locked, done), daemon=True)
                try:
                    fault.start()
                    assert await asyncio.to_thread(locked.wait, 30)
                    with caplog.at_level(logging.ERROR, logger="stirshaken.pki.ca"):
                        status, _h, problem = await acme.finalize(order, csr_der())
                    await asyncio.to_thread(done.wait, 30)
                    assert done.is_set()
                    # nothing was published while the CA's database was down
                    assert cr_db.cr_names() == []
                    # one clear ACME error, no certificate in it
                    assert status == 500, problem
                    assert problem["type"] == ERR + "serverInternal"
                    assert "could not be recorded" in problem["detail"] and "finalize again" in problem["detail"]
                    assert "\n" not in problem["detail"] and "Traceback" not in problem["detail"]
                    assert "certificate" not in problem
                    logged = [r.getMessage() for r in caplog.records if "could not be recorded" in r.getMessage()]
                    assert len(logged) == 1 and "discarded" in logged[0] and logged[0].count("\n") == 0
                finally:
                    _database_back(dbname)
                    fault.join(30)
                # the database is back: nothing was recorded, nothing is downloadable, the order is still ready
                assert tb.ca.db.ca_count_certificates() == 0
                status, _h, now = await acme.post(order_url)
                assert status == 200 and now["status"] == "ready" and "certificate" not in now, now
                assert cr_db.cr_names() == []
                # the client retries: issued, recorded, published, revocable
                status, headers, done_order = await acme.finalize(order, csr_der())
                assert status == 200 and done_order["status"] == "valid", done_order
                status, _h, chain_pem = await acme.post(done_order["certificate"])
                assert status == 200
                leaf = certs.load_certificates(chain_pem)[0]
                row = tb.ca.db.ca_certificate_by_serial(leaf.serial_number)
                assert row is not None and row.order_id == order_url.rsplit("/", 1)[1] and not row.revoked
                assert certs.load_certificates(row.chain_pem.encode())[0] == leaf
                assert cr_db.cr_names() == [f"{tb.ocn}-{leaf.serial_number:x}.pem"]
                assert row.cr_url == headers.get("X-Shaken-Certificate-Location") == repo.url_for(cr_db.cr_names()[0])
                der = leaf.public_bytes(serialization.Encoding.DER)
                status, _h, body = await acme.post(acme.url("revoke-cert"), {"certificate": b64url_encode(der), "reason": 1})
                assert status == 200, body
                revoked = tb.ca.db.ca_certificate_by_serial(leaf.serial_number)
                assert revoked is not None and revoked.revoked
            cr_db.close()


# --- a CA process killed inside finalize -------------------------------------------------------


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(STIR + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cr_index(base: str, tls_root: Path) -> list[str]:
    ctx = ssl.create_default_context(cafile=str(tls_root))
    with urllib.request.urlopen(base + "/", context=ctx, timeout=10) as r:
        return list(orjson.loads(r.read())["certificates"])


def _spc_token(pa_url: str, tls_root: Path, account_key: ec.EllipticCurvePrivateKey, value: str) -> str:
    from stirshaken.net.http import client_session
    from stirshaken.pki.pa_client import PAClient
    from stirshaken.pki.pa import account_key_fingerprint

    async def get() -> str:
        async with client_session(ca_bundle=str(tls_root)) as s:
            pa = PAClient(pa_url, s)
            await pa.login("sp-1234", "sp-pw")
            return str((await pa.spc_token("1234", value, account_key_fingerprint(account_key)))["token"])

    return asyncio.run(get())


def test_ca_killed_during_finalize_then_client_completes(tmp_path: Path) -> None:
    pa_port, ca_port, cr_port = _free_ports(3)
    pa_dir, ca_dir, cr_dir = (tmp_path / n for n in ("pa", "ca", "cr"))
    env = {**os.environ, "STIRSHAKEN_PA_PASSWORD": "sp-pw"}
    procs: list[subprocess.Popen[bytes]] = []
    with postgres_database() as db_url:
        dbname = db_url.rsplit("/", 1)[1]
        try:
            ok = subprocess.run(STIR + ["pa", "add-account", "sp-1234", "--ocn", "1234", "--state-dir", str(pa_dir)],
                                capture_output=True, text=True, env=env, timeout=60)
            assert ok.returncode == 0, ok.stderr
            procs.append(_spawn(["pa", "serve", "--state-dir", str(pa_dir), "--port", str(pa_port)], env))
            tls_root = pa_dir / "tls" / "tls-root.pem"
            pa_url = f"https://127.0.0.1:{pa_port}"
            _wait(pa_url + "/ca-list", tls_root)
            tls = ["--tls-cert", str(pa_dir / "tls" / "tls-server.pem"), "--tls-key", str(pa_dir / "tls" / "tls-server.key")]
            cr_dir.mkdir()
            (cr_dir / "cr.toml").write_text(f'[cr]\nport = {cr_port}\nupload_token = ["ca-token=sti-ca"]\n')
            procs.append(_spawn(["cr", "serve", "--config", str(cr_dir / "cr.toml"), "--state-dir", str(cr_dir), *tls], env))
            cr_url = f"https://127.0.0.1:{cr_port}"
            ca_args = ["ca", "serve", "--state-dir", str(ca_dir), "--port", str(ca_port), *tls, "--db-url", db_url,
                       "--pa-url", pa_url, "--pa-root", str(pa_dir / "pa-root.pem"), "--pa-crl-cert", str(pa_dir / "pa-crl.pem"),
                       "--ca-bundle", str(tls_root), "--cr-url", cr_url, "--cr-token", "ca-token"]
            ca = _spawn(ca_args, env)
            procs.append(ca)
            directory_url = f"https://127.0.0.1:{ca_port}/acme/directory"
            _wait(directory_url, tls_root, any_status=False)
            _wait(cr_url + "/", tls_root)

            # certbot's acme client: account, order, tkauth-01 answered with an SPC token -> ready
            value = TNAuthList.for_spc("1234").to_base64url()
            account_key = ec.generate_private_key(ec.SECP256R1())
            token = _spc_token(pa_url, tls_root, account_key, value)
            net = client.ClientNetwork(jose.JWKEC(key=account_key), alg=jose.ES256, verify_ssl=str(tls_root), user_agent="kill-test")
            acme = TNClient(messages.Directory.from_json(net.get(directory_url).json()), net)
            acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
            sp_key = ec.generate_private_key(ec.SECP256R1())
            csr_pem = certs.build_csr(sp_key, tnauthlist=TNAuthList.from_identifier(value)).public_bytes(serialization.Encoding.PEM)
            orderr = acme.new_order_tnauthlist(csr_pem, value)
            acme.answer_challenge(orderr.authorizations[0].body.challenges[0], TKAuth01Response(atc=token))
            orderr = acme.poll_authorizations(orderr, dt.datetime.now() + dt.timedelta(seconds=20))
            order_id = orderr.uri.rsplit("/", 1)[1]
            db = Database(db_url, create=False)
            assert db.ca_order(order_id).status == "ready"  # type: ignore[union-attr]

            # finalize while the certificate table is locked: the CA signs, then blocks recording; kill -9 it there
            holder = _lock_certificates(dbname)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                finalizing = pool.submit(acme.begin_finalization, orderr)
                _wait_for("the CA to block in the recording transaction", lambda: _lock_waiters(dbname) > 0)
                os.killpg(ca.pid, signal.SIGKILL)
                ca.wait(timeout=10)
                with pytest.raises(Exception):
                    finalizing.result(timeout=30)  # the connection died with the CA
            assert _cr_index(cr_url, tls_root) == []  # nothing was published
            holder.close()
            db.close()
            # the killed CA's transaction is rolled back by PostgreSQL when its backend goes
            _wait_for("the killed CA's backend to end", lambda: _others_on(dbname) == 0)
            db = Database(db_url, create=False)
            order = db.ca_order(order_id)
            assert order is not None and order.status == "ready" and order.cert_id is None
            assert db.ca_count_certificates() == 0

            # restart; the same client completes the same order (no new SPC token)
            ca = _spawn(ca_args, env)
            procs.append(ca)
            _wait(directory_url, tls_root, any_status=False)
            orderr = acme.poll_finalization(orderr, dt.datetime.now() + dt.timedelta(seconds=30))
            leaf = certs.load_certificates(orderr.fullchain_pem.encode())[0]
            assert leaf.public_key().public_numbers() == sp_key.public_key().public_numbers()
            row = db.ca_certificate_by_serial(leaf.serial_number)
            assert row is not None and row.order_id == order_id
            assert _cr_index(cr_url, tls_root) == [f"{cr_url}/1234-{leaf.serial_number:x}.pem"]
            acme.revoke(leaf, 1)
            revoked = db.ca_certificate_by_serial(leaf.serial_number)
            assert revoked is not None and revoked.revoked
            db.close()
        finally:
            for p in procs:
                _stop(p)


# --- orders an earlier version left in processing ----------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_processing_orders_are_finished_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str) -> None:
    """An earlier version committed ``processing`` before issuing; a crash there left the order
    stuck.  At start the STI-CA puts such an order back to ``ready`` (the client finalizes again
    with the authorization it has) or, when its certificate is recorded, completes it."""
    if backend == "sqlite":
        await _processing_orders_finished(tmp_path, None, caplog)
    else:
        with postgres_database() as url:
            await _processing_orders_finished(tmp_path, url, caplog)


async def _processing_orders_finished(tmp_path: Path, db_url: str | None, caplog: pytest.LogCaptureFixture) -> None:
    async with running_testbed(tmp_path, db_url=db_url) as tb:
        async with session_for(tb) as s:
            acme = RawAcme(tb, s)
            kid = await acme.register()
            stuck_url, stuck = await acme.ready_order()
            issued_url, issued = await acme.ready_order()
            status, _h, body = await acme.finalize(issued, csr_der())
            assert status == 200 and body["status"] == "valid"
            cert_url = body["certificate"]
    stuck_id, issued_id = stuck_url.rsplit("/", 1)[1], issued_url.rsplit("/", 1)[1]
    db = Database(db_url or sqlite_url(str(tmp_path / "testbed.db")))
    with db.begin() as c:  # the states the old finalize could be killed in
        c.execute(sa.update(ca_orders).where(ca_orders.c.id == stuck_id).values(status="processing"))
        c.execute(sa.update(ca_orders).where(ca_orders.c.id == issued_id).values(status="processing", cert_id=None))
    db.close()
    with caplog.at_level(logging.WARNING, logger="stirshaken.pki.ca"):
        async with running_testbed(tmp_path, db_url=db_url) as tb:
            assert tb.ca is not None
            assert tb.ca.db.ca_order(stuck_id).status == "ready"  # type: ignore[union-attr]
            async with session_for(tb) as s:
                acme = RawAcme(tb, s, key=acme.key)
                acme.kid = kid
                status, _h, body = await acme.post(issued_url)
                assert status == 200 and body["status"] == "valid" and body["certificate"] == cert_url
                status, _h, body = await acme.post(stuck_url)
                assert status == 200 and body["status"] == "ready"
                status, _h, body = await acme.finalize(stuck, csr_der())
                assert status == 200 and body["status"] == "valid", body
                assert len(tb.ca.db.ca_certificates_for_order(stuck_id)) == 1
    lines = [r.getMessage() for r in caplog.records if "unfinished order" in r.getMessage()]
    assert len(lines) == 1 and issued_id in lines[0] and stuck_id in lines[0], lines
