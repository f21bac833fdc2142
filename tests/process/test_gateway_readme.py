"""The README's curl examples of the HTTP gateway work as printed, against a real broker and
gateway, and cover every REST route."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
from pathlib import Path

import pytest

from client.gateway.routes import API_ROUTES
from tests.tools.gatewaytools import RunningGateway, gateway, make_gateway

__all__ = ["gateway", "make_gateway"]  # fixtures, imported for pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def curl_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("<!-- section: http -->"):text.index("<!-- /section: http -->")]
    rest = section[section.index("### REST API"):]
    block = rest[rest.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    return [line for line in block.splitlines() if line.startswith("curl ")]


def test_the_examples_cover_every_route() -> None:
    examples = curl_examples()
    for route in API_ROUTES:
        pattern = re.escape(route.path)
        pattern = re.sub(r"\\\{\w+\\\}", "[^/ ?']+", pattern)
        method = f"-X {route.method}"
        assert any(re.search(f"localhost:7480{pattern}(?:[ ?']|$)", line)
                   and (route.method == "GET" or method in line) for line in examples), route.path


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_curl_examples_work_as_printed(gateway: RunningGateway) -> None:
    for line in curl_examples():
        command = shlex.split(line.replace("localhost:7480", f"127.0.0.1:{gateway.server.port}"))
        command.insert(1, "--fail-with-body")
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        if "/api/events" in line:  # a stream: it runs until stopped; it must open with a hello
            assert proc.stdout is not None
            hello = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert hello == b": jobwire events\n", line
            proc.terminate()
            await proc.wait()
            continue
        out, err = await proc.communicate()
        assert proc.returncode == 0, f"{line}\n{out.decode()}{err.decode()}"
        assert out, line
