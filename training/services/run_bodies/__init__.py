"""Run bodies: the bridge from database rows to the ML core and back, one file per run kind.

Each body takes a TrainingRun and a RunReporter, loads plain data from the database,
calls `training.ml` with callbacks, writes the artifact atomically and registers it
(`common.publish`). A new run kind is a new module here plus its line in `BODIES`.
torch is imported lazily inside the bodies so the web process never loads it.
"""

from core.exceptions import ApplicationError
from training.models import TrainingRun
from training.services.run_bodies import best_of_n, dpo, generate, ppo, rloo, rm, sft
from training.services.run_bodies import eval as eval_run
from training.services.runs import RunBody

BODIES: dict[str, RunBody] = {
    TrainingRun.Kind.GENERATE: generate.generate_body,
    TrainingRun.Kind.RM: rm.rm_body,
    TrainingRun.Kind.PPO: ppo.ppo_body,
    TrainingRun.Kind.SFT: sft.sft_body,
    TrainingRun.Kind.DPO: dpo.dpo_body,
    TrainingRun.Kind.BEST_OF_N: best_of_n.best_of_n_body,
    TrainingRun.Kind.RLOO: rloo.rloo_body,
    TrainingRun.Kind.EVAL: eval_run.eval_body,  # the promotion gate's policy check
}


def body_for(kind: str) -> RunBody:
    if kind not in BODIES:
        raise ApplicationError(f"Unknown run kind {kind!r}.")
    return BODIES[kind]
