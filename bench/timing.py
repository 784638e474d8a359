"""Timing shared by every benchmark: interleaved baseline/measured batches, medians.

Speed is always a ratio against a baseline run in the same process, so the machine's speed
cancels out. Baseline and measured batches alternate (A B, B A, A B, ...) so that drift
(other processes, caches warming, the database growing) hits both sides alike, and the
ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: ``batch(n)`` performs ``n`` operations; only its own duration is measured.
Batch = Callable[[int], None]


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    quick: bool = False

    def pick(self, quick: int, full: int) -> int:
        """``quick`` repetitions under ``--quick``, else ``full``."""
        return quick if self.quick else full


@dataclass
class Comparison:
    """Per-operation times (microseconds) of each round, baseline and measured.

    Wall-clock times are the result; CPU times of this process are kept beside them
    because on a shared machine they show how much of a difference is other processes.
    """

    baseline_us: list[float] = field(default_factory=list)
    measured_us: list[float] = field(default_factory=list)
    baseline_cpu_us: list[float] = field(default_factory=list)
    measured_cpu_us: list[float] = field(default_factory=list)
    iterations: int = 0

    @property
    def ratio(self) -> float:
        """Median over rounds of measured / baseline (each round's pair ran back to back)."""
        return _paired_median(self.measured_us, self.baseline_us)

    @property
    def cpu_ratio(self) -> float:
        return _paired_median(self.measured_cpu_us, self.baseline_cpu_us)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_us)

    @property
    def measured_median(self) -> float:
        return statistics.median(self.measured_us)

    def report(self, key: str, prefix: str, target: float) -> dict[str, Any]:
        """The JSON fields of this comparison: ratio, both medians, rounds, the target."""
        return {
            key: round(self.ratio, 3),
            f"{prefix}_median_us": round(self.measured_median, 1),
            f"{prefix}_baseline_median_us": round(self.baseline_median, 1),
            f"{key}_cpu": round(self.cpu_ratio, 3),
            f"{prefix}_runs": len(self.measured_us),
            f"{prefix}_iterations": self.iterations,
            "targets": {key: target},
        }


def _paired_median(measured: list[float], baseline: list[float]) -> float:
    return statistics.median(m / b for m, b in zip(measured, baseline))


def time_batch(batch: Batch, iterations: int) -> tuple[float, float]:
    """Wall and CPU microseconds per operation of one batch (garbage collected beforehand)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    batch(iterations)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    return wall / iterations * 1e6, cpu / iterations * 1e6


def compare(baseline: Batch, measured: Batch, *, runs: int, iterations: int,
            warmup: int = 1, between: Callable[[], None] | None = None,
            label: str = "") -> Comparison:
    """Run ``runs`` rounds of one baseline and one measured batch, order alternating.

    ``between()`` runs untimed before every batch (to drain queues, reset state...).
    """
    for _ in range(warmup):
        for batch in (baseline, measured):
            if between:
                between()
            batch(max(1, iterations // 4))
    result = Comparison(iterations=iterations)
    for round_no in range(runs):
        sides = [(baseline, result.baseline_us, result.baseline_cpu_us),
                 (measured, result.measured_us, result.measured_cpu_us)]
        if round_no % 2:
            sides.reverse()
        for batch, wall_out, cpu_out in sides:
            if between:
                between()
            wall, cpu = time_batch(batch, iterations)
            wall_out.append(wall)
            cpu_out.append(cpu)
        if label and ((round_no + 1) % 5 == 0 or round_no + 1 == runs):
            progress(f"  {label}: round {round_no + 1}/{runs}, median ratio so far {result.ratio:.3f}")
    return result


def progress(line: str) -> None:
    """Progress goes to stderr; stdout ends with the one JSON object."""
    print(line, file=sys.stderr, flush=True)
