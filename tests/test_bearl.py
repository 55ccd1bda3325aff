"""BEAR-Lag: the MMD estimate and the MMD multiplier's dual step against hand values, the learners' contract, and
one-step datasets where the support constraint and the cost multiplier must answer."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract
from tests.test_train import _actions, small_config

from o3srl.algos.bearl import BEARLConfig, mmd, mmd_dual_step
from o3srl.config import TrainConfig
from o3srl.errors import ConfigError
from o3srl.logger import read_metrics


def test_mmd_by_hand():
    # x = {0, 1}, y = {0, 3} in 1-D, σ = 0.5 (so the kernels divide the distance by 2σ = 1); every pair counted:
    # laplacian: k̄(x, x) = (2 + 2e⁻¹)/4, k̄(y, y) = (2 + 2e⁻³)/4, k̄(x, y) = (1 + e⁻³ + e⁻¹ + e⁻²)/4,
    #            so MMD² = (1 − e⁻²)/2;  gaussian (squared distances 1, 9, 1, 4): MMD² = (1 − e⁻⁴)/2
    x = jnp.array([[0.0], [1.0]])
    y = jnp.array([[0.0], [3.0]])
    assert float(mmd(x, y, 0.5, "laplacian")) == pytest.approx(math.sqrt((1 - math.exp(-2)) / 2 + 1e-6), rel=1e-5)
    assert float(mmd(x, y, 0.5, "gaussian")) == pytest.approx(math.sqrt((1 - math.exp(-4)) / 2 + 1e-6), rel=1e-5)
    # symmetric, and ≈ 0 (only the 1e-6 under the root) for equal samples
    assert float(mmd(y, x, 0.5, "laplacian")) == pytest.approx(float(mmd(x, y, 0.5, "laplacian")))
    assert float(mmd(x, x, 0.5, "gaussian")) == pytest.approx(1e-3, rel=1e-3)
    # 2-D single samples (0, 0) and (1, 2), with a leading batch axis and σ = 1 (2σ = 2): the laplacian kernel sums
    # |·| over the dimensions (3), the gaussian the squares (5); MMD² = 1 + 1 − 2 k
    x2 = jnp.array([[[0.0, 0.0]], [[0.0, 0.0]]])
    y2 = jnp.array([[[1.0, 2.0]], [[0.0, 0.0]]])
    np.testing.assert_allclose(
        mmd(x2, y2, 1.0, "laplacian"), np.sqrt([2 - 2 * math.exp(-1.5) + 1e-6, 1e-6]), rtol=1e-4
    )
    np.testing.assert_allclose(mmd(x2, y2, 1.0, "gaussian"), np.sqrt([2 - 2 * math.exp(-2.5) + 1e-6, 1e-6]), rtol=1e-4)


def test_mmd_dual_step_by_hand():
    # log α ← clip(log α + η α (E M − ε), −5, 5)
    assert float(mmd_dual_step(jnp.float32(0.0), jnp.float32(0.25), 0.05, 0.1)) == pytest.approx(0.02)
    step = mmd_dual_step(jnp.float32(math.log(2.0)), jnp.float32(0.0), 0.05, 0.1)  # below ε: α falls
    assert float(step) == pytest.approx(math.log(2.0) - 0.01, rel=1e-6)
    assert float(mmd_dual_step(jnp.float32(4.99), jnp.float32(1.05), 0.05, 1.0)) == 5.0  # clipped above
    assert float(mmd_dual_step(jnp.float32(-4.99), jnp.float32(0.0), 1e6, 1.0)) == -5.0  # and below


def _bearl(data, run_dir, bearl: BEARLConfig | None = None, **kw) -> TrainConfig:
    small = bearl or BEARLConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), vae_hidden=32, batch_size=64)
    return small_config(data, run_dir, algo="bear-lag", bearl=small, **kw)


def test_contract(toy_file, tmp_path):
    info = check_contract(lambda d, **kw: _bearl(toy_file, d, cost_limit=5.0, **kw), tmp_path, "loss/critic_cost")
    assert info["budget_value"] > 0 and info["bearl_threshold"] == pytest.approx(info["budget_value"])
    assert "arms" not in info


def test_bad_bearl_config_is_one_clear_error(toy_file, tmp_path):
    from o3srl.train import run

    cfg = _bearl(toy_file, tmp_path / "bad")
    with pytest.raises(ConfigError, match="bear-lag: mmd_sigma must be > 0") as exc:
        run(dataclasses.replace(cfg, bearl=dataclasses.replace(cfg.bearl, mmd_sigma=0.0)))
    assert "got 0.0, 0.05, 0 and (0.1, 0.003, 0.001)" in str(exc.value)
    with pytest.raises(ConfigError, match="bearl.kernel must be one of 'gaussian', 'laplacian', got 'rbf'"):
        run(dataclasses.replace(cfg, bearl=dataclasses.replace(cfg.bearl, kernel="rbf")))  # type: ignore[arg-type]
    assert not (tmp_path / "bad").exists()


def _one_step(tmp_path, name: str, actions: np.ndarray, rewards: np.ndarray, costs: np.ndarray):
    """One-step episodes (every transition terminal) from observations in [0, 1]."""
    from o3srl.data import OfflineDataset

    n = len(actions)
    obs = np.random.default_rng(0).uniform(0, 1, (n, 1)).astype(np.float32)
    path = tmp_path / f"{name}.hdf5"
    OfflineDataset(
        {
            "observations": obs,
            "next_observations": obs,
            "actions": actions[:, None].astype(np.float32),
            "rewards": rewards.astype(np.float32),
            "costs": costs.astype(np.float32),
            "terminals": np.ones(n, bool),
            "timeouts": np.zeros(n, bool),
        }
    ).save(path)
    return path


def _run(data, run_dir, bearl: BEARLConfig, **kw):
    from o3srl.train import run

    cfg = dataclasses.replace(_bearl(data, run_dir, bearl, **kw), normalize_obs=False, reward_min=0.0, reward_max=1.0)
    run(cfg)
    return read_metrics(run_dir / "metrics.jsonl")
