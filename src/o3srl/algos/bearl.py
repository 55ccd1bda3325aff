"""BEAR-Lag: bootstrapping error accumulation reduction (Kumar, Fu, Tucker & Levine, 2019, "Stabilizing Off-Policy
Q-Learning via Bootstrapping Error Reduction") with a PID-Lagrangian cost penalty, a baseline of offline safe RL.

BEAR keeps the policy on the support of the data's actions: a conditional VAE models the behaviour policy, and the
maximum mean discrepancy (MMD) between the policy's actions and the VAE's is held below ε by a multiplier α that
dual ascent learns. The Lagrangian version adds ensemble cost critics and penalises the actor's cost value above the
threshold with a multiplier set by a PID controller (Stooke, Achiam & Abbeel, 2020; the same controller as
BCQ-Lag's). As OSRL runs it (``osrl/algorithms/bearl.py``, defaults from ``examples/configs/bearl_configs.py`` and
``examples/train/train_bearl.py``), one gradient step is, in order:

    VAE:         min  E ‖D(s, z) − a‖² / dim(a) + β KL(q(z | s, a) ‖ N(0, I)),   z = μ_q(s, a) + σ_q(s, a) ε
    critics      y = r + γ (1 − terminal) max_{j ≤ n} [λ min(Q1, Q2) + (1 − λ) max(Q1, Q2)]^targ(s', a'_j),
                 a'_j = tanh(μ^targ(s') + σ^targ(s') ε_j)   (n = ``sample_actions`` draws of the target actor;
                 the cost critics alike, with c for r)
    draws        u_i = μ(s) + σ(s) ε_i, the actor's pre-tanh draws, and v_i = D̃(s, z_i), z_i ~ N(0, I) clipped to
                 [−0.5, 0.5], the VAE decoder's pre-tanh outputs (i ≤ m = ``mmd_samples``)
    MMD          M(s) = sqrt(mean_{i,i'} k(v_i, v_i') + mean_{i,i'} k(u_i, u_i') − 2 mean_{i,i'} k(v_i, u_i') + 1e-6)
                 k(x, y) = exp(−‖x − y‖²₂ / (2σ_k)) (gaussian) or exp(−‖x − y‖₁ / (2σ_k)) (laplacian)
    multiplier   e = E min(Qc1, Qc2)(s, tanh(u_1)) − B;  I ← max(I + e, 0);  ν = max(K_P max(e, 0) + K_I I
                 + K_D max(e − e_prev, 0), 0)
    actor        min  E [−w_t min(Q1, Q2)(s, tanh(u_1)) + α (M(s) − ε)] + ν E (min(Qc1, Qc2)(s, tanh(u_1)) − B),
                 α = exp(log α), w_t = 1[t ≥ ``warmup``] (before it the actor only answers the MMD and the cost)
    α            log α ← clip(log α + η_α α (E M(s) − ε), −5, 5)   (with the M(s) of the actor before its step)
    targets      Polyak averaging of the actor and all critics at rate τ

Q1 and Q2 are each the minimum over ``num_q`` networks (``num_qc`` for the cost critics; OSRL's
``EnsembleDoubleQCritic``). B is the cost limit as a threshold on the discounted cost value
(``o3srl.transforms.make_budget``; OSRL's ``qc_thres`` under the default ``osrl`` convention). Note that σ_k divides
the squared distance itself (not its square), as in OSRL's and BEAR's code. OSRL's defaults: actor and critics 2 × 256
(ReLU), VAE 2 × 400 with a latent of 2 dim(a), 10 target draws, 10 MMD samples, the gaussian kernel with σ_k = 50,
ε = 0.05, η_α = 1e-3 (log α from 0), no warm-up, λ = 0.75, β = 0.5, PID gains (0.1, 0.003, 0.001), two networks per
critic head, learning rates 1e-3, batch 512, reward × 0.1, cost × 1, γ = 0.99, τ = 0.005 (and 300k steps; here
``--steps``, 100k by default as for every algorithm).

The evaluated policy is deterministic: tanh(μ(s)), the mean of the Gaussian squashed, as OSRL evaluates it
(``act(obs, deterministic=True)``).

Where this differs from OSRL's code, on purpose (docs/algorithms/bearl.md):
- Terminals, not timeouts, end bootstrapping, in both critics (OSRL's reward critic stops at timeouts too, and its
  cost critic ignores terminals).
- One Adam for the reward and cost critics (the same update as OSRL's two, Adam being elementwise).
- The PID controller's state (the last error and the integral), log α and the step count live in the state pytree,
  so a checkpoint holds them and a resumed run continues them (OSRL keeps the controller outside its checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step, twin_critic_loss
from o3srl.algos.bcql import pid_multiplier
from o3srl.algos.cpq import SquashedGaussianActor
from o3srl.data.sampler import Batch, DeviceData, sample_batch
from o3srl.errors import ConfigError
from o3srl.nets import VAE, Critics, vae_loss

Kernel = Literal["gaussian", "laplacian"]

LOG_ALPHA_MIN, LOG_ALPHA_MAX = -5.0, 5.0
"""log α, the MMD multiplier's logarithm, is clipped to this range after every dual step (OSRL's)."""
MMD_EPS = 1e-6
"""Added under the MMD's square root (OSRL's, BEAR's): keeps its gradient finite where the two samples coincide."""


@dataclass(frozen=True)
class BEARLConfig:
    """BEAR-Lag hyperparameters (OSRL's BEAR-Lag defaults for the Bullet tasks)."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    vae_hidden: int = 400
    """Width of the VAE's two hidden layers (encoder and decoder); its latent has 2 dim(a) dimensions."""
    sample_actions: int = 10
    """Draws of the target actor per next state in the critics' targets (the target is the best of them)."""
    mmd_samples: int = 10
    """Samples of the actor and of the VAE per state in the MMD estimate."""
    kernel: Kernel = "gaussian"
    """The MMD's kernel: gaussian, exp(−‖x − y‖² / (2σ)); laplacian, exp(−‖x − y‖₁ / (2σ))."""
    mmd_sigma: float = 50.0
    """σ of the MMD's kernel (on pre-tanh actions)."""
    mmd_threshold: float = 0.05
    """ε: the MMD the actor may keep; α rises while the MMD is above it and falls while below."""
    alpha_lr: float = 1e-3
    """η_α: step size of the dual ascent on log α."""
    warmup: int = 0
    """Gradient steps at the start during which the actor ignores the reward critic (MMD and cost penalty only)."""
    lmbda: float = 0.75
    """λ: the targets' weight on the smaller of the two critic heads (1 − λ on the larger)."""
    beta: float = 0.5
    """Weight of the VAE's KL term."""
    pid: tuple[float, float, float] = (0.1, 0.003, 0.001)
    """(K_P, K_I, K_D) of the PID controller that sets the cost multiplier."""
    num_q: int = 2
    """Networks per reward critic head (two heads)."""
    num_qc: int = 2
    """Networks per cost critic head (two heads)."""
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 512


def mmd(x: jax.Array, y: jax.Array, sigma: float, kernel: Kernel) -> jax.Array:
    """BEAR's MMD estimate between samples ``x`` (..., n, d) and ``y`` (..., m, d), one value per leading index:
    sqrt(mean k(x, x') + mean k(y, y') − 2 mean k(x, y) + 1e-6), every pair counted (the diagonals included)."""

    def mean_kernel(a: jax.Array, b: jax.Array) -> jax.Array:
        diff = a[..., :, None, :] - b[..., None, :, :]
        dist = jnp.abs(diff).sum(-1) if kernel == "laplacian" else (diff**2).sum(-1)
        return jnp.exp(-dist / (2.0 * sigma)).mean(axis=(-2, -1))

    return jnp.sqrt(mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y) + MMD_EPS)


def mmd_dual_step(log_alpha: jax.Array, mmd_mean: jax.Array, threshold: float, lr: float) -> jax.Array:
    """One dual-ascent step of the MMD multiplier (OSRL's): log α ← clip(log α + η α (E M − ε), −5, 5)."""
    return jnp.clip(log_alpha + lr * jnp.exp(log_alpha) * (mmd_mean - threshold), LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def actor_network(config: BEARLConfig, obs_dim: int, act_dim: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The evaluated policy tanh(μ(s)) and a template of its parameters (what a saved policy is read into)."""
    net = SquashedGaussianActor(tuple(config.actor_hidden), act_dim)

    def act(params: Any, obs: jax.Array) -> jax.Array:
        return jnp.tanh(net.apply(params, obs)[0])

    return act, net.init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)))


class BEARLState(flax.struct.PyTreeNode):
    actor: Any
    actor_target: Any
    critic: Any  # {"reward": 2 × num_q networks, "cost": 2 × num_qc networks} (heads Q1, Q2)
    critic_target: Any
    vae: Any
    actor_opt: Any
    critic_opt: Any
    vae_opt: Any
    log_alpha: jax.Array  # the MMD multiplier's logarithm
    pid_error: jax.Array  # the last step's error e
    pid_integral: jax.Array
    step: jax.Array  # gradient steps taken (the warm-up counts them)
    key: jax.Array


class BEARL(StepLearner):
    """BEAR-Lag as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is
    ``steps_per_round`` gradient steps, so its runs log, checkpoint and resume like O3SRL's."""

    title = "BEAR-Lag"

    def __init__(self, config: BEARLConfig, setting: Setting, steps_per_round: int) -> None:
        widths = (*config.actor_hidden, *config.critic_hidden, config.vae_hidden, config.batch_size)
        counts = (config.sample_actions, config.mmd_samples, config.num_q, config.num_qc)
        if min(widths) < 1 or min(counts) < 1:
            raise ConfigError(
                "bear-lag: hidden widths, batch_size, sample_actions, mmd_samples, num_q and num_qc must be ≥ 1, got "
                f"{config.actor_hidden}, {config.critic_hidden}, {config.vae_hidden}, {config.batch_size}, "
                f"{config.sample_actions}, {config.mmd_samples}, {config.num_q} and {config.num_qc}"
            )
        if not 0.0 <= config.gamma < 1.0 or not 0.0 < config.tau <= 1.0 or not 0.0 <= config.lmbda <= 1.0:
            raise ConfigError(
                f"bear-lag: gamma must be in [0, 1), tau in (0, 1] and lmbda in [0, 1], got {config.gamma}, "
                f"{config.tau} and {config.lmbda}"
            )
        if config.mmd_sigma <= 0 or config.mmd_threshold < 0 or config.warmup < 0 or min(config.pid) < 0:
            raise ConfigError(
                "bear-lag: mmd_sigma must be > 0, and mmd_threshold, warmup and the pid gains ≥ 0, got "
                f"{config.mmd_sigma}, {config.mmd_threshold}, {config.warmup} and {config.pid}"
            )
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.budget = setting.budget(config)
        self.threshold = self.budget.value  # B, in the critics' (scaled) units
        self.latent_dim = 2 * setting.act_dim
        self.actor = SquashedGaussianActor(tuple(config.actor_hidden), setting.act_dim)
        self.q_r = Critics(tuple(config.critic_hidden), 2 * config.num_q)
        self.q_c = Critics(tuple(config.critic_hidden), 2 * config.num_qc)
        self.vae = VAE(config.vae_hidden, setting.act_dim, self.latent_dim)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)
        self.vae_tx = optax.adam(config.vae_lr)
        self._act, _ = actor_network(config, setting.obs_dim, setting.act_dim)

    def init(self, key: jax.Array) -> BEARLState:
        k_actor, k_r, k_c, k_vae, k_state = jax.random.split(key, 5)
        obs = jnp.zeros((1, self.setting.obs_dim))
        act = jnp.zeros((1, self.setting.act_dim))
        actor = self.actor.init(k_actor, obs)
        critic = {"reward": self.q_r.init(k_r, obs, act), "cost": self.q_c.init(k_c, obs, act)}
        vae = self.vae.init(k_vae, obs, act, jax.random.PRNGKey(0))
        zero = jnp.zeros((), jnp.float32)
        return BEARLState(
            actor=actor,
            actor_target=actor,
            critic=critic,
            critic_target=critic,
            vae=vae,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            vae_opt=self.vae_tx.init(vae),
            log_alpha=zero,
            pid_error=zero,
            pid_integral=zero,
            step=jnp.zeros((), jnp.int32),
            key=k_state,
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The evaluated policy: the mean action tanh(μ(s))."""
        return self._act(actor_params, obs)

    # ------------------------------------------------------------------ pieces
    def draw(self, actor_params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        """Reparameterised pre-tanh draws μ(s) + σ(s) ε, one per row of ``obs``."""
        mean, log_std = self.actor.apply(actor_params, obs)
        return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)

    def heads(self, net: Critics, params: Any, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(Q1, Q2): each head's minimum over its networks."""
        q = net.apply(params, obs, act).reshape(2, net.num // 2, -1)
        return q[0].min(axis=0), q[1].min(axis=0)

    def target(self, net: Critics, params: Any, actor_target: Any, next_obs: jax.Array, key: jax.Array) -> jax.Array:
        """max over n target-actor draws of λ min(Q1, Q2) + (1 − λ) max(Q1, Q2), target networks at the next
        states."""
        cfg = self.config
        n, b = cfg.sample_actions, next_obs.shape[0]
        obs = jnp.repeat(next_obs, n, axis=0)
        q1, q2 = self.heads(net, params, obs, jnp.tanh(self.draw(actor_target, obs, key)))
        q = cfg.lmbda * jnp.minimum(q1, q2) + (1.0 - cfg.lmbda) * jnp.maximum(q1, q2)
        return q.reshape(b, n).max(axis=1)

    def behaviour_draws(self, vae: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        """The VAE's pre-tanh actions D̃(s, z_i), z_i ~ N(0, I) clipped to [−0.5, 0.5]: shape (batch, m, act)."""
        m = self.config.mmd_samples
        z = jnp.clip(jax.random.normal(key, (obs.shape[0], m, self.latent_dim)), -0.5, 0.5)
        obs_m = jnp.broadcast_to(obs[:, None, :], (obs.shape[0], m, obs.shape[-1]))
        return self.vae.apply(vae, obs_m, z, method=VAE.decode_pretanh)

    # ------------------------------------------------------------------ losses
    def critic_loss(self, critic: Any, state: BEARLState, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        k_r, k_c = jax.random.split(key)
        next_r = self.target(self.q_r, state.critic_target["reward"], state.actor_target, batch.next_obs, k_r)
        next_c = self.target(self.q_c, state.critic_target["cost"], state.actor_target, batch.next_obs, k_c)
        q_r = self.q_r.apply(critic["reward"], batch.obs, batch.actions)
        q_c = self.q_c.apply(critic["cost"], batch.obs, batch.actions)
        return twin_critic_loss(q_r, q_c, batch, next_r, next_c, cfg.reward_scale, cfg.cost_scale, cfg.gamma)

    def actor_loss(
        self, actor: Any, state: BEARLState, critic: Any, behaviour: jax.Array, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        """The actor's loss; its aux holds the PID controller's new error, integral and ν (set, as in OSRL, from
        this very forward pass's cost value, without gradient) and the batch's MMD."""
        cfg = self.config
        b, m = batch.obs.shape[0], cfg.mmd_samples
        raw = self.draw(actor, jnp.repeat(batch.obs, m, axis=0), key).reshape(b, m, -1)
        discrepancy = mmd(behaviour, raw, cfg.mmd_sigma, cfg.kernel)
        a = jnp.tanh(raw[:, 0])
        q_r = jnp.minimum(*self.heads(self.q_r, critic["reward"], batch.obs, a))
        q_c = jnp.minimum(*self.heads(self.q_c, critic["cost"], batch.obs, a))
        error = jax.lax.stop_gradient(q_c.mean() - self.threshold)
        nu, integral = pid_multiplier(error, state.pid_error, state.pid_integral, cfg.pid)
        reward_weight = jnp.where(state.step >= cfg.warmup, 1.0, 0.0)
        alpha = jnp.exp(state.log_alpha)
        loss = (-reward_weight * q_r + alpha * (discrepancy - cfg.mmd_threshold)).mean()
        loss = loss + (nu * (q_c - self.threshold)).mean()
        return loss, {
            "pid_error": error,
            "pid_integral": integral,
            "bearl/multiplier": nu,
            "bearl/mmd": jax.lax.stop_gradient(discrepancy.mean()),
            "q/policy_cost": jax.lax.stop_gradient(q_c.mean()),
        }

    # ------------------------------------------------------------------ update
    def update(self, state: BEARLState, data: DeviceData) -> tuple[BEARLState, Metrics]:
        """One gradient step of the VAE, the critics, the actor (its cost multiplier from the PID controller), the
        MMD multiplier, and the targets."""
        cfg = self.config
        key, k_batch, k_vae, k_critic, k_behaviour, k_actor = jax.random.split(state.key, 6)
        batch = sample_batch(k_batch, data, cfg.batch_size)
        vae_value, vae_grads = jax.value_and_grad(vae_loss)(
            state.vae, self.vae, batch.obs, batch.actions, k_vae, cfg.beta
        )
        vae, vae_opt = adam_step(self.vae_tx, state.vae, state.vae_opt, vae_grads)

        (_, c_metrics), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            state.critic, state, batch, k_critic
        )
        critic, critic_opt = adam_step(self.critic_tx, state.critic, state.critic_opt, c_grads)

        behaviour = self.behaviour_draws(vae, batch.obs, k_behaviour)
        (a_value, aux), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            state.actor, state, critic, behaviour, batch, k_actor
        )
        actor, actor_opt = adam_step(self.actor_tx, state.actor, state.actor_opt, a_grads)
        log_alpha = mmd_dual_step(state.log_alpha, aux["bearl/mmd"], cfg.mmd_threshold, cfg.alpha_lr)
        state = state.replace(
            actor=actor,
            actor_target=optax.incremental_update(actor, state.actor_target, cfg.tau),
            critic=critic,
            critic_target=optax.incremental_update(critic, state.critic_target, cfg.tau),
            vae=vae,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            vae_opt=vae_opt,
            log_alpha=log_alpha,
            pid_error=aux.pop("pid_error"),
            pid_integral=aux.pop("pid_integral"),
            step=state.step + 1,
            key=key,
        )
        metrics = {**c_metrics, **aux, "loss/vae": vae_value, "loss/actor": a_value, "bearl/alpha": jnp.exp(log_alpha)}
        return state, metrics

    def output(self, state: BEARLState) -> tuple[Any, OutputKind]:
        return state.actor, "single"

    def run_info(self) -> dict[str, Any]:
        return {
            "budget_per_step": self.budget.per_step,
            "budget_value": self.budget.reported_value,
            "bearl_threshold": self.threshold,
        }
