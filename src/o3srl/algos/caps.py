"""CAPS: Constraint-Adaptive Policy Switching (Chemingui, Deshwal, Wei, Fern & Doppa, AAAI 2025), a baseline of
offline safe RL, in its IQL instantiation, CAPS(IQL).

CAPS trains, on the offline data alone and without the cost limit, K policies that share one representation (a
common trunk with one Gaussian head each): head 0 maximises reward, head K − 1 minimises cost, the heads between
trade the two off. At test time it switches between them at every step: each head proposes its (mean) action, the
proposals whose estimated cost-to-go fits the budget left in the episode are *feasible*, and the feasible proposal
with the highest reward value is taken; when none is feasible, the proposal with the lowest cost value is. The cost
limit enters only there, so one trained model serves every κ.

As the authors' code runs it (github.com/janakact/CAPS, ``osrl/algorithms/capsiql.py``, defaults from
``examples/configs/capsiql_configs.py``), one gradient step is, with every term computed from the state before the
step (the authors compute V(s') and the advantages before updating V):

    critics (targets)  Q_r = min(Q_r,1, Q_r,2)^targ(s, a),   Q_c = max(Q_c,1, Q_c,2)^targ(s, a)
    values             L_V = E[ L2_τ(Q_r − V_r(s)) ] + E[ L2_{1−τc}(Q_c − V_c(s)) ]
    critics            L_Q = ½ Σ_i E (Q_r,i(s, a) − r̃ − γ (1 − terminal) V_r(s'))²
                           + ½ Σ_i E (Q_c,i(s, a) − c̃ − γ (1 − terminal) V_c(s'))²
    advantages         A_r = Q_r − V_r(s)   (the reward gained over V_r),   A_c = V_c(s) − Q_c   (the cost saved)
    weights            w_r = min(exp(β A_r), 100),   w_c = min(exp(β_c A_c), 100)
                       head 0: w_r;   head K − 1: w_c;   head k between: w_r + k / ((K − 1) / 2) · w_c
    actor              L_π = (1 / K) Σ_k −E[ w_k log π_k(a | s) ],   π_k(· | s) = N(μ_k(s), I)
    targets            Polyak averaging of both critics at rate τ

where ``L2_τ(u) = |τ − 1(u < 0)| u²`` (IQL's expectile loss), r̃ = ``reward_scale`` · r and c̃ = ``cost_scale`` · c.
The authors write the cost critic as a reward critic of −c (its twins' minimum, its value's upper expectile τc);
read in cost units that is the twins' maximum and the value's *lower* expectile 1 − τc, which is what is written
above: V_c estimates the cost-to-go of the cheaper in-support actions, and A_c > 0 marks an action cheaper than that.

The switching rule at step t of an episode of length T, with cost C_t received so far (``switch``, ``budget_left``):

    B_t = c̃-scale · max(κ − C_t, 0) · (1 − γ^(T − t)) / ((1 − γ) (T − t))
    F   = { k : Q_c(s, a_k) < B_t },   Q_c = max of the cost twins,  Q_r = min of the reward twins (online networks)
    a   = a_argmax_{k ∈ F} Q_r(s, a_k)   if F ≠ ∅,   else a_argmin_k Q_c(s, a_k)

B_t is the authors' conversion of the budget left into the critics' discounted units: the remaining budget spread
evenly over the remaining steps and discounted (at t = 0, OSRL's threshold κ (1 − γ^T) / ((1 − γ) T)).

The authors' defaults for the Bullet tasks (one config for all of them but the episode length, which comes from the
task here): K = 2 heads, 2 × 512 hidden units in every network, learning rates 3e-4 (the actor's on a cosine decay
over 1M steps), batch 512, τ = τc = 0.7, β = β_c = 3, γ = 0.99, Polyak rate 0.005, reward × 0.1, cost × 1, 100k
steps, and a Gaussian actor with a tanh-squashed mean per head whose standard deviation stays 1: the authors keep
the heads' log stds in a plain Python list, which PyTorch neither registers nor trains, so log π_k(a | s) is
−½ ‖a − μ_k(s)‖² − (dim(a) / 2) log 2π and the actor's loss is advantage-weighted regression of the data's actions.
It is implemented here as it runs there (a fixed unit variance), not as the class reads.

Where this differs from the authors' code, on purpose (docs/algorithms/caps.md):
- Terminals, not timeouts, end bootstrapping (OSRL's ``TransitionDataset`` ends it at either), as in every
  algorithm here: a time limit is not a terminal state.
- One Adam for both critics and one for both values (the same update as the authors' two, Adam being elementwise).
- The K heads' output layers are one dense layer with K · dim(a) outputs (the same function class as K layers;
  only the initialisation's fan differs).
- The evaluated policy runs batched on several environment copies at once, each with its own C_t and t (the
  authors run one episode at a time); the rule is the same.
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

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step
from o3srl.algos.iql import expectile_loss
from o3srl.data.sampler import Batch, DeviceData, NormStats, denormalize_action, normalize_obs, sample_batch
from o3srl.errors import ConfigError
from o3srl.nets import Critics, ValueNet
from o3srl.policy import CostTrackingPolicy, as_batch


@dataclass(frozen=True)
class CAPSConfig:
    """CAPS(IQL) hyperparameters (the authors' defaults for the Bullet tasks)."""

    num_policies: int = 2
    """K: policy heads on the shared trunk (head 0 maximises reward, head K − 1 minimises cost, the rest between)."""
    hidden: tuple[int, ...] = (512, 512)
    """Hidden widths of the actor's shared trunk, the critics and the value networks."""
    actor_lr: float = 3e-4
    actor_lr_decay_steps: int = 1_000_000
    """Steps of the actor's cosine learning-rate decay to 0 (the authors': 1M, ten times their 100k steps)."""
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    """τ: expectile of the reward value (upper: the better in-support actions)."""
    cost_expectile: float = 0.7
    """τc: expectile of the value of −cost, as the authors write it (V_c is the 1 − τc expectile of the cost critic:
    the cost of the cheaper in-support actions)."""
    beta: float = 3.0
    """Inverse temperature of the reward head's advantage weights."""
    beta_cost: float = 3.0
    """Inverse temperature of the cost head's advantage weights."""
    max_weight: float = 100.0
    """Ceiling of each advantage weight exp(β A)."""
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 512


class MultiHeadActor(nn.Module):
    """The means of K Gaussian policies on one trunk (the authors' ``MHGaussianPolicy``, whose standard deviations
    stay 1): the trunk's hidden layers, each followed by a ReLU, then one tanh-squashed mean per head. Returns the
    means, (K, ..., dim(a))."""

    hidden: tuple[int, ...]
    act_dim: int
    heads: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        out = nn.Dense(self.heads * self.act_dim)(x).reshape(*x.shape[:-1], self.heads, self.act_dim)
        return jnp.moveaxis(jnp.tanh(out), -2, 0)


# ---------------------------------------------------------------------- the switching rule


def budget_left(
    cost_limit: Any, spent: Any, step: Any, episode_length: int, gamma: float, cost_scale: float = 1.0
) -> Any:
    """B_t: the budget left in an episode, ``max(κ − C_t, 0)``, in the critics' discounted units: spread evenly over
    the T − t steps left and discounted, ``cost_scale · max(κ − C_t, 0) (1 − γ^(T − t)) / ((1 − γ)(T − t))`` (the
    authors' ``disc_cost_limit``). A step past T counts as the last one (T − t ≥ 1). Works on numbers and arrays."""
    left = np.maximum(episode_length - np.asarray(step), 1)
    remaining = np.maximum(np.asarray(cost_limit, np.float64) - np.asarray(spent, np.float64), 0.0)
    spread = (1.0 - gamma**left) / ((1.0 - gamma) * left) if gamma < 1.0 else np.ones_like(left, np.float64)
    return cost_scale * remaining * spread


def switch(q_r: jax.Array, q_c: jax.Array, budget: jax.Array) -> jax.Array:
    """The proposal CAPS takes: among the proposals with ``q_c < budget`` the one with the highest ``q_r``; when
    there is none, the one with the lowest ``q_c``. ``q_r`` and ``q_c`` are (K, ...) over the K proposals, ``budget``
    broadcasts against ``q_c[0]``; returns the chosen index per trailing position (ties: the lowest index)."""
    feasible = q_c < budget
    best_feasible = jnp.argmax(jnp.where(feasible, q_r, -jnp.inf), axis=0)
    return jnp.where(feasible.any(axis=0), best_feasible, jnp.argmin(q_c, axis=0))


SwitchFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
"""``(params, obs (B, obs_dim), budget (B,)) -> (actions (B, dim(a)), chosen heads (B,))``."""


def actor_network(config: CAPSConfig, obs_dim: int, act_dim: int) -> tuple[SwitchFn, Any]:
    """The switching policy as a function of ``{"actor", "critic": {"reward", "cost"}, "limits": [κ, T]}`` and a
    budget per row, and a template of those parameters."""
    actor = MultiHeadActor(tuple(config.hidden), act_dim, config.num_policies)
    critics = Critics(tuple(config.hidden), 2)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))

    def policy(params: Any, o: jax.Array, budget: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = config.num_policies
        proposals = actor.apply(params["actor"], o)  # (K, B, dim(a))
        flat_obs = jnp.broadcast_to(o, (k, *o.shape)).reshape(-1, o.shape[-1])
        flat_act = proposals.reshape(-1, act_dim)
        q_r = critics.apply(params["critic"]["reward"], flat_obs, flat_act).min(axis=0).reshape(k, -1)
        q_c = critics.apply(params["critic"]["cost"], flat_obs, flat_act).max(axis=0).reshape(k, -1)
        chosen = switch(q_r, q_c, budget)
        return jnp.take_along_axis(proposals, chosen[None, :, None], axis=0)[0], chosen

    key = jax.random.PRNGKey(0)
    template = {
        "actor": actor.init(key, obs),
        "critic": {"reward": critics.init(key, obs, act), "cost": critics.init(key, obs, act)},
        "limits": jnp.zeros(2),
    }
    return policy, template


def first_step_fn(config: CAPSConfig, switch_fn: SwitchFn) -> Callable[[Any, jax.Array], jax.Array]:
    """The action at an episode's first step (the whole budget κ left, T steps to go), a function of the
    observation alone."""

    def first(params: Any, obs: jax.Array) -> jax.Array:
        kappa, length = params["limits"][0], params["limits"][1]
        left = jnp.maximum(length, 1.0)
        spread = (1.0 - config.gamma**left) / ((1.0 - config.gamma) * left)
        budget = config.cost_scale * jnp.maximum(kappa, 0.0) * spread
        return switch_fn(params, obs, jnp.full(obs.shape[:-1], budget))[0]

    return first


class SwitchingPolicy(CostTrackingPolicy):
    """CAPS's evaluated policy: switches between its heads at every step by the budget left in each environment
    copy's episode (:func:`switch`, :func:`budget_left`).

    The episode bookkeeping is :class:`~o3srl.policy.CostTrackingPolicy`'s: ``cost_limit`` (default: the κ saved
    with the policy) may be changed between episodes, CAPS adapts to it without retraining. ``last_heads`` holds
    the head each row followed at the last call."""

    def __init__(self, switch_fn: SwitchFn, params: Any, stats: NormStats, gamma: float, cost_scale: float) -> None:
        limits = np.asarray(params["limits"], np.float64)
        super().__init__(params, stats, float(limits[0]))
        self._switch = jax.jit(switch_fn)
        self.gamma, self.cost_scale = gamma, cost_scale
        self.episode_length = int(round(limits[1]))
        self.last_heads = np.zeros(0, np.int64)

    def budget(self, slot: int = 0) -> float:
        """B_t of slot ``slot``'s next step, in the critics' units."""
        return float(
            budget_left(
                self.cost_limit,
                self.spent(slot),
                self.steps(slot),
                self.episode_length,
                self.gamma,
                self.cost_scale,
            )
        )

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        batch, single = as_batch(obs, self.obs_dim)
        self.start_rows(len(batch))
        budgets = np.array([self.budget(i) for i in range(len(batch))], np.float32)
        action, heads = self._switch(
            self.actor_params, jnp.asarray(normalize_obs(batch, self.stats)), jnp.asarray(budgets)
        )
        self.end_step(len(batch))
        self.last_heads = np.asarray(heads)
        action = np.asarray(denormalize_action(np.asarray(action), self.stats), np.float32)
        return action[0] if single else action


def switching_policy(config: CAPSConfig, params: Any, stats: NormStats) -> SwitchingPolicy:
    """The evaluated policy of a CAPS run with output parameters ``params``."""
    switch_fn, _ = actor_network(config, int(stats.obs_mean.shape[0]), int(stats.action_low.shape[0]))
    return SwitchingPolicy(switch_fn, params, stats, config.gamma, config.cost_scale)


# ---------------------------------------------------------------------- training


def head_weights(w_r: jax.Array, w_c: jax.Array, heads: int) -> jax.Array:
    """The advantage weights of the K heads, (K, ...): w_r for head 0, w_c for head K − 1 and
    w_r + k / ((K − 1) / 2) · w_c for head k between (the authors' ``actor_loss``)."""
    rows = []
    for k in range(heads):
        if k == 0:
            rows.append(w_r)
        elif k == heads - 1:
            rows.append(w_c)
        else:
            rows.append(w_r + k / ((heads - 1) / 2) * w_c)
    return jnp.stack(rows)


class CAPSState(flax.struct.PyTreeNode):
    actor: Any
    critic: Any  # {"reward", "cost"}: twin networks each
    critic_target: Any
    value: Any  # {"reward", "cost"}
    actor_opt: Any
    critic_opt: Any
    value_opt: Any
    key: jax.Array


def _check(config: CAPSConfig) -> None:
    """One :class:`ConfigError` naming the first field out of its range."""
    checks = [
        ("num_policies", config.num_policies >= 2, "≥ 2"),
        ("hidden", len(config.hidden) >= 1 and min(config.hidden) >= 1, "a non-empty list of widths ≥ 1"),
        ("actor_lr", config.actor_lr > 0, "> 0"),
        ("actor_lr_decay_steps", config.actor_lr_decay_steps >= 1, "≥ 1"),
        ("critic_lr", config.critic_lr > 0, "> 0"),
        ("value_lr", config.value_lr > 0, "> 0"),
        ("gamma", 0.0 <= config.gamma < 1.0, "in [0, 1)"),
        ("tau", 0.0 < config.tau <= 1.0, "in (0, 1]"),
        ("expectile", 0.0 < config.expectile < 1.0, "in (0, 1)"),
        ("cost_expectile", 0.0 < config.cost_expectile < 1.0, "in (0, 1)"),
        ("beta", config.beta >= 0, "≥ 0"),
        ("beta_cost", config.beta_cost >= 0, "≥ 0"),
        ("max_weight", config.max_weight > 0, "> 0"),
        ("reward_scale", config.reward_scale > 0, "> 0"),
        ("cost_scale", config.cost_scale > 0, "> 0"),
        ("batch_size", config.batch_size >= 1, "≥ 1"),
    ]
    for name, ok, requirement in checks:
        if not ok:
            raise ConfigError(f"caps.{name} must be {requirement}, got {getattr(config, name)!r}")


class CAPS(StepLearner):
    """CAPS(IQL) as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is
    ``steps_per_round`` gradient steps; its output is the switching policy (:class:`SwitchingPolicy`), which
    conditions on the cost received so far in the episode (output kind ``sequence``)."""

    title = "CAPS"

    def __init__(self, config: CAPSConfig, setting: Setting, steps_per_round: int) -> None:
        _check(config)
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.actor = MultiHeadActor(tuple(config.hidden), setting.act_dim, config.num_policies)
        self.critics = Critics(tuple(config.hidden), 2)
        self.value = ValueNet(tuple(config.hidden))
        self.actor_tx = optax.adam(optax.cosine_decay_schedule(config.actor_lr, config.actor_lr_decay_steps))
        self.critic_tx = optax.adam(config.critic_lr)
        self.value_tx = optax.adam(config.value_lr)
        switch_fn, _ = actor_network(config, setting.obs_dim, setting.act_dim)
        self._first = first_step_fn(config, switch_fn)

    def init(self, key: jax.Array) -> CAPSState:
        ks = jax.random.split(key, 6)
        obs = jnp.zeros((1, self.setting.obs_dim))
        act = jnp.zeros((1, self.setting.act_dim))
        actor = self.actor.init(ks[0], obs)
        critic = {"reward": self.critics.init(ks[1], obs, act), "cost": self.critics.init(ks[2], obs, act)}
        value = {"reward": self.value.init(ks[3], obs), "cost": self.value.init(ks[4], obs)}
        return CAPSState(
            actor=actor,
            critic=critic,
            critic_target=critic,
            value=value,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            value_opt=self.value_tx.init(value),
            key=ks[5],
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The action at an episode's first step (the whole of κ left); later steps need the episode's cost so far
        (:class:`SwitchingPolicy`)."""
        return self._first(actor_params, obs)

    # ------------------------------------------------------------------ losses
    def value_loss(
        self, value: Any, q_r: jax.Array, q_c: jax.Array, batch: Batch
    ) -> tuple[jax.Array, tuple[Metrics, jax.Array, jax.Array]]:
        """The expectile losses of V_r and V_c against the target critics; also the advantages A_r, A_c of the
        values before the step."""
        cfg = self.config
        v_r = self.value.apply(value["reward"], batch.obs)
        v_c = self.value.apply(value["cost"], batch.obs)
        loss_r = expectile_loss(q_r - v_r, cfg.expectile)
        loss_c = expectile_loss(q_c - v_c, 1.0 - cfg.cost_expectile)
        adv_r = jax.lax.stop_gradient(q_r - v_r)
        adv_c = jax.lax.stop_gradient(v_c - q_c)
        metrics = {"loss/value_reward": loss_r, "loss/value_cost": loss_c, "v/reward": v_r.mean(), "v/cost": v_c.mean()}
        return loss_r + loss_c, (metrics, adv_r, adv_c)

    def critic_loss(self, critic: Any, value: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        not_done = 1.0 - batch.terminals
        y_r = cfg.reward_scale * batch.rewards + cfg.gamma * not_done * self.value.apply(
            value["reward"], batch.next_obs
        )
        y_c = cfg.cost_scale * batch.costs + cfg.gamma * not_done * self.value.apply(value["cost"], batch.next_obs)
        q_r = self.critics.apply(critic["reward"], batch.obs, batch.actions)
        q_c = self.critics.apply(critic["cost"], batch.obs, batch.actions)
        loss_r = ((q_r - jax.lax.stop_gradient(y_r)) ** 2).mean()
        loss_c = ((q_c - jax.lax.stop_gradient(y_c)) ** 2).mean()
        return loss_r + loss_c, {
            "loss/critic_reward": loss_r,
            "loss/critic_cost": loss_c,
            "q/reward": q_r.mean(),
            "q/cost": q_c.mean(),
        }

    def actor_loss(self, actor: Any, batch: Batch, adv_r: jax.Array, adv_c: jax.Array) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        w_r = jnp.minimum(jnp.exp(cfg.beta * adv_r), cfg.max_weight)
        w_c = jnp.minimum(jnp.exp(cfg.beta_cost * adv_c), cfg.max_weight)
        weights = head_weights(w_r, w_c, cfg.num_policies)  # (K, B)
        means = self.actor.apply(actor, batch.obs)  # (K, B, dim(a))
        log_prob = (-0.5 * (batch.actions - means) ** 2 - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)  # unit variance
        per_head = -(weights * log_prob).mean(axis=1)
        loss = per_head.mean()
        return loss, {
            "loss/actor": loss,
            "loss/actor_reward_head": per_head[0],
            "loss/actor_cost_head": per_head[-1],
            "caps/adv_reward": adv_r.mean(),
            "caps/adv_cost": adv_c.mean(),
            "caps/weight_reward": w_r.mean(),
            "caps/weight_cost": w_c.mean(),
        }

    # ------------------------------------------------------------------ update
    def update(self, state: CAPSState, data: DeviceData) -> tuple[CAPSState, Metrics]:
        """One gradient step of the values, the critics and the actor, every loss read from the state before the
        step (the authors' order), then the critics' targets."""
        key, k_batch = jax.random.split(state.key)
        batch = sample_batch(k_batch, data, self.config.batch_size)
        q_r = self.critics.apply(state.critic_target["reward"], batch.obs, batch.actions).min(axis=0)
        q_c = self.critics.apply(state.critic_target["cost"], batch.obs, batch.actions).max(axis=0)

        (_, (v_metrics, adv_r, adv_c)), v_grads = jax.value_and_grad(self.value_loss, has_aux=True)(
            state.value, q_r, q_c, batch
        )
        (_, c_metrics), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(state.critic, state.value, batch)
        (_, a_metrics), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(state.actor, batch, adv_r, adv_c)

        value, value_opt = adam_step(self.value_tx, state.value, state.value_opt, v_grads)
        critic, critic_opt = adam_step(self.critic_tx, state.critic, state.critic_opt, c_grads)
        actor, actor_opt = adam_step(self.actor_tx, state.actor, state.actor_opt, a_grads)
        state = state.replace(
            actor=actor,
            critic=critic,
            critic_target=optax.incremental_update(critic, state.critic_target, self.config.tau),
            value=value,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            value_opt=value_opt,
            key=key,
        )
        return state, {**v_metrics, **c_metrics, **a_metrics}

    def output(self, state: CAPSState) -> tuple[Any, OutputKind]:
        limits = jnp.asarray([self.setting.cost_limit, self.setting.episode_length], jnp.float32)
        return {"actor": state.actor, "critic": state.critic, "limits": limits}, "sequence"

    def run_info(self) -> dict[str, Any]:
        start = budget_left(
            self.setting.cost_limit, 0.0, 0, self.setting.episode_length, self.config.gamma, self.config.cost_scale
        )
        return {
            "caps_policies": self.config.num_policies,
            "caps_cost_limit": self.setting.cost_limit,
            "caps_episode_length": self.setting.episode_length,
            "caps_budget_start": float(start),
        }
