"""The cost model the adaptive λ-player reads: rollout arithmetic against hand-computed values, a fit on a system
whose episode cost is known, and the feedback it gives (an episode's cost against κ itself)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o3srl.algos.cost_model import CostModel, CostModelConfig
from o3srl.data.sampler import DeviceData


class _Scripted(CostModel):
    """A model whose predictions are fixed functions: s' = s + 1, cost 1 once s ≥ 3, terminal probability ``p``."""

    def __init__(self, p: float, members: int = 2) -> None:
        super().__init__(CostModelConfig(members=members, hidden=(4,)), obs_dim=1, act_dim=1)
        self.p = p

    def predict(self, state, obs, act):
        return obs + 1.0, (obs[..., 0] >= 3.0).astype(jnp.float32), jnp.full(obs.shape[:-1], self.p)


def test_episode_cost_sums_the_rollout_cost_of_every_member():
    model = _Scripted(p=0.0)
    s0 = jnp.zeros((3, 1))
    total = model.episode_cost(model.init(jax.random.PRNGKey(0)), lambda s: s, s0, horizon=10)
    # States 0, 1, …, 9: the steps from s = 3 to s = 9 cost 1 each.
    assert total.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(total), 7.0)


def test_a_predicted_terminal_ends_the_cost_through_the_survival_probability():
    model = _Scripted(p=0.5, members=1)
    total = model.episode_cost(model.init(jax.random.PRNGKey(0)), lambda s: s, jnp.zeros((1, 1)), horizon=6)
    # Steps t = 3, 4, 5 cost 1, each weighted by the probability 0.5^t of still running.
    np.testing.assert_allclose(np.asarray(total), 0.5**3 + 0.5**4 + 0.5**5, rtol=1e-6)


def _line_data(n_episodes: int = 100, horizon: int = 20, seed: int = 0) -> DeviceData:
    """A 1-D system s' = s + 0.1 a, reward s + a, cost 1 on every step taken from s > 0.55; the behaviour starts
    anywhere in [−1, 1] and acts uniformly at random in [−1, 1]."""
    rng = np.random.default_rng(seed)
    obs, acts, nxt, costs, rewards = [], [], [], [], []
    for _ in range(n_episodes):
        s = float(rng.uniform(-1.0, 1.0))
        for _ in range(horizon):
            a = float(rng.uniform(-1.0, 1.0))
            obs.append([s])
            acts.append([a])
            costs.append(float(s > 0.55))
            rewards.append(s + a)
            s = s + 0.1 * a
            nxt.append([s])
    f = lambda x: jnp.asarray(np.asarray(x, np.float32))
    n = len(obs)
    return DeviceData(
        obs=f(obs),
        actions=f(acts),
        rewards=f(rewards),
        costs=f(costs),
        next_obs=f(nxt),
        terminals=jnp.zeros(n),
        init_obs=jnp.zeros((n_episodes, 1)),
    )


@pytest.mark.parametrize("head", ["regression", "bernoulli"])
def test_a_fitted_model_reads_the_episode_cost_of_policies_it_never_saw(head):
    data = _line_data()
    config = CostModelConfig(members=3, hidden=(64, 64), fit_steps=2000, rollout_states=4, cost_head=head)
    model = CostModel(config, 1, 1)
    state = jax.jit(model.fit)(model.init(jax.random.PRNGKey(0)), data, jax.random.PRNGKey(1))
    assert np.isfinite(float(state.fit_loss))
    s0 = jnp.zeros((4, 1))
    # From s0 = 0, a = 1 gives s_t = 0.1 t: the steps t = 6 … 19 start above 0.55 and cost 1, 14 in all; a = 0 stays.
    fast = model.episode_cost(state, lambda s: jnp.ones_like(s), s0, horizon=20)
    still = model.episode_cost(state, lambda s: jnp.zeros_like(s), s0, horizon=20)
    assert float(fast.mean()) == pytest.approx(14.0, abs=1.5)
    assert float(still.mean()) == pytest.approx(0.0, abs=0.5)
    if head == "bernoulli":  # a probability per step: never below 0, so errors around a cost of 0 cannot cancel
        _, cost, _ = model.predict(state, jnp.linspace(-1, 2, 31)[None, :, None].repeat(3, 0), jnp.ones((3, 31, 1)))
        assert float(cost.min()) >= 0.0 and float(cost.max()) <= 1.0
        assert float(still.min()) >= 0.0


def test_the_reward_head_reads_the_episode_reward_and_leaves_the_cost_model_as_it_was():
    """With ``reward_head`` a second ensemble is fit to the step reward after the dynamics-and-cost one, with draws
    of its own: the cost model's parameters are exactly those of a model without it, and a rollout sums the reward
    of policies the data never followed. From s0 = 0 with a = 1 the states are 0.1 t, so the ten steps' rewards
    s + a sum to 4.5 + 10 = 14.5; a = −1 gives −4.5 − 10 = −14.5."""
    data = _line_data()
    config = CostModelConfig(members=3, hidden=(64, 64), fit_steps=2000, rollout_states=4)
    with_head = CostModel(config, 1, 1, unit_costs=True)
    without = CostModel(dataclasses.replace(config, reward_head=False), 1, 1, unit_costs=True)
    fit = [jax.jit(m.fit)(m.init(jax.random.PRNGKey(0)), data, jax.random.PRNGKey(1)) for m in (with_head, without)]
    for a, b in zip(jax.tree.leaves(fit[0].params), jax.tree.leaves(fit[1].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert fit[1].reward_params is None and fit[1].reward_estimate is None
    s0 = jnp.zeros((4, 1))
    cost, reward = with_head.episode_returns(fit[0], lambda s: jnp.ones_like(s), s0, horizon=10)
    assert float(reward.mean()) == pytest.approx(14.5, abs=1.0)
    _, back = with_head.episode_returns(fit[0], lambda s: -jnp.ones_like(s), s0, horizon=10)
    assert float(back.mean()) == pytest.approx(-14.5, abs=1.0)
    # The cost of the same rollouts is what the model without the head reads.
    np.testing.assert_allclose(
        np.asarray(cost), np.asarray(without.episode_cost(fit[1], lambda s: jnp.ones_like(s), s0, horizon=10))
    )
    # refresh keeps the members' mean episode reward beside the cost.
    fresh = with_head.refresh(fit[0], lambda s: jnp.ones_like(s), s0, 10, jnp.int32(0))
    assert float(fresh.reward_estimate) == 0.0  # not asked for: not summed
    fresh = with_head.refresh(fit[0], lambda s: jnp.ones_like(s), s0, 10, jnp.int32(0), read_reward=True)
    assert float(fresh.reward_estimate) == pytest.approx(float(reward.mean()), rel=1e-6)
    assert float(fresh.estimate) == pytest.approx(float(cost.mean()), rel=1e-6)


def test_an_unknown_cost_head_is_refused():
    from o3srl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown cost_head 'poisson'"):
        CostModel(CostModelConfig(cost_head="poisson"), 1, 1)


def _adaptive_toy_run(toy_file, run_dir, steps: int, **cost_model):
    """A tiny adaptive-player run on the toy task with a small cost model (``cost_model`` overrides its config)."""
    from o3srl.algos.o3srl import O3SRLConfig
    from o3srl.algos.td3bc import TD3BCConfig
    from o3srl.config import TrainConfig

    model = dict(members=2, hidden=(32,), fit_steps=50, rollout_states=4) | cost_model
    return TrainConfig(
        task="toy",
        env_id="o3srl.envs.toy:ToyRunEnv",
        dataset=str(toy_file),
        cost_limit=5.0,
        steps=steps,
        log_every=100,
        checkpoint_every=steps,
        eval_episodes=0,
        progress=False,
        run_dir=str(run_dir),
        td3bc=TD3BCConfig(hidden=(32, 32), gamma=0.9, reward_scale=1.0),
        o3srl=O3SRLConfig(player="adaptive", feedback_batch=16),
        cost_model=CostModelConfig(**model),
    )


def test_adaptive_player_compares_the_models_episode_cost_with_kappa(toy_file, tmp_path):
    """On the toy task: the fit happens before the first round, its loss is logged, and the feedback's budget is κ
    itself (an episode's cost), not the discounted critic threshold."""
    import json

    from o3srl.train import run

    cfg = _adaptive_toy_run(toy_file, tmp_path / "run", steps=200)
    run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["feedback/budget"] == pytest.approx(5.0) for row in rows)
    assert all(np.isfinite(row["model/fit_loss"]) and np.isfinite(row["feedback/cost_estimate"]) for row in rows)
    # The fitted model is in the checkpoint: a finished run read back has it, with the loss the rows logged.
    from o3srl.train import load_finished_run

    finished = load_finished_run(tmp_path / "run")
    assert float(finished.state.model.fit_loss) == pytest.approx(rows[-1]["model/fit_loss"])
    # The toy task's costs are in [0, 1]: the default head ("auto") predicts them as probabilities.
    assert json.loads((tmp_path / "run" / "run.json").read_text())["cost_model_head"] == "bernoulli"


def test_the_auto_head_is_bernoulli_for_costs_in_the_unit_interval_else_regression():
    assert CostModelConfig().cost_head == "auto"
    assert CostModel(CostModelConfig(), 1, 1, unit_costs=True).head == "bernoulli"
    assert CostModel(CostModelConfig(), 1, 1, unit_costs=False).head == "regression"
    assert CostModel(CostModelConfig(cost_head="regression"), 1, 1, unit_costs=True).head == "regression"


def test_the_earlier_player_has_no_model_and_draws_what_it_drew_before(toy_file):
    """A learner without the model keeps its state layout (model None) and its keys (the model's is folded out)."""
    from o3srl.algos.o3srl import O3SRL, O3SRLConfig, Setting
    from o3srl.algos.td3bc import TD3BC, TD3BCConfig

    setting = Setting(
        obs_dim=1,
        act_dim=1,
        cost_limit=5.0,
        episode_length=20,
        total_steps=100,
        reward_abs_max=1.0,
        cost_abs_max=1.0,
        lambda_unit=1.0,
    )
    oracle = TD3BC(TD3BCConfig(hidden=(8,)), 1, 1)
    earlier = O3SRL(O3SRLConfig(player="earlier"), oracle, setting).init(jax.random.PRNGKey(3))
    adaptive = O3SRL(dataclasses.replace(O3SRLConfig(player="adaptive")), oracle, setting).init(jax.random.PRNGKey(3))
    assert earlier.model is None and adaptive.model is not None
    np.testing.assert_array_equal(np.asarray(earlier.key), np.asarray(adaptive.key))
    for a, b in zip(jax.tree.leaves(earlier.oracle), jax.tree.leaves(adaptive.oracle)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_estimate_is_refreshed_every_rollout_every_rounds_and_held_in_between():
    model = _Scripted(p=0.0, members=1)
    model.config = dataclasses.replace(model.config, rollout_every=3)
    state = model.init(jax.random.PRNGKey(0))
    s0 = jnp.zeros((1, 1))
    seen = []
    for rounds_done, shift in enumerate([0.0, 1.0, 2.0, 3.0, 4.0]):
        # The policy's "cost" moves every round (states start higher); only rounds 0 and 3 roll it out.
        state = model.refresh(state, lambda s: s, s0 + shift, 10, jnp.int32(rounds_done))
        seen.append(float(state.estimate))
    # From s0 = x, the steps with s ≥ 3 among x, …, x + 9: 7 from 0, 10 from 3.
    assert seen == [7.0, 7.0, 7.0, 10.0, 10.0]


def test_pessimism_reads_the_members_mean_plus_k_spreads(toy_file, tmp_path):
    """cost_model.pessimism k: Ĉ = the members' mean episode cost + k × their spread. The first round's policy is the
    same with and without it (same seed, same first λ), so its readings differ by exactly k spreads."""
    from o3srl.train import run

    traces = {}
    for k in (0.0, 2.0):
        cfg = _adaptive_toy_run(toy_file, tmp_path / f"k{k:g}", steps=100, members=3, pessimism=k)
        run(cfg)
        traces[k] = np.load(tmp_path / f"k{k:g}" / "rounds.npz")
    plain, pessimistic = traces[0.0], traces[2.0]
    spread = plain["feedback__cost_estimate_spread"][0]
    assert spread > 0
    np.testing.assert_allclose(pessimistic["feedback__cost_estimate_spread"][0], spread, rtol=1e-6)
    np.testing.assert_allclose(
        pessimistic["feedback__cost_estimate"][0], plain["feedback__cost_estimate"][0] + 2.0 * spread, rtol=1e-5
    )


def test_the_reading_is_the_mean_of_all_rollouts_or_the_median_of_the_members_means():
    costs = jnp.array([[0.0, 2.0], [4.0, 6.0], [64.0, 66.0]])  # 3 members × 2 start states; member 2 drifts
    mean = CostModel(CostModelConfig(members=3), 1, 1)
    median = CostModel(CostModelConfig(members=3, aggregate="median"), 1, 1)
    assert float(mean.reading(costs)) == pytest.approx(142.0 / 6)
    assert float(median.reading(costs)) == pytest.approx(5.0)  # the members' means are 1, 5 and 65
    from o3srl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown aggregate 'max'"):
        CostModel(CostModelConfig(aggregate="max"), 1, 1)
