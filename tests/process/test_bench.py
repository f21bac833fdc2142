"""Smoke tests of the bench harness: every scenario, tiny, against its own broker subprocess.

They check that each run completes and that its JSON record has the documented schema
(``bench/README.md``) with consistent figures. They never assert speed: figures from runs this
small say nothing about it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scenarios import Params, run_scenario

PERCENTILE_KEYS = {"p50", "p90", "p99", "p999", "max", "mean", "count"}
TOP_KEYS = {
    "scenario", "name", "parameters", "jobs", "seconds", "jobs_per_s", "latency_ms",
    "latency_of", "latencies_ms", "broker", "load", "version", "cpus", "python",
    "loadavg_1m", "finished_at",
}


def check_latency(summary: Any, count: int | None = None) -> None:
    assert set(summary) == PERCENTILE_KEYS
    assert 0 < summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["p999"]
    assert summary["p999"] <= summary["max"]
    if count is not None:
        assert summary["count"] == count


def check_schema(
    result: dict[str, Any], scenario: str, jobs: int | None, payload_bytes: int = 100
) -> None:
    assert set(result) >= TOP_KEYS
    json.dumps(result)  # serializable as it is
    assert result["scenario"] == scenario
    assert isinstance(result["parameters"], dict)
    assert result["parameters"]["payload_bytes"] == payload_bytes
    if jobs is not None:
        assert result["jobs"] == jobs
    assert result["seconds"] > 0
    assert result["jobs_per_s"] == pytest.approx(result["jobs"] / result["seconds"], rel=0.01)
    broker = result["broker"]
    assert set(broker) == {"rss_mb_peak", "rss_mb_end", "cpu_s", "cpu_us_per_job",
                           "loop_cpu_us_per_job", "sync", "managed"}
    assert broker["sync"] == "full" and broker["managed"] is True
    assert broker["rss_mb_peak"] >= broker["rss_mb_end"] > 1
    assert broker["cpu_s"] >= 0
    loop = broker["loop_cpu_us_per_job"]  # the main thread's CPU (10 ms ticks: no upper bound
    assert loop is None or loop >= 0        # in runs this short)
    assert result["cpus"] >= 1 and result["version"]


def tiny(**options: Any) -> Params:
    params = Params(quiet=True, timeout=120.0)
    for key, value in options.items():
        setattr(params, key, value)
    return params


def test_enqueue_bulk_and_single() -> None:
    bulk = run_scenario("enqueue", tiny(jobs=200, batch=50, producers=2))
    check_schema(bulk, "enqueue", 200)
    assert bulk["parameters"]["mode"] == "bulk"
    assert bulk["requests"] == 4
    check_latency(bulk["latency_ms"], count=4)
    single = run_scenario("enqueue", tiny(jobs=200, batch=1, in_flight=10))
    check_schema(single, "enqueue", 200)
    assert single["parameters"] == {"payload_bytes": 100, "mode": "single", "producers": 1,
                                    "batch": 1, "in_flight": 10, "batch_adds": True,
                                    "loop": "uvloop"}
    check_latency(single["latency_ms"], count=200)
    plain = run_scenario("enqueue", tiny(jobs=100, batch=1, in_flight=10, loop="asyncio",
                                         payload_bytes=1000))
    check_schema(plain, "enqueue", 100, payload_bytes=1000)
    assert plain["parameters"]["loop"] == "asyncio"
    assert plain["payload_mb_per_s"] == round(100 * 1000 / plain["seconds"] / 1e6, 2)


def test_raw_socket_load() -> None:
    result = run_scenario("raw", tiny(jobs=300, in_flight=20))
    assert result["scenario"] == "raw" and result["jobs"] == 300
    assert result["parameters"] == {"payload_bytes": 100, "mode": "split", "in_flight": 20}
    assert result["sends"] == 301  # hello + one send per request
    assert result["broker"]["cpu_us_per_job"] > 0
    joined = run_scenario("raw", tiny(jobs=300, in_flight=20, raw_mode="joined"))
    assert joined["sends"] < 301


def test_drain() -> None:
    result = run_scenario("drain", tiny(jobs=200, workers=2, concurrency=5))
    check_schema(result, "drain", 200)
    assert result["latency_of"] == "ack"
    check_latency(result["latency_ms"], count=200)
    assert result["load"]["processes"] == 2


def test_latency_records_start_and_completion() -> None:
    result = run_scenario("latency", tiny(jobs=200, rate=400.0, concurrency=5))
    check_schema(result, "latency", 200)
    assert result["latency_of"] == "start"
    for name in ("start", "complete", "enqueue_ack", "ack"):
        check_latency(result["latencies_ms"][name], count=200)
    # Every job starts before its completion is acknowledged.
    assert result["latencies_ms"]["start"]["p50"] < result["latencies_ms"]["complete"]["p50"]


def test_mixed_with_plot(tmp_path: Path) -> None:
    params = tiny(duration=3.0, warmup=1.0, rate=300.0, batch=10, concurrency=5)
    result = run_scenario("mixed", params)
    check_schema(result, "mixed", None)
    assert result["parameters"]["warmup_s"] == 1
    assert result["seconds"] == 2.0
    assert 0 < result["jobs"] <= result["completed_total"] <= result["enqueued_total"]
    check_latency(result["latency_ms"], count=result["jobs"])
    assert [point["t"] for point in result["series"]] == [0, 1, 2]
    assert sum(point["completed_per_s"] for point in result["series"]) <= (
        result["completed_total"])
    pytest.importorskip("matplotlib")
    from bench.report import plot_series

    plot_series(result, str(tmp_path / "mixed.png"))
    assert (tmp_path / "mixed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("stop_signal", ["kill", "term"])
def test_recovery(stop_signal: str) -> None:
    result = run_scenario("recovery", tiny(jobs=300, stop_signal=stop_signal))
    check_schema(result, "recovery", 300)
    assert result["latency_ms"] is None
    assert result["jobs_recovered"] == 300
    assert result["exit_code"] == (-9 if stop_signal == "kill" else 0)


def test_suite_command_writes_json_and_markdown(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "latest.json", tmp_path / "latest.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "suite", "--scale", "0.001", "--no-micro", "--quiet",
         "--only", "enqueue-single,drain,latency-500,single-raw",
         "--json", str(out_json), "--markdown", str(out_md)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out_json.read_text())
    assert [r["name"] for r in data["results"]] == ["enqueue-single", "single-raw", "drain",
                                                    "latency-500"]  # in STANDARD's order
    for result in data["results"]:
        assert set(result["target"]) == {"text", "checks", "met"}
        assert result["command"].startswith("jobwire bench ")
    assert data["failures"] == []
    single, raw, drain, latency = data["results"]
    assert raw["target"]["text"] == ">= 30,000 jobs/s"
    assert len(single["runs_jobs_per_s"]) == 3 and len(drain["runs_jobs_per_s"]) == 3
    assert single["jobs_per_s"] == sorted(single["runs_jobs_per_s"])[1]
    # latency-500 runs three times too, ranked by p99 (its rate is fixed)
    assert latency["runs_of"] == "latency_ms.p99" and "runs_jobs_per_s" not in latency
    assert latency["latency_ms"]["p99"] == sorted(latency["runs_figures"])[1]
    table = out_md.read_text()
    assert "| enqueue-single |" in table and "| latency-500 |" in table
    assert "enqueue-single: 3 runs, jobs/s" in table
    assert "latency-500: 3 runs, p99 ms" in table


def test_connect_to_a_running_broker() -> None:
    from bench.broker_proc import BrokerProcess
    from bench.runner import BenchError

    with BrokerProcess() as broker:
        broker.start()
        result = run_scenario("enqueue", tiny(jobs=200, batch=20, connect=broker.address,
                                              broker_pid=broker.pid))
        assert result["jobs"] == 200
        assert result["broker"]["managed"] is False and result["broker"]["sync"] is None
        assert result["broker"]["rss_mb_peak"] > 1  # sampled through --broker-pid
        with pytest.raises(BenchError, match="no jobwire broker answers"):
            run_scenario("recovery", tiny(jobs=10, connect="127.0.0.1:1"))
        with pytest.raises(BenchError, match="needs the bench's own broker"):
            run_scenario("recovery", tiny(jobs=10, connect=broker.address))


def test_bench_processes_runs_and_writes_its_figures(tmp_path: Path) -> None:
    """``python -m bench.bench_processes``, tiny: it completes and reports every run (no speed
    is asserted; runs this small say nothing about it)."""
    from bench.bench_processes import main as bench_processes

    out = tmp_path / "procs.json"
    assert bench_processes(["--jobs", "6", "--ms", "1", "--rounds", "1", "--json",
                            str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["runs"]) == {"1", "2"}
    for run in data["runs"].values():
        assert len(run["seconds"]) == 1 and run["median_s"] > 0
    assert data["runs"]["1"]["speedup"] == 1.0
