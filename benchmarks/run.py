"""Run actorgrid's benchmark suite and its baselines; print a Markdown table, write JSON.

    python benchmarks/run.py                  # full, fixed sizes (about 1-2 minutes)
    python benchmarks/run.py --quick --json   # tiny sizes, same code paths; JSON on stdout
    python benchmarks/run.py --only actor_rtt,ring
    python benchmarks/run.py --list           # the workload keys

The machine's limits (limits.py: raw socket and trio TCP ping-pong, trio one-way messages,
memcpy, spawn + import trio, process RSS) are measured first, in the same run, and each
actorgrid figure is shown divided by its limit ("÷ limit") beside the absolute figure.
Workloads register themselves (workloads.register); WORKLOAD_MODULES lists the modules.

The full run writes benchmarks/results/latest.json, a --quick run benchmarks/results/quick.json
(so a quick run never replaces comparable figures), unless --output says otherwise. The exit
status is 1 if an actorgrid or multiprocessing.Pool workload failed; missed targets are not
failures. See benchmarks/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
# Worker processes import workloads.py by name to run its remote functions: they inherit
# this environment, and the -c child processes of cold start and idle RSS do too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p
)
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import baselines  # noqa: E402
import limits  # noqa: E402
from workloads import FULL, QUICK, SPECS, Result, Sizes, Spec, Workload  # noqa: E402

import actorgrid as ag  # noqa: E402

# Modules whose @register lines add workloads, in table order; one that does not exist (yet)
# is skipped. workloads.py registers on import above.
WORKLOAD_MODULES = ("workloads", "store_workloads", "sim_workloads")
for _name in WORKLOAD_MODULES:
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)

POOL_NAME = "multiprocessing.Pool"


def _attempt(label: str, fn: Workload, sizes: Sizes, n: int) -> Result:
    print(f"  {label} ...", end=" ", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        result = fn(sizes, n)
    except Exception as exc:
        print(f"FAILED ({type(exc).__name__})", file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}
    print(f"{result['value']:.6g} ({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return result


def _selected(only: set[str] | None) -> list[Spec]:
    return [spec for spec in SPECS if only is None or spec.key in only]


def _ratio(spec: Spec, mine: Result, measured: dict[str, Any]) -> dict[str, Any] | None:
    """The figure divided by its machine limit (same unit), or None without a limit."""
    if spec.limit is None:
        return None
    limit = measured.get(spec.limit, {})
    out: dict[str, Any] = {"key": spec.limit, "title": limits.LIMITS[spec.limit].title}
    if "value" in limit:
        out["value"] = limit["value"]
        if "value" in mine and limit["value"] > 0:
            out["ratio"] = mine["value"] / limit["value"]
    else:
        out["error"] = limit.get("error", "not measured")
    return out


def run_suite(
    sizes: Sizes, n: int, only: set[str] | None, measured: dict[str, Any]
) -> dict[str, Any]:
    ray_version = baselines.ray_version()
    results: dict[str, Any] = {}
    for spec in _selected(only):
        title = spec.sized_title(sizes, n)
        print(f"[{spec.key}] {title}", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {
            "title": title,
            "unit": spec.unit,
            "target": {"op": spec.op, "value": spec.target},
        }
        mine = _attempt("actorgrid", spec.run, sizes, n)
        if "value" in mine:
            value = mine["value"]
            mine["meets_target"] = value <= spec.target if spec.op == "<=" else value >= spec.target
        entry["actorgrid"] = mine
        entry["limit"] = _ratio(spec, mine, measured)
        pool = baselines.POOL.get(spec.key)
        entry[POOL_NAME] = _attempt(POOL_NAME, pool, sizes, n) if pool else None
        ray = baselines.RAY.get(spec.key)
        if ray_version is None:
            entry["ray"] = {"status": "not installed"}
        elif ray is None:
            entry["ray"] = {"status": "not applicable"}
        else:
            entry["ray"] = _attempt("ray", ray, sizes, n)
        results[spec.key] = entry
    return results


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _metadata(sizes: Sizes, n: int, quick: bool) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "schema": 1,
        "quick": quick,
        "num_workers": n,
        "sizes": sizes.as_dict(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "actorgrid_version": ag.__version__,
        "ray_version": baselines.ray_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


# --- the table -----------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if value < 100:
        return f"{value:,.3g} {unit}"
    return f"{value:,.0f} {unit}"


def _limit_cells(entry: dict[str, Any]) -> list[str]:
    """The ratio of the figure to its limit, and the limit (measured in the same run)."""
    limit = entry.get("limit")
    if limit is None:
        return ["", ""]
    if "value" not in limit:
        return ["", f"{limit['title']}: ERROR {limit.get('error', '')}"[:120]]
    ratio = f"{limit['ratio']:.2f}x" if "ratio" in limit else ""
    unit = limits.LIMITS[limit["key"]].unit
    return [ratio, f"{limit['title']} {_fmt(limit['value'], unit)}"]


def _cell(key: str, unit: str, result: dict[str, Any] | None, *, mark: bool = False) -> str:
    if result is None:
        return "n/a"
    if "status" in result:
        return str(result["status"])
    if "error" in result:
        return f"ERROR: {result['error']}".replace("|", "\\|").replace("\n", " ")[:200]
    text = _fmt(result["value"], unit)
    detail = result.get("detail", {})
    if key == "actor_rtt" and "p99_us" in detail:
        text += f" (p99 {detail['p99_us']:,.0f} µs)"
    if key == "noop_tasks" and "apply_async_tasks_per_s" in detail:
        text = f"map {text}; apply_async {detail['apply_async_tasks_per_s']:,.0f} tasks/s"
    if "summary" in detail:  # a workload's own figures beside its value (wealth: Mesa's)
        text += f" ({detail['summary']})"
    if mark:
        text += " ✅" if result.get("meets_target") else " ❌"
    return text


def markdown_table(report: dict[str, Any]) -> str:
    rows = [
        f"| workload | actorgrid | ÷ limit | machine limit | {POOL_NAME} | Ray | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, entry in report["workloads"].items():
        unit = entry["unit"]
        target = f"{entry['target']['op']} {_fmt(entry['target']['value'], unit)}"
        cells = [
            entry["title"],
            _cell(key, unit, entry["actorgrid"], mark=True),
            *_limit_cells(entry),
            _cell(key, unit, entry[POOL_NAME]),
            _cell(key, unit, entry["ray"]),
            target,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    measured = report.get("limits", {})
    if measured:
        shown = []
        for key, limit in measured.items():
            unit = limits.LIMITS[key].unit
            text = _fmt(limit["value"], unit) if "value" in limit else "ERROR"
            shown.append(f"{limits.LIMITS[key].title} {text}")
        rows.append("")
        rows.append("Machine limits, same run: " + "; ".join(shown) + ".")
    meta = report["meta"]
    commit = (meta["git_commit"] or "unknown")[:10] + (" (dirty)" if meta["git_dirty"] else "")
    rows.append("")
    rows.append(
        f"actorgrid {meta['actorgrid_version']} at {commit}, {meta['num_workers']} workers, "
        f"Python {meta['python']}, {meta['cpu_count']} CPUs"
        + (", QUICK sizes (not comparable)" if meta["quick"] else "")
    )
    return "\n".join(rows)


def _failed(report: dict[str, Any]) -> list[str]:
    return [
        f"{key} ({who})"
        for key, entry in report["workloads"].items()
        for who in ("actorgrid", POOL_NAME)
        if isinstance(entry[who], dict) and "error" in entry[who]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, same code paths")
    parser.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    parser.add_argument("--num-workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--output", type=Path, help="where to write the JSON report")
    keys = ",".join(s.key for s in SPECS)
    parser.add_argument("--only", help=f"comma-separated workload keys: {keys}")
    parser.add_argument("--list", action="store_true", help="print the workload keys, one a line")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(s.key for s in SPECS))
        return 0
    only = None if args.only is None else {k.strip() for k in args.only.split(",") if k.strip()}
    if only is not None and (unknown := only - {s.key for s in SPECS}):
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.num_workers < 1:
        parser.error("--num-workers must be at least 1")
    sizes = QUICK if args.quick else FULL
    output = args.output or BENCH_DIR / "results" / ("quick.json" if args.quick else "latest.json")

    started = time.perf_counter()
    wanted = {spec.limit for spec in _selected(only) if spec.limit is not None}
    print("[limits] the machine's own, measured now", file=sys.stderr, flush=True)
    measured = limits.measure_limits(sizes, args.num_workers, wanted)
    report = {
        "meta": _metadata(sizes, args.num_workers, args.quick),
        "limits": measured,
        "workloads": run_suite(sizes, args.num_workers, only, measured),
    }
    report["meta"]["duration_s"] = round(time.perf_counter() - started, 2)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    table = markdown_table(report)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(table)
    print(f"\nwrote {output} in {report['meta']['duration_s']:.1f} s", file=sys.stderr)
    if failed := _failed(report):
        print(f"FAILED workloads: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
