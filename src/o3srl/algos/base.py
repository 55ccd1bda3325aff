"""The seams between the training loop and the algorithms: what an oracle and a learner provide.

An *oracle* is an offline RL algorithm trained on the Lagrangian reward ``r − λ (c − b)`` for a λ it is given
(TD3+BC, IQL). A *learner* is what :mod:`o3srl.train` trains: a state pytree and pure functions of it, run in
compiled chunks of rounds (O3SRL's round loop around an oracle, or the theory variant). Both are structural
(:class:`typing.Protocol`): a new algorithm conforms by having these members, and mypy checks that it does where
:func:`o3srl.train.build_learner` returns it.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import numpy as np

Metrics = dict[str, jax.Array]
"""Flat, namespaced scalars (``loss/critic``, ``q/cost``, ``bandit/lambda``, ...)."""


class OracleConfig(Protocol):
    """The fields of an oracle's config that a learner reads."""

    @property
    def gamma(self) -> float: ...

    @property
    def reward_scale(self) -> float: ...

    @property
    def cost_scale(self) -> float: ...

    @property
    def batch_size(self) -> int: ...


class Oracle(Protocol):
    """An offline RL algorithm on the Lagrangian reward: pure functions of its state pytree."""

    @property
    def config(self) -> OracleConfig: ...

    def init(self, key: jax.Array) -> Any:
        """A fresh state (network parameters, optimiser states, step counter)."""
        ...

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """Deterministic actions in [−1, 1] for normalised observations."""
        ...

    def policy_values(self, state: Any, obs: jax.Array, cost_reduce: str = "mean") -> tuple[jax.Array, jax.Array]:
        """(Q_r, Q_c) of the current policy at ``obs``, in the critics' (scaled) units."""
        ...

    def update(self, state: Any, batch: Any, lam: jax.Array, budget_step: float, key: jax.Array) -> tuple[Any, Metrics]:
        """One gradient step on ``batch`` for multiplier ``lam`` and per-step budget ``budget_step``."""
        ...


class Learner(Protocol):
    """What the training loop trains, checkpoints, evaluates and records in ``run.json``."""

    @property
    def oracle(self) -> Oracle: ...

    steps_per_round: int
    """Gradient steps per round; the training loop runs whole rounds."""
    budget_step: float
    """The per-step budget b (environment units)."""
    budget_value: float
    """The budget on the discounted cost value, in the critics' units (``cost_scale`` · b / (1 − γ))."""
    arms: np.ndarray
    """The λ values the λ-player chooses from."""
    learning_rate: float
    exploration: float

    def init(self, key: jax.Array) -> Any:
        """A fresh state pytree (everything a checkpoint holds)."""
        ...

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The oracle's actions for one actor (a member of a mixture included)."""
        ...

    def run_rounds(self, state: Any, data: Any, num_rounds: int) -> tuple[Any, Metrics]:
        """``num_rounds`` rounds in one compiled scan; metrics stacked per round."""
        ...
