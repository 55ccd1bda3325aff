"""CCAC: the data's thresholds, the forward-only clip, the masked mean and the multipliers' gradients against hand
values; the budget-conditioned policy's bookkeeping over an episode; the learners' contract; and one-step episodes
whose action the cost limit decides."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract, check_first_step
from tests.one_step import actions_at, one_step, two_actions
from tests.test_train import TOY, small_config

from o3srl.algos.base import Setting
from o3srl.algos.ccac import CCAC, BudgetPolicy, CCACConfig, clip_forward, cost_to_go, masked_mean, squared_norm
from o3srl.config import TrainConfig
from o3srl.data.sampler import NormStats
from o3srl.errors import ConfigError

SMALL = CCACConfig(
    actor_hidden=(32, 32),
    critic_hidden=(32, 32),
    vae_hidden=32,
    vae_latent=4,
    multiplier_hidden=16,
    num_q=2,
    num_qc=2,
    batch_size=64,
)


def test_cost_to_go_by_hand():
    """Two episodes, costs [1, 0, 2] and [0, 3]: the cost still to come is [3, 2, 2] and [3, 3]; the next
    transition's, [2, 2, 0] and [3, 0] (0 after an episode's last step)."""
    now, after = cost_to_go(np.array([1.0, 0.0, 2.0, 0.0, 3.0]), np.array([0, 3]), np.array([3, 2]))
    np.testing.assert_array_equal(now, [3.0, 2.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(after, [2.0, 2.0, 0.0, 3.0, 0.0])
    assert now.dtype == np.float32 and after.dtype == np.float32


def test_clip_forward_clips_the_value_not_the_gradient():
    x = jnp.asarray([-3.0, 0.5, 7.0])
    np.testing.assert_array_equal(clip_forward(x, -1.0, 5.0), [-1.0, 0.5, 5.0])
    np.testing.assert_array_equal(jax.grad(lambda v: (2.0 * clip_forward(v, -1.0, 5.0)).sum())(x), [2.0, 2.0, 2.0])


def test_masked_mean_and_squared_norm_by_hand():
    x = jnp.asarray([1.0, 2.0, 6.0])
    assert float(masked_mean(x, jnp.asarray([1.0, 0.0, 1.0]))) == pytest.approx(3.5)
    assert float(masked_mean(x, jnp.zeros(3))) == 0.0  # no flagged pair: no penalty
    assert float(squared_norm({"a": jnp.asarray([1.0, 2.0]), "b": {"c": jnp.asarray([[3.0]])}})) == pytest.approx(14.0)


def _learner(config: CCACConfig = SMALL, steps: int = 1000) -> CCAC:
    setting = Setting(obs_dim=1, act_dim=1, cost_limit=5.0, episode_length=10, total_steps=steps, reward_abs_max=1.0,
                      cost_abs_max=1.0)  # fmt: skip
    thresholds = (np.zeros(4, np.float32), np.zeros(4, np.float32))
    return CCAC(config, setting, 10, thresholds)


def _constant_multiplier(learner: CCAC, log_value: float):
    """Multiplier parameters whose output is ``log_value`` for every threshold (a zero last kernel)."""
    params = learner.multiplier.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))
    last = sorted(params["params"])[-1]
    params["params"][last]["kernel"] = jnp.zeros_like(params["params"][last]["kernel"])
    params["params"][last]["bias"] = jnp.full_like(params["params"][last]["bias"], log_value)
    return params, last


def test_multiplier_gradient_by_hand():
    """log λ(c) = b for every c (a zero last kernel): with λ = 2 and gaps [−1, 2] the loss is mean(λ · gap) = 1 and
    its derivative in b is mean(λ · gap) = 1 (dλ/db = λ). Above the clip (b = 10 > 5) λ reads e⁵ and the gradient
    still flows, as if unclipped; the decay adds 2 · decay · b."""
    learner = _learner(dataclasses.replace(SMALL, multiplier_decay=0.0))
    c, gap, weight = jnp.asarray([0.0, 3.0]), jnp.asarray([-1.0, 2.0]), jnp.ones(2)
    params, last = _constant_multiplier(learner, float(np.log(2.0)))
    assert float(learner.multiplier_loss(params, c, gap, weight)) == pytest.approx(1.0, rel=1e-6)
    grad = jax.grad(learner.multiplier_loss)(params, c, gap, weight)
    assert float(grad["params"][last]["bias"][0]) == pytest.approx(1.0, rel=1e-6)
    params, last = _constant_multiplier(learner, 10.0)
    np.testing.assert_allclose(jnp.exp(learner.log_multiplier(params, c)), np.exp(5.0), rtol=1e-6)
    grad = jax.grad(learner.multiplier_loss)(params, c, gap, weight)
    assert float(grad["params"][last]["bias"][0]) == pytest.approx(0.5 * np.exp(5.0), rel=1e-5)
    # Only the weighted rows count; a step lowers the loss: λ rises where the gap is negative.
    grad = jax.grad(learner.multiplier_loss)(params, c, gap, jnp.asarray([1.0, 0.0]))
    assert float(grad["params"][last]["bias"][0]) == pytest.approx(-np.exp(5.0), rel=1e-5)
    decayed = dataclasses.replace(SMALL, multiplier_decay=0.01)
    params, last = _constant_multiplier(learner, 0.5)
    grad = jax.grad(_learner(decayed).multiplier_loss)(params, c, jnp.zeros(2), weight)
    assert float(grad["params"][last]["bias"][0]) == pytest.approx(2 * 0.01 * 0.5, rel=1e-5)


def _stub_policy(cost_limit: float) -> BudgetPolicy:
    """A budget-conditioned policy whose action is the threshold it was given, / 10."""
    stats = NormStats(np.zeros(1, np.float32), np.ones(1, np.float32), -np.ones(1, np.float32), np.ones(1, np.float32))
    params = {"limits": jnp.asarray([cost_limit], jnp.float32)}
    return BudgetPolicy(lambda p, obs, threshold: (threshold / 10.0)[:, None], params, stats, cost_scale=1.0)


def test_the_threshold_is_the_budget_left():
    """κ = 8: the first step reads 8 in every row; after costs of 3 and 6 in slot 0 it reads 5, then 0 (never below);
    slot 1, which observed nothing, keeps 8. A new episode starts at κ again, and a new κ takes effect."""
    policy = _stub_policy(8.0)
    obs = np.zeros((2, 1), np.float32)
    np.testing.assert_allclose(policy(obs)[:, 0], [0.8, 0.8])
    policy.observe(0, 1.0, 3.0)
    np.testing.assert_allclose(policy(obs)[:, 0], [0.5, 0.8])
    policy.observe(0, 1.0, 6.0)
    assert policy.threshold(0) == 0.0 and policy.spent(0) == 9.0 and policy.steps(0) == 2
    np.testing.assert_allclose(policy(obs)[:, 0], [0.0, 0.8])
    policy.begin_episode(0)
    assert policy.threshold(0) == 8.0 and policy.steps(0) == 0
    policy.cost_limit = 2.0
    policy.begin_episode(1)
    np.testing.assert_allclose(policy(obs)[:, 0], [0.2, 0.2], rtol=1e-6)


def _ccac(data, run_dir, ccac=SMALL, **kw) -> TrainConfig:
    return small_config(data, run_dir, algo="ccac", ccac=ccac, **kw)


def test_contract(toy_file, tmp_path):
    """The learners' contract (the first half of the 400 steps is the VAE's warm-up); ``learner.act`` (the action
    at an episode's first step) agrees with the saved policy's first call, which ``load_policy`` rebuilds from the
    run directory alone."""
    from o3srl.logger import read_metrics

    make = lambda d, **kw: _ccac(toy_file, d, cost_limit=5.0, **kw)
    info = check_contract(make, tmp_path, "loss/vae", "sequence")
    assert info["ccac_cost_limit"] == 5.0 and info["ccac_warmup_steps"] == 200 and "arms" not in info
    rows = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["loss/actor"] is None for r in rows] == [True, True, False, False]  # nothing but the VAE yet

    _, state = check_first_step(make, tmp_path, BudgetPolicy)
    assert np.all(np.asarray(state.sa_high) > np.asarray(state.sa_low))  # the data's box, set before the first step


def test_bad_ccac_config_is_one_clear_error(toy_file, tmp_path):
    from o3srl.train import run

    with pytest.raises(ConfigError, match=r"ccac.ood_threshold must be in \(0, 1\), got 1.0"):
        run(_ccac(toy_file, tmp_path / "bad", ccac=dataclasses.replace(SMALL, ood_threshold=1.0)))
    with pytest.raises(ConfigError, match=r"ccac.warmup_fraction must be in \[0, 1\), got 1.0"):
        run(_ccac(toy_file, tmp_path / "bad", ccac=dataclasses.replace(SMALL, warmup_fraction=1.0)))
    with pytest.raises(ConfigError, match=r"ccac.actor_lr must be a finite number > 0, got 0.0"):
        run(_ccac(toy_file, tmp_path / "bad", ccac=dataclasses.replace(SMALL, actor_lr=0.0)))
    assert not (tmp_path / "bad").exists()


def test_the_cost_limit_decides_the_action(tmp_path):
    """One model for every threshold, trained on one-step episodes (half act −0.5 for reward 0 at no cost, half
    +0.5 for reward 10 at cost 1; T = 1, so the threshold is κ): with κ = 0 the actor stays on the free side, with
    κ ≥ 0.5 it takes the rewarding side. `o3srl eval --cost-limit` evaluates the same run at the new κ."""
    import o3srl
    from o3srl.rundir import evaluate_run
    from o3srl.train import run

    ccac = dataclasses.replace(SMALL, actor_lr=1e-3, multiplier_lr=1e-2, reward_scale=1.0, warmup_fraction=0.2)
    cfg = one_step(
        _ccac(two_actions(tmp_path), tmp_path / "run", ccac=ccac, steps=2000, checkpoint_every=2000, cost_limit=1.0)
    )
    run(cfg)
    policy = o3srl.load_policy(tmp_path / "run")
    assert isinstance(policy, BudgetPolicy)
    obs = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
    acts = {kappa: actions_at(policy, obs, kappa) for kappa in (0.0, 0.5, 2.0)}
    assert np.all(acts[0.0] < 0.0) and np.all(acts[0.5] > 0.25) and np.all(acts[2.0] > 0.25), acts

    _, summary = evaluate_run(tmp_path / "run", episodes=2, seed=0, envs=1, cost_limit=2.0, env_id=TOY)
    assert summary["ccac_cost_limit"] == 2.0 and summary["cost_limit"] == 2.0
