"""The seams between the training loop and the algorithms: what an oracle and a learner provide.

An *oracle* is an offline RL algorithm trained on the Lagrangian reward ``r − λ (c − b)`` for a λ it is given
(TD3+BC, IQL). A *learner* is what :mod:`o3srl.train` trains: a state pytree and pure functions of it, run in
compiled chunks of rounds (O3SRL's round loop around an oracle, or the theory variant). Both are structural
(:class:`typing.Protocol`): a new algorithm conforms by having these members, and mypy checks that it does where
:func:`o3srl.train.build_learner` returns it. :class:`Setting` holds the facts of the problem a learner is built for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jax
import optax

from o3srl.data.sampler import Batch
from o3srl.transforms import Budget, BudgetConvention, make_budget

Metrics = dict[str, jax.Array]
"""Flat, namespaced scalars (``loss/critic``, ``q/cost``, ``bandit/lambda``, ...)."""


OutputKind = Literal["single", "mixture", "sequence"]
"""How a run's output is followed: ``single``, one actor; ``mixture``, a stack of actors, one drawn per episode;
``sequence``, a model that conditions on the episode so far (CDT's :class:`o3srl.policy.SequencePolicy`, CAPS's
:class:`o3srl.algos.caps.SwitchingPolicy`)."""


@dataclass(frozen=True)
class Setting:
    """Static facts of one training problem that the learner needs."""

    obs_dim: int
    act_dim: int
    cost_limit: float
    episode_length: int
    total_steps: int
    reward_abs_max: float
    cost_abs_max: float
    lambda_unit: float = 1.0
    """The data's unit of λ in the critics' units (o3srl.bandits.lambda_unit); scales the arm grid."""
    budget_convention: BudgetConvention = "osrl"
    """How the episodic cost limit becomes the per-step budget (``TrainConfig.budget_convention``)."""
    reward_range: tuple[float, float] | None = None
    """The reference (min, max) episode reward of the run's normalised reward (DSRL's, or the data's); FISOR scales
    its rewards by T / (max − min)."""

    def budget(self, oracle: OracleConfig) -> Budget:
        """The cost limit as the budget of critics configured by ``oracle`` (their γ and ``cost_scale``)
        (:func:`o3srl.transforms.make_budget`)."""
        return make_budget(
            self.cost_limit, oracle.gamma, self.episode_length, self.budget_convention, oracle.cost_scale
        )


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
    """What the training loop trains, checkpoints, evaluates and records in ``run.json``.

    The loop knows nothing else of a learner: what it outputs, what ``run.json`` records of it and whether it has a
    bandit history to plot are the learner's answers, so every learner follows the same path through
    :func:`o3srl.train.run`."""

    title: str
    """What the learner is, for messages (``"O3SRL"``, ``"the theory variant"``)."""
    steps_per_round: int
    """Gradient steps per round; the training loop runs whole rounds (one round per trace row)."""

    def init(self, key: jax.Array) -> Any:
        """A fresh state pytree (everything a checkpoint holds)."""
        ...

    def prepare(self, state: Any, data: Any) -> Any:
        """The state before the first round (a fresh run only; a resumed run has it in its checkpoint)."""
        ...

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The oracle's actions for one actor (a member of a mixture included)."""
        ...

    def run_rounds(self, state: Any, data: Any, num_rounds: int) -> tuple[Any, Metrics]:
        """``num_rounds`` rounds in one compiled scan; metrics stacked per round."""
        ...

    def output(self, state: Any) -> tuple[Any, OutputKind]:
        """The run's output policy in ``state``: (actor parameters, kind); a mixture's actors are stacked along a
        leading axis."""
        ...

    def run_info(self) -> dict[str, Any]:
        """What ``run.json`` records of the learner: the budget (per step, and on the discounted cost value in the
        data's units), the λ arms and the λ-player's rates."""
        ...

    def bandit_arms(self) -> list[float] | None:
        """The λ arms of a bandit whose history the run plots; ``None`` when there is none (one arm, or no bandit)."""
        ...

    @staticmethod
    def upgrade_state_dict(state_dict: dict[str, Any], template: Any) -> dict[str, Any]:
        """A checkpointed state written by an earlier layout of the learner, brought to today's layout."""
        ...


class StepLearner:
    """What the baselines share as learners: a learner whose round is ``steps_per_round`` calls of its own
    ``update(state, data) -> (state, metrics)`` (one gradient step each), logged as the round's means; no bandit, no
    preparation, and one state layout so far."""

    steps_per_round: int

    def update(self, state: Any, data: Any) -> tuple[Any, Metrics]:
        raise NotImplementedError

    def prepare(self, state: Any, data: Any) -> Any:
        return state

    def run_rounds(self, state: Any, data: Any, num_rounds: int) -> tuple[Any, Metrics]:
        """``num_rounds`` rounds in one compiled scan; each metric is its round's mean."""

        def round_(s: Any, _: None) -> tuple[Any, Metrics]:
            s, metrics = jax.lax.scan(lambda c, _: self.update(c, data), s, None, length=self.steps_per_round)
            return s, {k: v.mean() for k, v in metrics.items()}

        return jax.lax.scan(round_, state, None, length=num_rounds)

    def bandit_arms(self) -> list[float] | None:
        return None

    @staticmethod
    def upgrade_state_dict(state_dict: dict[str, Any], template: Any) -> dict[str, Any]:
        return state_dict


def adam_step(tx: Any, params: Any, opt: Any, grads: Any) -> tuple[Any, Any]:
    """One optimiser update: (new parameters, new optimiser state)."""
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt


def twin_critic_loss(
    q_r: jax.Array,
    q_c: jax.Array,
    batch: Batch,
    next_r: jax.Array,
    next_c: jax.Array,
    reward_scale: float,
    cost_scale: float,
    gamma: float,
) -> tuple[jax.Array, Metrics]:
    """The squared Bellman error of twin reward and twin cost critics, as TD3+BC, BCQ-Lag, BEAR-Lag and IQL train
    them (IQL with the state values V_r(s'), V_c(s') as the next-state targets).

    ``q_r``, ``q_c``: the twins' values at the batch's (s, a), shape (2, batch); ``next_r``, ``next_c``: each
    algorithm's own next-state target values (its target policy and reduction over the twins), shape (batch,).
        y_r = s_r r + γ (1 − terminal) next_r,   y_c = s_c c + γ (1 − terminal) next_c     (no gradient)
        L = Σ_i mean (Q_r,i − y_r)² + Σ_i mean (Q_c,i − y_c)²
    Returns L and its metrics (``loss/critic_reward``, ``loss/critic_cost``, ``q/reward``, ``q/cost``)."""
    not_done = 1.0 - batch.terminals
    y_r = jax.lax.stop_gradient(reward_scale * batch.rewards + gamma * not_done * next_r)
    y_c = jax.lax.stop_gradient(cost_scale * batch.costs + gamma * not_done * next_c)
    loss_r = ((q_r - y_r) ** 2).mean(axis=1).sum()
    loss_c = ((q_c - y_c) ** 2).mean(axis=1).sum()
    return loss_r + loss_c, {
        "loss/critic_reward": loss_r,
        "loss/critic_cost": loss_c,
        "q/reward": q_r.mean(),
        "q/cost": q_c.mean(),
    }
