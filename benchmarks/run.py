"""Run the benchmarks and print each figure as a ratio measured side by side in one run.

    python -m benchmarks.run            # all
    python -m benchmarks.run env_render # those whose module name contains "env_render"

Each ``benchmarks/bench_*.py`` exposes ``run() -> list[Ratio]``. The machines are noisy, so a benchmark
alternates its two sides in rounds and reports the median ratio; absolute rates are printed for context.
(The ROS controller's timing figures are absolute, in milliseconds, as its issue asks.)
"""

from __future__ import annotations

import importlib
import pkgutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ratio:
    name: str
    ratio: float
    target: str  # e.g. ">= 0.7"
    detail: str
    unit: str = "x"  # "x" for a ratio; a few figures the issues ask for in absolute units (e.g. "ms")

    @property
    def passed(self) -> bool:
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


def main(argv: list[str] | None = None) -> int:
    wanted = (argv if argv is not None else sys.argv[1:]) or [""]
    modules = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    results: list[Ratio] = []
    for name in modules:
        if any(w in name for w in wanted):
            results += importlib.import_module(f"benchmarks.{name}").run()
    width = max((len(r.name) for r in results), default=10)
    for r in results:
        print(f"{r.name:<{width}}  {r.ratio:7.2f} {r.unit:<2}  target {r.target:<7} {'ok  ' if r.passed else 'MISS'}  {r.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
