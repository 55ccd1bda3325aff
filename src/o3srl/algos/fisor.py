"""FISOR: feasibility-guided safe offline RL with a diffusion policy (Zheng, Li, Yu, Yang, Li, Zhan & Liu, "Safe
Offline Reinforcement Learning with Feasibility-Guided Diffusion Model", ICLR 2024), a baseline of offline safe RL.

FISOR turns the hard constraint "never violate" into three decoupled supervised problems: find the largest feasible
region by Hamilton–Jacobi (HJ) reachability learned offline, learn the reward advantage inside it by IQL, and
extract the policy by weighted behaviour cloning of a diffusion model, whose weights ask for the best reward inside
the feasible region and for the least violation outside it. As the authors' code runs it (github.com/ZhengYinan-AIR/
FISOR, ``jaxrl5/agents/fisor/fisor.py``, ``jaxrl5/networks/diffusion.py``, defaults from ``configs/train_config.py``
and ``jaxrl5/data/dsrl_datasets.py``), with h(s, a) the per-step constraint value, one gradient step is, in order:

    data          h = ``cost_scale`` (25) where c > 0, else −1;        r ← r · T / (R_max − R_min)
    diffusion     a_t = √ᾱ_t a + √(1 − ᾱ_t) ε,   t ~ U{0, …, K − 1},  ε ~ N(0, I)     (K = ``diffusion_steps``)
    weights       w = 1[V_h(s) > 0] · min(exp(ρ_h (V_h(s) − Q_h(s, a))), W_h)                   (infeasible s)
                    + 1[V_h(s) ≤ 0] 1[Q_h(s, a) ≤ 0] · min(exp(ρ_r (Q_r(s, a) − V_r(s))), W_r)   (feasible s)
    actor         min  E [ w ‖ε_θ(s, a_t, t) − ε‖² ]      (twice, on the two halves of the minibatch)
    EMA actor     θ̄ ← (1 − τ_a) θ̄ + τ_a θ   (after each actor step)
    V_r           min  E L2_τ(Q̄_r(s, a) − V_r(s)),      L2_τ(u) = |τ − 1(u < 0)| u²
    Q_r           min  mean_i E (Q_r,i(s, a) − r − γ (1 − terminal) V_r(s'))²
    V_h           min  E L2_{1−τ_h}(Q̄_h(s, a) − V_h(s))       (a low expectile: V_h ≈ min_a Q_h, the best action)
    Q_h           min  mean_i E (Q_h,i(s, a) − y_h)²,   y_h = (1 − γ) h + γ max(h, V_h(s'))   (h at a terminal)
    targets       Polyak averaging of both critics at rate τ

Q_r and Q̄_r are the minimum over ``num_q`` networks, Q_h and Q̄_h the maximum (the pessimistic value of each); a bar
marks the target networks. The weights use the target critics and the values as they stand before the step's critic
updates. y_h is the discounted HJ Bellman backup: V_h(s) ≤ 0 means a policy exists from s that never violates the
constraint (s is in the feasible region), V_h(s) > 0 that every policy the data supports eventually violates it. The
diffusion model is a DDPM (Ho, Jain & Abbeel, 2020) with K = 5 steps and the discrete VP schedule

    β_k = 1 − exp(−b_min / K − (b_max − b_min)(2k − 1) / (2K²)),  k = 1 … K,  b_min = 0.1,  b_max = 10
    α_k = 1 − β_k,   ᾱ_k = Π_{j ≤ k} α_j          (stored from index 0: t = k − 1)

and the noise predictor ε_θ is the authors': learnable Fourier features of t (64, kernel ~ N(0, 0.2²)) through a
2 × 128 Mish MLP, concatenated with a_t and s, into an MLP-ResNet (width 256, 3 blocks of dropout 0.1 → LayerNorm →
Dense(1024) → Mish → Dense(256) with a residual, then Mish → Dense(dim a)).

The evaluated action. ``num_samples`` (16) candidates are drawn by the reverse process from the EMA parameters

    x_K ~ N(0, I);  x_{t} ← clip((x_{t+1} − β_t / √(1 − ᾱ_t) ε_θ(s, x_{t+1}, t)) / √α_t + 1[t > 0] √β_t ζ z, −1, 1)

(t = K − 1 … 0, z ~ N(0, I), ζ = ``ddpm_temperature``), and the one with the smallest Q̄_h(s, a) is taken (the
authors' ``extract_method = "minqc"``; ``maxq`` takes the largest Q̄_r instead). The noise comes from an explicit key
derived from the observation itself (its float32 bits folded into a fixed key): the evaluated policy is a
deterministic function of the (normalised) observation, so a saved policy reproduces its actions exactly, whatever
the batch it is called with.

The cost limit κ. FISOR's constraint is hard: h > 0 wherever the data's cost is positive, and the feasible region is
where no violation is ever reached. κ enters neither training nor the evaluated policy (the authors' ``cost_limit``
only sets the threshold of their ``qc`` variant, which their default ``hj`` does not read, and the environment's
target cost for the normalised cost); here κ is used only by the evaluation, to normalise the episode cost. Runs at
different κ train the same policy.

The authors' defaults for the Bullet tasks (one set for every task, ``configs/train_config.py``; ``create``'s
defaults where the config says nothing): critics and values 2 × 256 (ReLU), two Q-networks per critic, τ = τ_h = 0.9,
ρ_r = 3, ρ_h = 5, W_r = 100, W_h = 150, h = 25 for a violation, K = 5 (VP), 16 candidates, ζ = 1, clipped sampler,
learning rates 3e-4 (the actor's on a cosine decay over 3M actor steps), γ = 0.99, τ = 0.005, τ_a = 0.001, an
actor minibatch of 2 × 1024 and a critic minibatch of 256 (the first 256 of it), 1M steps (here ``--steps``, 100k by
default as for every algorithm).

Where this differs from the authors' code, on purpose (docs/algorithms/fisor.md):
- Terminals, not timeouts, end bootstrapping in both critics, as every critic in this project does (the authors'
  ``masks`` stop at either, so their y_h at a time limit is h alone).
- Observations are normalised by the data's mean and standard deviation, as for every algorithm here (the authors
  feed raw observations); actions are clipped to ±(1 − 10⁻⁵) as theirs.
- The critics and values are the project's (:class:`o3srl.nets.Critics`, :class:`o3srl.nets.ValueNet`): Flax's
  default LeCun-normal initialisation instead of the authors' Xavier-uniform. The noise predictor keeps theirs.
- One Adam for both critics and one for both values (the same updates as the authors' four, Adam being elementwise;
  the reward and cost parts share no parameters). The actor's AdamW with weight decay 0 is Adam.
- The evaluation noise is keyed by the observation (above); the authors' agent carries one key along the episodes.
- R_max and R_min are the run's reference reward range (DSRL's for the registry's tasks, as the authors' ``env.
  max_episode_reward`` / ``min_episode_reward``; otherwise the data's best and worst episode return).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step
from o3srl.algos.iql import expectile_loss
from o3srl.data.sampler import Batch, DeviceData, sample_batch
from o3srl.errors import ConfigError
from o3srl.nets import Critics, ValueNet

BetaSchedule = Literal["vp", "linear", "cosine"]
Extract = Literal["minqc", "maxq"]

FEASIBLE_H = -1.0
"""h of a step without cost (the authors' ``np.where(costs > 0, cost_scale, -1)``)."""
ACTION_CLIP = 1.0 - 1e-5
"""The data's actions are clipped to ±ACTION_CLIP (the authors' ``clip_to_eps``)."""
EVAL_KEY = 0
"""The seed of the fixed key the evaluation's noise is derived from (folded with the observation's bits)."""
XAVIER = nn.initializers.xavier_uniform()
"""The authors' ``default_init``: their MLPs' and the ResNet's outer layers' kernels (the blocks keep Flax's)."""


@dataclass(frozen=True)
class FISORConfig:
    """FISOR hyperparameters (the authors' defaults for the Bullet and Safety-Gymnasium tasks)."""

    actor_width: int = 256
    """Width of the noise predictor's MLP-ResNet (its blocks widen to 4 × this inside)."""
    actor_blocks: int = 3
    """Residual blocks of the noise predictor."""
    actor_dropout: float = 0.1
    """Dropout rate in the noise predictor's blocks (training only)."""
    actor_layer_norm: bool = True
    """LayerNorm at the start of each residual block."""
    time_dim: int = 64
    """Learnable Fourier features of the diffusion step t."""
    time_hidden: tuple[int, ...] = (128, 128)
    """The Mish MLP that embeds the Fourier features (its last width is the embedding's)."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the Q- and V-networks (reward and feasibility)."""
    num_q: int = 2
    """Q-networks per critic: Q_r is their minimum, Q_h their maximum."""
    diffusion_steps: int = 5
    """K: the diffusion model's steps."""
    beta_schedule: BetaSchedule = "vp"
    """The noise schedule: vp (discrete variance preserving), linear (1e-4 to 2e-2) or cosine."""
    ddpm_temperature: float = 1.0
    """ζ: the scale of the noise added at each reverse step (0: no noise after the first draw)."""
    clip_sampler: bool = True
    """Clip the reverse process's iterate to [−1, 1] after every step (the last one is clipped regardless)."""
    num_samples: int = 16
    """Candidate actions drawn per observation at evaluation; the extract rule picks one."""
    extract: Extract = "minqc"
    """minqc: the candidate with the smallest Q_h (the authors' default); maxq: the largest Q_r."""
    expectile: float = 0.9
    """τ: the expectile of V_r (upper: the best action in the data's support)."""
    cost_expectile: float = 0.9
    """τ_h: V_h is fit to the (1 − τ_h) expectile of Q_h (lower: the safest action in the data's support)."""
    reward_temperature: float = 3.0
    """ρ_r: inverse temperature of the feasible states' reward-advantage weights."""
    cost_temperature: float = 5.0
    """ρ_h: inverse temperature of the infeasible states' weights exp(ρ_h (V_h − Q_h))."""
    max_reward_weight: float = 100.0
    """W_r: the feasible states' weights are clipped here."""
    max_cost_weight: float = 150.0
    """W_h: the infeasible states' weights are clipped here (the authors' ``cost_ub``)."""
    cost_scale: float = 25.0
    """h of a step with a positive cost (a step without cost has h = −1)."""
    reward_scale: float | None = None
    """Rewards are multiplied by this; default (null): T / (R_max − R_min), the authors' normalisation by the
    reference reward range."""
    actor_lr: float = 3e-4
    actor_decay_steps: int = 3_000_000
    """The actor's learning rate decays to 0 on a cosine over this many actor steps (two per training step)."""
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the critics' targets."""
    actor_tau: float = 0.001
    """Rate of the exponential moving average of the noise predictor, the parameters that are evaluated."""
    actor_batch_size: int = 1024
    """Transitions per actor step."""
    actor_updates: int = 2
    """Actor steps per training step, each on its own part of one minibatch of actor_updates × actor_batch_size."""
    batch_size: int = 256
    """Transitions per critic and value step: the first batch_size of the actor's minibatch."""


# ---------------------------------------------------------------------- pure pieces
def hj_cost(costs: jax.Array, cost_scale: float) -> jax.Array:
    """h: ``cost_scale`` where the cost is positive, −1 elsewhere."""
    return jnp.where(costs > 0, cost_scale, FEASIBLE_H)


def hj_target(h: jax.Array, next_vh: jax.Array, terminals: jax.Array, gamma: float) -> jax.Array:
    """The discounted HJ backup y_h = (1 − γ) h + γ max(h, V_h(s')), and h alone at a terminal."""
    backup = (1.0 - gamma) * h + gamma * jnp.maximum(h, next_vh)
    return jnp.where(terminals > 0, h, backup)


def feasibility_weights(
    q: jax.Array,
    v: jax.Array,
    qh: jax.Array,
    vh: jax.Array,
    cfg: FISORConfig,
) -> jax.Array:
    """FISOR's behaviour cloning weights: min(exp(ρ_h (V_h − Q_h)), W_h) where V_h > 0 (infeasible states),
    min(exp(ρ_r (Q_r − V_r)), W_r) where V_h ≤ 0 and Q_h ≤ 0, and 0 for an infeasible action in a feasible state."""
    infeasible = vh > 0.0
    feasible_pair = (vh <= 0.0) & (qh <= 0.0)
    cost_w = jnp.clip(jnp.exp((vh - qh) * cfg.cost_temperature), 0.0, cfg.max_cost_weight)
    reward_w = jnp.clip(jnp.exp((q - v) * cfg.reward_temperature), 0.0, cfg.max_reward_weight)
    return jnp.where(infeasible, cost_w, 0.0) + jnp.where(feasible_pair, reward_w, 0.0)


def beta_schedule(kind: BetaSchedule, steps: int) -> jax.Array:
    """β_1 … β_K of the authors' schedules (``vp_beta_schedule``, ``linear``, ``cosine_beta_schedule``)."""
    if kind == "vp":
        t = jnp.arange(1, steps + 1, dtype=jnp.float32)
        b_max, b_min = 10.0, 0.1
        return 1.0 - jnp.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2.0 * t - 1.0) / steps**2)
    if kind == "linear":
        return jnp.linspace(1e-4, 2e-2, steps, dtype=jnp.float32)
    if kind == "cosine":
        s = 0.008
        t = jnp.linspace(0.0, steps, steps + 1, dtype=jnp.float32) / steps
        alpha_bar = jnp.cos((t + s) / (1.0 + s) * jnp.pi * 0.5) ** 2
        alpha_bar = alpha_bar / alpha_bar[0]
        return jnp.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
    raise ConfigError(f"fisor.beta_schedule must be one of 'vp', 'linear', 'cosine', got {kind!r}")


class Schedule(flax.struct.PyTreeNode):
    """β_t, α_t = 1 − β_t and ᾱ_t = Π_{j ≤ t} α_j, indexed by t = 0 … K − 1."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array


def diffusion_schedule(kind: BetaSchedule, steps: int) -> Schedule:
    betas = beta_schedule(kind, steps)
    alphas = 1.0 - betas
    return Schedule(betas=betas, alphas=alphas, alpha_bars=jnp.cumprod(alphas))


def noisy_actions(actions: jax.Array, noise: jax.Array, t: jax.Array, schedule: Schedule) -> jax.Array:
    """a_t = √ᾱ_t a + √(1 − ᾱ_t) ε (``t`` one step index per row)."""
    alpha_bar = schedule.alpha_bars[t][:, None]
    return jnp.sqrt(alpha_bar) * actions + jnp.sqrt(1.0 - alpha_bar) * noise


def reverse_step(
    x: jax.Array,
    eps_pred: jax.Array,
    t: jax.Array,
    z: jax.Array,
    schedule: Schedule,
    temperature: float,
    clip: bool,
) -> jax.Array:
    """One DDPM reverse step from step t: (x − β_t / √(1 − ᾱ_t) ε̂) / √α_t + 1[t > 0] √β_t ζ z, clipped to [−1, 1]
    when ``clip`` (the authors' ``ddpm_sampler``: the noise's variance is β_t, not the posterior's)."""
    beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    x = (x - beta / jnp.sqrt(1.0 - alpha_bar) * eps_pred) / jnp.sqrt(alpha)
    x = x + (t > 0) * jnp.sqrt(beta) * temperature * z
    return jnp.clip(x, -1.0, 1.0) if clip else x


def ddpm_sample(
    predict: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    obs: jax.Array,
    act_dim: int,
    key: jax.Array,
    schedule: Schedule,
    temperature: float,
    clip: bool,
) -> jax.Array:
    """Actions for the rows of ``obs`` by the reverse process from x_K ~ N(0, I); ``predict(obs, x, t)`` is ε_θ
    (``t`` of shape (B, 1)). The result is clipped to [−1, 1]."""
    steps = schedule.betas.shape[0]
    k_init, k_steps = jax.random.split(key)
    x0 = jax.random.normal(k_init, (obs.shape[0], act_dim))

    def step(x: jax.Array, t: jax.Array) -> tuple[jax.Array, None]:
        eps = predict(obs, x, jnp.full((obs.shape[0], 1), t, jnp.float32))
        z = jax.random.normal(jax.random.fold_in(k_steps, t), x.shape)
        return reverse_step(x, eps, t, z, schedule, temperature, clip), None

    x, _ = jax.lax.scan(step, x0, jnp.arange(steps - 1, -1, -1))
    return jnp.clip(x, -1.0, 1.0)


def observation_key(obs: jax.Array) -> jax.Array:
    """A key that is a function of one observation: its float32 bits folded, one by one, into a fixed key."""
    bits = jax.lax.bitcast_convert_type(obs.astype(jnp.float32), jnp.uint32)
    key, _ = jax.lax.scan(lambda k, b: (jax.random.fold_in(k, b), None), jax.random.PRNGKey(EVAL_KEY), bits)
    return key


# ---------------------------------------------------------------------- networks
def mish(x: jax.Array) -> jax.Array:
    return x * jnp.tanh(jax.nn.softplus(x))


class FourierFeatures(nn.Module):
    """[cos 2π t Wᵀ, sin 2π t Wᵀ] with a learnable W ~ N(0, 0.2²) of shape (size / 2, 1)."""

    size: int

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        w = self.param("kernel", nn.initializers.normal(0.2), (self.size // 2, t.shape[-1]), jnp.float32)
        f = 2.0 * jnp.pi * t @ w.T
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


class ResNetBlock(nn.Module):
    """Dropout → LayerNorm → Dense(4 width) → Mish → Dense(width), added to the input (the authors' block)."""

    width: int
    dropout: float
    layer_norm: bool

    @nn.compact
    def __call__(self, x: jax.Array, training: bool) -> jax.Array:
        residual = x
        if self.dropout > 0.0:
            x = nn.Dropout(self.dropout)(x, deterministic=not training)
        if self.layer_norm:
            x = nn.LayerNorm()(x)
        x = nn.Dense(self.width)(mish(nn.Dense(4 * self.width)(x)))
        if residual.shape != x.shape:
            residual = nn.Dense(self.width)(residual)
        return residual + x


class NoisePredictor(nn.Module):
    """ε_θ(s, a_t, t): Fourier features of t through a Mish MLP, concatenated with a_t and s, into an MLP-ResNet."""

    act_dim: int
    width: int = 256
    blocks: int = 3
    dropout: float = 0.1
    layer_norm: bool = True
    time_dim: int = 64
    time_hidden: tuple[int, ...] = (128, 128)

    @nn.compact
    def __call__(self, obs: jax.Array, x: jax.Array, t: jax.Array, training: bool = False) -> jax.Array:
        t_emb = FourierFeatures(self.time_dim)(t.reshape(x.shape[0], -1))
        for i, width in enumerate(self.time_hidden):
            t_emb = nn.Dense(width, kernel_init=XAVIER)(t_emb)
            t_emb = mish(t_emb) if i + 1 < len(self.time_hidden) else t_emb
        h = jnp.concatenate([x, obs, t_emb], axis=-1)
        h = nn.Dense(self.width, kernel_init=XAVIER)(h)
        for _ in range(self.blocks):
            h = ResNetBlock(self.width, self.dropout, self.layer_norm)(h, training)
        return nn.Dense(self.act_dim, kernel_init=XAVIER)(mish(h))


def noise_predictor(config: FISORConfig, act_dim: int) -> NoisePredictor:
    return NoisePredictor(
        act_dim,
        config.actor_width,
        config.actor_blocks,
        config.actor_dropout,
        config.actor_layer_norm,
        config.time_dim,
        tuple(config.time_hidden),
    )


def actor_network(config: FISORConfig, obs_dim: int, act_dim: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The evaluated policy as a function of {"score": ε_θ's EMA parameters, "critic": the target critics} and
    their template: ``num_samples`` candidates by the reverse process, keyed by each observation
    (:func:`observation_key`), and the extract rule's pick."""
    net = noise_predictor(config, act_dim)
    critics = Critics(tuple(config.critic_hidden), config.num_q)
    schedule = diffusion_schedule(config.beta_schedule, config.diffusion_steps)
    n = config.num_samples

    def one(params: Any, o: jax.Array) -> jax.Array:
        obs = jnp.broadcast_to(o, (n, o.shape[-1]))

        def predict(s: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
            return net.apply(params["score"], s, x, t)

        candidates = ddpm_sample(
            predict, obs, act_dim, observation_key(o), schedule, config.ddpm_temperature, config.clip_sampler
        )
        if config.extract == "minqc":
            idx = jnp.argmin(critics.apply(params["critic"]["cost"], obs, candidates).max(axis=0))
        else:
            idx = jnp.argmax(critics.apply(params["critic"]["reward"], obs, candidates).min(axis=0))
        return candidates[idx]

    def policy(params: Any, obs: jax.Array) -> jax.Array:
        return jax.vmap(one, in_axes=(None, 0))(params, obs)

    key = jax.random.PRNGKey(0)
    o, a = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    critic = critics.init(key, o, a)
    return policy, {"score": net.init(key, o, a, jnp.zeros((1, 1))), "critic": {"reward": critic, "cost": critic}}


class FISORState(flax.struct.PyTreeNode):
    score: Any  # ε_θ
    score_ema: Any  # θ̄, the evaluated parameters
    critic: Any  # {"reward": Q_r networks, "cost": Q_h networks}
    critic_target: Any
    value: Any  # {"reward": V_r, "cost": V_h}
    score_opt: Any
    critic_opt: Any
    value_opt: Any
    key: jax.Array


class FISOR(StepLearner):
    """FISOR as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is
    ``steps_per_round`` training steps, so its runs log, checkpoint and resume like O3SRL's."""

    title = "FISOR"

    def __init__(self, config: FISORConfig, setting: Setting, steps_per_round: int) -> None:
        check_config(config)
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.reward_scale = resolved_reward_scale(config, setting)
        self.schedule = diffusion_schedule(config.beta_schedule, config.diffusion_steps)
        self.net = noise_predictor(config, setting.act_dim)
        self.critics = Critics(tuple(config.critic_hidden), config.num_q)
        self.value = ValueNet(tuple(config.critic_hidden))
        self.score_tx = optax.adam(optax.cosine_decay_schedule(config.actor_lr, config.actor_decay_steps))
        self.critic_tx = optax.adam(config.critic_lr)
        self.value_tx = optax.adam(config.value_lr)
        self._policy, _ = actor_network(config, setting.obs_dim, setting.act_dim)

    def init(self, key: jax.Array) -> FISORState:
        k_score, k_qr, k_qh, k_vr, k_vh, k_state = jax.random.split(key, 6)
        obs = jnp.zeros((1, self.setting.obs_dim))
        act = jnp.zeros((1, self.setting.act_dim))
        score = self.net.init(k_score, obs, act, jnp.zeros((1, 1)))
        critic = {"reward": self.critics.init(k_qr, obs, act), "cost": self.critics.init(k_qh, obs, act)}
        value = {"reward": self.value.init(k_vr, obs), "cost": self.value.init(k_vh, obs)}
        return FISORState(
            score=score,
            score_ema=score,
            critic=critic,
            critic_target=critic,
            value=value,
            score_opt=self.score_tx.init(score),
            critic_opt=self.critic_tx.init(critic),
            value_opt=self.value_tx.init(value),
            key=k_state,
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The evaluated action: the extract rule's pick of ``num_samples`` reverse-process candidates."""
        return self._policy(actor_params, obs)

    # ------------------------------------------------------------------ losses
    def weights(self, state: FISORState, batch: Batch) -> jax.Array:
        """The behaviour cloning weights of the batch's pairs (target critics, current values)."""
        q = self.critics.apply(state.critic_target["reward"], batch.obs, batch.actions).min(axis=0)
        qh = self.critics.apply(state.critic_target["cost"], batch.obs, batch.actions).max(axis=0)
        v = self.value.apply(state.value["reward"], batch.obs)
        vh = self.value.apply(state.value["cost"], batch.obs)
        return feasibility_weights(q, v, qh, vh, self.config)

    def actor_loss(
        self, score: Any, obs: jax.Array, noisy: jax.Array, t: jax.Array, noise: jax.Array, w: jax.Array, key: jax.Array
    ) -> jax.Array:
        eps = self.net.apply(score, obs, noisy, t[:, None].astype(jnp.float32), training=True, rngs={"dropout": key})
        return (w * ((eps - noise) ** 2).sum(axis=-1)).mean()

    def value_loss(self, value: Any, state: FISORState, batch: Batch) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        q = self.critics.apply(state.critic_target["reward"], batch.obs, batch.actions).min(axis=0)
        qh = self.critics.apply(state.critic_target["cost"], batch.obs, batch.actions).max(axis=0)
        v = self.value.apply(value["reward"], batch.obs)
        vh = self.value.apply(value["cost"], batch.obs)
        loss_r = expectile_loss(q - v, cfg.expectile)
        loss_h = expectile_loss(qh - vh, 1.0 - cfg.cost_expectile)
        return loss_r + loss_h, {
            "loss/value_reward": loss_r,
            "loss/value_cost": loss_h,
            "v/reward": v.mean(),
            "v/cost": vh.mean(),
            "fisor/feasible": (vh <= 0.0).mean(),
        }

    def critic_loss(self, critic: Any, value: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        next_v = self.value.apply(value["reward"], batch.next_obs)
        next_vh = self.value.apply(value["cost"], batch.next_obs)
        y = self.reward_scale * batch.rewards + cfg.gamma * (1.0 - batch.terminals) * next_v
        y_h = hj_target(hj_cost(batch.costs, cfg.cost_scale), next_vh, batch.terminals, cfg.gamma)
        q = self.critics.apply(critic["reward"], batch.obs, batch.actions)
        qh = self.critics.apply(critic["cost"], batch.obs, batch.actions)
        # The mean over the networks too, as the authors' (the sum would only rescale Adam's input).
        loss_r = ((q - jax.lax.stop_gradient(y)) ** 2).mean()
        loss_h = ((qh - jax.lax.stop_gradient(y_h)) ** 2).mean()
        return loss_r + loss_h, {
            "loss/critic_reward": loss_r,
            "loss/critic_cost": loss_h,
            "q/reward": q.mean(),
            "q/cost": qh.mean(),
        }

    # ------------------------------------------------------------------ update
    def update(self, state: FISORState, data: DeviceData) -> tuple[FISORState, Metrics]:
        """``actor_updates`` steps of the noise predictor (and its EMA) on the parts of one minibatch, then the
        values, the critics and their targets on its first ``batch_size`` transitions."""
        cfg = self.config
        n = cfg.actor_batch_size
        key, k_batch, k_actor = jax.random.split(state.key, 3)
        full = sample_batch(k_batch, data, cfg.actor_updates * n)
        full = full._replace(actions=jnp.clip(full.actions, -ACTION_CLIP, ACTION_CLIP))
        score, score_ema, score_opt = state.score, state.score_ema, state.score_opt
        actor_losses, weight_means = [], []
        for i in range(cfg.actor_updates):
            part = jax.tree.map(lambda x, i=i: x[i * n : (i + 1) * n], full)
            k_t, k_noise, k_drop = jax.random.split(jax.random.fold_in(k_actor, i), 3)
            t = jax.random.randint(k_t, (n,), 0, cfg.diffusion_steps)
            noise = jax.random.normal(k_noise, part.actions.shape)
            noisy = noisy_actions(part.actions, noise, t, self.schedule)
            w = self.weights(state, part)
            a_value, a_grads = jax.value_and_grad(self.actor_loss)(score, part.obs, noisy, t, noise, w, k_drop)
            score, score_opt = adam_step(self.score_tx, score, score_opt, a_grads)
            score_ema = optax.incremental_update(score, score_ema, cfg.actor_tau)
            actor_losses.append(a_value)
            weight_means.append(w.mean())

        batch = jax.tree.map(lambda x: x[: cfg.batch_size], full)
        (_, v_metrics), v_grads = jax.value_and_grad(self.value_loss, has_aux=True)(state.value, state, batch)
        value, value_opt = adam_step(self.value_tx, state.value, state.value_opt, v_grads)
        (_, c_metrics), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(state.critic, value, batch)
        critic, critic_opt = adam_step(self.critic_tx, state.critic, state.critic_opt, c_grads)
        state = state.replace(
            score=score,
            score_ema=score_ema,
            critic=critic,
            critic_target=optax.incremental_update(critic, state.critic_target, cfg.tau),
            value=value,
            score_opt=score_opt,
            critic_opt=critic_opt,
            value_opt=value_opt,
            key=key,
        )
        metrics = {
            **v_metrics,
            **c_metrics,
            "loss/actor": actor_losses[-1],
            "fisor/weight": jnp.mean(jnp.stack(weight_means)),
        }
        return state, metrics

    def output(self, state: FISORState) -> tuple[Any, OutputKind]:
        return {"score": state.score_ema, "critic": state.critic_target}, "single"

    def run_info(self) -> dict[str, Any]:
        return {"fisor_reward_scale": self.reward_scale, "fisor_uses_cost_limit": False}


def resolved_reward_scale(config: FISORConfig, setting: Setting) -> float:
    """``reward_scale``, or T / (R_max − R_min) from the setting's reference reward range when it is null."""
    if config.reward_scale is not None:
        return float(config.reward_scale)
    if setting.reward_range is None:
        raise ConfigError("fisor.reward_scale must be given: no reference reward range is known for this run")
    lo, hi = setting.reward_range
    if not hi > lo:
        raise ConfigError(f"fisor.reward_scale must be given: the reference reward range ({lo}, {hi}) is empty")
    return setting.episode_length / (hi - lo)


def check_config(config: FISORConfig) -> None:
    """One :class:`ConfigError` naming the first bad field (ranges the field-name rules of
    :mod:`o3srl.validation` do not know)."""
    widths = "non-empty, with every width ≥ 1"
    checks: list[tuple[str, Any, bool, str]] = [
        ("actor_width", config.actor_width, config.actor_width >= 1, "≥ 1"),
        ("actor_blocks", config.actor_blocks, config.actor_blocks >= 0, "≥ 0"),
        ("actor_dropout", config.actor_dropout, 0.0 <= config.actor_dropout < 1.0, "in [0, 1)"),
        ("time_dim", config.time_dim, config.time_dim >= 2 and config.time_dim % 2 == 0, "an even number ≥ 2"),
        ("time_hidden", config.time_hidden, bool(config.time_hidden) and min(config.time_hidden) >= 1, widths),
        ("critic_hidden", config.critic_hidden, bool(config.critic_hidden) and min(config.critic_hidden) >= 1, widths),
        ("num_q", config.num_q, config.num_q >= 1, "≥ 1"),
        ("diffusion_steps", config.diffusion_steps, config.diffusion_steps >= 1, "≥ 1"),
        ("ddpm_temperature", config.ddpm_temperature, config.ddpm_temperature >= 0, "≥ 0"),
        ("num_samples", config.num_samples, config.num_samples >= 1, "≥ 1"),
        ("expectile", config.expectile, 0.0 < config.expectile < 1.0, "in (0, 1)"),
        ("cost_expectile", config.cost_expectile, 0.0 < config.cost_expectile < 1.0, "in (0, 1)"),
        ("reward_temperature", config.reward_temperature, config.reward_temperature >= 0, "≥ 0"),
        ("cost_temperature", config.cost_temperature, config.cost_temperature >= 0, "≥ 0"),
        ("max_reward_weight", config.max_reward_weight, config.max_reward_weight > 0, "> 0"),
        ("max_cost_weight", config.max_cost_weight, config.max_cost_weight > 0, "> 0"),
        ("cost_scale", config.cost_scale, config.cost_scale > 0, "> 0"),
        ("gamma", config.gamma, 0.0 <= config.gamma < 1.0, "in [0, 1)"),
        ("tau", config.tau, 0.0 < config.tau <= 1.0, "in (0, 1]"),
        ("actor_tau", config.actor_tau, 0.0 < config.actor_tau <= 1.0, "in (0, 1]"),
        ("actor_updates", config.actor_updates, config.actor_updates >= 1, "≥ 1"),
        ("actor_batch_size", config.actor_batch_size, config.actor_batch_size >= 1, "≥ 1"),
        (
            "batch_size",
            config.batch_size,
            1 <= config.batch_size <= config.actor_updates * config.actor_batch_size,
            f"in [1, actor_updates × actor_batch_size] = [1, {config.actor_updates * config.actor_batch_size}]",
        ),
        (
            "beta_schedule",
            config.beta_schedule,
            config.beta_schedule in ("vp", "linear", "cosine"),
            "one of 'vp', 'linear', 'cosine'",
        ),
        ("extract", config.extract, config.extract in ("minqc", "maxq"), "one of 'minqc', 'maxq'"),
    ]
    if config.reward_scale is not None:
        checks.append(
            ("reward_scale", config.reward_scale, math.isfinite(config.reward_scale) and config.reward_scale > 0, "> 0")
        )
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"fisor.{name} must be {allowed}, got {value!r}")
