"""Bench results: the JSON record of one run, targets, the rich and markdown tables, the plot.

A result is a plain dict (it is what ``--json`` writes; the schema is in ``bench/README.md``).
``make_result`` builds one; ``check_target`` adds whether a suite target was met; ``table``,
``markdown`` and ``plot_series`` present them. Latency histograms are merged by
``merge_latencies`` from the encoded histograms the load processes sent (``bench.hdr``).
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import os
import platform
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.broker_proc import ResourceUsage
from bench.hdr import merge, summary_ms

_OPS: dict[str, Callable[[Any, Any], bool]] = {">=": operator.ge, "<=": operator.le}


def console() -> Console:
    """A stdout console; 230 columns wide when stdout is not a terminal, so tables fit."""
    return Console() if sys.stdout.isatty() else Console(width=230)


def jobwire_version() -> str:
    """The installed jobwire version (``unknown`` when not installed)."""
    try:
        return version("jobwire")
    except PackageNotFoundError:
        return "unknown"


def merge_latencies(
    results: Iterable[Mapping[str, Any]], names: Sequence[str]
) -> dict[str, dict[str, float | int] | None]:
    """Merge the named histograms of every process result into percentile summaries (ms)."""
    materialized = list(results)
    out: dict[str, dict[str, float | int] | None] = {}
    for name in names:
        encoded = [r["hist"][name] for r in materialized if name in r.get("hist", {})]
        out[name] = summary_ms(merge(encoded)) if encoded else None
    return out


def make_result(
    *,
    scenario: str,
    parameters: Mapping[str, Any],
    jobs: int,
    seconds: float,
    latency: str | None,
    latencies: Mapping[str, dict[str, float | int] | None],
    usage: ResourceUsage | None,
    sync: str | None,
    managed: bool,
    load_processes: int,
    load_cpu_s: float | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One run's JSON record.

    Args:
        scenario: the scenario name.
        parameters: what the run was asked to do.
        jobs: jobs counted by the throughput figure.
        seconds: the measured phase's length.
        latency: which entry of ``latencies`` is the headline ``latency_ms`` (or none).
        latencies: every latency summary measured, by name.
        usage: the broker's RSS and CPU during the measured phase (``None`` when not sampled).
        sync: the broker's sync mode, when known.
        managed: whether the bench started the broker itself.
        load_processes: producer and worker processes used.
        load_cpu_s: CPU seconds those processes used in the measured phase.
        extra: scenario-specific fields, merged at the top level.

    Returns:
        The result dict (see ``bench/README.md`` for the schema).
    """
    result: dict[str, Any] = {
        "scenario": scenario,
        "name": scenario,
        "parameters": dict(parameters),
        "jobs": jobs,
        "seconds": round(seconds, 6),
        "jobs_per_s": round(jobs / seconds, 1) if seconds > 0 else None,
        "payload_mb_per_s": _payload_rate(parameters, jobs, seconds),
        "latency_ms": latencies.get(latency) if latency else None,
        "latency_of": latency,
        "latencies_ms": dict(latencies),
        "broker": {
            "rss_mb_peak": usage.rss_mb_peak if usage else None,
            "rss_mb_end": usage.rss_mb_end if usage else None,
            "cpu_s": usage.cpu_s if usage else None,
            "cpu_us_per_job": _per_job_us(usage.cpu_s if usage else None, jobs),
            "loop_cpu_us_per_job": _per_job_us(usage.loop_cpu_s if usage else None, jobs),
            "sync": sync,
            "managed": managed,
        },
        "load": {"processes": load_processes, "cpu_s": load_cpu_s,
                 "cpu_us_per_job": _per_job_us(load_cpu_s, jobs)},
        "version": jobwire_version(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if extra:
        result.update(extra)
    return result


def _payload_rate(parameters: Mapping[str, Any], jobs: int, seconds: float) -> float | None:
    """Payload megabytes (10**6 bytes) per second: ``jobs * payload_bytes / seconds``."""
    size = parameters.get("payload_bytes")
    if not isinstance(size, int) or seconds <= 0:
        return None
    return round(jobs * size / seconds / 1e6, 2)


def _per_job_us(cpu_s: float | None, jobs: int) -> float | None:
    """CPU microseconds per job: robust to other load on the machine, unlike jobs/s."""
    if cpu_s is None or jobs <= 0:
        return None
    return round(cpu_s * 1e6 / jobs, 2)


def lookup(result: Mapping[str, Any], path: str) -> Any:
    """The figure at dotted ``path`` in ``result`` (``"latency_ms.p99"``), or ``None``."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def check_target(
    result: dict[str, Any], text: str, checks: Sequence[tuple[str, str, float]]
) -> dict[str, Any]:
    """Record a target on ``result``: each check is ``(field path, ">=" or "<=", bound)``.

    Returns:
        The ``target`` dict stored in ``result`` (``met`` is false if a figure is missing).
    """
    done = []
    for path, op, bound in checks:
        actual = lookup(result, path)
        met = actual is not None and _OPS[op](actual, bound)
        done.append({"metric": path, "op": op, "value": bound, "actual": actual, "met": met})
    target = {"text": text, "checks": done, "met": all(c["met"] for c in done)}
    result["target"] = target
    return target


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


COLUMNS = ("name", "jobs", "seconds", "jobs/s", "payload MB/s", "p50 ms", "p99 ms", "p99.9 ms",
           "max ms", "RSS peak MiB", "RSS end MiB", "broker CPU s", "broker µs/job", "load µs/job",
           "target", "met")


def _row(result: Mapping[str, Any]) -> list[str]:
    latency = result.get("latency_ms") or {}
    broker = result.get("broker") or {}
    load = result.get("load") or {}
    target = result.get("target")
    met = "-" if target is None else ("yes" if target["met"] else "NO")
    return [
        str(result.get("name", result["scenario"])), _fmt(result.get("jobs")),
        _fmt(result.get("seconds"), 2), _fmt(result.get("jobs_per_s"), 0),
        _fmt(result.get("payload_mb_per_s"), 1),
        _fmt(latency.get("p50"), 3), _fmt(latency.get("p99"), 3), _fmt(latency.get("p999"), 3),
        _fmt(latency.get("max"), 3), _fmt(broker.get("rss_mb_peak"), 1),
        _fmt(broker.get("rss_mb_end"), 1), _fmt(broker.get("cpu_s"), 2),
        _fmt(broker.get("cpu_us_per_job"), 1), _fmt(load.get("cpu_us_per_job"), 1),
        target["text"] if target else "-", met,
    ]


def table(results: Sequence[Mapping[str, Any]], title: str = "jobwire bench") -> Table:
    """A rich table of results, one row each."""
    out = Table(title=title)
    for column in COLUMNS:
        out.add_column(column, justify="left" if column in ("name", "target") else "right")
    for result in results:
        out.add_row(*_row(result))
    return out


def conditions(results: Sequence[Mapping[str, Any]]) -> str:
    """One line on where and how the results were taken."""
    if not results:
        return ""
    first = results[0]
    syncs = sorted({str((r.get("broker") or {}).get("sync")) for r in results})
    loads = [float(r["loadavg_1m"]) for r in results if r.get("loadavg_1m") is not None]
    return (
        f"jobwire {first.get('version')}, Python {first.get('python')}, {first.get('cpus')} CPUs, "
        f"{sys.platform}, sync {'/'.join(syncs)}, 100-byte payloads unless stated; "
        f"finished {results[-1].get('finished_at')}; 1-minute load average "
        f"{min(loads, default=0):.2f}..{max(loads, default=0):.2f} during the runs."
    )


def parameters_text(result: Mapping[str, Any]) -> str:
    """The run's parameters as ``key=value`` pairs."""
    return " ".join(f"{k}={v}" for k, v in result.get("parameters", {}).items())


def markdown(results: Sequence[Mapping[str, Any]], notes: Sequence[str] = ()) -> str:
    """A markdown table of results, with the conditions and each row's parameters."""
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if c in ("name", "target") else "---:" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    lines += ["", conditions(results), ""]
    lines += [f"- `{r.get('name')}`: {r.get('command') or parameters_text(r)}" for r in results]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON (``-`` writes to stdout)."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def plot_series(result: Mapping[str, Any], path: str) -> None:
    """Draw a mixed run's per-second throughput and latency percentiles to a PNG.

    Raises:
        RuntimeError: matplotlib is not installed (``pip install 'jobwire[bench]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'jobwire[bench]'") from exc
    series = result.get("series") or []
    seconds = [point["t"] for point in series]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(seconds, [p["enqueued_per_s"] for p in series], label="enqueued/s")
    top.plot(seconds, [p["completed_per_s"] for p in series], label="completed/s")
    top.set_ylabel("jobs/s")
    top.set_ylim(bottom=0)
    top.legend(loc="lower right")
    top.grid(alpha=0.3)
    for key, label in (("start_p50_ms", "start p50"), ("start_p99_ms", "start p99"),
                       ("complete_p50_ms", "complete p50"), ("complete_p99_ms", "complete p99")):
        values = [p.get(key) for p in series]
        bottom.plot(seconds, [v if v is not None else float("nan") for v in values], label=label)
    bottom.set_ylabel("latency ms (from enqueue call)")
    bottom.set_xlabel("seconds since start")
    bottom.set_yscale("log")
    bottom.legend(loc="upper right")
    bottom.grid(alpha=0.3)
    warmup = (result.get("parameters") or {}).get("warmup_s")
    if warmup:
        for axis in (top, bottom):
            axis.axvline(warmup, color="grey", linestyle=":")
    figure.suptitle(textwrap.fill(f"jobwire mixed: {parameters_text(result)}", 110), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
