"""Loop efficacy (issue 5 item 9, issue 12 item 6): does a round driven by synthetic
labelers raise their preference's score on HELD-OUT prompts, and how far from SFT does the
policy move, for each recipe of the policy stage (ppo, dpo, best_of_n, rloo)?

    .venv/bin/python -m bench.loop_efficacy [--recipe ppo dpo best_of_n rloo] [--seeds 0 1]
        [--quick] [--model default] [--preference length:shorter] [--noise 5] [--rounds 2]
        [--ppo-steps 24] [--max-new-tokens 32] [--threads 2]

Every recipe gets the same labelers, prompts, preference, RM settings and budget: RLOO
samples as many episodes per step as PPO (ppo_batch / K prompts x K samples, the same
steps), best-of-N samples as many responses (K per prompt, steps x ppo_batch / K
prompts), DPO trains on the rankings its RM trains on. The round's samples are seeded by
the project's id, so each (recipe, seed) ranks its own samples and trains its own RM.
Each (recipe, seed) is its own project in one database; the
table has one row per recipe, the mean over seeds of the held-out z, the KL to SFT on the
held-out samples and the CPU-seconds (process time, every thread) per round. Where the
promotion gate stops a round in needs_review the bench approves it, as an admin would, and
records the gate's verdict: the bench measures the recipe, not the gate. `--quick` is one
round of a smaller size (32 prompts, 24 tokens, 12 policy steps, 2 samples per held-out
prompt); an explicit size flag overrides it.

One project on `--model` goes through the real services: `round_start` samples K responses
per train prompt from the current policy, `labelers_simulate` ranks them with Bradley-Terry
noise through `task_lease_next` / `ranking_submit`, and the round then builds pairs, trains
the RM and runs PPO by itself (`round_on_ranking_submitted` -> Celery tasks). Celery runs
EAGERLY here, in this process: the bench measures what the loop learns, not the transport
(tests/training/test_e2e_worker.py runs the same bodies on a real worker and Redis), and
one process keeps the timings free of queueing and start-up noise.

Prompts are built from topics; the eval prompts use topics that no train prompt uses. On
them the policy before and after samples `--eval-samples` responses per prompt (T=1, the
distribution PPO optimises), scored by the EXACT preference (no labeler noise). Standard
errors are over prompts (the samples of one prompt are averaged first, as they are not
independent); z = rise / sqrt(SE_before^2 + SE_after^2), and the paired z over the same
prompts. KL to the SFT reference on the same samples: mean over responses of
sum_t log pi(y_t) - log pi_ref(y_t) (an unbiased estimate of the sequence KL), next to
PPO's (or RLOO's) own last-step k3 estimate and the controller's target. Writes
bench/out/loop_efficacy.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

TOPICS = [
    "volcanoes", "photosynthesis", "the moon", "honeybees", "bicycles", "jazz", "the ocean",
    "rainbows", "chess", "bread", "glaciers", "owls", "electricity", "the heart", "maps",
    "tea", "deserts", "clocks", "penguins", "bridges", "coffee", "thunder", "libraries",
    "dolphins", "gardens", "trains", "mushrooms", "the wind", "paper", "violins", "salt",
    "forests", "lighthouses", "comets", "cheese", "elephants", "rivers", "kites", "snow",
    "magnets", "tomatoes", "castles", "spiders", "the sun", "umbrellas", "frogs", "pianos",
    "islands", "candles", "whales", "mountains", "bees' wax", "sailing", "cotton", "caves",
    "butterflies", "rice", "telescopes", "bats", "soap",
]  # fmt: skip
TEMPLATES = ["In one sentence, what are {t}?", "Tell me one interesting fact about {t}."]


RECIPES = ("ppo", "dpo", "best_of_n", "rloo")
# The sizes `--quick` and the full run give the flags left unset (None) on the command line.
FULL = {"rounds": 2, "prompts_per_round": 64, "max_new_tokens": 32, "eval_samples": 4,
        "ppo_steps": 24, "rm_epochs": 3}  # fmt: skip
QUICK = {"rounds": 1, "prompts_per_round": 32, "max_new_tokens": 24, "eval_samples": 2,
         "ppo_steps": 12, "rm_epochs": 2}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--recipe", nargs="+", choices=RECIPES, default=["ppo"], help="one table row each")
    add("--seeds", nargs="+", type=int, default=[0, 1], help="one project per recipe and seed")
    add("--quick", action="store_true", help="one round of a smaller size (see QUICK)")
    add("--model", default="default", help="base policy: default, tiny or a folder")
    add("--preference", default="length:shorter", help="the synthetic labelers' preference")
    add("--noise", type=float, default=5.0, help="Bradley-Terry temperature (score units)")
    add("--labelers", type=int, default=5, help="one is held out for the RM check")
    add("--rounds", type=int, default=None, help="default 2 (--quick: 1)")
    add("--k", type=int, default=4)
    add("--train-topics", type=int, default=40, help="the rest of the topics are held out")
    add("--eval-topics", type=int, default=None, help="held-out topics used (default: all)")
    add("--prompts-per-round", type=int, default=None, help="default 64 (--quick: 32)")
    add("--max-new-tokens", type=int, default=None, help="default 32 (--quick: 24)")
    add("--eval-samples", type=int, default=None, help="per held-out prompt: 4 (--quick: 2)")
    add("--train-top-layers", type=int, default=2, help="CPU budget: train only the top N")
    add("--rm-top-layers", type=int, default=4, help="the RM trains its top N blocks")
    add("--rm-lr", type=float, default=1e-4)
    add("--rm-epochs", type=int, default=None, help="default 3 (--quick: 2)")
    add("--ppo-steps", type=int, default=None, help="PPO and RLOO steps: 24 (--quick: 12)")
    add("--ppo-batch", type=int, default=8, help="episodes per PPO/RLOO step")
    add("--ppo-lr", type=float, default=1e-4, help="PPO's and RLOO's learning rate")
    add("--ppo-epochs", type=int, default=2)
    add("--dpo-lr", type=float, default=1e-5)
    add("--dpo-beta", type=float, default=0.1)
    add("--dpo-epochs", type=float, default=2.0)
    add("--bon-lr", type=float, default=1e-5, help="best-of-N's SFT learning rate")
    add("--bon-epochs", type=float, default=2.0, help="best-of-N's SFT passes over the picks")
    # The KL controller runs with the product's defaults (PPOConfig) unless these are given.
    add("--kl-target", type=float, default=None, help="nats per response (default: product's)")
    add("--init-kl-coef", type=float, default=None, help="initial beta (default: product's)")
    add("--kl-horizon", type=int, default=None, help="episodes (default: a quarter of the run)")
    add("--device", default="cpu")
    add("--threads", type=int, default=2)
    add("--keep", action="store_true", help="keep the work folder (database, models)")
    add("--out", type=Path, default=OUT / "loop_efficacy.json", help="where the JSON goes")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# --------------------------------------------------------------------------- set-up


def setup_django(workdir: Path, args: argparse.Namespace) -> None:
    """A throwaway SQLite database and artifact folder; Celery tasks run in-process."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_DEBUG="false",
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}",
        CELERY_BROKER_URL="memory://localhost/",
        CELERY_TASK_ALWAYS_EAGER="true",
        RLHF_STUDIO_VAR_DIR=str(workdir / "var"),
        RLHF_ARTIFACT_DIR=str(workdir / "models"),
        RLHF_DEVICE=args.device,
        RLHF_DTYPE="float32",
        RLHF_PROGRESS_INTERVAL="5",
        RLHF_HEARTBEAT_TIMEOUT="36000",
        DJANGO_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def training_config(args: argparse.Namespace, recipe: str, seed: int) -> dict[str, Any]:
    """The project's settings: the same RM for every recipe, and the policy stage's section
    of `recipe` at the same sampling budget as PPO's (see the module docstring)."""
    top, k = args.train_top_layers, args.k
    config: dict[str, Any] = {
        "recipe": recipe,
        "prompts_per_round": args.prompts_per_round,
        "generate": {"prompts_per_batch": 8, "batch_size": 16},
        "rm": {"lr": args.rm_lr, "epochs": args.rm_epochs, "batch_size": 4, "max_length": 256,
               "train_top_layers": args.rm_top_layers, "eval_fraction": 0.15, "seed": seed},
    }  # fmt: skip
    if recipe == "ppo":
        config["ppo"] = {
            "steps": args.ppo_steps, "batch_size": args.ppo_batch,
            "mini_batch_size": max(1, args.ppo_batch // 2), "ppo_epochs": args.ppo_epochs,
            "lr": args.ppo_lr, "train_top_layers": top, "temperature": 1.0,
            "forward_batch_size": args.ppo_batch, "seed": seed, "checkpoint_every": 0,
            **kl_overrides(args),
        }  # fmt: skip
    elif recipe == "rloo":
        config["rloo"] = {
            "steps": args.ppo_steps, "batch_size": max(1, args.ppo_batch // k),
            "num_samples": k, "lr": args.ppo_lr, "train_top_layers": top, "temperature": 1.0,
            "forward_batch_size": args.ppo_batch, "seed": seed, **kl_overrides(args),
        }  # fmt: skip
    elif recipe == "best_of_n":
        config["best_of_n"] = {
            "n": k, "num_prompts": max(1, args.ppo_steps * args.ppo_batch // k),
            "lr": args.bon_lr, "epochs": args.bon_epochs, "batch_size": 4, "max_length": 256,
            "train_top_layers": top, "temperature": 1.0, "eval_fraction": 0.0, "seed": seed,
            "sample_batch_size": 16,
        }  # fmt: skip
    else:
        config["dpo"] = {
            "lr": args.dpo_lr, "beta": args.dpo_beta, "epochs": args.dpo_epochs,
            "batch_size": 4, "max_length": 256, "train_top_layers": top,
            "eval_fraction": 0.15, "seed": seed,
        }  # fmt: skip
    return config


def ppo_defaults() -> Any:
    from training.ml.ppo import PPOConfig

    return PPOConfig()


def kl_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The KL controller settings given on the command line (the rest: PPOConfig's)."""
    given = {"kl_target": args.kl_target, "init_kl_coef": args.init_kl_coef,
             "kl_horizon": args.kl_horizon}  # fmt: skip
    return {key: value for key, value in given.items() if value is not None}


def make_project(args: argparse.Namespace, recipe: str, seed: int) -> tuple[Any, list[str]]:
    from labeling.services.imports import PromptIn
    from labeling.services.projects import project_create, project_update
    from labeling.services.prompts import prompts_import

    slug = f"loop-{recipe.replace('_', '-')}-{seed}"
    project = project_create(slug=slug, k=args.k, base_model=args.model)
    project = project_update(
        project=project,
        max_new_tokens=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        training_config=training_config(args, recipe, seed),
    )
    train_topics, eval_topics = TOPICS[: args.train_topics], TOPICS[args.train_topics :]
    eval_topics = eval_topics[: args.eval_topics]  # None: all of them
    items = [PromptIn(t.format(t=topic)) for topic in train_topics for t in TEMPLATES]
    eval_prompts = [t.format(t=topic) for topic in eval_topics for t in TEMPLATES]
    items += [PromptIn(p, split="eval") for p in eval_prompts]
    prompts_import(project=project, items=items, source="bench")
    return project, eval_prompts


# --------------------------------------------------------------------------- evaluation


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def evaluate(
    policy_spec: str, ref_spec: str, prompts: list[str], args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Sample the policy on held-out prompts; exact preference scores and KL to the reference."""
    import torch

    from training.ml.chat import encode_prompt
    from training.ml.loading import load_causal_lm
    from training.ml.sampling import GenerationSettings, sample_responses
    from training.ml.synthetic import make_preference

    policy, tokenizer = load_causal_lm(policy_spec, device=args.device, dtype="float32")
    gen = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0, seed=seed + 1000
    )
    samples = sample_responses(
        policy, tokenizer, prompts, k=args.eval_samples, settings=gen, batch_size=16
    )
    del policy
    ref, _ = load_causal_lm(ref_spec, device=args.device, dtype="float32")
    score = make_preference(args.preference)
    per_prompt, kls, lengths, finished = [], [], [], []
    with torch.no_grad():
        for prompt, row in zip(prompts, samples, strict=True):
            per_prompt.append(sum(score(prompt, [s.text for s in row])) / len(row))
            prompt_ids = encode_prompt(tokenizer, prompt, gen.max_prompt_tokens)
            for s in row:
                ids = torch.tensor([prompt_ids + s.token_ids], device=ref.device)
                logits = ref(ids).logits[0, len(prompt_ids) - 1 : -1].float()  # (R, V)
                ref_lp = torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt_ids) :, None])
                kls.append(sum(s.logprobs) - ref_lp.sum().item())  # log pi(y) - log ref(y)
                lengths.append(s.token_count)
                finished.append(s.finished)
    mean, se = mean_se(per_prompt)
    kl_mean, kl_se = mean_se(kls)
    example = samples[0][0].text
    return {
        "score_mean": mean, "score_se": se, "per_prompt": per_prompt,
        "kl_to_ref": kl_mean, "kl_to_ref_se": kl_se,
        "response_tokens": sum(lengths) / len(lengths),
        "eos_rate": sum(finished) / len(finished), "example": example,
    }  # fmt: skip


# --------------------------------------------------------------------------- the loop


def run_round(project: Any, args: argparse.Namespace, number: int, seed: int) -> dict[str, Any]:
    """One round through the services; eager Celery runs each stage inside these calls. A
    round the promotion gate stops is approved (the verdict is kept in "gate")."""
    from training.models import Round
    from training.services.rounds import round_approve, round_start
    from training.services.simulation import labelers_simulate

    started, cpu_started = time.perf_counter(), time.process_time()
    round_ = round_start(project=project)  # samples (eagerly) and opens labeling
    round_.refresh_from_db()
    if round_.stage != Round.Stage.LABELING:
        raise SystemExit(f"round {number} did not reach labeling: {round_.stage} {round_.error}")
    labeling = labelers_simulate(
        project=project,
        preference=args.preference,
        labelers=args.labelers,
        noise=args.noise,
        seed=seed + number,
    )
    round_.refresh_from_db()  # the last ranking moved it through pairs, RM and the policy
    while round_.stage == Round.Stage.NEEDS_REVIEW:
        round_approve(round_=round_)
        round_.refresh_from_db()
    if round_.stage != Round.Stage.DONE:
        raise SystemExit(f"round {number} ended {round_.stage}: {round_.error}")
    cpu_seconds = time.process_time() - cpu_started
    runs = {r.kind: r for r in round_.runs.order_by("id")}
    policy_points = [p.values for p in runs[round_.recipe].points.order_by("step")]
    return {
        "round": number,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds,
        "stage_seconds": {
            k: (r.finished_at - r.started_at).total_seconds()
            for k, r in runs.items()
            if r.finished_at and r.started_at
        },
        "rankings": labeling["rankings"],
        "labeler_pair_agreement": labeling["pair_agreement"],
        "comparisons": round_.metrics.get("comparisons_round"),
        "rm": {k: v for k, v in runs["rm"].metrics.items() if isinstance(v, int | float)},
        "policy_metrics": {
            k: v for k, v in runs[round_.recipe].metrics.items() if isinstance(v, int | float)
        },
        "policy_first": policy_points[0] if policy_points else {},
        "policy_last": policy_points[-1] if policy_points else {},
        "gate": {stage: result.get("passed") for stage, result in round_.gate.items()},
        "policy": round_.policy.artifact if round_.policy else None,
    }


def summary(e: dict[str, Any]) -> str:
    return (
        f"{e['score_mean']:.2f} ± {e['score_se']:.2f}, EOS rate {e['eos_rate']:.2f}, "
        f"{e['response_tokens']:.1f} tokens, KL {e['kl_to_ref']:.2f}"
    )


def z_scores(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    rise = after["score_mean"] - before["score_mean"]
    unpaired = rise / math.hypot(before["score_se"], after["score_se"])
    diffs = [a - b for a, b in zip(after["per_prompt"], before["per_prompt"], strict=True)]
    mean, se = mean_se(diffs)
    return {"rise": rise, "z": unpaired, "z_paired": mean / se if se else math.inf}


def run_one(
    args: argparse.Namespace, recipe: str, seed: int, before_of: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """`args.rounds` rounds of one recipe on a fresh project; the base policy's held-out
    evaluation of a seed is shared by the recipes (the same model, prompts and seeds)."""
    from training.services.registry import current_policy, reference_policy

    started, cpu_started = time.perf_counter(), time.process_time()
    project, eval_prompts = make_project(args, recipe, seed)
    ref = reference_policy(project=project).artifact
    if seed not in before_of:
        before_of[seed] = evaluate(current_policy(project=project).artifact, ref,
                                   eval_prompts, args, seed)  # fmt: skip
    before = before_of[seed]
    print(f"{recipe} seed {seed} before: {args.preference} {summary(before)}", flush=True)
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(run_round(project, args, number, seed))
        print(f"{recipe} seed {seed} round {number}: "
              f"{json.dumps(rounds[-1]['stage_seconds'])}", flush=True)  # fmt: skip
        rounds[-1]["eval"] = evaluate(rounds[-1]["policy"], ref, eval_prompts, args, seed)
        rounds[-1].update(z_scores(before, rounds[-1]["eval"]))
        print(
            f"{recipe} seed {seed} after round {number}: {summary(rounds[-1]['eval'])}, "
            f"z {rounds[-1]['z']:.2f} (paired {rounds[-1]['z_paired']:.2f})",
            flush=True,
        )
    after = rounds[-1]["eval"]
    section = training_config(args, recipe, seed)[recipe]
    return {
        "recipe": recipe,
        "seed": seed,
        "eval_prompts": len(eval_prompts),
        "before": before,
        "after": after,
        **z_scores(before, after),
        "kl_target": section.get("kl_target", ppo_defaults().kl_target)
        if recipe in ("ppo", "rloo")
        else None,
        "policy_kl_last_step": rounds[-1]["policy_last"].get("objective/kl"),
        "cpu_seconds_per_round": sum(r["cpu_seconds"] for r in rounds) / len(rounds),
        "rounds": rounds,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }


def table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per recipe: means over its seeds (and each seed's z)."""
    rows = []
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        mine = [r for r in results if r["recipe"] == recipe]
        rows.append(
            {
                "recipe": recipe,
                "seeds": [r["seed"] for r in mine],
                "z": sum(r["z"] for r in mine) / len(mine),
                "z_per_seed": [r["z"] for r in mine],
                "rise": sum(r["rise"] for r in mine) / len(mine),
                "kl_to_ref": sum(r["after"]["kl_to_ref"] for r in mine) / len(mine),
                "cpu_seconds_per_round": sum(r["cpu_seconds_per_round"] for r in mine) / len(mine),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="loop-efficacy-"))
    setup_django(workdir, args)
    from bench.rm_vs_trl import machine
    from training.ml.commands.common import quiet_transformers

    quiet_transformers()
    started = time.perf_counter()
    before_of: dict[int, dict[str, Any]] = {}
    results = [
        run_one(args, recipe, seed, before_of) for recipe in args.recipe for seed in args.seeds
    ]
    result = {
        "machine": machine(),
        "args": vars(args),
        "table": table(results),
        "results": results,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(report(result))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(r: dict[str, Any]) -> str:
    a = r["args"]
    first = r["results"][0]
    lines = [
        f"{a['preference']} on {first['eval_prompts']} held-out prompts x {a['eval_samples']} "
        f"samples, {a['rounds']} round(s), seeds {', '.join(map(str, a['seeds']))}:",
        "",
        "| recipe | held-out z (per seed) | rise | KL to SFT, held-out | CPU-s per round |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r["table"]:
        seeds = ", ".join(f"{z:.2f}" for z in row["z_per_seed"])
        lines.append(
            f"| {row['recipe']} | {row['z']:.2f} ({seeds}) | {row['rise']:.2f} | "
            f"{row['kl_to_ref']:.2f} | {row['cpu_seconds_per_round']:.0f} |"
        )
    lines.append(f"\ntotal {r['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
