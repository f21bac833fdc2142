"""Does an idle embedded gateway slow the TCP path? ``jobwire serve`` with and without ``--http``.

Run: ``.venv/bin/python -m bench.bench_gateway_idle [--runs 3] [--json PATH]``. For each run and
each scenario it starts a fresh broker (``jobwire serve --sync full``, a new data directory) once
without and once with ``--http 127.0.0.1:PORT`` (the gateway on the broker's event loop, no
HTTP client connected), alternating which goes first, and measures it with ``jobwire bench
enqueue`` (300,000 jobs in batches of 1,000, 2 in flight) and ``jobwire bench drain`` (50,000
jobs, one worker at concurrency 50) through ``--connect``: the load of ``make bench``'s
``enqueue-bulk`` and ``drain`` steps. It prints each run, then the median jobs/s of each
configuration, their ratio (on / off), the broker process's CPU per job (which includes the
embedded gateway's, and moves far less than throughput on a busy host) and the 1-minute load
average seen around the runs.
Alternating within one sitting is what makes the ratio meaningful on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCENARIOS: dict[str, list[str]] = {
    "enqueue": ["enqueue", "--jobs", "300000", "--batch", "1000", "--in-flight", "2",
                "--producers", "1"],
    "drain": ["drain", "--jobs", "50000", "--workers", "1", "--concurrency", "50"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("jobwire serve exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def one_run(scenario: str, http: bool, work: Path) -> dict[str, Any]:
    """A fresh broker (with or without the gateway), one bench scenario against it."""
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="idle-", dir=work))
    command = [sys.executable, "-m", "jobwire", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--data-dir", str(data), "--sync", "full", "--log-level", "warning"]
    http_port = free_port() if http else None
    if http_port is not None:
        command += ["--http", f"127.0.0.1:{http_port}"]
    with (data / "serve.log").open("ab") as log:
        broker = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_port(port, broker)
        if http_port is not None:
            wait_port(http_port, broker)
        out = data / "result.json"
        load_before = os.getloadavg()[0]
        subprocess.run([sys.executable, "-m", "jobwire", "bench", *SCENARIOS[scenario],
                        "--connect", f"127.0.0.1:{port}", "--broker-pid", str(broker.pid),
                        "--quiet", "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        return {"scenario": scenario, "http": http, "jobs_per_s": round(result["jobs_per_s"]),
                "broker_cpu_us_per_job": result["broker"]["cpu_us_per_job"],
                "load_1m": round((load_before + os.getloadavg()[0]) / 2, 2)}
    finally:
        broker.terminate()
        broker.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_gateway_idle",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument("--dir", type=Path, default=None, help="where data directories go")
    parser.add_argument("--json", type=Path, help="also write every run here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobwire-idle-", dir=args.dir))
    runs: list[dict[str, Any]] = []
    for index in range(args.runs):
        for scenario in SCENARIOS:
            order = (False, True) if index % 2 == 0 else (True, False)
            for http in order:
                run = one_run(scenario, http, work)
                runs.append(run)
                print(f"run {index + 1} {scenario:<8} http={'on ' if http else 'off'} "
                      f"{run['jobs_per_s']:>9,} jobs/s  broker CPU "
                      f"{run['broker_cpu_us_per_job']} us/job  load {run['load_1m']}", flush=True)
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        def median(key: str, http: bool, scenario: str = scenario) -> float:
            return float(statistics.median(r[key] for r in runs
                                           if r["scenario"] == scenario and r["http"] == http))

        off, on = median("jobs_per_s", False), median("jobs_per_s", True)
        cpu_off, cpu_on = median("broker_cpu_us_per_job", False), median(
            "broker_cpu_us_per_job", True)
        loads = [r["load_1m"] for r in runs if r["scenario"] == scenario]
        summary[scenario] = {"off": off, "on": on, "ratio": round(on / off, 3),
                             "cpu_us_off": cpu_off, "cpu_us_on": cpu_on,
                             "cpu_ratio": round(cpu_on / cpu_off, 3),
                             "load_1m": [min(loads), max(loads)]}
        print(f"{scenario:<8} median off {off:>9,.0f}  on {on:>9,.0f} jobs/s  ratio on/off "
              f"{on / off:.3f}; broker CPU {cpu_off} vs {cpu_on} us/job, ratio "
              f"{cpu_on / cpu_off:.3f}  (load {min(loads)}-{max(loads)})")
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
