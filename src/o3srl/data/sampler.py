"""Device-resident training data, observation/action normalisation and the minibatch sampler.

The dataset is put on the device once; minibatches are drawn inside compiled code from an explicit JAX key, so a
whole round of training runs without returning to Python. Costs stay first-class; terminals and timeouts stay
separate (only terminals stop bootstrapping: a timeout is not the end of the task).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from o3srl.data.dataset import OfflineDataset


class NormStats(NamedTuple):
    """Observation mean/std and action bounds; stored in checkpoints so a saved policy acts on raw inputs."""

    obs_mean: np.ndarray
    obs_std: np.ndarray
    action_low: np.ndarray
    action_high: np.ndarray


class Batch(NamedTuple):
    obs: jax.Array
    actions: jax.Array  # normalised to [−1, 1]
    rewards: jax.Array
    costs: jax.Array
    next_obs: jax.Array
    terminals: jax.Array  # float 0/1; timeouts are not terminals


class DeviceData(NamedTuple):
    """All transitions (normalised) plus the episodes' initial observations, as device arrays."""

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    costs: jax.Array
    next_obs: jax.Array
    terminals: jax.Array
    init_obs: jax.Array


def compute_norm_stats(
    dataset: OfflineDataset,
    action_low: np.ndarray | None = None,
    action_high: np.ndarray | None = None,
    normalize_obs: bool = True,
    eps: float = 1e-3,
) -> NormStats:
    """Observation statistics of the dataset (TD3+BC's ``std + 1e-3``) and the action bounds.

    Without environment bounds, the dataset's own per-dimension action range is used.
    """
    obs = dataset["observations"].astype(np.float64)
    if normalize_obs:
        mean, std = obs.mean(axis=0), obs.std(axis=0) + eps
    else:
        mean, std = np.zeros(obs.shape[1]), np.ones(obs.shape[1])
    acts = dataset["actions"]
    low = acts.min(axis=0) if action_low is None else np.broadcast_to(action_low, acts.shape[1:])
    high = acts.max(axis=0) if action_high is None else np.broadcast_to(action_high, acts.shape[1:])
    high = np.where(high > low, high, low + 1.0)  # a constant action dimension still gets a valid range
    return NormStats(
        obs_mean=mean.astype(np.float32),
        obs_std=std.astype(np.float32),
        action_low=np.asarray(low, np.float32),
        action_high=np.asarray(high, np.float32),
    )


def normalize_obs(obs: jax.Array | np.ndarray, stats: NormStats) -> jax.Array | np.ndarray:
    return (obs - stats.obs_mean) / stats.obs_std


def normalize_action(action: jax.Array | np.ndarray, stats: NormStats) -> jax.Array | np.ndarray:
    """Environment scale → [−1, 1]."""
    return 2.0 * (action - stats.action_low) / (stats.action_high - stats.action_low) - 1.0


def denormalize_action(action: jax.Array | np.ndarray, stats: NormStats) -> jax.Array | np.ndarray:
    """[−1, 1] → environment scale."""
    return stats.action_low + (action + 1.0) * 0.5 * (stats.action_high - stats.action_low)


def to_device(dataset: OfflineDataset, stats: NormStats) -> DeviceData:
    a = dataset.arrays
    obs = normalize_obs(a["observations"], stats).astype(np.float32)
    return DeviceData(
        obs=jnp.asarray(obs),
        actions=jnp.asarray(np.clip(normalize_action(a["actions"], stats), -1.0, 1.0).astype(np.float32)),
        rewards=jnp.asarray(a["rewards"]),
        costs=jnp.asarray(a["costs"]),
        next_obs=jnp.asarray(normalize_obs(a["next_observations"], stats).astype(np.float32)),
        terminals=jnp.asarray(a["terminals"].astype(np.float32)),
        init_obs=jnp.asarray(obs[dataset.episodes.start]),
    )


def sample_indices(key: jax.Array, data: DeviceData, batch_size: int) -> jax.Array:
    """The transitions of a uniform minibatch (with replacement) drawn from ``key``."""
    return jax.random.randint(key, (batch_size,), 0, data.obs.shape[0])


def sample_batch(key: jax.Array, data: DeviceData, batch_size: int) -> Batch:
    """Uniform minibatch (with replacement) drawn from ``key``: the same key gives the same batch."""
    return batch_at(data, sample_indices(key, data, batch_size))


def batch_at(data: DeviceData, idx: jax.Array) -> Batch:
    """The transitions ``idx`` of ``data`` as a minibatch."""
    return Batch(
        obs=data.obs[idx],
        actions=data.actions[idx],
        rewards=data.rewards[idx],
        costs=data.costs[idx],
        next_obs=data.next_obs[idx],
        terminals=data.terminals[idx],
    )


def sample_init_obs(key: jax.Array, data: DeviceData, batch_size: int) -> jax.Array:
    """Initial observations of dataset episodes (where the constraint V_c(s0) ≤ B is measured)."""
    idx = jax.random.randint(key, (batch_size,), 0, data.init_obs.shape[0])
    return data.init_obs[idx]
