"""BCQ-Lag: the PID multiplier against hand values, the learners' contract, and a dataset whose cost the multiplier
must answer."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract
from tests.test_train import small_config

from o3srl.algos.bcql import BCQLConfig, pid_multiplier
from o3srl.config import TrainConfig
from o3srl.errors import ConfigError
from o3srl.logger import read_metrics


def test_pid_multiplier_by_hand():
    gains = (0.1, 0.003, 0.001)
    # e = 2 after e_prev = 0.5 with I = 1: I ← 3, ν = 0.1·2 + 0.003·3 + 0.001·1.5
    nu, integral = pid_multiplier(jnp.float32(2.0), jnp.float32(0.5), jnp.float32(1.0), gains)
    assert float(integral) == pytest.approx(3.0)
    assert float(nu) == pytest.approx(0.2 + 0.009 + 0.0015)
    # below the threshold the integral drains, never below 0, and only it can keep ν up
    nu, integral = pid_multiplier(jnp.float32(-0.4), jnp.float32(2.0), jnp.float32(1.0), gains)
    assert float(integral) == pytest.approx(0.6) and float(nu) == pytest.approx(0.003 * 0.6)
    nu, integral = pid_multiplier(jnp.float32(-5.0), jnp.float32(0.0), jnp.float32(1.0), gains)
    assert float(integral) == 0.0 and float(nu) == 0.0


def _bcql(data, run_dir, **kw) -> TrainConfig:
    small = BCQLConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), vae_hidden=32, batch_size=64)
    return small_config(data, run_dir, algo="bcq-lag", bcql=small, **kw)


def test_contract(toy_file, tmp_path):
    info = check_contract(lambda d, **kw: _bcql(toy_file, d, cost_limit=5.0, **kw), tmp_path, "loss/critic_cost")
    assert info["budget_value"] > 0 and info["bcql_threshold"] == pytest.approx(info["budget_value"])
    assert "arms" not in info


def test_bad_bcql_config_is_one_clear_error(toy_file, tmp_path):
    from o3srl.train import run

    cfg = _bcql(toy_file, tmp_path / "bad")
    with pytest.raises(ConfigError, match="bcq-lag: phi and the pid gains must be ≥ 0"):
        run(dataclasses.replace(cfg, bcql=dataclasses.replace(cfg.bcql, phi=-0.1)))
    assert not (tmp_path / "bad").exists()


def _costly_one_step(tmp_path):
    """One-step episodes that all act −0.5 and cost 1: the cost value of every action BCQ may take (near the data)
    is about 1."""
    from o3srl.data import OfflineDataset

    n = 400
    obs = np.random.default_rng(0).uniform(0, 1, (n, 1)).astype(np.float32)
    path = tmp_path / "costly.hdf5"
    OfflineDataset(
        {
            "observations": obs,
            "next_observations": obs,
            "actions": np.full((n, 1), -0.5, np.float32),
            "rewards": np.ones(n, np.float32),
            "costs": np.ones(n, np.float32),
            "terminals": np.ones(n, bool),
            "timeouts": np.zeros(n, bool),
        }
    ).save(path)
    return path


def test_the_multiplier_answers_the_cost_against_the_threshold(tmp_path):
    """Under B = 0.5 the policy's cost value (≈ 1) exceeds the threshold every step: the integral grows by ≈ 0.5 a
    step and ν with it (≈ 0.003 · 0.5 · 2000 ≈ 3 after 2,000 steps). Under B = 400 the error is negative from the
    start: the integral stays 0 and only the derivative term (K_D times a rise of the negative error) moves ν, by
    orders of magnitude less."""
    from o3srl.train import run

    data = _costly_one_step(tmp_path)
    last = {}
    for kappa in (0.5, 400.0):
        run_dir = tmp_path / f"k{kappa:g}"
        cfg = dataclasses.replace(
            _bcql(data, run_dir, cost_limit=kappa, steps=2000), normalize_obs=False, reward_min=0.0, reward_max=1.0
        )
        run(cfg)
        rows = read_metrics(run_dir / "metrics.jsonl")
        last[kappa] = (rows[-1]["bcql/multiplier"], rows[-1]["q/policy_cost"], max(r["bcql/multiplier"] for r in rows))
    nu, cost, _ = last[0.5]
    assert cost > 0.5 and nu > 1.0, last
    assert last[400.0][2] < 1e-3, last
