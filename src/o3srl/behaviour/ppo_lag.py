"""PPO-Lagrangian: the online safe-RL agent that trains the behaviour-policy zoo (one readable file).

DSRL recorded every episode of one TRPO-Lagrangian agent whose cost limit was swept during 10–54 M environment
steps. That is far beyond our machines, so the zoo trains a few short PPO-Lagrangian runs per task, each at one cost
limit κ, and keeps snapshots along training: early snapshots act poorly (low reward, usually low cost), late ones
are good at their own κ, and together they cover the reward–cost plane that a DSRL dataset covers.

The algorithm (Ray, Achiam & Amodei 2019; PID-Lagrangian from Stooke, Achiam & Abbeel 2020):

* a Gaussian actor (tanh MLP mean, state-independent log std) and two value heads, V_r and V_c, on normalised
  observations; rewards and costs are scaled by running standard deviations of their discounted returns so that
  value targets stay O(1) on every task;
* GAE(γ, λ_GAE) separately for reward and cost; truncated episodes bootstrap from the value of the final state;
* the policy ascends the clipped surrogate of A = (Â_r − λ Â_c) / (1 + λ), normalised over the batch;
* the multiplier λ ≥ 0 is driven by the mean cost return J_c of the episodes that ended in the last rollout versus
  the limit κ: a PID controller on J_c − κ by default (it damps the oscillation of plain gradient ascent), or plain
  gradient ascent λ ← max(0, λ + lr (J_c − κ)).

Rollouts run in numpy over a list of environments stepped together (the networks are tiny, so a numpy forward pass
costs less than a JAX dispatch); the update — all epochs and minibatches — is one compiled JAX call.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from o3srl.errors import ConfigError

Params = dict[str, Any]


@dataclass(frozen=True)
class PPOLagConfig:
    """One PPO-Lagrangian run at one cost limit."""

    task_id: str
    cost_limit: float
    """κ: the target mean episode cost return."""
    total_steps: int = 200_000
    """Environment steps of the whole run."""
    num_envs: int = 8
    """Environments stepped together (one process)."""
    rollout_len: int = 250
    """Steps per environment between updates (batch = num_envs × rollout_len)."""
    epochs: int = 8
    minibatches: int = 8
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_ratio: float = 0.2
    lr: float = 3e-4
    hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = -0.5
    max_grad_norm: float = 0.5
    value_coef: float = 0.5
    lagrangian: Literal["pid", "gradient"] = "pid"
    kp: float = 0.1
    ki: float = 0.01
    kd: float = 0.01
    lambda_lr: float = 0.05
    """Step size of plain gradient ascent on λ (``lagrangian="gradient"``)."""
    lambda_max: float = 100.0
    snapshots: int = 6
    """Snapshots kept, evenly spaced over training (the last one is the final policy)."""
    seed: int = 0
    value_warmup_iterations: int = 0
    """Iterations at the start in which only the value heads learn (the policy is frozen): used when a run continues
    from a snapshot that carries no value heads, so that fresh value heads do not feed the policy noise."""

    def __post_init__(self) -> None:
        if self.total_steps < self.num_envs * self.rollout_len:
            raise ConfigError(
                f"total_steps={self.total_steps} is less than one rollout (num_envs × rollout_len = "
                f"{self.num_envs * self.rollout_len})"
            )
        if (self.num_envs * self.rollout_len) % self.minibatches:
            raise ConfigError("num_envs × rollout_len must be divisible by minibatches")
        if self.lagrangian not in ("pid", "gradient"):
            raise ConfigError(f"lagrangian must be 'pid' or 'gradient', got {self.lagrangian!r}")
        if self.cost_limit < 0 or self.snapshots < 1:
            raise ConfigError("cost_limit must be ≥ 0 and snapshots ≥ 1")
        if not 0 <= self.value_warmup_iterations < self.iterations:
            raise ConfigError(f"value_warmup_iterations must be in [0, {self.iterations}) (the run's iterations)")

    @property
    def iterations(self) -> int:
        return self.total_steps // (self.num_envs * self.rollout_len)


# ---------------------------------------------------------------------------------------------------- networks
def mlp_apply(layers: Params, x: Any, xp: Any = np) -> Any:
    """A tanh MLP with a linear output layer; ``xp`` is numpy (rollouts, collection) or jax.numpy (updates)."""
    n = len(layers)
    for i in range(n):
        x = x @ layers[f"l{i}"]["w"] + layers[f"l{i}"]["b"]
        if i < n - 1:
            x = xp.tanh(x)
    return x


def _mlp_init(rng: np.random.Generator, sizes: list[int], out_scale: float) -> Params:
    """Orthogonal initialisation (gain √2 for hidden layers, ``out_scale`` for the output), the usual PPO choice:
    a small actor output keeps the first policy near the zero action."""
    layers: Params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        gain = out_scale if i == len(sizes) - 2 else np.sqrt(2.0)
        a = rng.normal(size=(max(fan_in, fan_out), min(fan_in, fan_out)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        w = q if fan_in >= fan_out else q.T
        layers[f"l{i}"] = {"w": (gain * w[:fan_in, :fan_out]).astype(np.float32), "b": np.zeros(fan_out, np.float32)}
    return layers


def init_params(config: PPOLagConfig, obs_dim: int, act_dim: int) -> Params:
    rng = np.random.default_rng([config.seed, 17])
    hidden = list(config.hidden)
    return {
        "actor": _mlp_init(rng, [obs_dim, *hidden, act_dim], 0.01),
        "log_std": np.full(act_dim, config.init_log_std, np.float32),
        "value_r": _mlp_init(rng, [obs_dim, *hidden, 1], 1.0),
        "value_c": _mlp_init(rng, [obs_dim, *hidden, 1], 1.0),
    }


def gaussian_logp(mean: Any, log_std: Any, action: Any, xp: Any = np) -> Any:
    """log N(action; mean, exp(log_std)²), summed over action dimensions."""
    z = (action - mean) / xp.exp(log_std)
    return xp.sum(-0.5 * z * z - log_std - 0.5 * np.log(2.0 * np.pi), axis=-1)


# ---------------------------------------------------------------------------------------------------- statistics
@dataclass
class RunningMoments:
    """Running mean and variance (Chan et al.'s parallel update), for observation and return normalisation."""

    mean: np.ndarray
    var: np.ndarray
    count: float = 1e-4

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> RunningMoments:
        return cls(np.zeros(shape, np.float64), np.ones(shape, np.float64))

    def update(self, x: np.ndarray) -> None:
        b_mean, b_var, b_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var, self.count = m2 / total, total


def normalise_obs(obs: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.clip((obs - mean) / np.sqrt(var + 1e-8), -10.0, 10.0).astype(np.float32)


def gae(
    rewards: np.ndarray, values: np.ndarray, last_values: np.ndarray, dones: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and value targets for (T, E) arrays; ``dones[t]`` cuts the recursion after
    step t (truncations are already bootstrapped into ``rewards``). Returns (advantages, returns)."""
    horizon = rewards.shape[0]
    adv = np.zeros_like(rewards)
    next_adv = np.zeros_like(last_values)
    next_value = last_values
    for t in reversed(range(horizon)):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        next_adv = delta + gamma * lam * live * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


@dataclass
class LagrangeState:
    """The multiplier and the PID controller's memory."""

    value: float = 0.0
    integral: float = 0.0
    previous_cost: float | None = None


def update_lagrange(state: LagrangeState, episode_cost: float, config: PPOLagConfig) -> LagrangeState:
    """One multiplier step from the mean cost return of the last rollout's episodes (pure: returns a new state)."""
    error = episode_cost - config.cost_limit
    if config.lagrangian == "gradient":
        value = float(np.clip(state.value + config.lambda_lr * error, 0.0, config.lambda_max))
        return LagrangeState(value, 0.0, episode_cost)
    integral = max(0.0, state.integral + config.ki * error)
    derivative = 0.0 if state.previous_cost is None else max(0.0, episode_cost - state.previous_cost)
    value = float(np.clip(config.kp * error + integral + config.kd * derivative, 0.0, config.lambda_max))
    return LagrangeState(value, integral, episode_cost)


# ---------------------------------------------------------------------------------------------------- update
def make_update(config: PPOLagConfig) -> tuple[Any, Callable[..., tuple[Params, Any, dict[str, Any]]]]:
    """The compiled update: all epochs × minibatches of PPO on one batch, as one ``lax.scan``."""
    import jax
    import jax.numpy as jnp
    import optax

    optimiser = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr, eps=1e-5))

    def loss_fn(params: Params, mb: dict[str, Any], policy_coef: Any) -> tuple[Any, dict[str, Any]]:
        mean = mlp_apply(params["actor"], mb["obs"], jnp)
        logp = gaussian_logp(mean, params["log_std"], mb["actions"], jnp)
        ratio = jnp.exp(logp - mb["logp"])
        clipped = jnp.clip(ratio, 1.0 - config.clip_ratio, 1.0 + config.clip_ratio)
        policy_loss = -jnp.mean(jnp.minimum(ratio * mb["adv"], clipped * mb["adv"]))
        vr = mlp_apply(params["value_r"], mb["obs"], jnp)[:, 0]
        vc = mlp_apply(params["value_c"], mb["obs"], jnp)[:, 0]
        value_loss = jnp.mean((vr - mb["ret_r"]) ** 2) + jnp.mean((vc - mb["ret_c"]) ** 2)
        metrics = {
            "loss/policy": policy_loss,
            "loss/value": value_loss,
            "policy/approx_kl": jnp.mean(mb["logp"] - logp),
            "policy/clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > config.clip_ratio),
        }
        return policy_coef * policy_loss + config.value_coef * value_loss, metrics

    def update(
        params: Params, opt_state: Any, batch: dict[str, Any], key: Any, policy_coef: Any = 1.0
    ) -> tuple[Params, Any, dict[str, Any]]:
        """``policy_coef`` 0 trains the value heads only (the actor's gradient is zero, so Adam leaves it as is)."""
        n = batch["obs"].shape[0]
        size = n // config.minibatches

        def epoch(carry: tuple[Params, Any], epoch_key: Any) -> tuple[tuple[Params, Any], dict[str, Any]]:
            perm = jax.random.permutation(epoch_key, n)

            def step(carry: tuple[Params, Any], idx: Any) -> tuple[tuple[Params, Any], dict[str, Any]]:
                p, s = carry
                mb = jax.tree_util.tree_map(lambda x: x[idx], batch)
                (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, mb, policy_coef)
                updates, s = optimiser.update(grads, s, p)
                return (optax.apply_updates(p, updates), s), metrics

            return jax.lax.scan(step, carry, perm.reshape(config.minibatches, size))

        (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, config.epochs))
        return params, opt_state, jax.tree_util.tree_map(jnp.mean, metrics)

    return optimiser, jax.jit(update)


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What a run leaves: its snapshots (numpy pytrees, newest last) and one metrics row per iteration."""

    config: PPOLagConfig
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """Process CPU time: the machine-independent cost of the run on a shared machine."""


def _layers(layers: Params) -> Params:
    return {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in layers.items()}


def _snapshot(
    params: Params, obs_rms: RunningMoments, step: int, row: dict[str, float], resume: dict[str, Any] | None = None
) -> dict[str, Any]:
    snap = {
        "actor": _layers(params["actor"]),
        "log_std": np.asarray(params["log_std"], np.float32),
        "obs_mean": obs_rms.mean.astype(np.float32),
        "obs_var": obs_rms.var.astype(np.float32),
        "step": step,
        "episode_reward": row.get("rollout/episode_reward", float("nan")),
        "episode_cost": row.get("rollout/episode_cost", float("nan")),
        "lambda": row.get("lagrange/lambda", 0.0),
    }
    if resume is not None:
        snap["resume"] = resume
    return snap


def _resume_state(
    params: Params, obs_rms: RunningMoments, ret_rms: dict[str, RunningMoments], lagrange: LagrangeState
) -> dict[str, Any]:
    """What a later run needs to continue this one (kept in the final snapshot only): the value heads and the
    running statistics and multiplier, besides the actor the snapshot already holds."""
    return {
        "value_r": _layers(params["value_r"]),
        "value_c": _layers(params["value_c"]),
        "obs_count": np.asarray(float(obs_rms.count), np.float64),
        "ret_var_r": np.asarray(float(ret_rms["r"].var), np.float64),
        "ret_var_c": np.asarray(float(ret_rms["c"].var), np.float64),
        "ret_count": np.asarray(float(ret_rms["r"].count), np.float64),
        "lambda": np.asarray(float(lagrange.value), np.float64),
        "lambda_integral": np.asarray(float(lagrange.integral), np.float64),
    }


def _start_from(
    snapshot: dict[str, Any], params: Params
) -> tuple[Params, RunningMoments, dict[str, RunningMoments], LagrangeState]:
    """Initial state of a run that continues from ``snapshot`` (a member's last one); value heads, return statistics
    and the multiplier come from its ``resume`` entry when present, and start fresh otherwise."""

    def layers(src: Params, like: Params, what: str) -> Params:
        shapes = {k: {n: np.shape(a) for n, a in v.items()} for k, v in src.items()}
        want = {k: {n: np.shape(a) for n, a in v.items()} for k, v in like.items()}
        if shapes != want:
            raise ConfigError(
                f"cannot continue from this snapshot: its {what} has layer shapes {shapes}, this run's "
                f"{want} (different task or hidden sizes)"
            )
        return {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in src.items()}

    params = dict(
        params,
        actor=layers(snapshot["actor"], params["actor"], "actor"),
        log_std=np.asarray(snapshot["log_std"], np.float32).reshape(np.shape(params["log_std"])),
    )
    resume = snapshot.get("resume")
    seen = float(snapshot.get("step", 1e4))
    obs_rms = RunningMoments(
        np.asarray(snapshot["obs_mean"], np.float64),
        np.asarray(snapshot["obs_var"], np.float64),
        float(resume["obs_count"]) if resume else seen,
    )
    ret_rms = {"r": RunningMoments.zeros(()), "c": RunningMoments.zeros(())}
    lagrange = LagrangeState()
    if resume:
        params["value_r"] = layers(resume["value_r"], params["value_r"], "reward value head")
        params["value_c"] = layers(resume["value_c"], params["value_c"], "cost value head")
        for k in ("r", "c"):
            ret_rms[k] = RunningMoments(
                np.zeros(()), np.asarray(float(resume[f"ret_var_{k}"])), float(resume["ret_count"])
            )
        # The multiplier carries over (the same member continuing at the same κ); the PID derivative restarts.
        lagrange = LagrangeState(float(resume["lambda"]), float(resume["lambda_integral"]), None)
    return params, obs_rms, ret_rms, lagrange


def widen_snapshot(snapshot: dict[str, Any], obs_dim: int, zero_inputs: tuple[int, ...] = ()) -> dict[str, Any]:
    """A start for a task whose observation extends the snapshot's task's: the same robot, whose observation
    bullet-safety-gym puts first, with the new task's own dimensions after it (AntRun's 33 → AntCircle's 34).

    The actor's input weights of the new dimensions are zero, so the policy first acts as it did, and their
    normaliser starts at mean 0, variance 1. ``zero_inputs`` also zeroes the weights of shared dimensions whose
    meaning changes between the tasks (the x, y position: a place in AntRun's corridor, anywhere in AntCircle's
    arena). The value heads, return statistics and multiplier are left out (the reward and cost scales differ):
    the run starts them afresh, after a value-only warm-up.
    """
    w = np.asarray(snapshot["actor"]["l0"]["w"], np.float32)
    old = w.shape[0]
    if old > obs_dim:
        raise ConfigError(
            f"cannot start from this snapshot: its policy reads {old} observation dimensions, the task has {obs_dim}"
        )
    bad = [i for i in zero_inputs if not 0 <= int(i) < old]
    if bad:
        raise ConfigError(f"zero_inputs {bad} are not observation dimensions of the source policy (0..{old - 1})")
    pad = obs_dim - old
    w = np.concatenate([w, np.zeros((pad, w.shape[1]), np.float32)], axis=0)
    w[list(map(int, zero_inputs))] = 0.0
    actor = dict(snapshot["actor"], l0=dict(snapshot["actor"]["l0"], w=w))
    return {k: v for k, v in snapshot.items() if k != "resume"} | {
        "actor": actor,
        "obs_mean": np.concatenate([np.asarray(snapshot["obs_mean"], np.float32), np.zeros(pad, np.float32)]),
        "obs_var": np.concatenate([np.asarray(snapshot["obs_var"], np.float32), np.ones(pad, np.float32)]),
    }


def train_ppo_lag(
    config: PPOLagConfig,
    env_factory: Callable[[], Any] | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
    start: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one PPO-Lagrangian agent online and return its snapshots. ``env_factory`` defaults to the task.

    ``start``: a snapshot to continue from (a member's last one) instead of a fresh initialisation.
    """
    import jax
    import jax.numpy as jnp

    if env_factory is None:
        from o3srl.envs import make_env

        def env_factory() -> Any:
            return make_env(config.task_id)

    t0, cpu0 = time.time(), time.process_time()
    envs = [env_factory() for _ in range(config.num_envs)]
    obs_dim = int(np.prod(envs[0].observation_space.shape))
    act_dim = int(np.prod(envs[0].action_space.shape))
    rng = np.random.default_rng([config.seed, 1])
    key = jax.random.PRNGKey(config.seed)
    params = init_params(config, obs_dim, act_dim)
    optimiser, update = make_update(config)
    jparams = jax.tree_util.tree_map(jnp.asarray, params)
    opt_state = optimiser.init(jparams)
    obs_rms = RunningMoments.zeros((obs_dim,))
    ret_rms = {"r": RunningMoments.zeros(()), "c": RunningMoments.zeros(())}
    lagrange = LagrangeState()
    if start is not None:
        params, obs_rms, ret_rms, lagrange = _start_from(start, params)
        if obs_rms.mean.shape != (obs_dim,):
            raise ConfigError(
                f"cannot continue from this snapshot: it normalises {obs_rms.mean.shape[0]} observation "
                f"dimensions, the task has {obs_dim}"
            )
        jparams = jax.tree_util.tree_map(jnp.asarray, params)
        opt_state = optimiser.init(jparams)
    disc_ret = {"r": np.zeros(config.num_envs), "c": np.zeros(config.num_envs)}
    seeds = rng.integers(0, 2**31 - 1, size=config.num_envs)
    obs = np.stack([np.asarray(e.reset(seed=int(s))[0], np.float64).reshape(-1) for e, s in zip(envs, seeds)])
    ep_reward = np.zeros(config.num_envs)
    ep_cost = np.zeros(config.num_envs)
    result = TrainResult(config)
    # Evenly spaced, the last iteration always among them (linspace from the end, so that one snapshot is the last).
    snapshot_at = set(np.linspace(config.iterations - 1, 0, config.snapshots).round().astype(int).tolist())
    E, T = config.num_envs, config.rollout_len
    try:
        for it in range(config.iterations):
            buf = {
                k: np.zeros((T, E, *s), np.float32)
                for k, s in (
                    ("obs", (obs_dim,)),
                    ("actions", (act_dim,)),
                    ("logp", ()),
                    ("r", ()),
                    ("c", ()),
                    ("vr", ()),
                    ("vc", ()),
                    ("done", ()),
                )
            }
            finished_r: list[float] = []
            finished_c: list[float] = []
            for t in range(T):
                obs_rms.update(obs)
                o = normalise_obs(obs, obs_rms.mean, obs_rms.var)
                mean = mlp_apply(params["actor"], o)
                action = (mean + np.exp(params["log_std"]) * rng.normal(size=mean.shape)).astype(np.float32)
                buf["obs"][t], buf["actions"][t] = o, action
                buf["logp"][t] = gaussian_logp(mean, params["log_std"], action)
                buf["vr"][t] = mlp_apply(params["value_r"], o)[:, 0]
                buf["vc"][t] = mlp_apply(params["value_c"], o)[:, 0]
                clipped = np.clip(action, -1.0, 1.0)
                raw = {"r": np.zeros(E), "c": np.zeros(E)}
                for i, env in enumerate(envs):
                    nxt, reward, terminated, truncated, info = env.step(clipped[i])
                    raw["r"][i], raw["c"][i] = float(reward), float(info["cost"])
                    ep_reward[i] += raw["r"][i]
                    ep_cost[i] += raw["c"][i]
                    nxt = np.asarray(nxt, np.float64).reshape(-1)
                    if terminated or truncated:
                        buf["done"][t, i] = 1.0
                        if truncated and not terminated:
                            # Time limits are not part of the MDP: bootstrap from the final state's values.
                            fo = normalise_obs(nxt[None], obs_rms.mean, obs_rms.var)
                            raw["r"][i] += (
                                config.gamma
                                * float(mlp_apply(params["value_r"], fo)[0, 0])
                                * np.sqrt(ret_rms["r"].var + 1e-8)
                            )
                            raw["c"][i] += (
                                config.gamma
                                * float(mlp_apply(params["value_c"], fo)[0, 0])
                                * np.sqrt(ret_rms["c"].var + 1e-8)
                            )
                        finished_r.append(ep_reward[i])
                        finished_c.append(ep_cost[i])
                        ep_reward[i] = ep_cost[i] = 0.0
                        nxt = np.asarray(env.reset(seed=int(rng.integers(0, 2**31 - 1)))[0], np.float64).reshape(-1)
                    obs[i] = nxt
                for k in ("r", "c"):
                    # Scale by the running std of the discounted return (not the per-step value): value targets
                    # then stay O(1) whatever the task's reward magnitude.
                    disc_ret[k] = disc_ret[k] * config.gamma + raw[k]
                    ret_rms[k].update(disc_ret[k])
                    disc_ret[k] = disc_ret[k] * (1.0 - buf["done"][t])
                    buf[k][t] = raw[k] / np.sqrt(ret_rms[k].var + 1e-8)
            o = normalise_obs(obs, obs_rms.mean, obs_rms.var)
            adv_r, ret_r = gae(
                buf["r"], buf["vr"], mlp_apply(params["value_r"], o)[:, 0], buf["done"], config.gamma, config.gae_lambda
            )
            adv_c, ret_c = gae(
                buf["c"], buf["vc"], mlp_apply(params["value_c"], o)[:, 0], buf["done"], config.gamma, config.gae_lambda
            )
            if finished_c:
                lagrange = update_lagrange(lagrange, float(np.mean(finished_c)), config)
            lam = lagrange.value
            adv = (adv_r - lam * adv_c) / (1.0 + lam)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            batch = {
                "obs": buf["obs"],
                "actions": buf["actions"],
                "logp": buf["logp"],
                "adv": adv,
                "ret_r": ret_r,
                "ret_c": ret_c,
            }
            batch = {k: jnp.asarray(v.reshape((T * E, *v.shape[2:])), jnp.float32) for k, v in batch.items()}
            key, sub = jax.random.split(key)
            policy_coef = 0.0 if it < config.value_warmup_iterations else 1.0
            jparams, opt_state, metrics = update(jparams, opt_state, batch, sub, jnp.float32(policy_coef))
            params = jax.tree_util.tree_map(np.asarray, jparams)
            row = {k: float(v) for k, v in metrics.items()}
            row.update(
                {
                    "step": float((it + 1) * T * E),
                    "lagrange/lambda": lam,
                    "policy/std": float(np.exp(params["log_std"]).mean()),
                    "time/seconds": time.time() - t0,
                }
            )
            if finished_r:
                row["rollout/episode_reward"] = float(np.mean(finished_r))
                row["rollout/episode_cost"] = float(np.mean(finished_c))
                row["rollout/episodes"] = float(len(finished_r))
            result.history.append(row)
            if log is not None:
                log(row)
            if it in snapshot_at:
                last = it == config.iterations - 1
                resume = _resume_state(params, obs_rms, ret_rms, lagrange) if last else None
                result.snapshots.append(_snapshot(params, obs_rms, (it + 1) * T * E, row, resume))
    finally:
        for env in envs:
            env.close()
    result.seconds = time.time() - t0
    result.cpu_seconds = time.process_time() - cpu0
    return result


def snapshot_action(snapshot: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """The snapshot's mean action for (B, obs) observations, in [−1, 1] (numpy; used by data collection)."""
    o = normalise_obs(np.asarray(obs, np.float64), snapshot["obs_mean"], snapshot["obs_var"])
    return np.clip(mlp_apply(snapshot["actor"], o), -1.0, 1.0)


def config_dict(config: PPOLagConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
