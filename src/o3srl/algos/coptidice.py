"""COptiDICE: offline constrained policy optimisation by stationary distribution correction estimation (Lee, Paduraru,
Mankowitz, Heess, Precup, Kim & Guez, ICLR 2022), a baseline of offline safe RL.

COptiDICE never learns a Q-function. It estimates the ratio w(s, a) = d^π(s, a) / d^D(s, a) of the best feasible
policy's discounted stationary distribution to the data's, by the dual of a linear programme over stationary
distributions regularised by an f-divergence to the data; the policy is then extracted by weighted behaviour
cloning. As OSRL runs it (``osrl/algorithms/coptidice.py``, defaults from ``examples/configs/coptidice_configs.py``,
after DeepMind's ``constrained_optidice``), one gradient step on a minibatch of transitions (s, a, r, c, s') and
initial observations s0 is, in order (λ = softplus(λ̃), τ = softplus(τ̃), both as they stand at the step's start):

    residual      e(s, a, s') = r − λ c + γ (1 − terminal) ν(s') − ν(s)
    ratio         w(s, a) = max(0, (f')⁻¹(e / α))            (the closed-form inner maximiser)
    cost bound    ℓ_i = (1 − γ) χ(s0_i) + w_i (c_i + γ (1 − terminal_i) χ(s'_i) − χ(s_i))      (w without gradient)
                  ω = n softmax(ℓ / τ),   D_KL = E [ω log ω − ω + 1],   Ĉ = E [ω w c]
                  χ:  min E [ω ℓ];     τ̃:  min τ (ε − D_KL);     λ̃:  min λ (ĉ − Ĉ)
    ν             min (1 − γ) E ν(s0) + E [w e − α f(w)]     (λ without gradient)
    policy        max E [w' log π(ã | s + ε_s)],   ã = a + ε_a,   w' = w under the ν just updated, no gradient

with the soft-χ² divergence by default (``f_type``):

    f(x) = x log x − x + 1 for x < 1, (x − 1)² / 2 for x ≥ 1;      (f')⁻¹(y) = exp(y) for y < 0, y + 1 for y ≥ 0

(``chi2``: f(x) = (x − 1)² / 2, (f')⁻¹(y) = y + 1; ``kl``: f(x) = x log x, (f')⁻¹(y) = exp(y − 1)). ν and χ are each
the minimum over ``num_nu`` / ``num_chi`` state-value networks (OSRL's ``EnsembleQCritic`` without an action input).
Ĉ is an upper bound of the policy's cost E_{d^π}[c]: the worst reweighting ω of the minibatch within KL radius ε =
``cost_ub_epsilon`` (the DICE estimate is uncertain, so COptiDICE constrains its pessimistic value), and λ rises
while Ĉ exceeds the limit ĉ. ε_s ~ N(0, (0.1 σ_s)²) and ε_a ~ N(0, (0.1 σ_a)²), σ the data's per-dimension standard
deviations: OSRL's noise on the cloned pairs. λ̃ and τ̃ start at 1 (OSRL's). The policy is a tanh-squashed Gaussian
(log std clipped to [−20, 2], ReLU hidden units); the evaluated policy is deterministic, its mean action tanh(μ(s)).

The cost limit. d^π is normalised ((1 − γ) Σ_t γ^t Pr(s_t = s, a_t = a)), so E_{d^π}[c] = (1 − γ) V_c(s0): ĉ is the
threshold B on the discounted cost value (``Setting.budget``, in the critics' scaled units) times (1 − γ), i.e. the
scaled per-step budget ``cost_scale`` · b; under the default ``osrl`` budget convention ĉ = κ (1 − γ^T) / T.
``cost_ub_epsilon`` is not a cost: it is the KL radius of the upper bound.

OSRL's defaults for the Bullet tasks: actor, ν and χ networks 2 × 256, two ν and two χ networks, α = 0.5,
soft-χ², ε = 0.01, learning rates 1e-4 (actor, ν and χ, λ and τ), batch 512, reward × 0.1, cost × 1, γ = 0.99,
100k steps.

Where this differs from OSRL's code, on purpose (docs/algorithms/coptidice.md):
- The cost limit is the stationary one, ĉ = (1 − γ) B. OSRL compares Ĉ, a per-step quantity, with ``qc_thres``
  = B itself, a limit 1 / (1 − γ) = 100 times looser (OSRL issue #28), which a per-step cost in [0, 1] never
  reaches: its λ only decays.
- Initial states come as their own minibatch (the dataset's episode-start observations, ``sample_init_obs``), one
  per transition, as in DeepMind's code. OSRL flags the transitions that start an episode and divides by their
  share of the data (``is_init / init_state_propotion``), an estimate of the same expectation in which a few
  flagged samples carry it all.
- The policy's likelihood is the tanh-squashed Gaussian's, log N(atanh(ã); μ, σ) − Σ log(1 − ã²) (ã clipped to
  ±(1 − 10⁻³)), so that the fitted distribution is the one whose mean action tanh(μ) is evaluated. OSRL scores the
  data's action under the pre-tanh Gaussian and then acts tanh(μ), which shrinks every action towards 0
  (a weighted mean action of 1 becomes tanh(1) = 0.76).
- Terminals, not timeouts, end bootstrapping (OSRL's ``done`` is either).
- One Adam for λ̃ and τ̃ (the same update as OSRL's two, Adam being elementwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import optax

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step
from o3srl.algos.cpq import SquashedGaussianActor
from o3srl.data.sampler import Batch, DeviceData, sample_batch, sample_init_obs
from o3srl.errors import ConfigError
from o3srl.nets import Critics

FType = Literal["softchi", "chi2", "kl"]

ACTION_CLIP = 1.0 - 1e-3
"""Cloned actions are clipped to ±ACTION_CLIP before atanh (the squashed Gaussian has no density at ±1)."""
INITIAL_RAW = 1.0
"""λ̃ and τ̃ start here (OSRL's ``torch.ones``): λ = τ = softplus(1) ≈ 1.31."""


@dataclass(frozen=True)
class COptiDICEConfig:
    """COptiDICE hyperparameters (OSRL's COptiDICE defaults for the Bullet tasks)."""

    actor_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the policy (ReLU units)."""
    critic_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the ν and χ networks (state values)."""
    num_nu: int = 2
    """ν networks; ν is their minimum."""
    num_chi: int = 2
    """χ networks; χ is their minimum."""
    alpha: float = 0.5
    """α: the weight of the f-divergence to the data's distribution (larger: closer to the data)."""
    f_type: FType = "softchi"
    """The f-divergence: softchi (soft-χ²), chi2 (χ²) or kl."""
    cost_ub_epsilon: float = 0.01
    """ε: the KL radius of the reweightings over which the cost upper bound is taken (0: no bound, Ĉ = E[w c])."""
    bc_noise: float = 0.1
    """Noise on the cloned observations and actions, as a multiple of the data's per-dimension standard deviation."""
    actor_lr: float = 1e-4
    critic_lr: float = 1e-4
    """Learning rate of ν and χ."""
    scalar_lr: float = 1e-4
    """Learning rate of λ̃ and τ̃."""
    gamma: float = 0.99
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    batch_size: int = 512


# ---------------------------------------------------------------------- pure pieces
def f_divergence(f_type: FType) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]:
    """(f, (f')⁻¹) of the f-divergence ``f_type`` (OSRL's ``get_f_div_fn``)."""
    if f_type == "softchi":

        def f(x: jax.Array) -> jax.Array:
            return jnp.where(x < 1.0, x * (jnp.log(x + 1e-10) - 1.0) + 1.0, 0.5 * (x - 1.0) ** 2)

        def f_prime_inv(y: jax.Array) -> jax.Array:
            return jnp.where(y < 0.0, jnp.exp(jnp.minimum(y, 0.0)), y + 1.0)

    elif f_type == "chi2":

        def f(x: jax.Array) -> jax.Array:
            return 0.5 * (x - 1.0) ** 2

        def f_prime_inv(y: jax.Array) -> jax.Array:
            return y + 1.0

    elif f_type == "kl":

        def f(x: jax.Array) -> jax.Array:
            return x * jnp.log(x + 1e-10)

        def f_prime_inv(y: jax.Array) -> jax.Array:
            return jnp.exp(y - 1.0)

    else:
        raise ConfigError(f"coptidice.f_type must be one of 'softchi', 'chi2', 'kl', got {f_type!r}")
    return f, f_prime_inv


def optimal_ratio(e: jax.Array, alpha: float, f_type: FType) -> jax.Array:
    """w*(e) = max(0, (f')⁻¹(e / α)): the ratio d^π / d^D that maximises w e − α f(w) at residual e."""
    return jax.nn.relu(f_divergence(f_type)[1](e / alpha))


def residual(
    nu_s: jax.Array,
    nu_next: jax.Array,
    rewards: jax.Array,
    costs: jax.Array,
    terminals: jax.Array,
    lam: jax.Array,
    gamma: float,
) -> jax.Array:
    """e = r − λ c + γ (1 − terminal) ν(s') − ν(s) (scaled rewards and costs)."""
    return rewards - lam * costs + gamma * (1.0 - terminals) * nu_next - nu_s


def nu_objective(nu_init: jax.Array, e: jax.Array, alpha: float, gamma: float, f_type: FType) -> jax.Array:
    """The dual's value (1 − γ) E ν(s0) + E [w e − α f(w)], w = w*(e) (ν enters through ``nu_init`` and ``e``)."""
    f, _ = f_divergence(f_type)
    w = optimal_ratio(e, alpha, f_type)
    return (1.0 - gamma) * nu_init.mean() + (w * e - alpha * f(w)).mean()


def cost_upper_bound(
    chi_init: jax.Array,
    chi_s: jax.Array,
    chi_next: jax.Array,
    w: jax.Array,
    costs: jax.Array,
    terminals: jax.Array,
    tau: jax.Array,
    gamma: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(χ's loss E[ω ℓ], the upper bound Ĉ = E[ω w c], D_KL of ω): ℓ = (1 − γ) χ(s0) + w (c + γ (1 − terminal) χ(s')
    − χ(s)), ω = n softmax(ℓ / τ) over the minibatch (``w`` and ``tau`` without gradient)."""
    n = w.shape[0]
    ell = (1.0 - gamma) * chi_init + w * (costs + gamma * (1.0 - terminals) * chi_next - chi_s)
    logits = ell / tau
    weights = jax.nn.softmax(logits) * n
    log_weights = jax.nn.log_softmax(logits) + math.log(n)
    kl = (weights * log_weights - weights + 1.0).mean()
    return (weights * ell).mean(), (weights * w * costs).mean(), kl


def squashed_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """log π(a | s) of the tanh-squashed Gaussian with pre-tanh ``mean`` and ``log_std``, summed over the action
    dimensions; actions are clipped to ±ACTION_CLIP first."""
    a = jnp.clip(actions, -ACTION_CLIP, ACTION_CLIP)
    u = jnp.arctanh(a)
    gaussian = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2.0 * math.pi)
    return (gaussian - jnp.log1p(-(a**2))).sum(axis=-1)


def actor_network(
    config: COptiDICEConfig, obs_dim: int, act_dim: int
) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The evaluated policy tanh(μ(s)) and a template of its parameters (what a saved policy is read into)."""
    net = SquashedGaussianActor(tuple(config.actor_hidden), act_dim)

    def act(params: Any, obs: jax.Array) -> jax.Array:
        return jnp.tanh(net.apply(params, obs)[0])

    return act, net.init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)))


class COptiDICEState(flax.struct.PyTreeNode):
    actor: Any
    critic: Any  # {"nu": params, "chi": params}
    scalars: Any  # {"lambda": λ̃, "tau": τ̃}, pre-softplus
    actor_opt: Any
    nu_opt: Any
    chi_opt: Any
    scalar_opt: Any
    obs_std: jax.Array  # the data's per-dimension standard deviations (set by prepare), scale of the cloning noise
    act_std: jax.Array
    key: jax.Array


class COptiDICE(StepLearner):
    """COptiDICE as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is
    ``steps_per_round`` gradient steps, so its runs log, checkpoint and resume like O3SRL's."""

    title = "COptiDICE"

    def __init__(self, config: COptiDICEConfig, setting: Setting, steps_per_round: int) -> None:
        check_config(config)
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        self.budget = setting.budget(config)
        self.threshold = (1.0 - config.gamma) * self.budget.value  # ĉ, on E_{d^π}[c] in scaled units
        self.f, _ = f_divergence(config.f_type)
        self.actor = SquashedGaussianActor(tuple(config.actor_hidden), setting.act_dim)
        self.nu = Critics(tuple(config.critic_hidden), config.num_nu)
        self.chi = Critics(tuple(config.critic_hidden), config.num_chi)
        self.actor_tx = optax.adam(config.actor_lr)
        self.nu_tx = optax.adam(config.critic_lr)
        self.chi_tx = optax.adam(config.critic_lr)
        self.scalar_tx = optax.adam(config.scalar_lr)
        self._act, _ = actor_network(config, setting.obs_dim, setting.act_dim)

    def init(self, key: jax.Array) -> COptiDICEState:
        k_actor, k_nu, k_chi, k_state = jax.random.split(key, 4)
        obs = jnp.zeros((1, self.setting.obs_dim))
        none = jnp.zeros((1, 0))
        actor = self.actor.init(k_actor, obs)
        critic = {"nu": self.nu.init(k_nu, obs, none), "chi": self.chi.init(k_chi, obs, none)}
        scalars = {"lambda": jnp.full((), INITIAL_RAW, jnp.float32), "tau": jnp.full((), INITIAL_RAW, jnp.float32)}
        return COptiDICEState(
            actor=actor,
            critic=critic,
            scalars=scalars,
            actor_opt=self.actor_tx.init(actor),
            nu_opt=self.nu_tx.init(critic["nu"]),
            chi_opt=self.chi_tx.init(critic["chi"]),
            scalar_opt=self.scalar_tx.init(scalars),
            obs_std=jnp.zeros((self.setting.obs_dim,), jnp.float32),
            act_std=jnp.zeros((self.setting.act_dim,), jnp.float32),
            key=k_state,
        )

    def prepare(self, state: COptiDICEState, data: DeviceData) -> COptiDICEState:
        """The data's standard deviations, which scale the noise on the cloned pairs (OSRL's
        ``get_dataset_states``)."""
        return state.replace(obs_std=data.obs.std(axis=0), act_std=data.actions.std(axis=0))

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The evaluated policy: the mean action tanh(μ(s))."""
        return self._act(actor_params, obs)

    # ------------------------------------------------------------------ pieces
    def value(self, net: Critics, params: Any, obs: jax.Array) -> jax.Array:
        """A state value: the minimum over the ensemble (OSRL's ``EnsembleQCritic.predict`` with no action)."""
        return net.apply(params, obs, jnp.zeros((*obs.shape[:-1], 0))).min(axis=0)

    def ratio(self, nu: Any, batch: Batch, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(e, w*(e)) on ``batch`` for the ν parameters ``nu`` and the multiplier ``lam``."""
        cfg = self.config
        e = residual(
            self.value(self.nu, nu, batch.obs),
            self.value(self.nu, nu, batch.next_obs),
            cfg.reward_scale * batch.rewards,
            cfg.cost_scale * batch.costs,
            batch.terminals,
            lam,
            cfg.gamma,
        )
        return e, optimal_ratio(e, cfg.alpha, cfg.f_type)

    # ------------------------------------------------------------------ losses
    def nu_loss(
        self, nu: Any, batch: Batch, init_obs: jax.Array, lam: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        cfg = self.config
        e, w = self.ratio(nu, batch, lam)
        loss = nu_objective(self.value(self.nu, nu, init_obs), e, cfg.alpha, cfg.gamma, cfg.f_type)
        return loss, (e, w)

    def chi_loss(
        self, chi: Any, batch: Batch, init_obs: jax.Array, w: jax.Array, tau: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        cfg = self.config
        loss, bound, kl = cost_upper_bound(
            self.value(self.chi, chi, init_obs),
            self.value(self.chi, chi, batch.obs),
            self.value(self.chi, chi, batch.next_obs),
            w,
            cfg.cost_scale * batch.costs,
            batch.terminals,
            tau,
            cfg.gamma,
        )
        return loss, (bound, kl)

    def scalar_loss(self, scalars: Any, bound: jax.Array, kl: jax.Array) -> jax.Array:
        """λ (ĉ − Ĉ) + τ (ε − D_KL): λ rises while the bound exceeds ĉ, τ while the reweighting strays past ε."""
        lam, tau = jax.nn.softplus(scalars["lambda"]), jax.nn.softplus(scalars["tau"])
        return lam * (self.threshold - bound) + tau * (self.config.cost_ub_epsilon - kl)

    def actor_loss(self, actor: Any, obs: jax.Array, actions: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, log_std = self.actor.apply(actor, obs)
        log_prob = squashed_log_prob(mean, log_std, actions)
        return -(w * log_prob).mean(), log_prob.mean()

    # ------------------------------------------------------------------ update
    def update(self, state: COptiDICEState, data: DeviceData) -> tuple[COptiDICEState, Metrics]:
        """One step of χ, τ, ν, λ (in OSRL's order; λ and τ as they stood at the start) and the policy."""
        cfg = self.config
        key, k_batch, k_init, k_obs, k_act = jax.random.split(state.key, 5)
        batch = sample_batch(k_batch, data, cfg.batch_size)
        init_obs = sample_init_obs(k_init, data, cfg.batch_size)
        lam = jax.nn.softplus(state.scalars["lambda"])
        tau = jax.nn.softplus(state.scalars["tau"])

        (nu_value, (e, w)), nu_grads = jax.value_and_grad(self.nu_loss, has_aux=True)(
            state.critic["nu"], batch, init_obs, lam
        )
        w_fixed = jax.lax.stop_gradient(w)
        if cfg.cost_ub_epsilon > 0:
            (chi_value, (bound, kl)), chi_grads = jax.value_and_grad(self.chi_loss, has_aux=True)(
                state.critic["chi"], batch, init_obs, w_fixed, tau
            )
            chi, chi_opt = adam_step(self.chi_tx, state.critic["chi"], state.chi_opt, chi_grads)
        else:  # no upper bound: the plain estimate E[w c]; χ and τ stay as they are
            chi_value, kl = jnp.zeros(()), jnp.zeros(())
            bound = (w_fixed * cfg.cost_scale * batch.costs).mean()
            chi, chi_opt = state.critic["chi"], state.chi_opt
        nu, nu_opt = adam_step(self.nu_tx, state.critic["nu"], state.nu_opt, nu_grads)
        scalar_value, scalar_grads = jax.value_and_grad(self.scalar_loss)(
            state.scalars, jax.lax.stop_gradient(bound), jax.lax.stop_gradient(kl)
        )
        if cfg.cost_ub_epsilon == 0:
            scalar_grads = {**scalar_grads, "tau": jnp.zeros_like(scalar_grads["tau"])}
        scalars, scalar_opt = adam_step(self.scalar_tx, state.scalars, state.scalar_opt, scalar_grads)

        # Policy extraction: weighted maximum likelihood under the ν just updated, on noisy copies of the pairs.
        _, w_new = self.ratio(nu, batch, lam)
        obs = batch.obs + cfg.bc_noise * state.obs_std * jax.random.normal(k_obs, batch.obs.shape)
        actions = batch.actions + cfg.bc_noise * state.act_std * jax.random.normal(k_act, batch.actions.shape)
        (a_value, log_prob), a_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            state.actor, obs, actions, jax.lax.stop_gradient(w_new)
        )
        actor, actor_opt = adam_step(self.actor_tx, state.actor, state.actor_opt, a_grads)

        state = state.replace(
            actor=actor,
            critic={"nu": nu, "chi": chi},
            scalars=scalars,
            actor_opt=actor_opt,
            nu_opt=nu_opt,
            chi_opt=chi_opt,
            scalar_opt=scalar_opt,
            key=key,
        )
        metrics = {
            "loss/nu": nu_value,
            "loss/chi": chi_value,
            "loss/scalars": scalar_value,
            "loss/actor": a_value,
            "coptidice/lambda": lam,
            "coptidice/tau": tau,
            "coptidice/cost_ub": bound,
            "coptidice/kl": kl,
            "coptidice/f_divergence": self.f(w_fixed).mean(),
            "coptidice/w_mean": w_fixed.mean(),
            "coptidice/w_max": w_fixed.max(),
            "coptidice/td_error": (e**2).mean(),
            "coptidice/log_prob": log_prob,
        }
        return state, metrics

    def output(self, state: COptiDICEState) -> tuple[Any, OutputKind]:
        return state.actor, "single"

    def run_info(self) -> dict[str, Any]:
        return {
            "budget_per_step": self.budget.per_step,
            "budget_value": self.budget.reported_value,
            "coptidice_threshold": self.threshold,
        }


def check_config(config: COptiDICEConfig) -> None:
    """One :class:`ConfigError` naming the first bad field (ranges the field-name rules of
    :mod:`o3srl.validation` do not know)."""
    widths = "non-empty, with every width ≥ 1"
    checks: list[tuple[str, Any, bool, str]] = [
        ("actor_hidden", config.actor_hidden, bool(config.actor_hidden) and min(config.actor_hidden) >= 1, widths),
        ("critic_hidden", config.critic_hidden, bool(config.critic_hidden) and min(config.critic_hidden) >= 1, widths),
        ("num_nu", config.num_nu, config.num_nu >= 1, "≥ 1"),
        ("num_chi", config.num_chi, config.num_chi >= 1, "≥ 1"),
        ("batch_size", config.batch_size, config.batch_size >= 1, "≥ 1"),
        ("alpha", config.alpha, config.alpha > 0, "> 0"),
        ("gamma", config.gamma, 0.0 <= config.gamma < 1.0, "in [0, 1)"),
        ("cost_ub_epsilon", config.cost_ub_epsilon, config.cost_ub_epsilon >= 0, "≥ 0"),
        ("bc_noise", config.bc_noise, config.bc_noise >= 0, "≥ 0"),
        ("f_type", config.f_type, config.f_type in ("softchi", "chi2", "kl"), "one of 'softchi', 'chi2', 'kl'"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"coptidice.{name} must be {allowed}, got {value!r}")
