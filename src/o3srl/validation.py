"""Checks of user-supplied values: every field of a config has a type, and every number a range.

One layer for every way a number reaches the code (command-line flags, grid files, a run's ``config.json`` on resume
or evaluation, the options of ``o3srl eval`` / ``o3srl data ...``): :func:`check_fields` walks a config dataclass
and raises one :class:`~o3srl.errors.ConfigError` naming the field, the allowed range and the value; it runs before
any training or file writing starts.

The range of a field comes from its name (``gamma`` is in [0, 1) in every config that has one), so a field added
later gets the right check when its name says what it is (``*_lr``: > 0, ``*batch``: ≥ 1); any other float field
must at least be finite, and any other integer field an integer.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from o3srl.errors import ConfigError

SEED_MAX = 2**32 - 1
"""The largest seed: JAX keys and numpy's legacy seeding take 32 bits and silently wrap larger or negative ones."""


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; ``integer`` asks for a whole number (a Python int, not a bool)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo, hi = _number_text(self.lo), _number_text(self.hi)
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{kind} in {left}{lo}, {hi}{right}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '≥'} {lo}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '≤'} {hi}"
        return kind


def _number_text(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def at_least(lo: float, integer: bool = False) -> Range:
    return Range(lo=lo, integer=integer)


def positive() -> Range:
    return Range(lo=0.0, lo_open=True)


COUNT = Range(lo=1, integer=True)
NON_NEGATIVE_INT = Range(lo=0, integer=True)
NON_NEGATIVE = Range(lo=0.0)
FINITE = Range()
UNIT_OPEN = Range(lo=0.0, hi=1.0, lo_open=True, hi_open=True)
SEED = Range(lo=0, hi=SEED_MAX, integer=True)

RULES: dict[str, Range] = {
    # training loop
    "steps": COUNT,
    "seed": SEED,
    "eval_seed": SEED,
    "eval_episodes": NON_NEGATIVE_INT,
    "eval_every": NON_NEGATIVE_INT,
    "eval_every_episodes": NON_NEGATIVE_INT,
    "eval_envs": COUNT,
    "log_every": COUNT,
    "checkpoint_every": COUNT,
    "episode_length": COUNT,
    "cost_limit": NON_NEGATIVE,
    "fixed_lambda": NON_NEGATIVE,
    "reward_min": FINITE,
    "reward_max": FINITE,
    # oracles
    "hidden": COUNT,
    "gamma": Range(lo=0.0, hi=1.0, hi_open=True),
    "tau": Range(lo=0.0, hi=1.0, lo_open=True),
    "alpha": NON_NEGATIVE,
    "policy_noise": NON_NEGATIVE,
    "noise_clip": NON_NEGATIVE,
    "policy_delay": COUNT,
    "reward_scale": positive(),
    "cost_scale": positive(),
    "expectile": UNIT_OPEN,
    "cost_expectile": UNIT_OPEN,
    "temperature": NON_NEGATIVE,
    "max_weight": positive(),
    # λ-players
    "num_arms": COUNT,
    "max_lambda": NON_NEGATIVE,
    "arms": NON_NEGATIVE,
    "steps_per_round": COUNT,
    "learning_rate": positive(),
    "exploration": Range(lo=0.0, hi=1.0),
    "min_scale": positive(),
    "iterations": COUNT,
    "initial_lambda": NON_NEGATIVE,
    "fqe_steps": COUNT,
    "optimism": NON_NEGATIVE,
    "margin": Range(lo=0.0, hi=1.0, hi_open=True),
    "hint_decay": Range(lo=0.0, hi=1.0, hi_open=True),
    "max_violation": Range(lo=1.0),
    "hint_violation": Range(lo=1.0),
    # cost model
    "members": COUNT,
    "fit_steps": NON_NEGATIVE_INT,
    "rollout_states": COUNT,
    "rollout_every": COUNT,
    "pessimism": NON_NEGATIVE,
    # dataset collection (o3srl data make)
    "episodes": COUNT,
    "target": COUNT,
    "chunk_episodes": COUNT,
    "noise_max": NON_NEGATIVE,
}
"""Allowed values by field name (the same name means the same thing in every config)."""

SUFFIX_RULES: tuple[tuple[str, Range], ...] = (
    ("_lr", positive()),
    ("batch", COUNT),
    ("batch_size", COUNT),
    ("_steps", COUNT),
    ("_episodes", NON_NEGATIVE_INT),
    ("_seed", SEED),
    ("_scale", positive()),
    ("_prob", Range(lo=0.0, hi=1.0)),
    ("_bins", COUNT),
)
"""Fields not named in :data:`RULES` take the rule of their name's ending."""


def rule_for(name: str, integer: bool) -> Range:
    """The allowed values of field ``name`` (its last dotted part decides)."""
    leaf = name.rsplit(".", 1)[-1]
    rule: Range | None
    if leaf in RULES:
        rule = RULES[leaf]
    else:
        rule = next((r for suffix, r in SUFFIX_RULES if leaf.endswith(suffix)), None)
        if rule is None:
            return Range(integer=integer)
    return dataclasses.replace(rule, integer=integer) if rule.integer != integer else rule


def check_number(name: str, value: Any, rule: Range) -> None:
    """Raise one :class:`ConfigError` unless ``value`` is a number of the right kind inside ``rule``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (rule.integer and not isinstance(value, int)):
        raise ConfigError(f"{name} must be {rule.describe()}, got {value!r}")
    if not rule.contains(value):
        raise ConfigError(f"{name} must be {rule.describe()}, got {value!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def check_value(name: str, tp: Any, value: Any) -> None:
    """Check ``value`` against the annotation ``tp`` of field ``name`` and, for numbers, its range."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return check_value(name, options[0], value)
        for option in options:
            try:
                check_value(name, option, value)
                return
            except ConfigError:
                continue
        raise ConfigError(f"{name} must be one of {', '.join(_type_name(o) for o in options)} or null, got {value!r}")
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
        return
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{name} must have {len(items)} entries, got {value!r}")
        for i, (item_tp, item) in enumerate(zip(items, value)):
            if _is_number_type(item_tp):
                check_number(f"{name}[{i}]", item, rule_for(name, item_tp is int))
            else:
                check_value(f"{name}[{i}]", item_tp, item)
        return
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not dataclasses.is_dataclass(value) or not isinstance(value, tp):
            raise ConfigError(f"{name} must be a section of {tp.__name__} fields, got {value!r}")
        check_fields(value, prefix=f"{name}.")
        return
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        return
    if _is_number_type(tp):
        check_number(name, value, rule_for(name, tp is int))


def _is_number_type(tp: Any) -> bool:
    return tp is int or tp is float


def check_fields(cfg: Any, prefix: str = "") -> None:
    """Check every field of the config dataclass ``cfg`` (and of its nested sections) against its type and range."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        check_value(prefix + f.name, hints[f.name], getattr(cfg, f.name))
