"""Evaluation: exact episode counts, determinism, batching, normalisation of the mean, mixtures."""

from __future__ import annotations

import numpy as np
import pytest

from o3srl.errors import O3SRLError
from o3srl.evaluate import EvalResult, evaluate

TOY = "o3srl.envs.toy:ToyRunEnv"


def const(a):
    return lambda obs: np.full((obs.shape[0], 1), a, np.float32)


def test_exact_values_on_the_toy_task():
    # a = 0.75: reward (1 + 0.75)/2 = 0.875 per step, cost 2 (0.75 − 0.5) = 0.5 per step, 20 steps.
    res = evaluate(const(0.75), TOY, episodes=3, cost_limit=5.0, reward_range=(0.0, 20.0), reference="given")
    np.testing.assert_allclose(res.episode_rewards, 17.5)
    np.testing.assert_allclose(res.episode_costs, 10.0)
    np.testing.assert_array_equal(res.episode_lengths, 20)
    assert res.normalized_reward == pytest.approx(17.5 / 20)
    assert res.normalized_cost == pytest.approx(2.0) and not res.safe
    m = res.metrics()
    assert m["eval/safe"] == 0.0 and m["eval/episodes"] == 3.0 and m["eval/cost"] == pytest.approx(10.0)


@pytest.mark.parametrize("episodes, envs", [(1, 4), (5, 2), (7, 3), (4, 4)])
def test_episode_count_is_exact_and_independent_of_batching(episodes, envs):
    seen = []

    def policy(obs):
        seen.append(obs.shape[0])
        return np.zeros((obs.shape[0], 1), np.float32)

    res = evaluate(policy, TOY, episodes=episodes, cost_limit=1.0, reward_range=(0, 20), num_envs=envs)
    assert len(res.episode_rewards) == episodes
    assert max(seen) == min(envs, episodes)


def test_normalises_the_mean_as_osrl_does():
    res = EvalResult(np.array([10.0, 30.0]), np.array([0.0, 20.0]), np.array([5, 5]), 10.0, (0.0, 40.0), "given")
    assert res.normalized_reward == pytest.approx(0.5)  # mean 20 / 40
    assert res.normalized_cost == pytest.approx(1.0)  # mean 10 / 10: safe at the boundary
    assert res.safe
    np.testing.assert_allclose(res.episode_normalized_costs, [0.0, 2.0])
    res0 = EvalResult(np.array([1.0]), np.array([0.0]), np.array([1]), 0.0, (0.0, 1.0), "given")
    assert res0.normalized_cost == 1.0 and res0.safe  # κ = 0: (0 + 1) / (0 + 1)
    assert (
        EvalResult(
            np.array([8.0]), np.array([0.0]), np.array([1]), 1.0, (0.0, 10.0), "given", frontier=10.0
        ).frontier_fraction
        == 0.8
    )


def test_mixture_policies_are_told_when_episodes_start():
    starts = []

    class Mix:
        def begin_episode(self, slot):
            starts.append(slot)

        def __call__(self, obs):
            return np.zeros((obs.shape[0], 1), np.float32)

    evaluate(Mix(), TOY, episodes=5, cost_limit=1.0, reward_range=(0, 20), num_envs=2)
    assert len(starts) == 5 and set(starts) == {0, 1}


def test_sequence_policies_are_told_each_steps_reward_and_cost():
    """A sequence policy acting 0.75 on the toy task (reward 0.875 and cost 0.5 a step, 20 steps) from targets
    (20, 12) ends its episode with (20 − 17.5, 12 − 10) to go, after 20 steps."""
    import jax.numpy as jnp

    from o3srl.data.sampler import NormStats
    from o3srl.policy import SequencePolicy

    def window_fn(params, obs, actions, rtg, ctg, timesteps, length):
        return jnp.full((obs.shape[0], 1), 0.75)

    stats = NormStats(np.zeros(1, np.float32), np.ones(1, np.float32), -np.ones(1, np.float32), np.ones(1, np.float32))
    policy = SequencePolicy(window_fn, {"targets": jnp.asarray([20.0, 12.0])}, stats, seq_len=4)
    res = evaluate(policy, TOY, episodes=1, cost_limit=5.0, reward_range=(0, 20), num_envs=1)
    np.testing.assert_allclose(res.episode_rewards, 17.5)
    ctx = policy.context(0)
    assert ctx.step == 20 and ctx.length == 4
    np.testing.assert_allclose(ctx.to_go, [2.5, 2.0], atol=1e-9)
    np.testing.assert_allclose(ctx.reward_to_go, 20 - 0.875 * np.arange(16, 20), rtol=1e-6)
    np.testing.assert_array_equal(ctx.timesteps, [16, 17, 18, 19])


def test_errors():
    with pytest.raises(O3SRLError, match="no reference scores"):
        evaluate(const(0.0), TOY, episodes=1, cost_limit=1.0)
    with pytest.raises(O3SRLError, match="at least one episode"):
        evaluate(const(0.0), TOY, episodes=0, cost_limit=1.0, reward_range=(0, 1))


def test_ballrun_smoke():
    rng = np.random.default_rng(0)
    res = evaluate(
        lambda o: rng.uniform(-1, 1, (o.shape[0], 2)).astype(np.float32),
        "OfflineBallRun-v0",
        episodes=2,
        cost_limit=5.0,
        seed=0,
        num_envs=2,
    )
    assert res.reference == "dsrl" and res.reward_range == (26.34, 1327.4)
    assert np.all(res.episode_lengths == 100)


def test_ballrun_evaluation_is_deterministic_for_a_seed():
    def policy(obs):
        return np.tile(np.array([[0.6, -0.2]], np.float32), (obs.shape[0], 1))

    a = evaluate(policy, "OfflineBallRun-v0", episodes=3, cost_limit=5.0, seed=7, num_envs=3)
    b = evaluate(policy, "OfflineBallRun-v0", episodes=3, cost_limit=5.0, seed=7, num_envs=1)
    np.testing.assert_array_equal(a.episode_rewards, b.episode_rewards)
    np.testing.assert_array_equal(a.episode_costs, b.episode_costs)
