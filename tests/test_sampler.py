"""Sampler determinism and normalisation."""

import jax
import numpy as np

from o3srl.data import OfflineDataset
from o3srl.data.sampler import (
    compute_norm_stats,
    denormalize_action,
    normalize_action,
    sample_batch,
    sample_init_obs,
    to_device,
)


def test_same_key_same_batch(arrays):
    ds = OfflineDataset(arrays)
    data = to_device(ds, compute_norm_stats(ds))
    a = sample_batch(jax.random.PRNGKey(3), data, 16)
    b = sample_batch(jax.random.PRNGKey(3), data, 16)
    c = sample_batch(jax.random.PRNGKey(4), data, 16)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.obs, c.obs)
    assert a.obs.shape == (16, 3) and a.actions.shape == (16, 2) and a.terminals.shape == (16,)


def test_init_obs_are_episode_starts(arrays):
    ds = OfflineDataset(arrays)
    stats = compute_norm_stats(ds, normalize_obs=False)
    data = to_device(ds, stats)
    np.testing.assert_allclose(data.init_obs, arrays["observations"][[0, 3, 5]])
    obs = sample_init_obs(jax.random.PRNGKey(0), data, 32)
    starts = {tuple(np.round(r, 5)) for r in np.asarray(data.init_obs)}
    assert all(tuple(np.round(r, 5)) in starts for r in np.asarray(obs))


def test_norm_stats_and_action_maps(arrays):
    ds = OfflineDataset(arrays)
    stats = compute_norm_stats(ds, np.array([-2.0, 0.0]), np.array([2.0, 1.0]))
    np.testing.assert_allclose(stats.obs_mean, arrays["observations"].mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.obs_std, arrays["observations"].std(0) + 1e-3, rtol=1e-5)
    a = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 0.5]])
    np.testing.assert_allclose(normalize_action(a, stats), [[-1, -1], [1, 1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(denormalize_action(normalize_action(a, stats), stats), a, atol=1e-6)
