"""Frozen, documented configuration dataclasses, and presets per task.

The CLI and its ``--help`` are generated from :class:`TrainConfig` (tyro). Presets are instances in a table keyed
by task; the CLI starts from the preset of the chosen task and explicit flags override it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from o3srl.algos.bc import BCConfig
from o3srl.algos.bcql import BCQLConfig
from o3srl.algos.bearl import BEARLConfig
from o3srl.algos.caps import CAPSConfig
from o3srl.algos.ccac import CCACConfig
from o3srl.algos.cdt import CDTConfig
from o3srl.algos.coptidice import COptiDICEConfig
from o3srl.algos.cost_model import CostModelConfig
from o3srl.algos.cpq import CPQConfig
from o3srl.algos.fisor import FISORConfig
from o3srl.algos.iql import IQLConfig
from o3srl.algos.o3srl import O3SRLConfig
from o3srl.algos.o3srl_theory import TheoryConfig
from o3srl.algos.td3bc import TD3BCConfig
from o3srl.envs.registry import DEFAULT_TASK
from o3srl.errors import ConfigError
from o3srl.transforms import BudgetConvention
from o3srl.validation import check_fields

Algo = Literal[
    "o3srl",
    "td3bc",
    "iql",
    "bc-all",
    "bc-safe",
    "bcq-lag",
    "bear-lag",
    "cpq",
    "coptidice",
    "cdt",
    "fisor",
    "caps",
    "ccac",
]

BC_ALGOS = ("bc-all", "bc-safe")
"""The behaviour cloning baselines (:mod:`o3srl.algos.bc`)."""
BASELINE_SECTIONS: dict[str, str] = {
    "bc-all": "bc",
    "bc-safe": "bc",
    "bcq-lag": "bcql",
    "bear-lag": "bearl",
    "cpq": "cpq",
    "coptidice": "coptidice",
    "cdt": "cdt",
    "fisor": "fisor",
    "caps": "caps",
    "ccac": "ccac",
}
"""The baselines, each with the config section of its hyperparameters: learners of their own (not O3SRL's round
loop around an oracle), trained one run per program."""
BASELINE_ALGOS = tuple(BASELINE_SECTIONS)


@dataclass(frozen=True)
class TrainConfig:
    """Train an offline safe-RL agent on a DSRL-format dataset and evaluate its last iterate in the simulator."""

    algo: Algo = "o3srl"
    """o3srl: EXP3 over λ-arms around the oracle; td3bc / iql: the oracle alone at --fixed-lambda; bc-all / bc-safe:
    behaviour cloning of every transition / of the episodes whose cost is within --cost-limit; bcq-lag / bear-lag:
    BCQ / BEAR with a PID-Lagrangian cost penalty; cpq: Constraints Penalized Q-learning; coptidice: COptiDICE,
    stationary distribution correction estimation; cdt: the Constrained Decision Transformer; fisor: FISOR,
    feasibility-guided diffusion; caps: Constraint-Adaptive Policy Switching; ccac: Constraint-Conditioned
    Actor-Critic (baselines)."""
    oracle: Literal["td3bc", "iql"] = "td3bc"
    """The offline-RL oracle used by o3srl."""
    variant: Literal["practical", "theory"] = "practical"
    """o3srl only. practical: EXP3 over λ-arms, M steps per round, last iterate (Algorithm 2). theory: continuous λ
    by projected OGD with FQE of every iterate, uniform mixture of iterates as output (Algorithm 1)."""
    task: str = DEFAULT_TASK
    """Task id. For the registry's ids (Offline*-v0, Offline*VelocityGymnasium-v1) the environment and DSRL's
    reference scores come from the registry."""
    dataset: str | None = None
    """A DSRL-format .hdf5/.npz file. Default: the built-in dataset of the default task."""
    env_id: str | None = None
    """Environment used for evaluation (any gymnasium id or module:Class whose info has 'cost'); default: task."""
    cost_limit: float = 5.0
    """κ: the limit on the expected undiscounted episode cost."""
    budget_convention: BudgetConvention = "osrl"
    """How κ becomes the per-step budget b of the shaped reward r − λ (c − b): osrl, κ (1 − γ^T) / T (OSRL's: κ
    spread evenly over the T steps, discounted as the critics are); average, κ / T; discounted, (1 − γ) κ
    (o3srl.transforms.budget_per_step)."""
    fixed_lambda: float = 0.0
    """λ for --algo td3bc / iql (0: unconstrained)."""
    seed: int = 0
    steps: int = 100_000
    """Total oracle gradient steps (O3SRL: rounds × M)."""
    quick: bool = False
    """A smoke run: 2,000 steps and 5 evaluation episodes (under a minute)."""
    eval_episodes: int = 20
    """Episodes of the final evaluation."""
    eval_every: int = 0
    """Steps between periodic evaluations (0: only the final one)."""
    eval_every_episodes: int = 5
    """Episodes of each periodic evaluation."""
    eval_seed: int = 10_000
    """Seed of evaluation episodes (kept apart from training seeds)."""
    eval_envs: int = 4
    """Environment copies stepped together during evaluation."""
    log_every: int = 1_000
    """Steps per compiled training call and per logged metrics row."""
    checkpoint_every: int = 10_000
    """Steps between checkpoints (a multiple of log_every)."""
    run_dir: str | None = None
    """Where the run is written. Default: runs/<task>-<algo>-k<κ>-s<seed>-<time>."""
    reward_min: float | None = None
    """Reference minimum episode reward for normalisation (default: DSRL's for known tasks, else the dataset's)."""
    reward_max: float | None = None
    """Reference maximum episode reward for normalisation."""
    episode_length: int | None = None
    """Episode length T used by the budget conversion (default: registry, else the dataset's longest episode)."""
    normalize_obs: bool = True
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the 'tensorboard' extra)."""
    progress: bool = True
    """Show a progress bar."""
    o3srl: O3SRLConfig = field(default_factory=O3SRLConfig)
    td3bc: TD3BCConfig = field(default_factory=TD3BCConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    """Behaviour cloning (--algo bc-all / bc-safe)."""
    bcql: BCQLConfig = field(default_factory=BCQLConfig)
    """BCQ-Lag (--algo bcq-lag)."""
    bearl: BEARLConfig = field(default_factory=BEARLConfig)
    """BEAR-Lag (--algo bear-lag)."""
    cpq: CPQConfig = field(default_factory=CPQConfig)
    """Constraints Penalized Q-learning (--algo cpq)."""
    coptidice: COptiDICEConfig = field(default_factory=COptiDICEConfig)
    """COptiDICE (--algo coptidice)."""
    cdt: CDTConfig = field(default_factory=CDTConfig)
    """The Constrained Decision Transformer (--algo cdt)."""
    fisor: FISORConfig = field(default_factory=FISORConfig)
    """FISOR (--algo fisor)."""
    caps: CAPSConfig = field(default_factory=CAPSConfig)
    """Constraint-Adaptive Policy Switching (--algo caps)."""
    ccac: CCACConfig = field(default_factory=CCACConfig)
    """Constraint-Conditioned Actor-Critic (--algo ccac)."""
    cost_model: CostModelConfig = field(default_factory=CostModelConfig)
    """The dynamics-and-cost model the adaptive λ-player reads the policy's episode cost from (o3srl.cost_estimate
    model)."""

    @property
    def oracle_name(self) -> str:
        return self.oracle if self.algo == "o3srl" else self.algo

    def resolved(self) -> TrainConfig:
        """Check every value (type and range, see :mod:`o3srl.validation`), apply ``quick`` and check that the
        values are consistent with each other; raises :class:`ConfigError` naming the bad value."""
        check_fields(self)
        cfg = self
        if cfg.quick:
            cfg = dataclasses.replace(
                cfg,
                steps=min(cfg.steps, 2_000),
                eval_episodes=min(cfg.eval_episodes, 5),
                log_every=min(cfg.log_every, 500),
                checkpoint_every=min(cfg.checkpoint_every, 1_000),
                # A smoke run: the adaptive λ-player's cost model gets a short fit too.
                cost_model=dataclasses.replace(cfg.cost_model, fit_steps=min(cfg.cost_model.fit_steps, 1_000)),
            )
        is_theory = cfg.algo == "o3srl" and cfg.variant == "theory"
        if is_theory:
            if cfg.steps % cfg.theory.iterations:
                raise ConfigError(
                    f"steps ({cfg.steps}) must be a multiple of theory.iterations ({cfg.theory.iterations})"
                )
            # One logged row and one checkpoint per iteration.
            per = cfg.steps // cfg.theory.iterations
            cfg = dataclasses.replace(
                cfg,
                log_every=per,
                checkpoint_every=per,
                eval_every=cfg.eval_every and max(per, cfg.eval_every // per * per),
            )
            cfg = dataclasses.replace(cfg, o3srl=dataclasses.replace(cfg.o3srl, steps_per_round=per))
        if cfg.algo != "o3srl" and cfg.o3srl.player != "earlier":
            # A fixed λ has no λ-player: the oracle alone (the paper's fixed-λ ablation) reads its cost from the
            # critics for the logs, fits no cost model and outputs its last iterate, the earlier player's knobs.
            cfg = dataclasses.replace(cfg, o3srl=dataclasses.replace(cfg.o3srl, player="earlier"))
        m = cfg.o3srl.steps_per_round
        if cfg.log_every < m or cfg.log_every % m:
            raise ConfigError(f"log_every ({cfg.log_every}) must be a multiple of steps_per_round M ({m})")
        if cfg.checkpoint_every % cfg.log_every:
            raise ConfigError(
                f"checkpoint_every ({cfg.checkpoint_every}) must be a multiple of log_every ({cfg.log_every})"
            )
        if cfg.eval_every and cfg.eval_every % cfg.log_every:
            raise ConfigError(f"eval_every ({cfg.eval_every}) must be a multiple of log_every ({cfg.log_every})")
        if cfg.steps % m:
            raise ConfigError(f"steps ({cfg.steps}) must be a multiple of steps_per_round M ({m})")
        if (cfg.reward_min is None) != (cfg.reward_max is None):
            raise ConfigError("give both reward_min and reward_max, or neither")
        if cfg.reward_min is not None and cfg.reward_max is not None and cfg.reward_max <= cfg.reward_min:
            raise ConfigError(f"reward_max ({cfg.reward_max}) must exceed reward_min ({cfg.reward_min})")
        if is_theory and cfg.theory.initial_lambda > cfg.theory.max_lambda:
            raise ConfigError(
                f"theory.initial_lambda ({cfg.theory.initial_lambda}) must lie in [0, theory.max_lambda] "
                f"= [0, {cfg.theory.max_lambda}]"
            )
        return cfg


# Per-task presets: overrides applied before the command line's own flags.
# OfflineBallRun-v0 is the built-in default task: its preset shortens the run so that `o3srl train` with no
# arguments finishes in about ten minutes on a 2-core CPU (measured; see README).
PRESETS: dict[str, dict[str, Any]] = {
    "OfflineBallRun-v0": {"steps": 40_000},
}


def preset(task: str) -> TrainConfig:
    """The default config for ``task`` with its preset applied."""
    return apply_overrides(TrainConfig(task=task), PRESETS.get(task, {}))


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """``dataclasses.replace`` with dotted keys for nested configs (``{"o3srl.num_arms": 10}``)."""
    moved = [key for key in overrides if key in MOVED_FIELDS]
    if moved and isinstance(cfg, TrainConfig):
        raise ConfigError("; ".join(f"config field {key!r} has moved: write {MOVED_FIELDS[key]!r}" for key in moved))
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    for key in list(flat) + list(nested):
        if key not in names:
            raise ConfigError(
                f"unknown config field {key!r} for {type(cfg).__name__}; known: {', '.join(sorted(names))}"
            )
    for head, sub in nested.items():
        if not dataclasses.is_dataclass(getattr(cfg, head)):
            raise ConfigError(f"config key {head}.{next(iter(sub))}: {head} is not a section")
        flat[head] = apply_overrides(getattr(cfg, head), sub)
    for key, value in flat.items():
        if isinstance(value, list):
            flat[key] = tuple(value)
    return dataclasses.replace(cfg, **flat)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# Config fields added after runs were first saved, with the value that reproduces what runs did before the field
# existed. A saved config without the field gets that value when it is read back (so an old run directory still
# evaluates and resumes as it was trained), and grids treat its absence as that value. A new field whose absence
# means something else must not be listed.
ADDED_FIELDS: dict[str, Any] = {
    "td3bc.critic_layer_norm": False,
    # The adaptive λ-player (2026-11-30): runs saved before it used absolute arms, no optimism, no margin and the
    # twins' mean as the cost estimate.
    "o3srl.player": "earlier",
    "o3srl.lambda_scale": 1.0,
    "o3srl.optimism": 0.0,
    "o3srl.margin": 0.0,
    "o3srl.cost_estimate": "mean",
    "o3srl.max_violation": 1.0,
    "o3srl.max_gap": 6.0,
    "td3bc.q_normalizer": "shaped",
    "o3srl.output": "last",
    "o3srl.oracle_lambda": "drawn",
    "o3srl.hint_decay": 0.0,
    "o3srl.tail_members": 10,
    "o3srl.tail_fraction": 0.1,
    # The cost model's head and aggregate, and the behaviour cloning section (2026-11-30).
    "cost_model.cost_head": "regression",
    "cost_model.aggregate": "mean",
    "bc.hidden": [256, 256],
    "bc.learning_rate": 1e-3,
    "bc.batch_size": 512,
    # The cost model's reward head (2026-12-01): runs saved before it fit none.
    "cost_model.reward_head": False,
    # The mix output's smallest share (2026-12-01): runs saved before it took any whole slot.
    "o3srl.mix_min_share": 0.0,
}


# Config fields moved since runs were first saved: old dotted key → today's. A saved config is read with the value
# moved (from the section its run read); a grid or command line that still names the old key gets one error naming
# the new one.
MOVED_FIELDS: dict[str, str] = {
    # The cost limit's reading sat in each learner's section until 2026-11-30.
    "o3srl.budget_convention": "budget_convention",
    "theory.budget_convention": "budget_convention",
}


def _move_fields(flat: dict[str, Any]) -> dict[str, Any]:
    """Saved dotted keys → today's (:data:`MOVED_FIELDS`); where several old keys move to one field, the one of the
    section the run read wins (the theory variant read ``theory.*``, every other run ``o3srl.*``)."""
    theory = flat.get("algo", "o3srl") == "o3srl" and flat.get("variant") == "theory"
    out = dict(flat)
    for old in sorted(MOVED_FIELDS, key=lambda k: k.startswith("theory.") != theory):
        if old in out:
            out.setdefault(MOVED_FIELDS[old], out.pop(old))
    return out


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from its JSON form (as saved in a run directory); the values are checked by
    :meth:`TrainConfig.resolved` (or :func:`read_config`), not here."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a JSON object of fields, got {type(data).__name__}")
    data = dict(data)
    sections = [
        f.name for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(getattr(TrainConfig(), f.name))
    ]
    nested = {name: data.pop(name, {}) for name in sections}
    flat_overrides = {k: v for k, v in data.items()}
    for head, sub in nested.items():
        if not isinstance(sub, dict):
            raise ConfigError(f"{head} must be a section (a JSON object of fields), got {sub!r}")
        for k, v in sub.items():
            flat_overrides[f"{head}.{k}"] = v
    for key, old_value in ADDED_FIELDS.items():
        flat_overrides.setdefault(key, old_value)
    return apply_overrides(TrainConfig(), _move_fields(flat_overrides))


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def read_config(path: str | os.PathLike[str]) -> TrainConfig:
    """The config saved in a run directory's ``config.json``, checked as a command line's would be: a file that is
    not JSON, holds unknown fields or values out of range is one :class:`ConfigError` naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist (is {path.parent} a run directory?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc}); it should hold the run's config as written by 'o3srl train'"
        ) from None
    try:
        cfg = from_dict(data)
        cfg.resolved()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


# ---------------------------------------------------------------------------------------------------- overrides
# Overrides written in a file (a grid's TOML tables) are checked against the fields' annotations before a config is
# built from them, and configs saved by earlier sittings are compared with the current ones.

UNCOMPARED = {"run_dir", "dataset", "progress", "tensorboard"}
"""Fields that may legitimately differ between sittings (machines, checkouts) without changing what a run
computes."""


def flatten_tables(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML tables (``td3bc.hidden = [..]`` or ``[defaults.td3bc]``) → dotted keys for ``apply_overrides``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_tables(value, name + "."))
        else:
            out[name] = value
    return out


def conforms(tp: Any, value: Any) -> bool:
    """Whether a TOML value fits a config field's annotation (Literal, Optional, int, float, bool, str, tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(conforms(t, value) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(args[0], v) for v in value)
        return len(args) == len(value) and all(conforms(a, v) for a, v in zip(args, value))
    return True  # annotations this checker does not know are left to the config's own validation


def coerce(tp: Any, value: Any) -> Any:
    """Integers given for float fields become floats, so saved configs compare equal across sittings."""
    if tp is float and isinstance(value, int):
        return float(value)
    args = typing.get_args(tp)
    if (
        typing.get_origin(tp) in (typing.Union, types.UnionType)
        and float in args
        and isinstance(value, int)
        and not isinstance(value, bool)
        and int not in args
    ):
        return float(value)
    if typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)) and args:
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is not None:
            return tuple(coerce(inner, v) for v in value)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and isinstance(value, list):
        for arg in args:
            if typing.get_origin(arg) is tuple and conforms(arg, value):
                return coerce(arg, value)
    return value


def field_type(root: type, dotted: str) -> Any:
    """The annotation of a dotted TrainConfig field, or a ConfigError naming the unknown part."""
    cls: Any = root
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        if part not in fields:
            where = ".".join(parts[:i]) or "the training config"
            raise ConfigError(
                f"unknown config key {dotted!r} (no field {part!r} in {where}; known: {', '.join(sorted(fields))})"
            )
        tp = hints[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"config key {dotted!r}: {'.'.join(parts[: i + 1])} is not a section")
            cls = tp
    return tp


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")


def config_json_dict(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(to_dict(cfg)))


def effective_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict as the run read it: fields added since at their old behaviour
    (:data:`ADDED_FIELDS`), the λ-player's knobs that the config left to the player filled in (the tail fraction
    to its output's), and the tail's knobs dropped where the output does not read them. Two configs that compute the
    same run then compare equal, whatever defaults each was written under. A dict that is not a readable config is
    returned as it is."""
    from o3srl.algos.o3srl import resolve_player

    try:
        cfg = from_dict(saved)
        o3 = resolve_player(cfg.o3srl)
    except (ConfigError, TypeError, ValueError, KeyError):
        return saved
    from o3srl.algos.o3srl import tail_fraction_of, tail_members_of

    o3 = dataclasses.replace(o3, tail_fraction=tail_fraction_of(o3), tail_members=tail_members_of(o3))
    out = config_json_dict(dataclasses.replace(cfg, o3srl=o3))
    unused = {
        "last": ("tail_members", "tail_fraction", "best_members", "mix_slots", "mix_min_share"),
        "tail": ("best_members", "mix_slots", "mix_min_share"),
        "best": ("mix_slots", "mix_min_share"),
    }
    for knob in unused.get(o3.output or "last", ()):
        out["o3srl"].pop(knob, None)
    return out


def sections_read(cfg: TrainConfig) -> set[str]:
    """The config sections (``td3bc``, ``cost_model``, ...) that a run of ``cfg`` reads; a value in any other
    section cannot change what it computes (a fixed-λ TD3+BC run has no cost model, BC no critics)."""
    if cfg.algo in BASELINE_SECTIONS:
        return {BASELINE_SECTIONS[cfg.algo], "o3srl"}  # o3srl.steps_per_round is the training loop's round
    resolved = cfg.resolved()
    if resolved.algo == "o3srl" and resolved.variant == "theory":
        return {"o3srl", "theory", resolved.oracle_name}
    from o3srl.algos.o3srl import resolve_player

    sections = {"o3srl", resolved.oracle_name}
    if resolve_player(resolved.o3srl).cost_estimate == "model":
        sections.add("cost_model")
    return sections


def config_differences(
    saved: dict[str, Any], current: dict[str, Any], prefix: str = "", sections: set[str] | None = None
) -> list[str]:
    """Dotted keys whose values differ between two config dicts, ignoring machine-local fields and, when
    ``sections`` is given (:func:`sections_read` of the current config), the sections the run does not read; a
    field added since ``saved`` was written counts as holding its old-behaviour value there
    (``config.ADDED_FIELDS``)."""
    out: list[str] = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key in UNCOMPARED:
            continue
        if not prefix and sections is not None and isinstance(current.get(key), dict) and key not in sections:
            continue
        a, b = saved.get(key), current.get(key)
        if key not in saved and isinstance(b, dict):
            a = {}  # a section added since: each of its fields is compared as an added field
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif key not in saved and f"{prefix}{key}" in ADDED_FIELDS and b == ADDED_FIELDS[f"{prefix}{key}"]:
            continue
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out
