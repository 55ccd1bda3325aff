"""FISOR: the pure pieces against hand values (expectile loss, HJ backup, noise schedule, weights, one reverse step),
the learners' contract, a bad config, and a one-step dataset whose two action clusters the diffusion policy must
tell apart by cost and by reward."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract
from tests.test_train import small_config

from o3srl.algos.fisor import (
    FISORConfig,
    diffusion_schedule,
    feasibility_weights,
    hj_cost,
    hj_target,
    noisy_actions,
    observation_key,
    reverse_step,
)
from o3srl.algos.iql import expectile_loss
from o3srl.config import TrainConfig
from o3srl.errors import ConfigError
from o3srl.logger import read_metrics

SMALL = FISORConfig(
    actor_width=16,
    actor_blocks=1,
    time_dim=8,
    time_hidden=(16, 16),
    critic_hidden=(32, 32),
    diffusion_steps=3,
    num_samples=4,
    actor_batch_size=32,
    batch_size=32,
)


def test_expectile_losses_by_hand():
    # V_r: the upper expectile τ = 0.9 (weight τ on Q > V); V_h: the authors' safe_expectile_loss(diff, 0.9) puts
    # 0.9 on Q_h < V_h, i.e. the (1 − 0.9) expectile.
    diff = jnp.array([2.0, -1.0])
    assert float(expectile_loss(diff, 0.9)) == pytest.approx((0.9 * 4 + 0.1 * 1) / 2)
    assert float(expectile_loss(diff, 1.0 - 0.9)) == pytest.approx((0.1 * 4 + 0.9 * 1) / 2)
    # With Q_h ∈ {0, 1} equally often, the 0.1-expectile is 0.1: the loss is flat there.
    grad = jax.grad(lambda v: expectile_loss(jnp.array([0.0, 1.0]) - v, 0.1))(jnp.float32(0.1))
    assert abs(float(grad)) < 1e-6


def test_hj_cost_and_backup_by_hand():
    np.testing.assert_allclose(hj_cost(jnp.array([0.0, 0.5, 2.0]), 25.0), [-1.0, 25.0, 25.0])
    h = jnp.array([-1.0, 25.0, -1.0, -1.0])
    next_vh = jnp.array([-0.5, -0.5, 3.0, 3.0])
    terminals = jnp.array([0.0, 0.0, 0.0, 1.0])
    # (1 − γ) h + γ max(h, V_h(s')): −0.01 − 0.495; 0.25 + 24.75; −0.01 + 2.97; a terminal's is h
    np.testing.assert_allclose(hj_target(h, next_vh, terminals, 0.99), [-0.505, 25.0, 2.96, -1.0], rtol=1e-6)


def test_vp_schedule_by_hand():
    s = diffusion_schedule("vp", 5)
    # α_k = exp(−0.1 / 5 − 0.5 · 9.9 (2k − 1) / 25)
    alphas = [math.exp(-0.02 - 0.198), math.exp(-0.02 - 0.594), math.exp(-0.02 - 0.99)]
    np.testing.assert_allclose(s.alphas[:3], alphas, rtol=1e-6)
    np.testing.assert_allclose(s.betas[:3], [1 - a for a in alphas], rtol=1e-5)
    np.testing.assert_allclose(s.alpha_bars[1], alphas[0] * alphas[1], rtol=1e-6)
    # ᾱ_K = exp(−b_min − (b_max − b_min) / 2) (the exponents sum to K² / K²)
    assert float(s.alpha_bars[-1]) == pytest.approx(math.exp(-0.1 - 4.95), rel=1e-5)
    linear = diffusion_schedule("linear", 5)
    np.testing.assert_allclose([linear.betas[0], linear.betas[-1]], [1e-4, 2e-2], rtol=1e-6)
    cosine = diffusion_schedule("cosine", 5)
    assert np.all(np.diff(np.asarray(cosine.alpha_bars)) < 0) and float(cosine.betas.max()) <= 0.999 + 1e-6


def test_noisy_actions_by_hand():
    s = diffusion_schedule("vp", 5)
    a, eps = jnp.array([[0.5], [0.5]]), jnp.array([[1.0], [-1.0]])
    out = noisy_actions(a, eps, jnp.array([0, 4]), s)
    ab0, ab4 = math.exp(-0.218), math.exp(-5.05)
    np.testing.assert_allclose(
        out[:, 0], [0.5 * math.sqrt(ab0) + math.sqrt(1 - ab0), 0.5 * math.sqrt(ab4) - math.sqrt(1 - ab4)], rtol=1e-5
    )


def test_weights_by_hand():
    cfg = FISORConfig()  # ρ_r = 3, ρ_h = 5, W_r = 100, W_h = 150
    q = jnp.array([1.0, 1.0, 9.0, 1.0, 3.0, 1.0])
    v = jnp.array([0.8, 0.8, 0.0, 0.8, 1.0, 0.8])
    qh = jnp.array([-0.2, 0.3, 0.6, 0.5, -0.9, -1.0])
    vh = jnp.array([-0.5, -0.5, 0.4, 2.0, -0.5, 0.0])
    w = feasibility_weights(q, v, qh, vh, cfg)
    expected = [
        math.exp(3 * 0.2),  # feasible state, feasible action: the reward advantage
        0.0,  # feasible state, an action that leaves the feasible region
        math.exp(5 * (0.4 - 0.6)),  # infeasible state: the violation's advantage (the reward is ignored)
        150.0,  # infeasible state, exp(5 · 1.5) clipped at W_h
        100.0,  # feasible, exp(3 · 2) clipped at W_r
        math.exp(3 * 0.2),  # V_h = 0 is the feasible region's boundary, inside it
    ]
    np.testing.assert_allclose(w, expected, rtol=1e-5)


def test_one_reverse_step_by_hand():
    s = diffusion_schedule("vp", 5)
    alpha = math.exp(-0.02 - 0.99)  # α at t = 2 (k = 3)
    alpha_bar = math.exp(-0.218) * math.exp(-0.614) * alpha
    beta = 1 - alpha
    x, eps, z = jnp.array([[0.5]]), jnp.array([[0.2]]), jnp.array([[-0.3]])
    t = jnp.int32(2)
    want = (0.5 - beta / math.sqrt(1 - alpha_bar) * 0.2) / math.sqrt(alpha) + math.sqrt(beta) * 1.0 * -0.3
    assert float(reverse_step(x, eps, t, z, s, 1.0, clip=False)[0, 0]) == pytest.approx(want, rel=1e-5)
    # ζ = 0.5 halves the noise; a large noise draw is clipped to 1 when the sampler clips
    want_half = want + 0.5 * math.sqrt(beta) * 0.3
    assert float(reverse_step(x, eps, t, z, s, 0.5, clip=False)[0, 0]) == pytest.approx(want_half, rel=1e-5)
    assert float(reverse_step(x, eps, t, jnp.array([[3.0]]), s, 1.0, clip=True)[0, 0]) == 1.0
    # at t = 0 no noise is added, and β_0 / √(1 − ᾱ_0) = √β_0
    a0 = math.exp(-0.218)
    want0 = (0.5 - math.sqrt(1 - a0) * 0.2) / math.sqrt(a0)
    assert float(reverse_step(x, eps, jnp.int32(0), z, s, 1.0, clip=False)[0, 0]) == pytest.approx(want0, rel=1e-5)


def test_evaluation_noise_is_a_function_of_the_observation():
    a, b = jnp.array([0.1, 0.2]), jnp.array([0.1, 0.2000001])
    assert np.array_equal(jax.random.key_data(observation_key(a)), jax.random.key_data(observation_key(a + 0.0)))
    assert not np.array_equal(jax.random.key_data(observation_key(a)), jax.random.key_data(observation_key(b)))


def _fisor(data, run_dir, fisor=SMALL, **kw) -> TrainConfig:
    return small_config(data, run_dir, algo="fisor", fisor=fisor, **kw)


def test_contract(toy_file, tmp_path):
    info = check_contract(lambda d, **kw: _fisor(toy_file, d, cost_limit=5.0, **kw), tmp_path, "loss/actor")
    assert info["fisor_uses_cost_limit"] is False and info["fisor_reward_scale"] > 0
    rows = read_metrics(tmp_path / "a" / "metrics.jsonl")
    for name in ("loss/critic_cost", "loss/value_cost", "v/cost", "q/cost", "fisor/weight", "fisor/feasible"):
        assert all(np.isfinite(r[name]) for r in rows), name


def test_policy_rows_are_independent(toy_file, tmp_path):
    """An observation's action does not depend on the batch it is acted in (the noise is keyed by the observation)."""
    import o3srl
    from o3srl.train import run

    run(_fisor(toy_file, tmp_path / "r", steps=100))
    policy = o3srl.load_policy(tmp_path / "r")
    obs = np.linspace(0, 1, 5, dtype=np.float32)[:, None]
    together = policy(obs)
    alone = np.stack([policy(o) for o in obs])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_bad_fisor_config_is_one_clear_error(toy_file, tmp_path):
    from o3srl.train import run

    cfg = _fisor(toy_file, tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"fisor.batch_size must be in \[1, actor_updates × actor_batch_size\]"):
        run(dataclasses.replace(cfg, fisor=dataclasses.replace(SMALL, batch_size=65)))
    with pytest.raises(ConfigError, match="fisor.time_dim must be an even number"):
        run(dataclasses.replace(cfg, fisor=dataclasses.replace(SMALL, time_dim=7)))
    with pytest.raises(ConfigError, match="fisor.cost_expectile must be"):
        run(dataclasses.replace(cfg, fisor=dataclasses.replace(SMALL, cost_expectile=1.0)))
    assert not (tmp_path / "bad").exists()


def _two_clusters(tmp_path, unsafe_cost: float):
    """One-step episodes: half act +0.6 (reward 1, cost ``unsafe_cost``), half −0.6 (reward 0, cost 0)."""
    from o3srl.data import OfflineDataset

    n = 512
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    plus = np.arange(n) % 2 == 0
    path = tmp_path / f"clusters{unsafe_cost:g}.hdf5"
    OfflineDataset(
        {
            "observations": obs,
            "next_observations": obs,
            "actions": np.where(plus, 0.6, -0.6).astype(np.float32)[:, None],
            "rewards": plus.astype(np.float32),
            "costs": np.where(plus, unsafe_cost, 0.0).astype(np.float32),
            "terminals": np.ones(n, bool),
            "timeouts": np.zeros(n, bool),
        }
    ).save(path)
    return path


@pytest.mark.parametrize("unsafe_cost, cluster", [(1.0, -0.6), (0.0, 0.6)])
def test_the_weighting_selects_the_feasible_cluster(tmp_path, unsafe_cost, cluster):
    """The diffusion policy (one candidate, so no pick by Q_h helps) draws its actions from one data cluster: the
    cost-free one when the other costs 1, the rewarding one when neither costs.

    With the cost, Q_h is 25 or −1 and V_h, the 0.1-expectile of the two, solves 0.1 (25 − v) = 0.9 (v + 1):
    v = 1.6 > 0, so the states count as infeasible and the weights are exp(5 (V_h − Q_h)): e^13 (clipped to 150)
    for the cost-free cluster against e^−117. Without it, Q_h = V_h = −1 (feasible) and the weights are
    exp(3 (Q_r − V_r)), V_r = 0.9 (the 0.9-expectile of rewards 0 and 1): e^0.3 against e^−2.7, 20 to 1."""
    import o3srl
    from o3srl.train import run

    cfg = dataclasses.replace(
        SMALL, num_samples=1, actor_tau=0.05, actor_batch_size=64, batch_size=64, reward_scale=1.0
    )
    run_dir = tmp_path / "run"
    run(
        _fisor(
            _two_clusters(tmp_path, unsafe_cost), run_dir, fisor=cfg, steps=1000, log_every=500, checkpoint_every=500
        )
    )
    last = read_metrics(run_dir / "metrics.jsonl")[-1]
    if unsafe_cost > 0:
        assert last["v/cost"] > 0.5 and last["fisor/feasible"] < 0.5, last
    else:
        assert last["v/cost"] < -0.8 and last["fisor/feasible"] == 1.0, last
    obs = np.random.default_rng(1).uniform(0, 1, (200, 1)).astype(np.float32)
    actions = o3srl.load_policy(run_dir)(obs)[:, 0]
    assert np.mean(np.abs(actions - cluster) < 0.2) >= 0.75, np.round(actions[:20], 2)
    assert np.mean(np.abs(actions + cluster) < 0.2) <= 0.05, np.round(actions[:20], 2)
