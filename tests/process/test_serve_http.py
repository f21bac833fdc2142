"""``jobwire serve --http``: the gateway on the broker's own loop (what ``make serve`` runs)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from tests.conftest import BrokerProcess, free_port


def test_serve_with_http_answers_rest_and_stops_cleanly(
    spawn_broker: Callable[..., BrokerProcess],
) -> None:
    http_port = free_port()
    process = spawn_broker("--http", f"127.0.0.1:{http_port}")
    base = f"http://127.0.0.1:{http_port}"
    request = urllib.request.Request(
        f"{base}/api/queues/emails/jobs", data=json.dumps({"name": "send", "data": 1}).encode(),
        headers={"content-type": "application/json"}, method="POST")
    for _ in range(100):  # the gateway connects to the broker in the background
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                job = json.loads(answer.read())["job"]
            break
        except OSError:
            time.sleep(0.1)
    assert job["queue"] == "emails" and job["state"] == "waiting"
    with urllib.request.urlopen(f"{base}/api/queues", timeout=5) as answer:
        queues = json.loads(answer.read())["queues"]
    assert any(q["name"] == "emails" for q in queues), queues
    with urllib.request.urlopen(f"{base}/", timeout=5) as answer:
        assert b"<html" in answer.read().lower()
    assert process.terminate() == 0
