"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2022) with reward and cost critics.

The alternative O3SRL oracle. Reward and cost each get twin Q-networks and a state-value network; λ enters only
through the advantage that weights policy extraction, so one network set serves every λ:
    L_V_r = E[ L2_τ(min_i Q_r,i^targ(s, a) − V_r(s)) ]               (upper expectile τ: best in-support action)
    L_V_c = E[ L2_τc(max_i Q_c,i^targ(s, a) − V_c(s)) ]              (τc = 0.5 by default: the data's mean cost-to-go)
    L_Q   = Σ_i (Q_r,i(s, a) − r − γ (1 − terminal) V_r(s'))² + (Q_c,i(s, a) − c − γ (1 − terminal) V_c(s'))²
    A_λ   = (Q_r − V_r) − λ (Q_c − V_c)       = the advantage of the shaped reward r − λ (c − b)
    L_π   = −E[ min(exp(β A_λ), 100) · log π(a | s) ]
where ``L2_τ(u) = |τ − 1(u < 0)| u²``. The budget term of the shaped reward is a constant per step, so it cancels in
the advantage. Timeouts are not terminals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from o3srl.algos.base import Metrics, twin_critic_loss
from o3srl.data.sampler import Batch
from o3srl.nets import Critics, GaussianActor, ValueNet


@dataclass(frozen=True)
class IQLConfig:
    """IQL hyperparameters (defaults from the IQL paper's locomotion settings; scales as in OSRL)."""

    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    """Expectile of the reward value."""
    cost_expectile: float = 0.5
    """Expectile of the cost value (0.5: the mean over in-support actions; larger is more conservative)."""
    temperature: float = 3.0
    """Inverse temperature β of advantage-weighted regression."""
    max_weight: float = 100.0
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 256


class IQLState(flax.struct.PyTreeNode):
    actor: Any
    critic: Any  # {"reward", "cost"}
    critic_target: Any
    value: Any  # {"reward", "cost"}
    actor_opt: Any
    critic_opt: Any
    value_opt: Any
    step: jax.Array


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """``|τ − 1(u < 0)| u²`` averaged: the asymmetric L2 loss of IQL."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


class IQL:
    name = "iql"

    def __init__(self, config: IQLConfig, obs_dim: int, act_dim: int) -> None:
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.actor = GaussianActor(config.hidden, act_dim)
        self.critic = Critics(config.hidden, 2)
        self.value = ValueNet(config.hidden)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)
        self.value_tx = optax.adam(config.value_lr)

    def init(self, key: jax.Array) -> IQLState:
        ks = jax.random.split(key, 5)
        obs = jnp.zeros((1, self.obs_dim))
        act = jnp.zeros((1, self.act_dim))
        actor = self.actor.init(ks[0], obs)
        critic = {"reward": self.critic.init(ks[1], obs, act), "cost": self.critic.init(ks[2], obs, act)}
        value = {"reward": self.value.init(ks[3], obs), "cost": self.value.init(ks[4], obs)}
        return IQLState(
            actor=actor,
            critic=critic,
            critic_target=critic,
            value=value,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            value_opt=self.value_tx.init(value),
            step=jnp.zeros((), jnp.int32),
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The mean action (deterministic evaluation, as in IQL)."""
        return self.actor.apply(actor_params, obs)[0]

    def policy_values(self, state: IQLState, obs: jax.Array, cost_reduce: str = "mean") -> tuple[jax.Array, jax.Array]:
        """(Q_r, Q_c) at the policy's mean action; Q_c the twins' mean or (``cost_reduce="max"``) their larger value."""
        a = self.act(state.actor, obs)
        q_r = self.critic.apply(state.critic["reward"], obs, a).mean(axis=0)
        q_cs = self.critic.apply(state.critic["cost"], obs, a)
        q_c = q_cs.max(axis=0) if cost_reduce == "max" else q_cs.mean(axis=0)
        return q_r, q_c

    def value_loss(self, value: Any, state: IQLState, batch: Batch) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        q_r = self.critic.apply(state.critic_target["reward"], batch.obs, batch.actions).min(axis=0)
        q_c = self.critic.apply(state.critic_target["cost"], batch.obs, batch.actions).max(axis=0)
        v_r = self.value.apply(value["reward"], batch.obs)
        v_c = self.value.apply(value["cost"], batch.obs)
        loss_r = expectile_loss(jax.lax.stop_gradient(q_r) - v_r, cfg.expectile)
        loss_c = expectile_loss(jax.lax.stop_gradient(q_c) - v_c, cfg.cost_expectile)
        return loss_r + loss_c, {
            "loss/value_reward": loss_r,
            "loss/value_cost": loss_c,
            "v/reward": v_r.mean(),
            "v/cost": v_c.mean(),
        }

    def critic_loss(self, critic: Any, value: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        next_r = self.value.apply(value["reward"], batch.next_obs)
        next_c = self.value.apply(value["cost"], batch.next_obs)
        q_r = self.critic.apply(critic["reward"], batch.obs, batch.actions)
        q_c = self.critic.apply(critic["cost"], batch.obs, batch.actions)
        return twin_critic_loss(q_r, q_c, batch, next_r, next_c, cfg.reward_scale, cfg.cost_scale, cfg.gamma)

    def actor_loss(self, actor: Any, state: IQLState, batch: Batch, lam: jax.Array) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        q_r = self.critic.apply(state.critic_target["reward"], batch.obs, batch.actions).min(axis=0)
        q_c = self.critic.apply(state.critic_target["cost"], batch.obs, batch.actions).max(axis=0)
        adv = (q_r - self.value.apply(state.value["reward"], batch.obs)) - lam * (
            q_c - self.value.apply(state.value["cost"], batch.obs)
        )
        weight = jax.lax.stop_gradient(jnp.minimum(jnp.exp(cfg.temperature * adv), cfg.max_weight))
        mean, log_std = self.actor.apply(actor, batch.obs)
        # Gaussian log-likelihood of the (normalised) dataset action under the policy.
        log_prob = (-0.5 * ((batch.actions - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)).sum(
            -1
        )
        return -(weight * log_prob).mean(), {
            "loss/actor": -(weight * log_prob).mean(),
            "iql/adv": adv.mean(),
            "iql/weight": weight.mean(),
        }

    def update(
        self, state: IQLState, batch: Batch, lam: jax.Array, budget_step: float, key: jax.Array
    ) -> tuple[IQLState, Metrics]:
        """One IQL step: value, then actor (with the values before the critic step), then critics and targets."""
        del budget_step, key  # the budget cancels in the advantage; IQL's update is deterministic given the batch
        (_, v_metrics), v_grads = jax.value_and_grad(self.value_loss, has_aux=True)(state.value, state, batch)
        v_updates, value_opt = self.value_tx.update(v_grads, state.value_opt, state.value)
        value = optax.apply_updates(state.value, v_updates)
        state = state.replace(value=value, value_opt=value_opt)

        (_, a_metrics), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(state.actor, state, batch, lam)
        a_updates, actor_opt = self.actor_tx.update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, a_updates)

        (_, c_metrics), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(state.critic, value, batch)
        c_updates, critic_opt = self.critic_tx.update(c_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, c_updates)
        state = state.replace(
            actor=actor,
            actor_opt=actor_opt,
            critic=critic,
            critic_opt=critic_opt,
            critic_target=optax.incremental_update(critic, state.critic_target, self.config.tau),
            step=state.step + 1,
        )
        return state, {**v_metrics, **a_metrics, **c_metrics}
