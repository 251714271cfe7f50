"""Run every benchmark side by side in one go (`make bench`); results in bench/out/*.json.

Each benchmark is a module of this package run in its own interpreter, so one that fails
does not hide the others; the exit code is non-zero if any failed.
"""

import subprocess
import sys
import time

# A module and its arguments; the RM-vs-TRL rows with every parameter trained (the 49k
# embedding too) run at 1 thread in both precisions, each side of a row at the same one.
RM_ALL_PARAMS = "bench.rm_vs_trl --train-top-layers 0 --ties --threads 1 --precision"
BENCHMARKS = [
    "bench.rm_vs_trl",
    f"{RM_ALL_PARAMS} fp32 --out bench/out/rm_vs_trl_all_params_fp32_1thread.json",
    f"{RM_ALL_PARAMS} bf16 --out bench/out/rm_vs_trl_all_params_bf16_1thread.json",
    "bench.rm_hh_rlhf",
    "bench.dpo_vs_trl",  # listwise DPO vs TRL's DPOTrainer: fp32 and bf16, 2 seeds, 1 thread
    "bench.ppo_throughput",
    "bench.precision_curves",
    "bench.sampling_vs_hf",
    "bench.ppo_memory --dtype bfloat16 --gradient-checkpointing",  # the docs row
    "bench.labeling_load",
    "bench.loop_efficacy --seeds 0",  # PPO, two rounds at the full size
    # One table row per recipe at one budget, 2 seeds, one round each (issue 12)
    "bench.loop_efficacy --quick --recipe ppo dpo best_of_n rloo "
    "--out bench/out/loop_efficacy_recipes.json",
]


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== {module} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", *module.split()])
        print(f"=== {module}: exit {code} in {time.perf_counter() - started:.0f} s ===", flush=True)
        if code:
            failed.append(module)
    if failed:
        print(f"\nFailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
