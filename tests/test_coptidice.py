"""COptiDICE: the f-divergences, the ν objective, the cost upper bound and the policy's likelihood against hand
values, the learners' contract, and a one-step dataset whose answer under a tight and a loose limit is known."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract
from tests.test_cpq import _one_step
from tests.test_train import _actions, small_config

from o3srl.algos.coptidice import (
    COptiDICEConfig,
    cost_upper_bound,
    f_divergence,
    nu_objective,
    optimal_ratio,
    residual,
    squashed_log_prob,
)
from o3srl.config import TrainConfig
from o3srl.errors import ConfigError


def test_soft_chi_square_by_hand():
    f, f_prime_inv = f_divergence("softchi")
    # x < 1: x log x − x + 1 (f(0) = 1, f(1/2) = 1/2 − (ln 2)/2); x ≥ 1: (x − 1)² / 2
    np.testing.assert_allclose(
        f(jnp.array([0.0, 0.5, 1.0, 3.0])), [1.0, 0.5 - 0.5 * math.log(2.0), 0.0, 2.0], rtol=1e-6, atol=1e-7
    )
    # (f')⁻¹: exp(y) below 0, y + 1 above
    np.testing.assert_allclose(f_prime_inv(jnp.array([-math.log(2.0), 0.0, 2.0])), [0.5, 1.0, 3.0], rtol=1e-6)
    # w* = max(0, (f')⁻¹(e / α)), α = 1/2: e = 1 → 3; e = −ln 2 → exp(−2 ln 2) = 1/4
    np.testing.assert_allclose(optimal_ratio(jnp.array([1.0, -math.log(2.0)]), 0.5, "softchi"), [3.0, 0.25], rtol=1e-6)
    # (f')⁻¹ inverts f' on both branches (f'(x) = ln x below 1, x − 1 above)
    y = jnp.array([-2.0, -0.3, 0.4, 5.0])
    np.testing.assert_allclose(jax.vmap(jax.grad(f))(f_prime_inv(y)), y, rtol=1e-5)


def test_chi_square_and_kl_by_hand():
    f, f_prime_inv = f_divergence("chi2")
    np.testing.assert_allclose(f(jnp.array([0.0, 3.0])), [0.5, 2.0])
    np.testing.assert_allclose(f_prime_inv(jnp.array([-1.0, 2.0])), [0.0, 3.0])
    # χ²'s w* is clipped at 0: e / α = −2 gives (f')⁻¹ = −1, so w* = 0
    np.testing.assert_allclose(optimal_ratio(jnp.array([-1.0, 0.5]), 0.5, "chi2"), [0.0, 2.0])
    f, f_prime_inv = f_divergence("kl")
    np.testing.assert_allclose(f(jnp.array([1.0, math.e])), [0.0, math.e], rtol=1e-6)
    np.testing.assert_allclose(f_prime_inv(jnp.array([1.0, 1.0 + math.log(2.0)])), [1.0, 2.0], rtol=1e-6)


def test_nu_objective_on_a_tiny_batch_by_hand():
    """Two transitions, γ = 0.9, λ = 0.5, α = 0.5, soft-χ²:
    e₁ = 1 − 0.5 · 1 + 0.9 · 2 − 1 = 1.3 → w₁ = 1.3 / 0.5 + 1 = 3.6, f(w₁) = 2.6² / 2 = 3.38;
    e₂ = 0 − 0.5 · 1 + 0 (terminal) − 0 = −0.5 → w₂ = e⁻¹, f(w₂) = e⁻¹ (−1 − 1) + 1 = 1 − 2/e;
    loss = 0.1 · mean(0.5, 1.5) + mean(w e − α f(w))."""
    e = residual(
        nu_s=jnp.array([1.0, 0.0]),
        nu_next=jnp.array([2.0, 1.0]),
        rewards=jnp.array([1.0, 0.0]),
        costs=jnp.array([1.0, 1.0]),
        terminals=jnp.array([0.0, 1.0]),
        lam=jnp.float32(0.5),
        gamma=0.9,
    )
    np.testing.assert_allclose(e, [1.3, -0.5], rtol=1e-6)
    w2 = math.exp(-1.0)
    by_hand = 0.1 * 1.0 + ((3.6 * 1.3 - 0.5 * 3.38) + (w2 * -0.5 - 0.5 * (1.0 - 2.0 * w2))) / 2
    loss = nu_objective(jnp.array([0.5, 1.5]), e, alpha=0.5, gamma=0.9, f_type="softchi")
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)


def test_cost_upper_bound_by_hand():
    """ℓ = w c = (0, ln 3) with χ ≡ 0 and τ = 1: softmax (1/4, 3/4), ω = (1/2, 3/2); the bound E[ω w c] = (3/4) ln 3
    exceeds the plain estimate E[w c] = (1/2) ln 3, at KL E[ω ln ω − ω + 1] = ((1/2) ln (1/2) + (3/2) ln (3/2)) / 2."""
    zero = jnp.zeros(2)
    costs = jnp.array([0.0, math.log(3.0)])
    loss, bound, kl = cost_upper_bound(zero, zero, zero, jnp.ones(2), costs, zero, jnp.float32(1.0), 0.99)
    assert float(bound) == pytest.approx(0.75 * math.log(3.0), rel=1e-5)
    assert float(loss) == pytest.approx(0.75 * math.log(3.0), rel=1e-5)
    assert float(kl) == pytest.approx((0.5 * math.log(0.5) + 1.5 * math.log(1.5)) / 2, rel=1e-5)
    # a large τ: ω → 1, the bound → E[w c], the KL → 0
    _, bound, kl = cost_upper_bound(zero, zero, zero, jnp.ones(2), costs, zero, jnp.float32(1e4), 0.99)
    assert float(bound) == pytest.approx(0.5 * math.log(3.0), rel=1e-3) and float(kl) < 1e-6
    # the initial-state term: ℓ = (1 − γ) χ(s0) + w (c + γ (1 − terminal) χ(s') − χ(s))
    loss, _, _ = cost_upper_bound(
        jnp.array([10.0]),
        jnp.array([2.0]),
        jnp.array([3.0]),
        jnp.array([2.0]),
        jnp.array([1.0]),
        jnp.zeros(1),
        1.0,
        0.5,
    )
    assert float(loss) == pytest.approx(0.5 * 10.0 + 2.0 * (1.0 + 0.5 * 3.0 - 2.0))


def test_squashed_log_prob_by_hand():
    # a = tanh(u): log N(u; μ, σ) − log(1 − a²); at u = μ = 1, σ = 1: −ln √(2π) − ln(1 − tanh² 1)
    a = jnp.array([[0.0], [math.tanh(1.0)]])
    lp = squashed_log_prob(jnp.array([[0.0], [1.0]]), jnp.zeros((2, 1)), a)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    np.testing.assert_allclose(lp, [-half_log_2pi, -half_log_2pi - math.log(1.0 - math.tanh(1.0) ** 2)], rtol=1e-5)
    assert np.isfinite(float(squashed_log_prob(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.ones((1, 1)))[0]))


def _coptidice(data, run_dir, **kw) -> TrainConfig:
    small = COptiDICEConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), batch_size=64)
    return small_config(data, run_dir, algo="coptidice", coptidice=small, **kw)


def test_contract(toy_file, tmp_path):
    info = check_contract(lambda d, **kw: _coptidice(toy_file, d, cost_limit=5.0, **kw), tmp_path, "loss/nu")
    # ĉ bounds E_{d^π}[c] = (1 − γ) V_c: the threshold on the discounted cost value times (1 − γ)
    assert info["budget_value"] > 0 and info["coptidice_threshold"] == pytest.approx(0.01 * info["budget_value"])
    assert "arms" not in info


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("alpha", 0.0, "coptidice.alpha must be > 0, got 0.0"),
        ("num_nu", 0, "coptidice.num_nu must be ≥ 1, got 0"),
        ("actor_hidden", (32, 0), "coptidice.actor_hidden must be non-empty, with every width ≥ 1, got (32, 0)"),
        ("bc_noise", -0.1, "coptidice.bc_noise must be ≥ 0, got -0.1"),
    ],
)
def test_bad_coptidice_config_is_one_clear_error(toy_file, tmp_path, field, value, message):
    from o3srl.train import run

    cfg = _coptidice(toy_file, tmp_path / "bad")
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        run(dataclasses.replace(cfg, coptidice=dataclasses.replace(cfg.coptidice, **{field: value})))
    assert not (tmp_path / "bad").exists()


def test_coptidice_on_a_one_step_problem_with_a_known_answer(tmp_path):
    """One-step episodes: half the data acts +0.5 (reward 0, cost 0), half −0.5 (reward 1, cost 1), rewards unscaled.
    Every transition ends its episode, so E_D[w] = 1 − γ and, on the soft-χ² branch below 1, w(a) ∝ exp((r − λ c) / α):
    the costly action's share of π is p = 1 / (1 + exp((λ − 1) / α)), the cost E_D[w c] = (1 − γ) p, and the limit
    ĉ = (1 − γ) κ, so the constraint reads p ≤ κ. Under κ = 0.2, λ must pass 1 + α ln 4 ≈ 1.69 (p ≤ 0.2; further
    with the upper bound's pessimism); under κ = 400, λ decays to 0 and p → 1 / (1 + e⁻²) ≈ 0.88. 2,000 steps with
    learning rates 1e-3 (1e-2 for λ and τ); the run this test makes measured λ = 1.82, p = 0.16, action +0.37
    (κ = 0.2) and λ = 0.01, p = 0.88, action −0.36 (κ = 400)."""
    from o3srl.checkpoint import load_checkpoint
    from o3srl.data.sampler import Batch
    from o3srl.train import build_learner, load_problem, run

    data = _one_step(tmp_path)
    obs = jnp.full((2, 1), 0.5)
    pair = Batch(  # the free and the costly action at one state
        obs=obs,
        actions=jnp.array([[0.5], [-0.5]]),
        rewards=jnp.array([0.0, 1.0]),
        costs=jnp.array([0.0, 1.0]),
        next_obs=obs,
        terminals=jnp.ones(2),
    )
    found = {}
    for kappa in (0.2, 400.0):
        run_dir = tmp_path / f"k{kappa:g}"
        small = COptiDICEConfig(
            actor_hidden=(32, 32),
            critic_hidden=(32, 32),
            batch_size=64,
            reward_scale=1.0,
            actor_lr=1e-3,
            critic_lr=1e-3,
            scalar_lr=1e-2,
        )
        cfg = dataclasses.replace(
            small_config(data, run_dir, algo="coptidice", coptidice=small, cost_limit=kappa, steps=2000),
            normalize_obs=False,
            reward_min=0.0,
            reward_max=1.0,
        )
        run(cfg)
        resolved = cfg.resolved()
        learner = build_learner(resolved, load_problem(resolved))
        _, state, _, _ = load_checkpoint(run_dir / "checkpoint.msgpack", learner.init(jax.random.PRNGKey(0)))
        lam = jax.nn.softplus(state.scalars["lambda"])
        _, w = learner.ratio(state.critic["nu"], pair, lam)
        found[kappa] = {
            "threshold": learner.threshold,
            "lambda": float(lam),
            "p_costly": float(w[1] / (w[0] + w[1])),
            "action": float(_actions(run_dir).mean()),
        }
    tight, loose = found[0.2], found[400.0]
    assert tight["threshold"] == pytest.approx(0.01 * 0.2) and loose["threshold"] == pytest.approx(0.01 * 400.0)
    assert tight["lambda"] > 1.5 and tight["p_costly"] < 0.3, found
    assert tight["action"] > 0.2, found
    assert loose["lambda"] < 0.2 and loose["p_costly"] > 0.8, found
    assert loose["action"] < -0.2, found
