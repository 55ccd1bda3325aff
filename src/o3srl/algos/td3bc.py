"""TD3+BC (Fujimoto & Gu, 2021) with twin reward critics and twin cost critics.

The oracle of O3SRL. It learns Q_r and Q_c separately, so the Q-function of the shaped reward
``r − λ (c − b)`` is available for every λ by linearity (``o3srl.transforms.shaped_value``); λ is an input of
the update, so one network set is warm-started across λ-arms.

Losses (normalised observations, actions in [−1, 1], rewards scaled by ``reward_scale``, costs by ``cost_scale``):
    a' = clip(π_targ(s') + clip(N(0, σ), −c, c), −1, 1)
    y_r = r + γ (1 − terminal) min_i Q_r,i^targ(s', a')
    y_c = c + γ (1 − terminal) mean_i Q_c,i^targ(s', π_targ(s'))
          (by default the twins' mean at the unsmoothed target action: an unbiased cost of the deterministic policy;
           ``cost_target="max"`` and ``cost_target_noise=True`` give the pessimistic variants)
    Q_c is read through max(Q_c, 0) in y_c, in L_actor and in the cost estimate (``cost_floor``, on by default)
    Critics: LayerNorm after every hidden layer (``critic_layer_norm``, on by default)
    L_critic = Σ_i (Q_r,i(s, a) − y_r)² + (Q_c,i(s, a) − y_c)²
    Q_λ(s, a) = Q_r,1(s, a) − λ (Q_c,1(s, a) − b / (1 − γ))
    L_actor = −α / mean|Q_λ| · mean Q_λ(s, π(s)) + mean (π(s) − a)²        (every ``policy_delay`` steps;
              ``q_normalizer="reward"``: divided by mean|Q_r| instead, which makes the update linear in λ)
Timeouts are not terminals: both critics bootstrap through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from o3srl.algos.base import Metrics, twin_critic_loss
from o3srl.data.sampler import Batch
from o3srl.nets import Actor, Critics
from o3srl.transforms import shaped_value


@dataclass(frozen=True)
class TD3BCConfig:
    """TD3+BC hyperparameters (defaults from the TD3+BC paper; reward/cost scales as in OSRL)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target networks."""
    alpha: float = 2.5
    """Weight of the Q term against behaviour cloning."""
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 256
    cost_target: Literal["max", "mean"] = "mean"
    """How the twin cost critics combine in the cost target: "max" (pessimistic) or "mean"."""
    cost_target_noise: bool = False
    """Apply TD3's target-policy smoothing noise in the cost target too (biases the cost of a deterministic
    policy upwards near a cost boundary)."""
    critic_layer_norm: bool = True
    """LayerNorm after every hidden layer of the reward and cost critics (as in ReBRAC). On by default: with plain
    critics the unconstrained oracle (λ = 0) diverged after ≈ 80k steps on BallRun in 3 of 3 seeds (Q_c at 20× the
    largest possible discounted cost) and its last iterate scored 0.14 normalized reward; with LayerNorm the critics
    stayed within the data's bounds and it scored 0.73–0.88 (see docs/results/td3bc_layer_norm.md)."""
    q_normalizer: Literal["shaped", "reward"] = "shaped"
    """What the Q term of the actor loss is divided by: the mean |Q_λ| of the shaped value (TD3+BC's own rule applied
    to the shaped reward), or the mean |Q_r| of the reward critic, which does not depend on λ: the actor's update is
    then linear in λ, so a run whose λ switches between arms (O3SRL) trains the policy of the mean λ."""
    cost_floor: bool = True
    """Read the cost critics through max(Q_c, 0) in the cost target, the actor loss and the policy's cost estimate:
    costs are non-negative, so a negative Q_c is extrapolation error that the actor could otherwise exploit. On by
    default: without it, 100k-step O3SRL runs on BallRun drove Q_c at the policy's actions to −89 (the dataset's
    actions: +10), the arm feedback then read the policy as safe, and the last iterate ran unsafe (cost 70 at
    κ = 5); see docs/algorithms/o3srl.md, "Choosing the defaults"."""


class TD3BCState(flax.struct.PyTreeNode):
    actor: Any
    actor_target: Any
    critic: Any  # {"reward": params, "cost": params}
    critic_target: Any
    actor_opt: Any
    critic_opt: Any
    step: jax.Array


class TD3BC:
    """Pure functions of :class:`TD3BCState`; the object only holds the static config and modules."""

    name = "td3bc"

    def __init__(self, config: TD3BCConfig, obs_dim: int, act_dim: int) -> None:
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.actor = Actor(config.hidden, act_dim)
        self.critic = Critics(config.hidden, 2, config.critic_layer_norm)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)

    def init(self, key: jax.Array) -> TD3BCState:
        k_actor, k_r, k_c = jax.random.split(key, 3)
        obs = jnp.zeros((1, self.obs_dim))
        act = jnp.zeros((1, self.act_dim))
        actor = self.actor.init(k_actor, obs)
        critic = {"reward": self.critic.init(k_r, obs, act), "cost": self.critic.init(k_c, obs, act)}
        return TD3BCState(
            actor=actor,
            actor_target=actor,
            critic=critic,
            critic_target=critic,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            step=jnp.zeros((), jnp.int32),
        )

    # ------------------------------------------------------------------ acting and values
    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """Deterministic action in [−1, 1] for normalised observations."""
        return self.actor.apply(actor_params, obs)

    def policy_values(
        self, state: TD3BCState, obs: jax.Array, cost_reduce: str = "mean"
    ) -> tuple[jax.Array, jax.Array]:
        """(Q_r, Q_c) of the current policy at ``obs``, in the critics' (scaled) units: Q_r averaged over the twins,
        Q_c their mean or (``cost_reduce="max"``, pessimistic) their larger value."""
        a = self.act(state.actor, obs)
        q_r = self.critic.apply(state.critic["reward"], obs, a).mean(axis=0)
        q_cs = self.critic.apply(state.critic["cost"], obs, a)
        q_c = self._floor(q_cs.max(axis=0) if cost_reduce == "max" else q_cs.mean(axis=0))
        return q_r, q_c

    def _floor(self, q_c: jax.Array) -> jax.Array:
        return jnp.maximum(q_c, 0.0) if self.config.cost_floor else q_c

    # ------------------------------------------------------------------ losses
    def critic_loss(self, critic: Any, state: TD3BCState, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        noise = jnp.clip(
            cfg.policy_noise * jax.random.normal(key, batch.actions.shape), -cfg.noise_clip, cfg.noise_clip
        )
        target_a = self.actor.apply(state.actor_target, batch.next_obs)
        next_a = jnp.clip(target_a + noise, -1.0, 1.0)
        next_qr = self.critic.apply(state.critic_target["reward"], batch.next_obs, next_a).min(axis=0)
        cost_a = next_a if cfg.cost_target_noise else target_a
        next_qcs = self.critic.apply(state.critic_target["cost"], batch.next_obs, cost_a)
        next_qc = self._floor(next_qcs.max(axis=0) if cfg.cost_target == "max" else next_qcs.mean(axis=0))
        q_r = self.critic.apply(critic["reward"], batch.obs, batch.actions)
        q_c = self.critic.apply(critic["cost"], batch.obs, batch.actions)
        return twin_critic_loss(q_r, q_c, batch, next_qr, next_qc, cfg.reward_scale, cfg.cost_scale, cfg.gamma)

    def actor_loss(
        self, actor: Any, critic: Any, batch: Batch, lam: jax.Array, budget_step: float
    ) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        pi = self.actor.apply(actor, batch.obs)
        q_r = self.critic.apply(critic["reward"], batch.obs, pi)[0]
        q_c = self._floor(self.critic.apply(critic["cost"], batch.obs, pi)[0])
        q_lam = shaped_value(q_r, q_c, lam, cfg.cost_scale * budget_step, cfg.gamma)
        scale = jnp.abs(q_r).mean() if cfg.q_normalizer == "reward" else jnp.abs(q_lam).mean()
        weight = jax.lax.stop_gradient(cfg.alpha / (scale + 1e-6))
        bc = ((pi - batch.actions) ** 2).mean()
        return -weight * q_lam.mean() + bc, {"loss/actor": -q_lam.mean(), "loss/bc": bc}

    # ------------------------------------------------------------------ update
    def update(
        self, state: TD3BCState, batch: Batch, lam: jax.Array, budget_step: float, key: jax.Array
    ) -> tuple[TD3BCState, Metrics]:
        """One gradient step of the critics and, every ``policy_delay`` steps, of the actor and targets."""
        cfg = self.config
        (_, c_metrics), grads = jax.value_and_grad(self.critic_loss, has_aux=True)(state.critic, state, batch, key)
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, updates)
        state = state.replace(critic=critic, critic_opt=critic_opt)

        def actor_step(s: TD3BCState) -> tuple[TD3BCState, Metrics]:
            (_, a_metrics), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
                s.actor, s.critic, batch, lam, budget_step
            )
            a_updates, actor_opt = self.actor_tx.update(a_grads, s.actor_opt, s.actor)
            actor = optax.apply_updates(s.actor, a_updates)
            s = s.replace(
                actor=actor,
                actor_opt=actor_opt,
                actor_target=optax.incremental_update(actor, s.actor_target, cfg.tau),
                critic_target=optax.incremental_update(s.critic, s.critic_target, cfg.tau),
            )
            return s, a_metrics

        def skip(s: TD3BCState) -> tuple[TD3BCState, Metrics]:
            nan = jnp.array(jnp.nan, jnp.float32)
            return s, {"loss/actor": nan, "loss/bc": nan}

        state, a_metrics = jax.lax.cond(state.step % cfg.policy_delay == 0, actor_step, skip, state)
        return state.replace(step=state.step + 1), {**c_metrics, **a_metrics}
