"""CPQ: Constraints Penalized Q-learning (Xu, Zhan & Zhu, AAAI 2022), a baseline of offline safe RL.

CPQ keeps the policy away from actions whose cost it cannot trust: a VAE fitted to the data's actions marks the
policy's sampled actions that look out of distribution (OOD), the cost critic is pushed up on them, and the reward
critic and the actor ignore every action whose cost value exceeds the threshold. As OSRL runs it
(``osrl/algorithms/cpq.py``, defaults from ``examples/configs/cpq_configs.py``), one gradient step is, in order:

    VAE:          min  E ‖D(s, z) − a‖² / dim(a) + β KL(q(z | s, a) ‖ N(0, I)),   z = μ(s, a) + σ(s, a) ε
    reward critic y_r = r + γ (1 − terminal) 1[Q_c^targ(s', a') ≤ B] Q_r^targ(s', a'),    a' ~ π(s')
    cost critic   y_c = c + γ (1 − terminal) Q_c^targ(s', a')
                  L_c = Σ_i E (Q_c,i(s, a) − y_c)² − α (E_ν Q_c(s, ã) − χ B),   ã ~ π(s), ν = the OOD ones
                  log α ← clip(log α + η_α α (χ B − E_ν Q_c), −5, 5)
    actor         min  −E 1[Q_c(s, ã) ≤ B] Q_r(s, ã),   ã ~ π(s) (reparameterised)
    targets       Polyak averaging of both critics at rate τ

B is the cost limit as a threshold on the discounted cost value (``o3srl.transforms.make_budget``, OSRL's ``q_thres``
under the default ``osrl`` convention); χ = ``qc_scalar``. Q over an ensemble is its minimum (OSRL's
``EnsembleQCritic.predict``). E_ν Q_c is OSRL's ``qc_ood``: for ``sample_actions`` draws ã per state, the VAE
encoder's KL(q(z | s, ã) ‖ N(0, I)); the draws whose KL is at or above the batch's 75th percentile count as OOD, and
E_ν Q_c is the mean over draws and states of 1[OOD] Q_c(s, ã). The policy is a tanh-squashed Gaussian; the evaluated
policy is its mean action, tanh(μ(s)). OSRL's defaults: actor and critics 2 × 256, VAE 2 × 400 with a latent of
2 dim(a), 10 sampled actions, β = 0.5, χ = 1.5, two reward and two cost critics, learning rates 1e-4 (actor, α) and
1e-3 (critics, VAE), batch 512, reward × 0.1, cost × 1, γ = 0.99, τ = 0.005, 100k steps.

Where this differs from OSRL's code, on purpose (docs/algorithms/cpq.md):
- The OOD penalty trains the cost critic. OSRL computes E_ν Q_c with the target cost critic inside ``no_grad``, so
  the penalty is a constant in its loss and only α moves; the method's paper pushes the cost critic itself up on
  OOD actions. Here E_ν Q_c is read from the current cost critics (the mean over the ensemble) with gradient.
- The sampled actions ã are squashed by tanh before the VAE and the cost critic read them (OSRL samples the
  pre-tanh Gaussian there, values outside the action space).
- Terminals, not timeouts, end bootstrapping, in both critics: OSRL's reward critic stops at timeouts too, and its
  cost critic ignores terminals altogether.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step
from o3srl.data.sampler import Batch, DeviceData, sample_batch
from o3srl.errors import ConfigError
from o3srl.nets import MLP, VAE, Critics, gaussian_kl, vae_loss

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""The Gaussian policy's log standard deviation is clipped to this range (OSRL's, SAC's)."""
OOD_QUANTILE = 0.75
"""Sampled actions whose VAE KL is at or above this quantile of the batch's count as out of distribution."""


@dataclass(frozen=True)
class CPQConfig:
    """CPQ hyperparameters (OSRL's CPQ defaults for the Bullet tasks)."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    vae_hidden: int = 400
    """Width of the VAE's two hidden layers (encoder and decoder); its latent has 2 dim(a) dimensions."""
    sample_actions: int = 10
    """Actions drawn from the policy per state to look for OOD ones."""
    beta: float = 0.5
    """Weight of the VAE's KL term."""
    qc_scalar: float = 1.5
    """χ: the OOD actions' cost value is pushed towards χ B, above the threshold B that the actor respects."""
    num_q: int = 2
    num_qc: int = 2
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-4
    vae_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 512


class SquashedGaussianActor(nn.Module):
    """A Gaussian policy whose sample is squashed by tanh into [−1, 1]; returns the pre-tanh mean and log std."""

    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden, 2 * self.act_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def ood_cost(kl: jax.Array, q_c: jax.Array, quantile: float = OOD_QUANTILE) -> jax.Array:
    """E_ν Q_c: the mean over all draws of 1[KL ≥ the draws' ``quantile``] Q_c (arrays of one shape)."""
    return (jnp.where(kl >= jnp.quantile(kl, quantile), 1.0, 0.0) * q_c).mean()


def actor_network(config: CPQConfig, obs_dim: int, act_dim: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The evaluated policy tanh(μ(s)) and a template of its parameters (what a saved policy is read into)."""
    net = SquashedGaussianActor(tuple(config.actor_hidden), act_dim)

    def act(params: Any, obs: jax.Array) -> jax.Array:
        return jnp.tanh(net.apply(params, obs)[0])

    return act, net.init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)))


class CPQState(flax.struct.PyTreeNode):
    actor: Any
    critic: Any  # {"reward": params, "cost": params}
    critic_target: Any
    vae: Any
    actor_opt: Any
    critic_opt: Any
    vae_opt: Any
    log_alpha: jax.Array
    key: jax.Array


class CPQ(StepLearner):
    """CPQ as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is ``steps_per_round``
    gradient steps, so its runs log, checkpoint and resume like O3SRL's."""

    title = "CPQ"

    def __init__(self, config: CPQConfig, setting: Setting, steps_per_round: int) -> None:
        widths = (*config.actor_hidden, *config.critic_hidden, config.vae_hidden, config.batch_size)
        if min(widths) < 1 or config.sample_actions < 1 or config.num_q < 1 or config.num_qc < 1:
            raise ConfigError(
                "cpq: hidden widths, batch_size, sample_actions, num_q and num_qc must be ≥ 1, got "
                f"{config.actor_hidden}, {config.critic_hidden}, {config.vae_hidden}, {config.batch_size}, "
                f"{config.sample_actions}, {config.num_q} and {config.num_qc}"
            )
        if not 0.0 <= config.gamma < 1.0 or not 0.0 < config.tau <= 1.0:
            raise ConfigError(f"cpq: gamma must be in [0, 1) and tau in (0, 1], got {config.gamma} and {config.tau}")
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.budget = setting.budget(config)
        self.threshold = self.budget.value  # B, in the critics' (scaled) units
        self.actor = SquashedGaussianActor(tuple(config.actor_hidden), setting.act_dim)
        self.q_r = Critics(tuple(config.critic_hidden), config.num_q)
        self.q_c = Critics(tuple(config.critic_hidden), config.num_qc)
        self.vae = VAE(config.vae_hidden, setting.act_dim, 2 * setting.act_dim)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)
        self.vae_tx = optax.adam(config.vae_lr)
        self._act, _ = actor_network(config, setting.obs_dim, setting.act_dim)

    def init(self, key: jax.Array) -> CPQState:
        k_actor, k_r, k_c, k_vae, k_state = jax.random.split(key, 5)
        obs = jnp.zeros((1, self.setting.obs_dim))
        act = jnp.zeros((1, self.setting.act_dim))
        actor = self.actor.init(k_actor, obs)
        critic = {"reward": self.q_r.init(k_r, obs, act), "cost": self.q_c.init(k_c, obs, act)}
        vae = self.vae.init(k_vae, obs, act, jax.random.PRNGKey(0))
        return CPQState(
            actor=actor,
            critic=critic,
            critic_target=critic,
            vae=vae,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            vae_opt=self.vae_tx.init(vae),
            log_alpha=jnp.zeros((), jnp.float32),
            key=k_state,
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The evaluated policy: the mean action tanh(μ(s))."""
        return self._act(actor_params, obs)

    def sample(self, actor_params: Any, obs: jax.Array, key: jax.Array, num: int | None = None) -> jax.Array:
        """Reparameterised draws tanh(μ + σ ε) from the policy: shape (batch, act) or, with ``num``, (num, batch,
        act)."""
        mean, log_std = self.actor.apply(actor_params, obs)
        shape = mean.shape if num is None else (num, *mean.shape)
        return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, shape))

    # ------------------------------------------------------------------ losses
    def critic_loss(
        self, critic: Any, state: CPQState, vae: Any, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        k_next, k_ood = jax.random.split(key)
        not_done = 1.0 - batch.terminals
        next_a = self.sample(state.actor, batch.next_obs, k_next)
        next_qr = self.q_r.apply(state.critic_target["reward"], batch.next_obs, next_a).min(axis=0)
        next_qc = self.q_c.apply(state.critic_target["cost"], batch.next_obs, next_a).min(axis=0)
        allowed = jnp.where(next_qc <= self.threshold, 1.0, 0.0)
        y_r = jax.lax.stop_gradient(cfg.reward_scale * batch.rewards + cfg.gamma * not_done * allowed * next_qr)
        y_c = jax.lax.stop_gradient(cfg.cost_scale * batch.costs + cfg.gamma * not_done * next_qc)
        q_r = self.q_r.apply(critic["reward"], batch.obs, batch.actions)
        q_c = self.q_c.apply(critic["cost"], batch.obs, batch.actions)
        loss_r = ((q_r - y_r) ** 2).mean(axis=1).sum()
        loss_c = ((q_c - y_c) ** 2).mean(axis=1).sum()
        # The OOD penalty: the policy's draws that the VAE finds unlike the data, read by the current cost critics.
        n, b = cfg.sample_actions, batch.obs.shape[0]
        drawn = jax.lax.stop_gradient(self.sample(state.actor, batch.obs, k_ood, n)).reshape(n * b, -1)
        obs = jnp.tile(batch.obs, (n, 1))
        mean, std = self.vae.apply(vae, obs, drawn, method=VAE.encode)
        kl = jax.lax.stop_gradient(gaussian_kl(mean, std))
        q_ood = ood_cost(kl, self.q_c.apply(critic["cost"], obs, drawn).mean(axis=0))
        alpha = jnp.exp(state.log_alpha)
        penalty = -alpha * (q_ood - cfg.qc_scalar * self.threshold)
        return loss_r + loss_c + penalty, {
            "loss/critic_reward": loss_r,
            "loss/critic_cost": loss_c,
            "q/reward": q_r.mean(),
            "q/cost": q_c.mean(),
            "cpq/ood_cost": q_ood,
        }

    def actor_loss(self, actor: Any, critic: Any, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        a = self.sample(actor, batch.obs, key)
        q_r = self.q_r.apply(critic["reward"], batch.obs, a).min(axis=0)
        q_c = self.q_c.apply(critic["cost"], batch.obs, a).min(axis=0)
        allowed = jnp.where(q_c <= self.threshold, 1.0, 0.0)
        return -(allowed * q_r).mean(), {"cpq/allowed_fraction": allowed.mean(), "q/policy_cost": q_c.mean()}

    # ------------------------------------------------------------------ update
    def update(self, state: CPQState, data: DeviceData) -> tuple[CPQState, Metrics]:
        """One gradient step of the VAE, both critics (and α), the actor, and the critics' targets."""
        cfg = self.config
        key, k_batch, k_vae, k_critic, k_actor = jax.random.split(state.key, 5)
        batch = sample_batch(k_batch, data, cfg.batch_size)
        vae_value, vae_grads = jax.value_and_grad(vae_loss)(
            state.vae, self.vae, batch.obs, batch.actions, k_vae, cfg.beta
        )
        vae, vae_opt = adam_step(self.vae_tx, state.vae, state.vae_opt, vae_grads)

        (_, c_metrics), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            state.critic, state, vae, batch, k_critic
        )
        critic, critic_opt = adam_step(self.critic_tx, state.critic, state.critic_opt, c_grads)
        alpha = jnp.exp(state.log_alpha)
        log_alpha = jnp.clip(
            state.log_alpha + cfg.alpha_lr * alpha * (cfg.qc_scalar * self.threshold - c_metrics["cpq/ood_cost"]),
            -5.0,
            5.0,
        )

        (a_value, a_metrics), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            state.actor, critic, batch, k_actor
        )
        actor, actor_opt = adam_step(self.actor_tx, state.actor, state.actor_opt, a_grads)
        state = state.replace(
            actor=actor,
            critic=critic,
            critic_target=optax.incremental_update(critic, state.critic_target, cfg.tau),
            vae=vae,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            vae_opt=vae_opt,
            log_alpha=log_alpha,
            key=key,
        )
        metrics = {**c_metrics, **a_metrics, "loss/vae": vae_value, "loss/actor": a_value, "cpq/alpha": alpha}
        return state, metrics

    def output(self, state: CPQState) -> tuple[Any, OutputKind]:
        return state.actor, "single"

    def run_info(self) -> dict[str, Any]:
        return {
            "budget_per_step": self.budget.per_step,
            "budget_value": self.budget.reported_value,
            "cpq_threshold": self.threshold,
        }
