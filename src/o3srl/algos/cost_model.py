"""A learned model of the dataset's dynamics and costs, used to read the episode cost of the current policy.

The adaptive λ-player needs one number per round: the expected episode cost of the policy the oracle holds now. A
cost critic read at the initial states is the obvious source, and on Bullet it is the wrong one: the actor is
trained to make ``Q_c(s, π(s))`` small, and near the start of an episode (slow states, where the data holds every
behaviour's actions and no costs yet) it finds actions where the critic extrapolates low. On BallRun a TD3+BC
policy at λ = 0.5 that costs 79 per episode read ``Q_c(s0, π(s0)) = 0.9``, while ten steps later, on its own
trajectory, the critic was right within 6 % (docs/algorithms/o3srl.md, "The cost estimate").

This model is not trained against the actor, so the actor cannot exploit it: an ensemble of ``members`` MLPs,
each predicting from (s, a) the normalised change of the observation, the step cost and the log-odds of a terminal,
fit once to the dataset by least squares (cross-entropy for the terminal) before the first round. The cost estimate
is the mean, over members and dataset initial states, of the undiscounted cost the policy collects in an
``horizon``-step rollout of one member (each member follows its own trajectory; a predicted terminal ends the
episode's cost through the survival probability). It is in the cost limit's own units: an episode's cost, compared
with κ directly, with no discounting and no budget conversion.

Rollout states are kept inside the dataset's observation box, so a policy that leaves the data cannot send the
model into unbounded extrapolation.

With ``reward_head``, a second ensemble of the same widths predicts the step reward (least squares, fit after the
first with its own draws, so the dynamics and costs are exactly what they are without it), and every rollout sums
its reward beside the cost: the model's reading of the policy's episode reward. The λ-player never looks at it; the
adaptive player's ``best`` output chooses among its tail members with it (o3srl.algos.o3srl).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from o3srl.data.sampler import DeviceData
from o3srl.nets import MLP


@dataclass(frozen=True)
class CostModelConfig:
    """The dynamics-and-cost ensemble read by ``--o3srl.cost-estimate model``."""

    members: int = 5
    hidden: tuple[int, ...] = (200, 200)
    learning_rate: float = 1e-3
    fit_steps: int = 20000
    """Gradient steps of the fit (before the first round; each member draws its own minibatches). Runs saved before
    2026-12 used 5,000 (fewer steps read CarCircle's policies with twice the error)."""
    batch_size: int = 256
    rollout_states: int = 16
    """Dataset initial states the policy is rolled out from (the same ones every time), each by every member."""
    pessimism: float = 0.0
    """k: the λ-player reads the members' mean episode cost plus k times their spread (the standard deviation of the
    members' means), an upper confidence bound where the members disagree (0: the mean)."""
    cost_head: str = "auto"
    """How the model predicts a step's cost: ``regression`` (squared error on the cost, for any costs),
    ``bernoulli`` (the probability of a cost of 1 by cross-entropy, for costs in [0, 1], as every DSRL task's are: its
    predictions stay in [0, 1], where a regression's small errors around 0 add up over an episode), or ``auto``:
    bernoulli when every cost of the data is in [0, 1], else regression (the head a run used is in its ``run.json``).
    Read against the evaluated cost of 27 Bullet policies, bernoulli with 20,000 fit steps had a root-mean-square
    error of 0.11 κ / 0.14 κ on BallRun / CarCircle where regression with 5,000 had 0.18 κ / 0.35 κ
    (docs/results/cost_model_calibration.md)."""
    aggregate: str = "mean"
    """How the members' episode costs make the reading: ``mean`` over every member's rollouts, or ``median`` of the
    members' mean costs (one member whose dynamics drift, reading 65 where the others read 0–10, then does not
    decide the reading)."""
    reward_head: bool = True
    """Also fit a reward ensemble, so that every rollout reads the policy's episode reward beside its cost (the
    ``best`` output of o3srl chooses among the tail members by it). Runs saved before it existed had none."""
    rollout_every: int = 1
    """Rounds between rollouts; the rounds in between reuse the last estimate. 1: a fresh estimate every round (on
    the toy task, every 10 rounds let the λ-player act on a stale cost long enough to end one run in three unsafe)."""


COST_HEADS = ("auto", "regression", "bernoulli")
AGGREGATES = ("mean", "median")

MIN_SCALE = 0.01
"""Floor of the target scales, in normalised-observation (and cost) units: a dimension that barely changes in the data
(a clock, a constant) would otherwise be divided by ≈ 0 and its few outliers would swamp the fit."""


def unit_costs(costs: Any) -> bool:
    """Whether every cost of the data is in [0, 1] (``cost_head="auto"`` then predicts them as probabilities)."""
    costs = np.asarray(costs)
    return bool(((costs >= 0) & (costs <= 1)).all())


class CostModelState(flax.struct.PyTreeNode):
    params: Any
    delta_scale: jax.Array  # per-dimension std of s' − s (at least MIN_SCALE): the model predicts Δs / delta_scale
    cost_scale: jax.Array  # std of the step cost (at least MIN_SCALE): the model predicts c / cost_scale
    obs_low: jax.Array
    obs_high: jax.Array
    fit_loss: jax.Array  # the fit's last minibatch loss (NaN before the fit)
    estimate: jax.Array  # the last rollouts' mean episode cost
    spread: jax.Array  # the standard deviation of that mean across members
    reward_params: Any = None  # the reward ensemble's parameters (None: no reward head)
    reward_scale: Any = None  # std of the step reward (at least MIN_SCALE): the reward ensemble predicts r / it
    reward_estimate: Any = None  # the last rollouts' mean episode reward (0 before any; None: no reward head)


class _Ensemble(nn.Module):
    hidden: tuple[int, ...]
    out_dim: int
    members: int

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> jax.Array:
        """obs, act: (members, batch, ·), one input per member → (members, batch, out_dim)."""
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=0,
            out_axes=0,
            axis_size=self.members,
        )
        return ensemble(self.hidden, self.out_dim)(jnp.concatenate([obs, act], axis=-1))


class CostModel:
    """Pure functions of :class:`CostModelState`."""

    def __init__(self, config: CostModelConfig, obs_dim: int, act_dim: int, unit_costs: bool = False) -> None:
        """``unit_costs``: whether every cost of the data the model will fit is in [0, 1] (``cost_head="auto"``
        then predicts them as probabilities)."""
        if (
            config.members < 1
            or config.fit_steps < 0
            or config.batch_size < 1
            or config.rollout_states < 1
            or config.rollout_every < 1
        ):
            from o3srl.errors import ConfigError

            raise ConfigError(
                "cost model: members, batch_size, rollout_states and rollout_every must be ≥ 1 and fit_steps ≥ 0, "
                f"got {config.members}, {config.batch_size}, {config.rollout_states}, {config.rollout_every} and "
                f"{config.fit_steps}"
            )
        if config.aggregate not in AGGREGATES:
            from o3srl.errors import ConfigError

            raise ConfigError(
                f"cost model: unknown aggregate {config.aggregate!r}; choose one of {', '.join(AGGREGATES)}"
            )
        if config.cost_head not in COST_HEADS:
            from o3srl.errors import ConfigError

            raise ConfigError(
                f"cost model: unknown cost_head {config.cost_head!r}; choose one of {', '.join(COST_HEADS)}"
            )
        self.config = config
        self.head = config.cost_head if config.cost_head != "auto" else ("bernoulli" if unit_costs else "regression")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = _Ensemble(tuple(config.hidden), obs_dim + 2, config.members)
        self.reward_net = _Ensemble(tuple(config.hidden), 1, config.members) if config.reward_head else None
        self.tx = optax.adam(config.learning_rate)

    def init(self, key: jax.Array) -> CostModelState:
        m = self.config.members
        params = self.net.init(key, jnp.zeros((m, 1, self.obs_dim)), jnp.zeros((m, 1, self.act_dim)))
        ones = jnp.ones((self.obs_dim,), jnp.float32)
        reward = {}
        if self.reward_net is not None:
            reward = {
                "reward_params": self.reward_net.init(
                    jax.random.fold_in(key, 1), jnp.zeros((m, 1, self.obs_dim)), jnp.zeros((m, 1, self.act_dim))
                ),
                "reward_scale": jnp.float32(1.0),
                "reward_estimate": jnp.float32(0.0),
            }
        return CostModelState(
            params=params,
            delta_scale=ones,
            cost_scale=jnp.float32(1.0),
            obs_low=-ones,
            obs_high=ones,
            fit_loss=jnp.float32(jnp.nan),
            estimate=jnp.float32(0.0),
            spread=jnp.float32(0.0),
            **reward,
        )

    def predict(self, state: CostModelState, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(next observation, step cost, terminal probability) per member; obs, act: (members, batch, ·)."""
        out = self.net.apply(state.params, obs, act)
        next_obs = jnp.clip(obs + out[..., : self.obs_dim] * state.delta_scale, state.obs_low, state.obs_high)
        if self.head == "bernoulli":
            cost = jax.nn.sigmoid(out[..., self.obs_dim])
        else:
            cost = out[..., self.obs_dim] * state.cost_scale
        return next_obs, cost, jax.nn.sigmoid(out[..., self.obs_dim + 1])

    def predict_reward(self, state: CostModelState, obs: jax.Array, act: jax.Array) -> jax.Array:
        """The step reward per member (the reward head); obs, act: (members, batch, ·)."""
        assert self.reward_net is not None, "the cost model has no reward head"
        return self.reward_net.apply(state.reward_params, obs, act)[..., 0] * state.reward_scale

    def reward_loss(self, params: Any, state: CostModelState, data: DeviceData, idx: jax.Array) -> jax.Array:
        assert self.reward_net is not None
        pred = self.reward_net.apply(params, data.obs[idx], data.actions[idx])[..., 0]
        return ((pred - data.rewards[idx] / state.reward_scale) ** 2).mean()

    def loss(self, params: Any, state: CostModelState, data: DeviceData, idx: jax.Array) -> jax.Array:
        obs, act = data.obs[idx], data.actions[idx]  # (members, batch, ·)
        out = self.net.apply(params, obs, act)
        delta = (data.next_obs[idx] - obs) / state.delta_scale
        dyn = ((out[..., : self.obs_dim] - delta) ** 2).mean()
        if self.head == "bernoulli":
            cost = optax.sigmoid_binary_cross_entropy(out[..., self.obs_dim], data.costs[idx]).mean()
        else:
            cost = ((out[..., self.obs_dim] - data.costs[idx] / state.cost_scale) ** 2).mean()
        term = optax.sigmoid_binary_cross_entropy(out[..., self.obs_dim + 1], data.terminals[idx]).mean()
        return dyn + cost + term

    def fit(self, state: CostModelState, data: DeviceData, key: jax.Array) -> CostModelState:
        """``fit_steps`` Adam steps from ``state``'s parameters (the last minibatch loss kept in ``fit_loss``); then
        as many for the reward head, with draws of their own."""
        cfg = self.config
        delta = data.next_obs - data.obs
        state = state.replace(
            delta_scale=jnp.maximum(delta.std(axis=0), MIN_SCALE),
            cost_scale=jnp.maximum(data.costs.std(), MIN_SCALE),
            obs_low=data.obs.min(axis=0),
            obs_high=data.obs.max(axis=0),
        )
        if self.reward_net is not None:
            state = state.replace(reward_scale=jnp.maximum(data.rewards.std(), MIN_SCALE))
        if cfg.fit_steps == 0:
            return state

        def adam(loss: Callable[..., jax.Array], params: Any, k: jax.Array) -> tuple[Any, jax.Array]:
            def step(carry: tuple[Any, Any], k: jax.Array) -> tuple[tuple[Any, Any], jax.Array]:
                params, opt = carry
                idx = jax.random.randint(k, (cfg.members, cfg.batch_size), 0, data.obs.shape[0])
                value, grads = jax.value_and_grad(loss)(params, state, data, idx)
                updates, opt = self.tx.update(grads, opt, params)
                return (optax.apply_updates(params, updates), opt), value

            (params, _), losses = jax.lax.scan(step, (params, self.tx.init(params)), jax.random.split(k, cfg.fit_steps))
            return params, losses[-1]

        params, fit_loss = adam(self.loss, state.params, key)
        state = state.replace(params=params, fit_loss=fit_loss)
        if self.reward_net is not None:
            reward_params, _ = adam(self.reward_loss, state.reward_params, jax.random.fold_in(key, 1))
            state = state.replace(reward_params=reward_params)
        return state

    def episode_cost(
        self,
        state: CostModelState,
        act: Callable[[jax.Array], jax.Array],
        init_obs: jax.Array,
        horizon: int,
    ) -> jax.Array:
        """The undiscounted cost of ``horizon``-step rollouts of the deterministic policy ``act`` from ``init_obs``
        (batch, obs_dim), one per member: shape (members, batch)."""
        return self.episode_returns(state, act, init_obs, horizon, with_reward=False)[0]

    def episode_returns(
        self,
        state: CostModelState,
        act: Callable[[jax.Array], jax.Array],
        init_obs: jax.Array,
        horizon: int,
        with_reward: bool = True,
    ) -> tuple[jax.Array, jax.Array | None]:
        """The undiscounted cost and reward (``None`` without the reward head or ``with_reward``) of
        ``horizon``-step rollouts of the deterministic policy ``act`` from ``init_obs`` (batch, obs_dim), one per
        member: each (members, batch)."""
        m = self.config.members
        obs = jnp.broadcast_to(init_obs, (m, *init_obs.shape))
        with_reward = with_reward and self.reward_net is not None

        Carry = tuple[jax.Array, jax.Array, jax.Array, jax.Array]

        def step(carry: Carry, _: None) -> tuple[Carry, None]:
            s, alive, total, ret = carry
            a = act(s)
            next_s, cost, done = self.predict(state, s, a)
            total = total + alive * cost  # not clipped at 0: the members' errors around a cost of 0 cancel
            if with_reward:
                ret = ret + alive * self.predict_reward(state, s, a)
            return (next_s, alive * (1.0 - done), total, ret), None

        zeros = jnp.zeros(obs.shape[:2], jnp.float32)
        (_, _, total, ret), _ = jax.lax.scan(step, (obs, jnp.ones_like(zeros), zeros, zeros), None, length=horizon)
        return total, (ret if with_reward else None)

    def reading(self, costs: jax.Array) -> jax.Array:
        """The estimate from rollout costs of shape (members, batch), as ``aggregate`` says."""
        if self.config.aggregate == "median":
            return jnp.median(costs.mean(axis=1))
        return costs.mean()

    def refresh(
        self,
        state: CostModelState,
        act: Callable[[jax.Array], jax.Array],
        init_obs: jax.Array,
        horizon: int,
        rounds_done: jax.Array,
        read_reward: jax.Array | bool = False,
    ) -> CostModelState:
        """The state with ``estimate`` and ``spread`` from new rollouts when ``rounds_done`` is a multiple of
        ``rollout_every`` or ``read_reward`` holds, else unchanged; with ``read_reward`` (and the reward head) the
        same rollouts also give ``reward_estimate``, the members' mean episode reward (the reward is summed only
        when asked for: it costs as much again)."""

        def rollout(s: CostModelState, with_reward: bool) -> CostModelState:
            costs, rewards = self.episode_returns(s, act, init_obs, horizon, with_reward)
            s = s.replace(estimate=self.reading(costs), spread=costs.mean(axis=1).std())
            return s if rewards is None else s.replace(reward_estimate=rewards.mean())

        fresh = (rounds_done % self.config.rollout_every == 0) | read_reward
        if self.reward_net is None:
            return jax.lax.cond(fresh, lambda s: rollout(s, False), lambda s: s, state)
        branch = jnp.where(read_reward, 2, jnp.where(fresh, 1, 0))
        return jax.lax.switch(branch, [lambda s: s, lambda s: rollout(s, False), lambda s: rollout(s, True)], state)
