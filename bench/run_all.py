"""Run every benchmark side by side in one go (`make bench`); results in bench/out/*.json.

Each benchmark is a module of this package run in its own interpreter, so one that fails
does not hide the others; the exit code is non-zero if any failed.
"""

import subprocess
import sys
import time

BENCHMARKS = [
    "bench.rm_vs_trl",
    "bench.rm_hh_rlhf",
    "bench.ppo_throughput",
    "bench.labeling_load",
    "bench.loop_efficacy",
]


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== {module} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", module])
        print(f"=== {module}: exit {code} in {time.perf_counter() - started:.0f} s ===", flush=True)
        if code:
            failed.append(module)
    if failed:
        print(f"\nFailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
