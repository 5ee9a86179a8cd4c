"""Run every benchmark, print ONE table and leave the figures in ``bench/results.json`` (``make bench``).

Each benchmark runs in its own process (no shared warm caches or loop state) and merges its
figures into ``bench/results.json``; this script then reads them back and prints one row per
figure: median, spread (min-max over the runs), target, pass/fail. The exit code is 0 even when a
figure misses its target (the table says so); it is non-zero only when a benchmark fails to run.

    .venv/bin/python bench/run_all.py            # full (~17 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # fewer runs/samples (~3 minutes)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"


def run(script: str, *args: str) -> None:
    """Run one benchmark script, streaming its output."""
    print(f"\n=== {script} {' '.join(args)}", flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT)
    if code != 0:
        raise SystemExit(f"{script} failed with exit code {code}")
    print(f"=== {script}: {time.monotonic() - started:.0f} s", flush=True)


def rows(data: dict[str, Any]) -> list[tuple[str, str, str, str, bool]]:
    """(figure, median, spread, target, pass) for every figure present in ``data``."""
    out: list[tuple[str, str, str, str, bool]] = []
    lat = data.get("latency")
    if lat:
        # pooled over every entry of every run (a p99 needs them all); the spread column shows each run's p50
        per_run = lat["p50_per_run_ms"]
        for key, label, target in (("p50_ms", "tick-to-order p50", 2.0), ("p99_ms", "tick-to-order p99", 10.0), ("max_ms", "tick-to-order max", None)):
            spread = f"{per_run['min']:.2f}-{per_run['max']:.2f} (run p50s)" if key == "p50_ms" else "-"
            out.append((f"{label} (ms, {lat['samples']} entries of {lat['runs']} runs)", f"{lat[key]:.2f}", spread,
                        f"<= {target}" if target else "-", target is None or lat[key] <= target))
        reference = lat.get("cpu_reference_ms_per_run")
        if reference:  # how fast the machine ran Python at the time (bench/cpu_reference.py): figures compare only near it
            out.append(("  CPU reference before each run: fixed Python workload (ms, lower is faster)",
                        f"{sorted(reference)[len(reference) // 2]:.1f}", f"{min(reference):.1f}-{max(reference):.1f}", "-", True))
        handler = lat.get("publish_to_rest_handler")
        if handler:  # the same entries from the simulator's publish to its REST handler: the figure sessions 1-2 gave
            out.append(("  same entries, publish -> REST handler p50 / p99 (ms)", f"{handler['p50_ms']:.2f} / {handler['p99_ms']:.2f}",
                        "-", "-", True))
    awake = data.get("latency_cpu_awake")
    if awake and "p50_ms" in awake:  # the same with the host's CPU idle states off (PM QoS), bench_latency.py --keep-cpu-awake
        out.append((f"  same, CPU idle states off (cpu_dma_latency 0), p50 / p99 (ms, {awake['samples']} entries)",
                    f"{awake['p50_ms']:.2f} / {awake['p99_ms']:.2f}",
                    f"{awake['p50_per_run_ms']['min']:.2f}-{awake['p50_per_run_ms']['max']:.2f} (run p50s)", "-", True))
    floor = data.get("latency_floor")
    if floor:  # the loopback and the libraries alone, no bot logic (bench/latency_floor.py)
        out.append((f"  floor: same loopback, no bot logic, p50 / p99 (ms, {floor['samples']} frames)",
                    f"{floor['p50_ms']:.2f} / {floor['p99_ms']:.2f}", "-", "-", True))
    feed = data.get("feed", {}).get("frames")
    if feed:
        out.append(("feed: gzip'd frames -> candles+indicators (frames/s)", f"{feed['median_frames_per_s']:,}",
                    f"{feed['min_frames_per_s']:,}-{feed['max_frames_per_s']:,}", ">= 50,000", feed["median_frames_per_s"] >= 50_000))
    bt = data.get("backtest")
    if bt:
        for key, label in (("largest_both_strategies", f"backtest, largest file {bt.get('largest_file', '')} (candles/s)"),
                           ("one_year_both_strategies", "backtest, one-year concatenated file (candles/s)")):
            m = bt.get(key)
            if m:
                out.append((label, f"{m['median_candles_per_s']:,}", f"{m['min_candles_per_s']:,}-{m['max_candles_per_s']:,}",
                            ">= 100,000", m["median_candles_per_s"] >= 100_000))
    mem = data.get("memory")
    if mem:
        for key, label, target in (("rss_after_warmup_mb", "bot RSS after warm-up (MB)", None),
                                   ("rss_after_soak_mb", "bot RSS after the 24 h soak (MB)", None),
                                   ("rss_growth_mb", "RSS growth over the soak (MB)", 10.0)):
            m = mem[key]
            out.append((label, f"{m['median']:.1f}", f"{m['min']:.1f}-{m['max']:.1f}", f"<= {target}" if target else "-",
                        target is None or m["median"] <= target))
    return out


def print_table(table: list[tuple[str, str, str, str, bool]]) -> None:
    """A Markdown table (pastes into the README as is)."""
    print("| figure | median | spread (min-max) | target | result |")
    print("|---|---:|---:|---:|---|")
    for figure, median, spread, target, ok in table:
        verdict = "-" if target == "-" else ("pass" if ok else "FAIL")  # a figure without a target has no verdict
        print(f"| {figure} | {median} | {spread} | {target} | {verdict} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and samples")
    parser.add_argument("--table-only", action="store_true", help="print the table of the existing results.json")
    args = parser.parse_args()
    if not args.table_only:
        runs = "3"
        run("bench_latency.py", "--runs", runs, "--signals", "20" if args.quick else "40")
        run("bench_latency.py", "--runs", runs, "--signals", "20" if args.quick else "40", "--keep-cpu-awake")
        run("latency_floor.py", "--frames", "20" if args.quick else "40")
        run("bench_feed.py", "--runs", runs, *(["--candles", "10000"] if args.quick else []))
        run("bench_backtest.py", "--runs", runs)
        run("bench_memory.py", "--runs", "1" if args.quick else runs, "--seconds", "60")
    data = json.loads(RESULTS.read_text())
    print()
    print_table(rows(data))
    print(f"\nfigures: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
