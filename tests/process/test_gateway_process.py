"""The gateway as its own process (``python -m client.gateway``, what ``jobwire http`` runs)
against a broker process, and embedded as a task that is cancelled (what ``jobwire serve --http``
does)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trustme

from client import parse_url
from client.gateway import GatewayServer, serve_gateway
from client.gateway.cli import add_serve_arguments, local_broker_url
from tests.conftest import BrokerProcess, RunningBroker, free_port
from tests.tools.clienttools import until

GATEWAY = [sys.executable, "-m", "client.gateway"]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the gateway exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway did not answer in time"
        time.sleep(0.05)


def test_standalone_gateway_serves_and_stops_on_sigterm(broker_process: BrokerProcess,
                                                        tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [*GATEWAY, "--broker", f"jobwire://127.0.0.1:{broker_process.port}",
         "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/queues", proc)
        added = httpx.post(f"{base}/api/queues/proc/jobs", json={"name": "x", "data": [1]})
        assert added.status_code == 201
        job = httpx.get(f"{base}/api/jobs/{added.json()['job']['id']}").json()
        assert job["data"] == [1]
        assert "jobwire_jobs" in httpx.get(f"{base}/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "serving http://127.0.0.1" in (tmp_path / "gateway.log").read_text()


def test_beyond_loopback_without_a_token_warns(broker_process: BrokerProcess,
                                               tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*GATEWAY, "--broker", f"jobwire://127.0.0.1:{broker_process.port}",
             "--listen", f"0.0.0.0:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/api/queues", proc)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "without a token" in log_path.read_text()


def test_bad_listen_address_is_a_usage_error() -> None:
    done = subprocess.run([*GATEWAY, "--listen", "nowhere"], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"HOST:PORT" in done.stderr


async def test_embedded_gateway_stops_when_its_task_is_cancelled(broker: RunningBroker) -> None:
    port = free_port()
    task = asyncio.create_task(serve_gateway(
        "127.0.0.1", port, f"jobwire://{broker.host}:{broker.port}"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as session:
        async with asyncio.timeout(30):
            while True:
                try:
                    if (await session.get("/api/queues")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        try:
            await session.get("/api/queues")
            raise AssertionError("the gateway still answers after its task was cancelled")
        except httpx.TransportError:
            pass


def test_serve_flags_and_the_embedded_gateways_broker_url() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert parser.parse_args([]).http is None  # off unless asked for
    args = parser.parse_args(["--http", "127.0.0.1:7480", "--http-token", "t"])
    assert (args.http, args.http_token, args.http_serializer) == (("127.0.0.1", 7480), "t",
                                                                   "msgpack")
    for host, token, expected in (("0.0.0.0", "to/k:en", ("127.0.0.1", "to/k:en")),
                                  ("::", None, ("::1", None)),
                                  ("192.0.2.7", None, ("192.0.2.7", None))):
        endpoint = parse_url(local_broker_url(host, 7400, token))
        assert (endpoint.host, endpoint.token, endpoint.port) == (*expected, 7400)


async def test_a_gateway_started_before_its_broker(
        start_broker: Callable[..., Awaitable[RunningBroker]]) -> None:
    """The order ``jobwire serve --http`` uses: gateway first, then the broker, then
    ``broker_ready``; requests meanwhile answer 503, not hang."""
    broker_port = free_port()
    server = GatewayServer("127.0.0.1", 0, local_broker_url("0.0.0.0", broker_port, None))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                     timeout=30) as session:
            early = await session.get("/api/queues")
            assert early.status_code == 503
            assert early.json()["error"]["code"] == "BROKER_UNAVAILABLE"
            await start_broker(port=broker_port)
            server.broker_ready()

            async def answers() -> bool:
                return (await session.get("/api/queues")).status_code == 200

            await until(answers, 30)
    finally:
        await server.stop()


async def test_a_gateway_in_front_of_a_tls_broker(
        start_broker: Callable[..., Awaitable[RunningBroker]], tmp_path: Path) -> None:
    ca = trustme.CA()  # a throwaway CA: the system trust store is not touched
    server_cert = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(key))
    broker = await start_broker(tls_cert=cert, tls_key=key)
    url = local_broker_url("127.0.0.1", broker.port, None, tls=True)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    trusted = GatewayServer("127.0.0.1", 0, url, ssl=context)
    untrusted = GatewayServer("127.0.0.1", 0, url)  # the system CAs do not know the test CA
    await trusted.start()
    await untrusted.start()
    try:
        async with httpx.AsyncClient(timeout=30) as session:
            ok = await session.post(f"http://127.0.0.1:{trusted.port}/api/queues/tls/jobs",
                                    json={"name": "x"})
            assert ok.status_code == 201
            refused = await session.get(f"http://127.0.0.1:{untrusted.port}/api/queues")
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "BROKER_UNAVAILABLE"
    finally:
        await trusted.stop()
        await untrusted.stop()
