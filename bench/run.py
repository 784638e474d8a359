"""Run the benchmarks and print one JSON object as the last line of stdout.

    python bench/run.py            # full runs (``make bench``)
    python bench/run.py --quick    # fewer rounds, same sizes (``make bench-quick``), < 1 minute
    python bench/run.py --only request_overhead --only send_vs_baseline

Lines before the JSON describe the machine; progress goes to stderr. Every speed is a
ratio against a baseline measured in the same process, so numbers from different
machines compare. Benchmarks live in the modules of ``MODULES``: each lists its
``BENCHMARKS`` as ``(key, function)`` pairs, and a module that is not there is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.timing import Options, progress  # noqa: E402  (needs ROOT on sys.path)

#: Benchmark modules, in the order they run; missing ones are skipped.
MODULES = ("bench.core", "bench.emergency", "bench.emergency_mode", "bench.bulk", "bench.capacity",
           "bench.dashboard")

Benchmark = Callable[[Options], "dict[str, Any]"]


def registered() -> list[tuple[str, Benchmark]]:
    """Every ``(key, function)`` of the modules present."""
    found: list[tuple[str, Benchmark]] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            progress(f"{name}: not present, skipped")
            continue
        found.extend(getattr(module, "BENCHMARKS", []))
    return found


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load: Any = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    try:
        nproc = len(os.sched_getaffinity(0))  # what `nproc` prints
    except AttributeError:  # not on Linux
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="flask-notify-emergency benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (same sizes); under a minute")
    parser.add_argument("--only", action="append", metavar="KEY", help="run only this benchmark (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a ratio misses its target")
    args = parser.parse_args(argv)

    benchmarks = registered()
    if args.list:
        for key, _ in benchmarks:
            print(key)
        return 0
    if args.only:
        unknown = set(args.only) - {key for key, _ in benchmarks}
        if unknown:
            parser.error(f"no benchmark named {', '.join(sorted(unknown))}; see --list")
        benchmarks = [(key, fn) for key, fn in benchmarks if key in args.only]

    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, {info['implementation']} {info['python']}, "
          f"{info['platform']}, load average {info['loadavg']}")
    print(f"mode: {'quick' if args.quick else 'full'}; ratios are medians of interleaved rounds "
          "(measured / baseline, same process)")
    sys.stdout.flush()

    options = Options(quick=args.quick)
    result: dict[str, Any] = {"quick": args.quick, "machine": info}
    targets: dict[str, float] = {}  # the most a key may be (times, ratios against a baseline)
    minimums: dict[str, float] = {}  # the least a key may be (speedups)
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for key, function in benchmarks:
        progress(f"{key} ...")
        t0 = time.perf_counter()
        try:
            numbers = dict(function(options))
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc(file=sys.stderr)
            errors[key] = f"{type(exc).__name__}: {exc}"
            continue
        targets.update(numbers.pop("targets", {}))
        minimums.update(numbers.pop("minimums", {}))
        result.update(numbers)
        target = f"at most {targets[key]}" if key in targets else f"at least {minimums.get(key)}"
        progress(f"{key}: {numbers.get(key)} (target {target}) in {time.perf_counter() - t0:.1f}s")
    result["targets"] = targets
    result["minimums"] = minimums
    result["within_targets"] = {k: result[k] <= v for k, v in targets.items() if k in result}
    result["within_targets"].update({k: result[k] >= v for k, v in minimums.items() if k in result})
    result["seconds"] = round(time.perf_counter() - started, 1)
    if errors:
        result["errors"] = errors
    print(json.dumps(result, sort_keys=True))
    if errors:
        return 2
    if args.strict and not all(result["within_targets"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
