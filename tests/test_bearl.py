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
    np.testing.assert_allclose(mmd(x2, y2, 1.0, "laplacian"), np.sqrt([2 - 2 * math.exp(-1.5) + 1e-6, 1e-6]), rtol=1e-4)
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


def _costly_support(tmp_path):
    """One-step episodes whose actions lie in [−0.6, −0.4], with reward 10 (a + 1), increasing in the action (so the
    reward critic's slope pulls the actor up, out of the data's support), and cost 1 for every action."""
    n = 400
    actions = np.random.default_rng(1).uniform(-0.6, -0.4, n)
    return _one_step(tmp_path, "support", actions, 10.0 * (actions + 1.0), np.ones(n))


def test_the_mmd_constraint_and_the_cost_multiplier_on_a_one_step_problem(tmp_path):
    """Two runs of 1,000 steps with OSRL's defaults but small networks and the laplacian kernel at σ = 0.2 (the MMD
    then sees a move of a tenth of the action range; OSRL's gaussian σ = 50 hardly does, see docs/algorithms/bearl.md):
    - ε = 0.05, κ = 0.5: the MMD stays above ε, α rises above 1 and holds the actor's mean action inside the data's
      support although the reward critic pulls it up; every action's cost value (≈ 1) exceeds B = 0.5, so the PID
      integral grows by ≈ 0.5 a step and ν with it;
    - ε = 10 (above any MMD), κ = 400: α decays towards 0 and the actor leaves the support, up the reward; B is far
      above every cost value, so the integral stays 0 and ν ≈ 0.
    The two knobs answer to different things: the cost is 1 on every action of the data, so the cost critic barely
    pulls the action, and B = 400 is above every cost value inside the support or out of it."""
    data = _costly_support(tmp_path)
    tight = BEARLConfig(
        actor_hidden=(32, 32),
        critic_hidden=(32, 32),
        vae_hidden=32,
        batch_size=64,
        kernel="laplacian",
        mmd_sigma=0.2,
    )
    runs = {"tight": (tight, 0.5), "loose": (dataclasses.replace(tight, mmd_threshold=10.0), 400.0)}
    rows, actions = {}, {}
    for name, (bearl, kappa) in runs.items():
        rows[name] = _run(data, tmp_path / name, bearl, cost_limit=kappa, steps=1000)
        actions[name] = _actions(tmp_path / name).ravel()
    last = {name: r[-1] for name, r in rows.items()}
    summary = {name: (np.round(actions[name], 3).tolist(), last[name]) for name in runs}

    assert np.all(np.abs(actions["tight"] + 0.5) < 0.1), summary  # inside [−0.6, −0.4]
    assert last["tight"]["bearl/alpha"] > 1.0 and last["tight"]["bearl/mmd"] > 0.05, summary
    assert last["tight"]["q/policy_cost"] > 0.5 and last["tight"]["bearl/multiplier"] > 1.0, summary
    assert last["loose"]["bearl/alpha"] < 0.2 and actions["loose"].max() > -0.3, summary
    assert max(r["bearl/multiplier"] for r in rows["loose"]) < 1e-3, summary
