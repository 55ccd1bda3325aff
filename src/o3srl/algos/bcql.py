"""BCQ-Lag: batch-constrained Q-learning (Fujimoto, Meger & Precup, 2019) with a PID-Lagrangian cost penalty, a
baseline of offline safe RL.

BCQ acts only near the data: a conditional VAE proposes actions like the data's, and the actor may move a proposal
by at most φ. The Lagrangian version adds twin cost critics and penalises the actor's cost value above the threshold
with a multiplier set by a PID controller (Stooke, Achiam & Abbeel, 2020). As OSRL runs it
(``osrl/algorithms/bcql.py``, defaults from ``examples/configs/bcql_configs.py``), one gradient step is, in order:

    VAE:           min  E ‖D(s, z) − a‖² / dim(a) + β KL(q(z | s, a) ‖ N(0, I)),   z = μ(s, a) + σ(s, a) ε
    actions        ξ(s, â) = clip(â + φ tanh(f(s, â)), −1, 1),   â = D(s, z), z ~ N(0, I) clipped to [−0.5, 0.5]
    critics        y = r + γ (1 − terminal) max_{j ≤ n} [λ min(Q1, Q2) + (1 − λ) max(Q1, Q2)]^targ(s', ξ^targ(s', â_j))
                   (n = ``sample_actions`` proposals per next state; the cost critics alike, with c for r)
    actor          min  −E min(Q1, Q2)(s, ξ(s, â)) + ν E (min(Qc1, Qc2)(s, ξ(s, â)) − B)
    multiplier     e = E min(Qc1, Qc2)(s, ξ(s, â)) − B;  I ← max(I + e, 0);  ν = max(K_P max(e, 0) + K_I I
                   + K_D max(e − e_prev, 0), 0)
    targets        Polyak averaging of the actor and all critics at rate τ

Q1 and Q2 are each the minimum over ``num_q`` networks (OSRL's ``EnsembleDoubleQCritic``). B is the cost limit as
a threshold on the discounted cost value (``o3srl.transforms.make_budget``; OSRL's ``qc_thres`` under the default
``osrl`` convention). OSRL's defaults: actor and critics 2 × 256 (the actor with tanh hidden units), VAE 2 × 400
with a latent of 2 dim(a), 10 proposals, φ = 0.05, λ = 0.75, β = 0.5, PID gains (0.1, 0.003, 0.001), two networks
per critic head, learning rates 1e-3, batch 512, reward × 0.1, cost × 1, γ = 0.99, τ = 0.005, 100k steps.

Where this differs from OSRL's code, on purpose (docs/algorithms/bcql.md):
- The evaluated policy is deterministic: ξ(s, D(s, 0)), the actor's correction of the VAE's proposal at the prior's
  mode. OSRL draws a fresh z for every action it takes, so its evaluated policy is stochastic; a saved policy here is
  a function of the observation, like every other algorithm's.
- Terminals, not timeouts, end bootstrapping, in both critics (OSRL's reward critic stops at timeouts too, and its
  cost critic ignores terminals).
- One Adam for the reward and cost critics (the same update as OSRL's two, Adam being elementwise).
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

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step, twin_critic_loss
from o3srl.data.sampler import Batch, DeviceData, sample_batch
from o3srl.errors import ConfigError
from o3srl.nets import MLP, VAE, Critics, vae_loss


@dataclass(frozen=True)
class BCQLConfig:
    """BCQ-Lag hyperparameters (OSRL's BCQ-Lag defaults for the Bullet tasks)."""

    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    vae_hidden: int = 400
    """Width of the VAE's two hidden layers (encoder and decoder); its latent has 2 dim(a) dimensions."""
    sample_actions: int = 10
    """VAE proposals per next state in the critics' targets."""
    phi: float = 0.05
    """φ: the largest correction the actor may add to a proposal (actions lie in [−1, 1])."""
    lmbda: float = 0.75
    """λ: the targets' weight on the smaller of the two critic heads (1 − λ on the larger)."""
    beta: float = 0.5
    """Weight of the VAE's KL term."""
    pid: tuple[float, float, float] = (0.1, 0.003, 0.001)
    """(K_P, K_I, K_D) of the PID controller that sets the cost multiplier."""
    num_q: int = 2
    """Networks per critic head (two heads each for reward and cost)."""
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 512


class PerturbationActor(nn.Module):
    """ξ(s, â) = clip(â + φ tanh(f(s, â)), −1, 1), f an MLP with tanh hidden units (OSRL's)."""

    hidden: tuple[int, ...]
    act_dim: int
    phi: float

    @nn.compact
    def __call__(self, obs: jax.Array, proposal: jax.Array) -> jax.Array:
        out = MLP(self.hidden, self.act_dim, activation=nn.tanh)(jnp.concatenate([obs, proposal], axis=-1))
        return jnp.clip(proposal + self.phi * jnp.tanh(out), -1.0, 1.0)


def pid_multiplier(
    error: jax.Array, previous: jax.Array, integral: jax.Array, gains: tuple[float, float, float]
) -> tuple[jax.Array, jax.Array]:
    """OSRL's ``LagrangianPIDController.control`` for the error e = E Q_c − B: returns (ν, the new integral), with
    I ← max(I + e, 0) and ν = max(K_P max(e, 0) + K_I I + K_D max(e − e_prev, 0), 0)."""
    kp, ki, kd = gains
    integral = jnp.maximum(integral + error, 0.0)
    nu = kp * jnp.maximum(error, 0.0) + ki * integral + kd * jnp.maximum(error - previous, 0.0)
    return jnp.maximum(nu, 0.0), integral


def actor_network(config: BCQLConfig, obs_dim: int, act_dim: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The evaluated policy ξ(s, D(s, 0)) as a function of {"actor", "vae"} parameters, and their template."""
    actor = PerturbationActor(tuple(config.actor_hidden), act_dim, config.phi)
    vae = VAE(config.vae_hidden, act_dim, 2 * act_dim)
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))

    def policy(params: Any, o: jax.Array) -> jax.Array:
        proposal = vae.apply(params["vae"], o, jnp.zeros((*o.shape[:-1], 2 * act_dim)), method=VAE.decode)
        return actor.apply(params["actor"], o, proposal)

    key = jax.random.PRNGKey(0)
    return policy, {"actor": actor.init(key, obs, act), "vae": vae.init(key, obs, act, key)}


class BCQLState(flax.struct.PyTreeNode):
    actor: Any
    actor_target: Any
    critic: Any  # {"reward": params, "cost": params}; each 2 × num_q networks (heads Q1, Q2)
    critic_target: Any
    vae: Any
    actor_opt: Any
    critic_opt: Any
    vae_opt: Any
    pid_error: jax.Array  # the last step's error e
    pid_integral: jax.Array
    key: jax.Array


class BCQL(StepLearner):
    """BCQ-Lag as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is
    ``steps_per_round`` gradient steps, so its runs log, checkpoint and resume like O3SRL's."""

    title = "BCQ-Lag"

    def __init__(self, config: BCQLConfig, setting: Setting, steps_per_round: int) -> None:
        widths = (*config.actor_hidden, *config.critic_hidden, config.vae_hidden, config.batch_size)
        if min(widths) < 1 or config.sample_actions < 1 or config.num_q < 1:
            raise ConfigError(
                "bcq-lag: hidden widths, batch_size, sample_actions and num_q must be ≥ 1, got "
                f"{config.actor_hidden}, {config.critic_hidden}, {config.vae_hidden}, {config.batch_size}, "
                f"{config.sample_actions} and {config.num_q}"
            )
        if not 0.0 <= config.gamma < 1.0 or not 0.0 < config.tau <= 1.0 or not 0.0 <= config.lmbda <= 1.0:
            raise ConfigError(
                f"bcq-lag: gamma must be in [0, 1), tau in (0, 1] and lmbda in [0, 1], got {config.gamma}, "
                f"{config.tau} and {config.lmbda}"
            )
        if config.phi < 0 or min(config.pid) < 0:
            raise ConfigError(f"bcq-lag: phi and the pid gains must be ≥ 0, got {config.phi} and {config.pid}")
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.budget = setting.budget(config)
        self.threshold = self.budget.value  # B, in the critics' (scaled) units
        self.latent_dim = 2 * setting.act_dim
        self.actor = PerturbationActor(tuple(config.actor_hidden), setting.act_dim, config.phi)
        self.critics = Critics(tuple(config.critic_hidden), 2 * config.num_q)
        self.vae = VAE(config.vae_hidden, setting.act_dim, self.latent_dim)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)
        self.vae_tx = optax.adam(config.vae_lr)
        self._policy, _ = actor_network(config, setting.obs_dim, setting.act_dim)

    def init(self, key: jax.Array) -> BCQLState:
        k_actor, k_r, k_c, k_vae, k_state = jax.random.split(key, 5)
        obs = jnp.zeros((1, self.setting.obs_dim))
        act = jnp.zeros((1, self.setting.act_dim))
        actor = self.actor.init(k_actor, obs, act)
        critic = {"reward": self.critics.init(k_r, obs, act), "cost": self.critics.init(k_c, obs, act)}
        vae = self.vae.init(k_vae, obs, act, jax.random.PRNGKey(0))
        zero = jnp.zeros((), jnp.float32)
        return BCQLState(
            actor=actor,
            actor_target=actor,
            critic=critic,
            critic_target=critic,
            vae=vae,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            vae_opt=self.vae_tx.init(vae),
            pid_error=zero,
            pid_integral=zero,
            key=k_state,
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The evaluated policy ξ(s, D(s, 0)); ``actor_params`` holds the actor's and the VAE's parameters."""
        return self._policy(actor_params, obs)

    # ------------------------------------------------------------------ pieces
    def heads(self, params: Any, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(Q1, Q2): each head's minimum over its ``num_q`` networks."""
        q = self.critics.apply(params, obs, act).reshape(2, self.config.num_q, -1)
        return q[0].min(axis=0), q[1].min(axis=0)

    def propose(self, vae: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        """VAE proposals â = D(s, z), z ~ N(0, I) clipped to [−0.5, 0.5] (BCQ's)."""
        z = jnp.clip(jax.random.normal(key, (*obs.shape[:-1], self.latent_dim)), -0.5, 0.5)
        return self.vae.apply(vae, obs, z, method=VAE.decode)

    def target(self, state: BCQLState, vae: Any, params: Any, next_obs: jax.Array, key: jax.Array) -> jax.Array:
        """max over n proposals of λ min(Q1, Q2) + (1 − λ) max(Q1, Q2), target networks at the next states."""
        cfg = self.config
        n, b = cfg.sample_actions, next_obs.shape[0]
        obs = jnp.repeat(next_obs, n, axis=0)
        act = self.actor.apply(state.actor_target, obs, self.propose(vae, obs, key))
        q1, q2 = self.heads(params, obs, act)
        q = cfg.lmbda * jnp.minimum(q1, q2) + (1.0 - cfg.lmbda) * jnp.maximum(q1, q2)
        return q.reshape(b, n).max(axis=1)

    # ------------------------------------------------------------------ losses
    def critic_loss(
        self, critic: Any, state: BCQLState, vae: Any, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        k_r, k_c = jax.random.split(key)
        next_r = self.target(state, vae, state.critic_target["reward"], batch.next_obs, k_r)
        next_c = self.target(state, vae, state.critic_target["cost"], batch.next_obs, k_c)
        q_r = self.critics.apply(critic["reward"], batch.obs, batch.actions)
        q_c = self.critics.apply(critic["cost"], batch.obs, batch.actions)
        return twin_critic_loss(q_r, q_c, batch, next_r, next_c, cfg.reward_scale, cfg.cost_scale, cfg.gamma)

    def actor_loss(
        self, actor: Any, critic: Any, proposal: jax.Array, batch: Batch, nu: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        a = self.actor.apply(actor, batch.obs, proposal)
        q_r = jnp.minimum(*self.heads(critic["reward"], batch.obs, a))
        q_c = jnp.minimum(*self.heads(critic["cost"], batch.obs, a))
        return -q_r.mean() + (nu * (q_c - self.threshold)).mean(), q_c.mean()

    # ------------------------------------------------------------------ update
    def update(self, state: BCQLState, data: DeviceData) -> tuple[BCQLState, Metrics]:
        """One gradient step of the VAE, the critics, the actor (its multiplier from the PID controller), and the
        targets."""
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

        proposal = self.propose(vae, batch.obs, k_actor)
        a = self.actor.apply(state.actor, batch.obs, proposal)
        error = jnp.minimum(*self.heads(critic["cost"], batch.obs, a)).mean() - self.threshold
        nu, integral = pid_multiplier(error, state.pid_error, state.pid_integral, cfg.pid)
        (a_value, policy_cost), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            state.actor, critic, proposal, batch, nu
        )
        actor, actor_opt = adam_step(self.actor_tx, state.actor, state.actor_opt, a_grads)
        state = state.replace(
            actor=actor,
            actor_target=optax.incremental_update(actor, state.actor_target, cfg.tau),
            critic=critic,
            critic_target=optax.incremental_update(critic, state.critic_target, cfg.tau),
            vae=vae,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            vae_opt=vae_opt,
            pid_error=error,
            pid_integral=integral,
            key=key,
        )
        metrics = {
            **c_metrics,
            "loss/vae": vae_value,
            "loss/actor": a_value,
            "q/policy_cost": policy_cost,
            "bcql/multiplier": nu,
        }
        return state, metrics

    def output(self, state: BCQLState) -> tuple[Any, OutputKind]:
        return {"actor": state.actor, "vae": state.vae}, "single"

    def run_info(self) -> dict[str, Any]:
        return {
            "budget_per_step": self.budget.per_step,
            "budget_value": self.budget.reported_value,
            "bcql_threshold": self.threshold,
        }
