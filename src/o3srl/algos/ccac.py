"""CCAC: Constraint-Conditioned Actor-Critic (Guo, Zhou, Wang & Li, ICLR 2025), a baseline of offline safe RL.

CCAC trains one actor and its critics for every cost threshold at once: each network also reads a threshold c, and
in the data each transition's threshold is the cost its episode still went on to receive from there (its
undiscounted cost-to-go, :func:`cost_to_go`). A conditional VAE learns which state-action pairs go with which
threshold, a classifier tells the pairs that belong to a higher threshold than the one asked for, and the cost
critic is pushed above the threshold on generated pairs the classifier flags: the actor, held to Q_c ≤ c by a
multiplier that is itself a network of c, learns to stay out of them. At evaluation the actor is asked for the
budget left in the episode, max(κ − C_t, 0), so one trained model serves every κ.

As the authors' code runs it (github.com/BU-DEPEND-Lab/CCAC, ``OSRL/osrl/algorithms/ccac.py``, ``train_ccac.py``;
defaults from ``OSRL/examples/configs/ccac_configs.py``), with c̃ = ``cost_scale`` · c, one gradient step is, in
order, each part reading the networks as the parts before it left them:

    VAE         min  E ‖D(z, c̃) − (s, a)‖² + β KL(q(z | s, a, c̃) ‖ N(0, I)),   z = μ + σ ε   (mean over entries)
    classifier  min  BCE(f(s, a, c̃_0), 1[c̃ > c̃_0]) + BCE(f(D(z, c̃), c̃_0), 1[c̃ > c̃_0])
                (c̃_0: the batch's first threshold; f: the probability that (s, a) belongs to a higher threshold)
    critics     y_r = r̃ + γ (1 − terminal) min_j Q_r,j^targ(s', c̃', a'),   a' ~ π(· | s', c̃')
                y_c = c̃ + γ (1 − terminal) min_j Q_c,j^targ(s', c̃', a')
                L = Σ_j E (Q_r,j − y_r)² + Σ_j E (Q_c,j − y_c)² − E_ν[λ_1(c̃) (min_j Q_c,j(ŝ, c̃, â) − c̃)]
                ν: the generated pairs (ŝ, â) = D(ẑ, c̃), ẑ ~ clip(N(0, I), −1, 1), with f(ŝ, â, c̃) > ``ood_threshold``
    multiplier  log λ_1(c̃) = g_1(c̃),  min  E_ν[λ_1(c̃) (min_j Q_c,j(ŝ, c̃, â) − c̃)] + 0.01 ‖θ_1‖²
                (taken only in a step with at least one flagged pair)
    actor       min  E[−min_j Q_r,j(s, c̃, ã) + λ_3(c̃) (min_j Q_c,j(s, c̃, ã) − c̃)],   ã ~ π(· | s, c̃)
    multiplier  log λ_3(c̃) = g_3(c̃),  min  E[−λ_3(c̃) (min_j Q_c,j(s, c̃, ã) − c̃)] + 0.01 ‖θ_3‖²
    targets     Polyak averaging of both critics at rate τ

with r̃ = ``reward_scale`` · r. Each log-multiplier is clipped to [−20, ``max_log_multiplier``] in the forward pass
only (the authors clip the tensor's data, so the gradient passes as if unclipped); each λ is a constant in the loss
of the network it weighs. The cost critics end in a softplus (cost values are ≥ 0). The decoder reads the threshold
and the latent, not the state: it generates whole state-action pairs, clipped to the data's box. Before these steps,
a warm-up trains the VAE and the classifier alone. The policy is a tanh-squashed Gaussian of (s, c̃); the evaluated
policy is its mean action tanh(μ(s, c̃)) at c̃ = ``cost_scale`` · max(κ − C_t, 0), C_t the cost received so far in the
episode (:class:`BudgetPolicy`).

The authors' defaults for the Bullet tasks: actor and critics 2 × 256, four reward and four cost critics, VAE and
classifier 2 × 512 with a latent of 64, multiplier networks 2 × 512, β = 0.5, ``ood_threshold`` 0.5, log-multiplier
≤ 5, learning rates 1e-4 (actor, multipliers) and 1e-3 (critics, VAE, classifier), batch 512, reward × 0.1, cost × 1,
γ = 0.99, τ = 0.005, and 200k warm-up steps followed by 200k steps of the whole update (300k on DroneCircle; batch
1024 and 100k on CarRun). Here the warm-up is the first ``warmup_fraction`` (default ½, the authors' proportion) of
the run's ``--steps``.

Where this differs from the authors' code, on purpose (docs/algorithms/ccac.md):
- Terminals, not timeouts, end bootstrapping (OSRL's ``TransitionDataset`` ends it at either), as in every
  algorithm here: a time limit is not a terminal state.
- The reward critics end in a linear layer, not a softplus: a step's reward may be negative, and a softplus would
  hold every reward value above 0.
- Observations are normalised (the project's convention for every learner); the thresholds are not.
- The classifier's binary cross-entropy is computed from its logits (the same loss, without PyTorch's clamp of the
  log at −100).
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
from o3srl.algos.cpq import SquashedGaussianActor
from o3srl.data.sampler import Batch, DeviceData, NormStats, batch_at, denormalize_action, normalize_obs, sample_indices
from o3srl.errors import ConfigError
from o3srl.nets import MLP, Critics, gaussian_kl
from o3srl.policy import CostTrackingPolicy, as_batch

LOG_MULTIPLIER_MIN = -20.0
"""The lower clip of log λ (the authors')."""


@dataclass(frozen=True)
class CCACConfig:
    """CCAC hyperparameters (the authors' defaults for the Bullet tasks)."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    vae_hidden: int = 512
    """Width of the two hidden layers of the VAE's encoder and decoder and of the classifier."""
    vae_latent: int = 64
    multiplier_hidden: int = 512
    """Width of the two hidden layers of the networks c ↦ log λ(c) (the authors tie it to the VAE's)."""
    beta: float = 0.5
    """Weight of the VAE's KL term."""
    num_q: int = 4
    num_qc: int = 4
    ood_threshold: float = 0.5
    """A generated pair counts as belonging to a higher threshold when the classifier's probability exceeds this."""
    max_log_multiplier: float = 5.0
    """The upper clip of log λ (λ ≤ e⁵ ≈ 148)."""
    multiplier_decay: float = 0.01
    """Weight of the squared norm of each multiplier network's parameters in its loss."""
    warmup_fraction: float = 0.5
    """The share of the run's steps that train the VAE and the classifier alone, first."""
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    """The VAE's and the classifier's learning rate."""
    multiplier_lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 512


def _check(config: CCACConfig) -> None:
    """One :class:`ConfigError` naming the first field out of its range."""
    widths = (*config.actor_hidden, *config.critic_hidden, config.vae_hidden, config.vae_latent)
    checks = [
        ("actor_hidden", len(config.actor_hidden) >= 1 and min(config.actor_hidden) >= 1, "a list of widths ≥ 1"),
        ("critic_hidden", len(config.critic_hidden) >= 1 and min(config.critic_hidden) >= 1, "a list of widths ≥ 1"),
        ("vae_hidden", min(widths) >= 1, "≥ 1"),
        ("vae_latent", config.vae_latent >= 1, "≥ 1"),
        ("multiplier_hidden", config.multiplier_hidden >= 1, "≥ 1"),
        ("num_q", config.num_q >= 1, "≥ 1"),
        ("num_qc", config.num_qc >= 1, "≥ 1"),
        ("beta", config.beta >= 0, "≥ 0"),
        ("ood_threshold", 0.0 < config.ood_threshold < 1.0, "in (0, 1)"),
        ("max_log_multiplier", LOG_MULTIPLIER_MIN < config.max_log_multiplier <= 20.0, "in (−20, 20]"),
        ("multiplier_decay", config.multiplier_decay >= 0, "≥ 0"),
        ("warmup_fraction", 0.0 <= config.warmup_fraction < 1.0, "in [0, 1)"),
    ]
    for name, ok, requirement in checks:
        if not ok:
            raise ConfigError(f"ccac.{name} must be {requirement}, got {getattr(config, name)!r}")


# ---------------------------------------------------------------------- pure pieces


def cost_to_go(costs: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each transition's threshold in the data, the undiscounted cost its episode receives from it on
    (c_t + c_{t+1} + … + c_{T−1}), and the next transition's (0 after an episode's last): (c, c'), float32, one entry
    per transition. Transitions outside every episode get 0."""
    costs = np.asarray(costs, np.float64)
    now, after = np.zeros(costs.shape[0], np.float64), np.zeros(costs.shape[0], np.float64)
    for s, n in zip(np.asarray(start), np.asarray(length)):
        now[s : s + n] = np.cumsum(costs[s : s + n][::-1])[::-1]
        after[s : s + n - 1] = now[s + 1 : s + n]
    return now.astype(np.float32), after.astype(np.float32)


def clip_forward(x: jax.Array, low: Any, high: Any) -> jax.Array:
    """``x`` clipped to [low, high] in the forward pass, with the gradient of ``x`` itself (the authors clip a
    tensor's ``.data``, which autograd does not see)."""
    return x + jax.lax.stop_gradient(jnp.clip(x, low, high) - x)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of ``x`` over the entries where ``mask`` is 1 (0 when there are none)."""
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def squared_norm(params: Any) -> jax.Array:
    """Σ ‖θ‖² over every array of ``params``."""
    return sum((jnp.square(p).sum() for p in jax.tree.leaves(params)), jnp.zeros(()))


# ---------------------------------------------------------------------- networks


class ConditionedVAE(nn.Module):
    """The constraint-conditioned VAE: q(z | s, a, c) and a decoder D(z, c) of whole state-action pairs."""

    hidden: int
    latent_dim: int
    out_dim: int

    def setup(self) -> None:
        self.encoder = MLP((self.hidden, self.hidden), 2 * self.latent_dim)
        self.decoder = MLP((self.hidden, self.hidden), self.out_dim)

    def encode(self, sa: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and standard deviation of q(z | s, a, c) (log std clipped to [−4, 15])."""
        mean, log_std = jnp.split(self.encoder(jnp.concatenate([sa, c[:, None]], axis=-1)), 2, axis=-1)
        return mean, jnp.exp(jnp.clip(log_std, -4.0, 15.0))

    def decode(self, z: jax.Array, c: jax.Array) -> jax.Array:
        """D(z, c) before the clip to the data's box."""
        return self.decoder(jnp.concatenate([z, c[:, None]], axis=-1))

    def __call__(self, sa: jax.Array, c: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, std = self.encode(sa, c)
        return self.decode(mean + std * jax.random.normal(key, mean.shape), c), mean, std


def with_threshold(x: jax.Array, c: jax.Array) -> jax.Array:
    """``x`` with the threshold ``c`` as its last column (what every conditioned network reads)."""
    return jnp.concatenate([x, c[:, None]], axis=-1)


def actor_network(config: CCACConfig, obs_dim: int, act_dim: int) -> tuple[Callable[..., jax.Array], Any]:
    """The evaluated policy as a function of ``{"actor", "limits": [κ]}``, normalised observations and a threshold
    per row (c̃, in the critics' units): tanh(μ(s, c̃)); and a template of those parameters."""
    net = SquashedGaussianActor(tuple(config.actor_hidden), act_dim)

    def act(params: Any, obs: jax.Array, threshold: jax.Array) -> jax.Array:
        return jnp.tanh(net.apply(params["actor"], with_threshold(obs, threshold))[0])

    template = {"actor": net.init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim + 1))), "limits": jnp.zeros(1)}
    return act, template


def first_step_fn(config: CCACConfig, budget_fn: Callable[..., jax.Array]) -> Callable[[Any, jax.Array], jax.Array]:
    """The action at an episode's first step (the whole of κ left), a function of the observation alone."""

    def first(params: Any, obs: jax.Array) -> jax.Array:
        threshold = config.cost_scale * jnp.maximum(params["limits"][0], 0.0)
        return budget_fn(params, obs, jnp.full(obs.shape[:-1], threshold))

    return first


class BudgetPolicy(CostTrackingPolicy):
    """CCAC's evaluated policy: at every step, the actor's mean action for the budget left in each environment
    copy's episode, c̃ = ``cost_scale`` · max(κ − C_t, 0) (the authors' ``rollout``). The episode bookkeeping is
    :class:`~o3srl.policy.CostTrackingPolicy`'s; ``cost_limit`` may be changed between episodes."""

    def __init__(self, budget_fn: Callable[..., jax.Array], params: Any, stats: NormStats, cost_scale: float) -> None:
        super().__init__(params, stats, float(np.asarray(params["limits"])[0]))
        self._budget_fn = jax.jit(budget_fn)
        self.cost_scale = cost_scale

    def threshold(self, slot: int = 0) -> float:
        """c̃ of slot ``slot``'s next step."""
        return self.cost_scale * max(self.cost_limit - self.spent(slot), 0.0)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        batch, single = as_batch(obs, self.obs_dim)
        self.start_rows(len(batch))
        thresholds = np.array([self.threshold(i) for i in range(len(batch))], np.float32)
        action = self._budget_fn(
            self.actor_params, jnp.asarray(normalize_obs(batch, self.stats)), jnp.asarray(thresholds)
        )
        self.end_step(len(batch))
        action = np.asarray(denormalize_action(np.asarray(action), self.stats), np.float32)
        return action[0] if single else action


def budget_policy(config: CCACConfig, params: Any, stats: NormStats) -> BudgetPolicy:
    """The evaluated policy of a CCAC run with output parameters ``params``."""
    budget_fn, _ = actor_network(config, int(stats.obs_mean.shape[0]), int(stats.action_low.shape[0]))
    return BudgetPolicy(budget_fn, params, stats, config.cost_scale)


# ---------------------------------------------------------------------- training


class CCACState(flax.struct.PyTreeNode):
    actor: Any
    critic: Any  # {"reward", "cost"}: num_q and num_qc networks
    critic_target: Any
    vae: Any
    classifier: Any
    multiplier: Any  # {"critic": g_1, "actor": g_3}
    actor_opt: Any
    critic_opt: Any
    vae_opt: Any
    classifier_opt: Any
    multiplier_opt: Any  # {"critic", "actor"}: one Adam state each
    sa_low: jax.Array  # the data's box of (normalised) state-action pairs, set by prepare
    sa_high: jax.Array
    step: jax.Array
    key: jax.Array


class CCAC(StepLearner):
    """CCAC as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is ``steps_per_round``
    gradient steps; its output is the budget-conditioned policy (:class:`BudgetPolicy`), which conditions on the
    cost received so far in the episode (output kind ``sequence``).

    ``thresholds``: each transition's threshold and the next one's (:func:`cost_to_go`), in the data's order."""

    title = "CCAC"

    def __init__(
        self, config: CCACConfig, setting: Setting, steps_per_round: int, thresholds: tuple[np.ndarray, np.ndarray]
    ) -> None:
        _check(config)
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.warmup = int(round(config.warmup_fraction * setting.total_steps))
        obs_dim, act_dim = setting.obs_dim, setting.act_dim
        self.actor = SquashedGaussianActor(tuple(config.actor_hidden), act_dim)
        self.q_r = Critics(tuple(config.critic_hidden), config.num_q)
        self.q_c = Critics(tuple(config.critic_hidden), config.num_qc)
        self.vae = ConditionedVAE(config.vae_hidden, config.vae_latent, obs_dim + act_dim)
        self.classifier = MLP((config.vae_hidden, config.vae_hidden), 1)
        self.multiplier = MLP((config.multiplier_hidden, config.multiplier_hidden), 1)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)
        self.vae_tx = optax.adam(config.vae_lr)
        self.multiplier_tx = optax.adam(config.multiplier_lr)
        scale = np.float32(config.cost_scale)
        self.thresholds = jnp.asarray(thresholds[0] * scale), jnp.asarray(thresholds[1] * scale)
        self._budget_fn, _ = actor_network(config, obs_dim, act_dim)
        self._first = first_step_fn(config, self._budget_fn)

    def init(self, key: jax.Array) -> CCACState:
        ks = jax.random.split(key, 8)
        obs_dim, act_dim = self.setting.obs_dim, self.setting.act_dim
        obs_c, act = jnp.zeros((1, obs_dim + 1)), jnp.zeros((1, act_dim))
        sa, c = jnp.zeros((1, obs_dim + act_dim)), jnp.zeros((1,))
        actor = self.actor.init(ks[0], obs_c)
        critic = {"reward": self.q_r.init(ks[1], obs_c, act), "cost": self.q_c.init(ks[2], obs_c, act)}
        vae = self.vae.init(ks[3], sa, c, jax.random.PRNGKey(0))
        classifier = self.classifier.init(ks[4], with_threshold(sa, c))
        multiplier = {
            "critic": self.multiplier.init(ks[5], c[:, None]),
            "actor": self.multiplier.init(ks[6], c[:, None]),
        }
        return CCACState(
            actor=actor,
            critic=critic,
            critic_target=critic,
            vae=vae,
            classifier=classifier,
            multiplier=multiplier,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            vae_opt=self.vae_tx.init(vae),
            classifier_opt=self.vae_tx.init(classifier),
            multiplier_opt={k: self.multiplier_tx.init(v) for k, v in multiplier.items()},
            sa_low=jnp.zeros((obs_dim + act_dim,), jnp.float32),
            sa_high=jnp.zeros((obs_dim + act_dim,), jnp.float32),
            step=jnp.zeros((), jnp.int32),
            key=ks[7],
        )

    def prepare(self, state: CCACState, data: DeviceData) -> CCACState:
        """The data's box of state-action pairs, which the decoder's pairs are clipped to (the authors' ``sa_min``,
        ``sa_max``; actions span [−1, 1])."""
        act_dim = self.setting.act_dim
        low = jnp.concatenate([data.obs.min(axis=0), -jnp.ones(act_dim)])
        high = jnp.concatenate([data.obs.max(axis=0), jnp.ones(act_dim)])
        return state.replace(sa_low=low, sa_high=high)

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The action at an episode's first step (the whole of κ left); later steps need the episode's cost so far
        (:class:`BudgetPolicy`)."""
        return self._first(actor_params, obs)

    # ------------------------------------------------------------------ pieces
    def sample(self, actor: Any, obs: jax.Array, c: jax.Array, key: jax.Array) -> jax.Array:
        """A reparameterised draw tanh(μ + σ ε) from π(· | s, c)."""
        mean, log_std = self.actor.apply(actor, with_threshold(obs, c))
        return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))

    def cost_value(self, params: Any, obs: jax.Array, c: jax.Array, act: jax.Array) -> jax.Array:
        """The cost critics' values, softplus-ed: (num_qc, batch)."""
        return jax.nn.softplus(self.q_c.apply(params, with_threshold(obs, c), act))

    def log_multiplier(self, params: Any, c: jax.Array) -> jax.Array:
        """log λ(c) per row, clipped in the forward pass only (:func:`clip_forward`)."""
        raw = self.multiplier.apply(params, c[:, None])[:, 0]
        return clip_forward(raw, LOG_MULTIPLIER_MIN, self.config.max_log_multiplier)

    def generate(self, vae: Any, c: jax.Array, key: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
        """Pairs D(ẑ, c) for ẑ ~ clip(N(0, I), −1, 1), clipped to the data's box: (batch, obs + act)."""
        z = jnp.clip(jax.random.normal(key, (c.shape[0], self.config.vae_latent)), -1.0, 1.0)
        return clip_forward(self.vae.apply(vae, z, c, method=ConditionedVAE.decode), low, high)

    # ------------------------------------------------------------------ losses
    def vae_loss(
        self, vae: Any, sa: jax.Array, c: jax.Array, key: jax.Array, low: jax.Array, high: jax.Array
    ) -> tuple[jax.Array, tuple[Metrics, jax.Array]]:
        recon, mean, std = self.vae.apply(vae, sa, c, key)
        recon = clip_forward(recon, low, high)
        mse = ((recon - sa) ** 2).mean()
        kl = gaussian_kl(mean, std).mean()
        return mse + self.config.beta * kl, ({"loss/vae_reconstruction": mse, "loss/vae_kl": kl}, recon)

    def classifier_loss(
        self, classifier: Any, sa: jax.Array, recon: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        c0 = jnp.full_like(c, c[0])
        labels = jnp.where(c > c[0], 1.0, 0.0)
        inputs = jnp.concatenate([with_threshold(sa, c0), with_threshold(jax.lax.stop_gradient(recon), c0)])
        logits = self.classifier.apply(classifier, inputs)[:, 0]
        both = jnp.concatenate([labels, labels])
        loss = optax.sigmoid_binary_cross_entropy(logits, both).mean()
        accuracy = (jnp.where(jax.nn.sigmoid(logits) > self.config.ood_threshold, 1.0, 0.0) == both).mean()
        return loss, {"loss/classifier": loss, "ccac/classifier_accuracy": accuracy}

    def critic_loss(
        self,
        critic: Any,
        state: CCACState,
        batch: Batch,
        c: jax.Array,
        c_next: jax.Array,
        ood: tuple[jax.Array, jax.Array, jax.Array],
        key: jax.Array,
    ) -> tuple[jax.Array, tuple[Metrics, jax.Array]]:
        cfg = self.config
        not_done = 1.0 - batch.terminals
        next_a = self.sample(state.actor, batch.next_obs, c_next, key)
        next_in = with_threshold(batch.next_obs, c_next)
        next_qr = self.q_r.apply(state.critic_target["reward"], next_in, next_a).min(axis=0)
        next_qc = self.cost_value(state.critic_target["cost"], batch.next_obs, c_next, next_a).min(axis=0)
        y_r = jax.lax.stop_gradient(cfg.reward_scale * batch.rewards + cfg.gamma * not_done * next_qr)
        y_c = jax.lax.stop_gradient(cfg.cost_scale * batch.costs + cfg.gamma * not_done * next_qc)
        q_r = self.q_r.apply(critic["reward"], with_threshold(batch.obs, c), batch.actions)
        q_c = self.cost_value(critic["cost"], batch.obs, c, batch.actions)
        loss_r = ((q_r - y_r) ** 2).mean(axis=1).sum()
        loss_c = ((q_c - y_c) ** 2).mean(axis=1).sum()
        # The generated pairs the classifier flags: their cost value is pushed above the threshold.
        ood_obs, ood_act, flagged = ood
        q_ood = self.cost_value(critic["cost"], ood_obs, c, ood_act).min(axis=0)
        lam = jax.lax.stop_gradient(jnp.exp(self.log_multiplier(state.multiplier["critic"], c)))
        penalty = -masked_mean(lam * (q_ood - c), flagged)
        metrics = {
            "loss/critic_reward": loss_r,
            "loss/critic_cost": loss_c,
            "q/reward": q_r.mean(),
            "q/cost": q_c.mean(),
            "ccac/ood_fraction": flagged.mean(),
            "ccac/ood_cost_value": masked_mean(q_ood, flagged),
            "ccac/critic_multiplier": masked_mean(lam, flagged),
        }
        return loss_r + loss_c + penalty, (metrics, jax.lax.stop_gradient(q_ood))

    def multiplier_loss(self, params: Any, c: jax.Array, gap: jax.Array, weight: jax.Array) -> jax.Array:
        """E_weight[λ(c) · gap] + decay ‖θ‖²: λ rises where ``gap`` < 0 and falls where it is > 0."""
        lam = jnp.exp(self.log_multiplier(params, c))
        return masked_mean(lam * gap, weight) + self.config.multiplier_decay * squared_norm(params)

    def actor_loss(
        self, actor: Any, state: CCACState, critic: Any, obs: jax.Array, c: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, tuple[Metrics, jax.Array]]:
        a = self.sample(actor, obs, c, key)
        q_r = self.q_r.apply(critic["reward"], with_threshold(obs, c), a).min(axis=0)
        q_c = self.cost_value(critic["cost"], obs, c, a).min(axis=0)
        lam = jax.lax.stop_gradient(jnp.exp(self.log_multiplier(state.multiplier["actor"], c)))
        loss = (-q_r + lam * (q_c - c)).mean()
        metrics = {
            "loss/actor": loss,
            "q/policy_reward": q_r.mean(),
            "q/policy_cost": q_c.mean(),
            "ccac/policy_over_threshold": (q_c - c).mean(),
            "ccac/actor_multiplier": lam.mean(),
        }
        return loss, (metrics, jax.lax.stop_gradient(q_c))

    # ------------------------------------------------------------------ update
    def update(self, state: CCACState, data: DeviceData) -> tuple[CCACState, Metrics]:
        """One gradient step: the VAE and the classifier, then (after the warm-up) the critics and the first
        multiplier, the actor and the second multiplier, and the critics' targets."""
        cfg = self.config
        key, k_batch, k_vae, k_next, k_gen, k_actor = jax.random.split(state.key, 6)
        idx = sample_indices(k_batch, data, cfg.batch_size)
        batch = batch_at(data, idx)
        c, c_next = self.thresholds[0][idx], self.thresholds[1][idx]
        sa = jnp.concatenate([batch.obs, batch.actions], axis=-1)

        (vae_value, (vae_metrics, recon)), vae_grads = jax.value_and_grad(self.vae_loss, has_aux=True)(
            state.vae, sa, c, k_vae, state.sa_low, state.sa_high
        )
        vae, vae_opt = adam_step(self.vae_tx, state.vae, state.vae_opt, vae_grads)
        (_, cls_metrics), cls_grads = jax.value_and_grad(self.classifier_loss, has_aux=True)(
            state.classifier, sa, recon, c
        )
        classifier, classifier_opt = adam_step(self.vae_tx, state.classifier, state.classifier_opt, cls_grads)
        state = state.replace(vae=vae, vae_opt=vae_opt, classifier=classifier, classifier_opt=classifier_opt)
        metrics = {**vae_metrics, **cls_metrics, "loss/vae": vae_value}

        def actor_critic(s: CCACState) -> tuple[CCACState, Metrics]:
            obs_dim = self.setting.obs_dim
            generated = self.generate(s.vae, c, k_gen, s.sa_low, s.sa_high)
            prob = jax.nn.sigmoid(self.classifier.apply(s.classifier, with_threshold(generated, c))[:, 0])
            flagged = jnp.where(prob > cfg.ood_threshold, 1.0, 0.0)
            ood = (generated[:, :obs_dim], generated[:, obs_dim:], flagged)
            (_, (c_metrics, q_ood)), c_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
                s.critic, s, batch, c, c_next, ood, k_next
            )
            critic, critic_opt = adam_step(self.critic_tx, s.critic, s.critic_opt, c_grads)
            m_grads = jax.grad(self.multiplier_loss)(s.multiplier["critic"], c, q_ood - c, flagged)
            stepped, stepped_opt = adam_step(
                self.multiplier_tx, s.multiplier["critic"], s.multiplier_opt["critic"], m_grads
            )
            # The authors step this multiplier only when some pair was flagged.
            take = flagged.sum() > 0

            def keep(new: Any, old: Any) -> Any:
                return jax.tree.map(lambda n, o: jnp.where(take, n, o), new, old)

            m_critic, m_critic_opt = (
                keep(stepped, s.multiplier["critic"]),
                keep(stepped_opt, s.multiplier_opt["critic"]),
            )

            (_, (a_metrics, q_c)), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
                s.actor, s, critic, batch.obs, c, k_actor
            )
            actor, actor_opt = adam_step(self.actor_tx, s.actor, s.actor_opt, a_grads)
            m_grads = jax.grad(self.multiplier_loss)(s.multiplier["actor"], c, c - q_c, jnp.ones_like(c))
            m_actor, m_actor_opt = adam_step(
                self.multiplier_tx, s.multiplier["actor"], s.multiplier_opt["actor"], m_grads
            )
            s = s.replace(
                actor=actor,
                actor_opt=actor_opt,
                critic=critic,
                critic_opt=critic_opt,
                critic_target=optax.incremental_update(critic, s.critic_target, cfg.tau),
                multiplier={"critic": m_critic, "actor": m_actor},
                multiplier_opt={"critic": m_critic_opt, "actor": m_actor_opt},
            )
            return s, {**c_metrics, **a_metrics}

        def warm_up(s: CCACState) -> tuple[CCACState, Metrics]:
            shapes = jax.eval_shape(actor_critic, s)[1]
            return s, {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}

        state, ac_metrics = jax.lax.cond(state.step >= self.warmup, actor_critic, warm_up, state)
        return state.replace(step=state.step + 1, key=key), {**metrics, **ac_metrics}

    def output(self, state: CCACState) -> tuple[Any, OutputKind]:
        return {"actor": state.actor, "limits": jnp.asarray([self.setting.cost_limit], jnp.float32)}, "sequence"

    def run_info(self) -> dict[str, Any]:
        return {
            "ccac_cost_limit": self.setting.cost_limit,
            "ccac_warmup_steps": self.warmup,
            "ccac_threshold_max": float(self.thresholds[0].max()),
        }
