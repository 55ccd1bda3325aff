"""CAPS: the switching rule, the budget left and the heads' weights against hand values; the switching policy's
bookkeeping over an episode; the learners' contract; and one-step episodes whose action the cost limit decides."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract, check_first_step
from tests.one_step import actions_at, one_step, two_actions
from tests.test_train import TOY, small_config

from o3srl.algos.caps import CAPSConfig, SwitchingPolicy, budget_left, head_weights, switch
from o3srl.config import TrainConfig
from o3srl.data.sampler import NormStats
from o3srl.errors import ConfigError
from o3srl.transforms import make_budget

SMALL = CAPSConfig(hidden=(32, 32), batch_size=64)

# Three proposals: Q_r = 3, 5, 4 and Q_c = 1, 6, 2.
Q_R = jnp.asarray([3.0, 5.0, 4.0])
Q_C = jnp.asarray([1.0, 6.0, 2.0])


@pytest.mark.parametrize(
    "budget, chosen",
    [
        (10.0, 1),  # all feasible: the highest Q_r
        (3.0, 2),  # proposals 0 and 2 fit: 2 has the higher Q_r
        (2.0, 0),  # Q_c < B is strict: only proposal 0 fits
        (0.5, 0),  # none fits: the lowest Q_c
        (0.0, 0),
    ],
)
def test_switch_by_hand(budget, chosen):
    assert int(switch(Q_R, Q_C, jnp.asarray(budget))) == chosen


def test_switch_per_row_and_when_none_fits():
    """Columns are rows of a batch, each with its own budget; with none feasible the lowest Q_c wins even where its
    Q_r is the lowest."""
    q_r = jnp.asarray([[3.0, 1.0], [5.0, 9.0], [4.0, 0.0]])
    q_c = jnp.asarray([[1.0, 7.0], [6.0, 8.0], [2.0, 3.0]])
    np.testing.assert_array_equal(switch(q_r, q_c, jnp.asarray([3.0, 2.5])), [2, 2])
    np.testing.assert_array_equal(switch(q_r, q_c, jnp.asarray([10.0, 8.5])), [1, 1])


def test_budget_left_by_hand():
    """κ = 10, T = 2, γ = 0.5: with 4 spent, 6 · (1 − 0.5²) / (0.5 · 2) = 4.5 at t = 0 and 6 · 0.5 / 0.5 = 6 at
    t = 1; overspent, 0; the cost scale multiplies; at t = 0 with nothing spent, OSRL's threshold."""
    assert budget_left(10.0, 4.0, 0, 2, 0.5) == pytest.approx(4.5)
    assert budget_left(10.0, 4.0, 1, 2, 0.5) == pytest.approx(6.0)
    assert budget_left(10.0, 4.0, 5, 2, 0.5) == pytest.approx(6.0)  # past T: counted as the last step
    assert budget_left(10.0, 12.0, 0, 2, 0.5) == 0.0
    assert budget_left(10.0, 4.0, 0, 2, 0.5, cost_scale=2.0) == pytest.approx(9.0)
    np.testing.assert_allclose(budget_left(10.0, np.array([0.0, 4.0]), np.array([0, 1]), 2, 0.5), [7.5, 6.0])
    for kappa, gamma, length in ((20.0, 0.99, 300), (5.0, 0.99, 200)):
        assert budget_left(kappa, 0.0, 0, length, gamma) == pytest.approx(
            make_budget(kappa, gamma, length, "osrl").value, rel=1e-12
        )


def test_head_weights_by_hand():
    w_r, w_c = jnp.asarray([2.0]), jnp.asarray([10.0])
    np.testing.assert_allclose(head_weights(w_r, w_c, 2)[:, 0], [2.0, 10.0])
    np.testing.assert_allclose(head_weights(w_r, w_c, 3)[:, 0], [2.0, 12.0, 10.0])
    np.testing.assert_allclose(head_weights(w_r, w_c, 5)[:, 0], [2.0, 7.0, 12.0, 17.0, 10.0])


def _stub_policy(cost_limit: float, episode_length: int, gamma: float) -> SwitchingPolicy:
    """A switching policy whose three proposals have Q_r = 3, 5, 4 and Q_c = 1, 6, 2 everywhere and whose action
    names the head followed: −0.5, 0, 0.5."""

    def switch_fn(params, obs, budget):
        b = obs.shape[0]
        chosen = switch(jnp.broadcast_to(Q_R[:, None], (3, b)), jnp.broadcast_to(Q_C[:, None], (3, b)), budget)
        return ((chosen - 1) / 2.0)[:, None], chosen

    stats = NormStats(np.zeros(1, np.float32), np.ones(1, np.float32), -np.ones(1, np.float32), np.ones(1, np.float32))
    params = {"limits": jnp.asarray([cost_limit, episode_length], jnp.float32)}
    return SwitchingPolicy(switch_fn, params, stats, gamma=gamma, cost_scale=1.0)


def test_the_budget_left_falls_as_costs_are_observed():
    """κ = 10, T = 3, γ = 0.5. Step 0: B = 10 · 0.875 / 1.5 = 5.83, proposals 0 and 2 fit, head 2. A cost of 7:
    B = 3 · 0.75 / 1 = 2.25, still head 2. A cost of 1.5 more: B = 1.5, only head 0 fits. Slot 1, which observed
    no cost, has more per step as the steps left shrink (7.5, then 10): head 2, then head 1, the highest Q_r. A new
    episode starts afresh; a loose κ takes head 1 at once."""
    policy = _stub_policy(10.0, 3, 0.5)
    obs = np.zeros((2, 1), np.float32)
    taken = [policy(obs)[:, 0]]
    assert policy.budget(0) == pytest.approx(10.0 * 0.75 / 1.0)  # step 1, nothing spent yet
    policy.observe(0, 1.0, 7.0)
    assert policy.budget(0) == pytest.approx(2.25) and policy.spent(0) == 7.0
    taken.append(policy(obs)[:, 0])
    policy.observe(0, 1.0, 1.5)
    assert policy.budget(0) == pytest.approx(1.5)
    taken.append(policy(obs)[:, 0])
    np.testing.assert_array_equal(np.stack(taken), [[0.5, 0.5], [0.5, 0.0], [-0.5, 0.0]])
    np.testing.assert_array_equal(policy.last_heads, [0, 1])
    policy.begin_episode(0)
    assert policy.spent(0) == 0.0 and policy.budget(0) == pytest.approx(10.0 * 0.875 / 1.5)
    policy.cost_limit = 100.0
    policy.begin_episode(0)
    assert policy(obs[:1])[0, 0] == 0.0  # row 0 follows head 1


def _caps(data, run_dir, caps=SMALL, **kw) -> TrainConfig:
    return small_config(data, run_dir, algo="caps", caps=caps, **kw)


def test_contract(toy_file, tmp_path):
    """The learners' contract; ``learner.act`` (the action at an episode's first step) agrees with the saved
    switching policy's first call, which ``load_policy`` rebuilds from the run directory alone."""
    import o3srl

    make = lambda d, **kw: _caps(toy_file, d, cost_limit=5.0, **kw)
    info = check_contract(make, tmp_path, "loss/actor", "sequence")
    assert info["caps_policies"] == 2 and info["caps_cost_limit"] == 5.0 and "arms" not in info

    check_first_step(make, tmp_path, SwitchingPolicy)

    # evaluate() tells the policy each step's cost: after one episode per environment copy, each copy's C_t is
    # its episode's cost.
    from o3srl.evaluate import evaluate

    policy = o3srl.load_policy(tmp_path / "a")
    result = evaluate(policy, TOY, episodes=2, cost_limit=5.0, num_envs=2, reward_range=(0.0, 1.0))
    assert result.episode_costs.sum() > 0
    np.testing.assert_allclose([policy.spent(0), policy.spent(1)], result.episode_costs, rtol=1e-6)


def test_bad_caps_config_is_one_clear_error(toy_file, tmp_path):
    from o3srl.train import run

    with pytest.raises(ConfigError, match=r"caps.num_policies must be ≥ 2, got 1"):
        run(_caps(toy_file, tmp_path / "bad", caps=dataclasses.replace(SMALL, num_policies=1)))
    with pytest.raises(ConfigError, match=r"caps.beta_cost must be ≥ 0, got -1.0"):
        run(_caps(toy_file, tmp_path / "bad", caps=dataclasses.replace(SMALL, beta_cost=-1.0)))
    with pytest.raises(ConfigError, match=r"caps.cost_expectile must be a finite number in \(0, 1\), got 1.0"):
        run(_caps(toy_file, tmp_path / "bad", caps=dataclasses.replace(SMALL, cost_expectile=1.0)))
    assert not (tmp_path / "bad").exists()


def test_the_cost_limit_decides_the_action(tmp_path):
    """One model, trained without reference to κ, on one-step episodes (T = 1, so B_0 = κ): with κ = 0.5 only the
    cost head's proposal fits and the policy acts like the free behaviour; with κ = 2 both fit and it takes the
    reward head's, like the rewarding one; with κ = 0 none fits and the lowest cost value decides."""
    import o3srl
    from o3srl.train import run

    caps = dataclasses.replace(SMALL, actor_lr=1e-3, critic_lr=1e-3, value_lr=1e-3)
    cfg = one_step(
        _caps(two_actions(tmp_path), tmp_path / "run", caps=caps, steps=1000, checkpoint_every=1000, cost_limit=1.0)
    )
    run(cfg)
    policy = o3srl.load_policy(tmp_path / "run")
    assert isinstance(policy, SwitchingPolicy) and policy.episode_length == 1
    obs = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
    acts, heads = {}, {}
    for kappa in (0.0, 0.5, 2.0):
        acts[kappa] = actions_at(policy, obs, kappa)
        heads[kappa] = policy.last_heads.copy()
    np.testing.assert_array_equal(heads[0.5], 1)
    np.testing.assert_array_equal(heads[0.0], 1)
    np.testing.assert_array_equal(heads[2.0], 0)
    assert np.all(acts[0.5] < -0.25) and np.all(acts[2.0] > 0.25), acts

    # `o3srl eval --cost-limit`: the evaluated policy switches by the new κ, and the summary says so.
    from o3srl.rundir import evaluate_run

    _, summary = evaluate_run(tmp_path / "run", episodes=2, seed=0, envs=1, cost_limit=2.0, env_id=TOY)
    assert summary["caps_cost_limit"] == 2.0 and summary["cost_limit"] == 2.0
