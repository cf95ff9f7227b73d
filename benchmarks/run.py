"""Run the benchmarks and print each figure as a ratio measured side by side in one run.

    python -m benchmarks.run                       # all
    python -m benchmarks.run env_render            # those whose module name contains "env_render"
    python -m benchmarks.run --repeat 3            # each figure as min / median / max of 3 runs

Each ``benchmarks/bench_*.py`` exposes ``run() -> list[Ratio]``. The machines are noisy, so a benchmark
alternates its two sides in rounds and reports the median ratio; absolute rates are printed for context.
(The ROS controller's timing figures are absolute, in milliseconds, as its issue asks.)
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ratio:
    name: str
    ratio: float
    target: str  # e.g. ">= 0.7"; "report": a figure an issue asks to see, with no bar to clear
    detail: str
    unit: str = "x"  # "x" for a ratio; a few figures the issues ask for in absolute units (e.g. "ms")

    @property
    def passed(self) -> bool:
        if self.target == "report":
            return True
        op, value = self.target.split()
        return self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` of wall time."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls / elapsed


def side_by_side(a: Callable, b: Callable, rounds: int = 7, seconds: float = 0.5) -> tuple[float, float, float]:
    """Median over rounds of rate(a) / rate(b), the two measured alternately; also the median rates."""
    ratios, rates_a, rates_b = [], [], []
    for _ in range(rounds):
        rates_a.append(rate(a, seconds))
        rates_b.append(rate(b, seconds))
        ratios.append(rates_a[-1] / rates_b[-1])
    return statistics.median(ratios), statistics.median(rates_a), statistics.median(rates_b)


def measure(wanted: list[str]) -> list[Ratio]:
    modules = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    results: list[Ratio] = []
    for name in modules:
        if any(w in name for w in wanted):
            results += importlib.import_module(f"benchmarks.{name}").run()
    return results


def repeated(wanted: list[str], runs: int) -> list[list[Ratio]]:
    """The benchmarks ``runs`` times, each run in a fresh process (GL, Ray and ROS state start clean)."""
    out = []
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            record = Path(tmp) / "results.json"
            print(f"run {run + 1} of {runs}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "benchmarks.run", *wanted, "--json", str(record)], check=True)
            out.append([Ratio(**r) for r in json.loads(record.read_text())])
    return out


def interleaved(a: Callable, b: Callable, calls: int = 1500, warmup: int = 50) -> tuple[float, float, float]:
    """time(b) / time(a) per call, from medians of calls made alternately a, b, a, b...: both sides see the
    same moment of the machine, where half-second blocks of each (``side_by_side``) saw CPU contention come
    and go between them. Also the median rates of a and b."""
    times_a, times_b = [], []
    for i in range(warmup + calls):
        started = time.perf_counter()
        a()
        middle = time.perf_counter()
        b()
        if i >= warmup:
            times_a.append(middle - started)
            times_b.append(time.perf_counter() - middle)
    median_a, median_b = statistics.median(times_a), statistics.median(times_b)
    return median_b / median_a, 1 / median_a, 1 / median_b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run the benchmarks whose module name contains one of these")
    parser.add_argument("--repeat", type=int, default=1, help="runs in fresh processes: print min / median / max")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    wanted = args.names or [""]
    if args.repeat > 1:
        runs = repeated(wanted, args.repeat)
        width = max((len(r.name) for r in runs[0]), default=10)
        for figures in zip(*runs):
            values = sorted(r.ratio for r in figures)
            first, verdict = figures[0], "ok  " if all(r.passed for r in figures) else "MISS"
            spread = f"{values[0]:.2f} / {statistics.median(values):.2f} / {values[-1]:.2f}"
            print(f"{first.name:<{width}}  {spread:>20} {first.unit:<2}  target {first.target:<7} {verdict}  min / median / max of {len(values)}")
        return 0
    results = measure(wanted)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results]))
    width = max((len(r.name) for r in results), default=10)
    for r in results:
        print(f"{r.name:<{width}}  {r.ratio:7.2f} {r.unit:<2}  target {r.target:<7} {'ok  ' if r.passed else 'MISS'}  {r.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
