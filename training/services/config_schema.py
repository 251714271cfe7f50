"""The schema of a project's `training_config`: every key the product reads, in one place.

    {"prompts_per_round": int,
     "recipe": "ppo" | "dpo" | "best_of_n" | "rloo",   # the policy stage of a round
     "generate": {...},   # the sampling run of a round
     "rm": {...},         # training.ml.configs.RMConfig + eval_fraction of the rankings
     "ppo": {...},        # training.ml.configs.PPOConfig + init_from, continue_kl_controller, rules
     "sft": {...},        # training.ml.configs.SFTConfig
     "dpo": {...},        # training.ml.configs.DPOConfig (recipe "dpo")
     "best_of_n": {...},  # training.ml.configs.BestOfNConfig (recipe "best_of_n")
     "rloo": {...}}       # training.ml.configs.RLOOConfig (recipe "rloo")

Types and ranges come from the dataclass fields' metadata (`training.ml.configs.setting`),
so the trainers and this door refuse the same values; the keys read by the services
themselves are the small dataclasses below. `training_config_check` runs at every door
(API, Django admin, CLI, demo) through `labeling.seams`; `run_config_fields` turns a run's
stored section into a trainer config's arguments. docs/concepts.md holds
`schema_markdown()`, checked by a test.
"""

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from core.exceptions import ApplicationError
from training.ml.configs import (
    MAX_BATCH,
    BestOfNConfig,
    DPOConfig,
    PPOConfig,
    RLOOConfig,
    RMConfig,
    SFTConfig,
    field_problem,
    field_types,
    setting,
)
from training.ml.rules import parse_rules
from training.services.rounds import (
    DEFAULT_PROMPTS_PER_ROUND,
    DEFAULT_RECIPE,
    MAX_PROMPTS_PER_ROUND,
    RECIPES,
)

ROOT = "training_config"
RULES_KEY = "rules"  # of "ppo": a list of rule strings, checked by training.ml.rules
PPO_INIT_CHOICES = ("reference", "policy")  # run_bodies.ppo.ppo_init_version
MAX_GENERATE_SHARDS = 256  # generate runs queued at once for one round


@dataclass
class RoundSettings:
    prompts_per_round: int = setting(
        DEFAULT_PROMPTS_PER_ROUND,
        "Prompts a round samples when its start names no number (at most the train prompts "
        "there are).",
        ge=1,
        le=MAX_PROMPTS_PER_ROUND,
    )
    recipe: str = setting(
        DEFAULT_RECIPE,
        "How a round's policy stage trains when its start names no recipe: PPO against the "
        "round's RM, listwise DPO on the rankings, best-of-N then SFT, or RLOO.",
        choices=RECIPES,
    )


@dataclass
class GenerateSettings:
    prompts_per_batch: int = setting(
        4, "Prompts sampled together (each gives K responses).", ge=1, le=MAX_BATCH
    )
    batch_size: int = setting(8, "Sequences per forward pass while sampling.", ge=1, le=MAX_BATCH)
    shards: int = setting(
        1,
        "Runs the round's prompts are split into, sampled in parallel by as many gpu workers "
        "(whole batches of prompts_per_batch each; the texts do not depend on it).",
        ge=1,
        le=MAX_GENERATE_SHARDS,
    )


@dataclass
class RMRunSettings:
    eval_fraction: float = setting(
        0.1, "Share of the project's rankings held out to evaluate the RM.", ge=0, lt=1
    )


@dataclass
class PPORunSettings:
    init_from: str = setting(
        "reference",
        "Weights PPO starts from: the SFT reference, or the policy that sampled the round.",
        choices=PPO_INIT_CHOICES,
    )
    continue_kl_controller: bool = setting(
        False, "Start beta where the project's last PPO run left it."
    )


TOP_LEVEL: tuple[type, ...] = (RoundSettings,)
# A section's later classes override earlier ones of the same key (their defaults win).
SECTIONS: dict[str, tuple[type, ...]] = {
    "generate": (GenerateSettings,),
    "rm": (RMConfig, RMRunSettings),
    "ppo": (PPOConfig, PPORunSettings),
    "sft": (SFTConfig,),
    # The policy stage's other recipes (training_config["recipe"], or the round's).
    "dpo": (DPOConfig,),
    "best_of_n": (BestOfNConfig,),
    "rloo": (RLOOConfig,),
}
# Where the service, not the dataclass, gives the default.
DEFAULT_NOTES = {
    ("ppo", "max_new_tokens"): "the project's max_new_tokens",
    ("ppo", "temperature"): "the project's temperature",
    ("ppo", "top_p"): "the project's top_p",
    ("ppo", "checkpoint_every"): "a quarter of steps",
    ("ppo", "continue_kl_controller"): "true with init_from=policy, else false",
    ("rloo", "num_samples"): "the project's K",
    ("rloo", "max_new_tokens"): "the project's max_new_tokens",
    ("rloo", "temperature"): "the project's temperature",
    ("rloo", "top_p"): "the project's top_p",
    ("best_of_n", "max_new_tokens"): "the project's max_new_tokens",
    ("best_of_n", "temperature"): "the project's temperature",
    ("best_of_n", "top_p"): "the project's top_p",
}


def _fields(classes: tuple[type, ...]) -> dict[str, tuple[type, dataclasses.Field[Any]]]:
    return {f.name: (cls, f) for cls in classes for f in dataclasses.fields(cls)}


def _error(path: str, problem: str) -> ApplicationError:
    return ApplicationError(f"{path}: {problem}", extra={"field": path})


def training_config_check(value: Any) -> dict[str, Any]:
    """A copy of `value` if it fits the schema; else ApplicationError naming the field path
    ("training_config.ppo.lerning_rate: unknown key")."""
    if not isinstance(value, dict):
        raise _error(ROOT, "must be an object")
    top = _fields(TOP_LEVEL)
    for key, item in value.items():
        path = f"{ROOT}.{key}"
        if key in SECTIONS:
            _check_section(key, item, path)
        elif key in top:
            _check_value(*top[key], item, path)
        else:
            raise _error(path, "unknown key")
    return copy.deepcopy(value)


def _check_section(section: str, value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _error(path, "must be an object")
    known = _fields(SECTIONS[section])
    for key, item in value.items():
        if section == "ppo" and key == RULES_KEY:
            _check_rules(item, f"{path}.{key}")
        elif key in known:
            _check_value(*known[key], item, f"{path}.{key}")
        else:
            raise _error(f"{path}.{key}", "unknown key")
    _check_together(section, value, path)


def _check_together(section: str, value: dict[str, Any], path: str) -> None:
    """The checks a trainer config makes across its fields (e.g. PPO's lora_r excludes
    train_top_layers): build it as the run will, so the door refuses what the run would."""
    for cls in SECTIONS[section]:
        try:
            config = cls(**run_config_fields(cls, value))  # PPOConfig checks in __post_init__
            validate = getattr(config, "validate", None)
            if callable(validate):
                validate()
        except ValueError as exc:
            raise _error(path, str(exc)) from None


def _check_value(cls: type, f: dataclasses.Field[Any], value: Any, path: str) -> None:
    problem = field_problem(cls, f, value)
    if problem:
        raise _error(path, problem)


def _check_rules(value: Any, path: str) -> None:
    if not isinstance(value, list) or not all(isinstance(spec, str) for spec in value):
        raise _error(path, "must be a list of rule strings")
    try:
        parse_rules(value)
    except ValueError as exc:
        raise _error(path, str(exc)) from None


def run_config_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The arguments of trainer config `cls` in a run's section `values`.

    The section's service keys (eval_fraction, init_from, rules...) are left out; a key the
    schema does not know (stored before it was checked) fails the run, naming it, rather
    than training silently without it."""
    section = next(name for name, classes in SECTIONS.items() if cls in classes)
    known = set(_fields(SECTIONS[section])) | ({RULES_KEY} if section == "ppo" else set())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ApplicationError(
            f"{ROOT}.{section}.{unknown[0]}: unknown key; remove it from the project's "
            f"{ROOT} (it was stored before {ROOT} was checked)"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def schema_markdown() -> str:
    """The schema as a Markdown table (docs/concepts.md holds a copy; a test compares)."""
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for section, classes in [("", TOP_LEVEL), *SECTIONS.items()]:
        for name, (cls, f) in _fields(classes).items():
            key = f"{section}.{name}" if section else name
            default = DEFAULT_NOTES.get((section, name), _json(f.default))
            kinds = " or ".join(_TYPE_NAMES[kind] for kind in field_types(cls)[name])
            meaning = f.metadata["help"]
            rows.append(f"| `{key}` | {kinds} | {default} | {_allowed(f.metadata)} | {meaning} |")
        if section == "ppo":
            rows.append(
                f"| `ppo.{RULES_KEY}` | list of strings | [] | rules of training.ml.rules | "
                "Rule-based reward terms added to the RM score. |"
            )
    return "\n".join(rows) + "\n"


_TYPE_NAMES = {bool: "bool", int: "int", float: "number", str: "string", type(None): "null"}


def _allowed(metadata: Any) -> str:
    if "choices" in metadata:
        return ", ".join(metadata["choices"])
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return ", ".join(f"{sign} {metadata[key]}" for key, sign in signs.items() if key in metadata)


def _json(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


@dataclass(frozen=True)
class SchemaField:
    """One key of the schema, for forms that edit training_config (the settings page)."""

    section: str  # "" for a top-level key
    name: str
    kinds: tuple[type, ...]  # the Python types allowed (NoneType for a nullable key)
    default: str  # as schema_markdown shows it
    help: str
    bounds: dict[str, Any]  # ge / gt / le / lt / choices, as the dataclass metadata

    @property
    def path(self) -> str:
        return f"{ROOT}.{self.section}.{self.name}" if self.section else f"{ROOT}.{self.name}"


def schema_fields() -> list[SchemaField]:
    """Every key of the schema with its types, default, help and range, in the order of
    schema_markdown (ppo.rules, a list of rule strings, is not among them)."""
    out = []
    for section, classes in [("", TOP_LEVEL), *SECTIONS.items()]:
        for name, (cls, f) in _fields(classes).items():
            bounds = {k: v for k, v in f.metadata.items() if k != "help"}
            default = DEFAULT_NOTES.get((section, name), _json(f.default))
            kinds = field_types(cls)[name]
            out.append(SchemaField(section, name, kinds, default, f.metadata["help"], bounds))
    return out
