"""CDT: returns-to-go, windows, the Pareto relabelling and the targets against hand values; the sequence policy's
context; the learners' contract; and one-step episodes whose action the target cost must decide."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.contract import check_contract, check_first_step
from tests.one_step import two_actions
from tests.test_train import TOY, small_config

from o3srl.algos.cdt import (
    Augmentation,
    CDTConfig,
    augment,
    grid_filter,
    osrl_target_reward,
    pareto_front,
    returns_to_go,
    sample_sequences,
    sequence_table,
    target_reward,
)
from o3srl.config import TrainConfig
from o3srl.data.sampler import NormStats, compute_norm_stats, to_device
from o3srl.errors import ConfigError

SMALL = CDTConfig(
    embedding_dim=16, num_layers=1, num_heads=2, seq_len=5, batch_size=32, warmup_steps=10, learning_rate=1e-3
)

# The conftest's `arrays`: episodes of lengths 3, 2, 4 starting at 0, 3, 5.
REWARDS = np.array([1, 2, 3, 10, 10, 0, 0, 1, 1], np.float32)
COSTS = np.array([0, 0, 1, 5, 5, 0, 0, 0, 0], np.float32)
START, LENGTH = np.array([0, 3, 5]), np.array([3, 2, 4])


def test_returns_to_go_by_hand():
    np.testing.assert_array_equal(returns_to_go(REWARDS, START, LENGTH), [6, 5, 3, 20, 10, 2, 2, 2, 1])
    np.testing.assert_array_equal(returns_to_go(COSTS, START, LENGTH), [1, 1, 1, 10, 5, 0, 0, 0, 0])


def _device(arrays):
    from o3srl.data import OfflineDataset

    ds = OfflineDataset(arrays)
    return to_device(ds, compute_norm_stats(ds, normalize_obs=False))


def test_windows_start_in_the_episode_and_are_padded_past_its_end(arrays):
    """Only the third episode (rewards 0, 0, 1, 1; no cost) is drawn: with K = 3 a window starting at step s holds
    steps s … min(s + 2, 3), then zeros; its timesteps count on through the padding."""
    data = _device(arrays)
    no_aug = Augmentation(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    table = sequence_table(REWARDS, COSTS, START, LENGTH, no_aug, None)
    table = table._replace(prob=jnp.asarray([0.0, 0.0, 1.0]))
    batch = jax.device_get(sample_sequences(jax.random.PRNGKey(0), data, table, 3, 64))
    rtg = np.array([2, 2, 2, 1, 0, 0, 0], np.float32)
    starts = batch.timesteps[:, 0]
    assert set(starts.tolist()) == {0, 1, 2, 3}
    for i, s in enumerate(starts):
        valid = min(3, 4 - s)
        np.testing.assert_array_equal(batch.timesteps[i], [s, s + 1, s + 2])
        np.testing.assert_array_equal(batch.mask[i], [1.0] * valid + [0.0] * (3 - valid))
        np.testing.assert_array_equal(batch.reward_to_go[i], rtg[s : s + 3] * batch.mask[i])
        np.testing.assert_array_equal(batch.cost_to_go[i], 0.0)
        np.testing.assert_array_equal(batch.obs[i, :valid], arrays["observations"][5 + s : 5 + s + valid])
        np.testing.assert_array_equal(batch.obs[i, valid:], 0.0)
        np.testing.assert_array_equal(batch.actions[i, valid:], 0.0)


def test_an_augmented_trajectory_shifts_its_episodes_returns_to_its_targets(arrays):
    """The first episode (R̂ = 6, 5, 3; Ĉ = 1, 1, 1) relabelled to start at (100, 7): R̂ = 100, 99, 97 and Ĉ = 7, 7, 7.
    Draws ∝ 70 − C: the episodes' costs 1, 10, 0 and the relabelled one's 7 give 69 : 60 : 70 : 63."""
    data = _device(arrays)
    aug = Augmentation(np.array([0]), np.array([100.0]), np.array([7.0]))
    table = sequence_table(REWARDS, COSTS, START, LENGTH, aug, 70.0)
    np.testing.assert_allclose(table.prob, np.array([69, 60, 70, 63]) / 262, rtol=1e-6)
    table = table._replace(prob=jnp.asarray([0.0, 0.0, 0.0, 1.0]))
    batch = jax.device_get(sample_sequences(jax.random.PRNGKey(1), data, table, 3, 16))
    for i, s in enumerate(batch.timesteps[:, 0]):
        n = 3 - s
        np.testing.assert_allclose(batch.reward_to_go[i, :n], [100, 99, 97][s:])
        np.testing.assert_allclose(batch.cost_to_go[i, :n], 7.0)
        np.testing.assert_array_equal(batch.costs[i, :n], COSTS[s:3])


def test_pareto_front_and_grid_filter_by_hand():
    cost = np.array([0.0, 1.0, 1.0, 2.0, 3.0])
    reward = np.array([1.0, 3.0, 2.0, 3.0, 5.0])
    np.testing.assert_array_equal(pareto_front(cost, reward), [0, 1, 4])  # (1, 2) and (2, 3) are dominated by (1, 3)
    # Three points in one cell, two in another, one alone: only the cell of three (more than two) is kept.
    cost = np.array([0.0, 0.01, 0.02, 5.0, 5.01, 10.0])
    reward = np.array([0.0, 0.0, 0.01, 5.0, 5.0, 10.0])
    np.testing.assert_array_equal(grid_filter(cost, reward, np.random.default_rng(0)), [0, 1, 2])


def test_augmented_targets_lie_above_the_frontier_on_cheaper_episodes():
    """Episodes with reward ≈ 10 + 5 C: every target (C', R') has R' ≥ frontier(C') + min_reward and R' ≤ max_reward
    (the frontier is a line here), and its episode costs at most C'."""
    rng = np.random.default_rng(0)
    cost = np.repeat(np.arange(10.0), 20) + rng.uniform(0, 0.5, 200)
    reward = 10 + 5 * cost - rng.uniform(0, 3, 200)
    kept = grid_filter(cost, reward, np.random.default_rng(1))
    aug = augment(
        reward,
        cost,
        np.random.default_rng(1),
        percent=0.2,
        deg=1,
        max_reward=100.0,
        min_reward=1.0,
        max_rew_decrease=20.0,
        beta=1.0,
    )
    n = int(0.2 * len(kept))  # 20% of the episodes the filter keeps
    assert n > 10 and len(aug.source) == n and set(aug.source) <= set(kept)
    assert np.all(cost[aug.source] <= aug.cost + 1e-9)
    assert np.all(aug.reward <= 100.0) and np.all(aug.reward >= 10 + 5 * aug.cost + 1.0 - 2.0)  # the fit's slack
    np.testing.assert_allclose(aug.cost, np.linspace(cost[kept].min(), cost[kept].max(), n))


def test_targets():
    # OSRL's CarCircle pairs (450, 10), (500, 20), (550, 50): at κ, interpolated, held beyond the ends
    assert osrl_target_reward("OfflineCarCircle-v0", 10.0) == 450.0
    assert osrl_target_reward("OfflineCarCircle-v0", 15.0) == 475.0
    assert osrl_target_reward("OfflineCarCircle-v0", 80.0) == 550.0
    assert osrl_target_reward("OfflineCarCircle-v0", 5.0) == 450.0
    assert osrl_target_reward("my-task", 5.0) is None
    reward, cost = np.array([10.0, 30.0, 50.0]), np.array([2.0, 6.0, 9.0])
    assert target_reward(CDTConfig(), "my-task", 6.0, reward, cost) == (30.0, "frontier")
    assert target_reward(CDTConfig(), "my-task", 1.0, reward, cost) == (10.0, "lowest-cost episode")
    assert target_reward(CDTConfig(target_return=7.0), "OfflineBallRun-v0", 1.0, reward, cost) == (7.0, "given")
    assert target_reward(CDTConfig(), "OfflineBallRun-v0", 30.0, reward, cost) == (600.0, "osrl")


def test_the_sequence_policy_keeps_the_last_k_steps_and_counts_down_its_targets():
    """K = 3, five steps of reward 1 and cost 0.5 from targets (10, 4): the context holds steps 2, 3, 4 at
    R̂ = 8, 7, 6 and Ĉ = 3, 2.5, 2 (the to-go before each step), with the actions it returned; the next episode
    starts afresh."""
    from o3srl.policy import SequencePolicy

    def window_fn(params, obs, actions, rtg, ctg, timesteps, length):
        rows = jnp.arange(obs.shape[0])
        return jnp.tanh(obs[rows, length - 1, :1] + rtg[rows, length - 1][:, None])

    stats = NormStats(np.zeros(2, np.float32), np.ones(2, np.float32), -np.ones(1, np.float32), np.ones(1, np.float32))
    policy = SequencePolicy(window_fn, {"targets": jnp.asarray([10.0, 4.0])}, stats, seq_len=3)
    obs = [np.array([[0.1 * t, -t], [-0.1 * t, t]], np.float32) for t in range(5)]
    taken = []
    for o in obs:
        taken.append(policy(o))
        for slot in (0, 1):
            policy.observe(slot, 1.0, 0.5)
    ctx = policy.context(0)
    assert ctx.length == 3 and ctx.step == 5 and ctx.to_go == [5.0, 1.5]
    np.testing.assert_array_equal(ctx.obs, np.stack([o[0] for o in obs[2:]]))
    np.testing.assert_array_equal(ctx.timesteps, [2, 3, 4])
    np.testing.assert_array_equal(ctx.reward_to_go, [8.0, 7.0, 6.0])
    np.testing.assert_array_equal(ctx.cost_to_go, [3.0, 2.5, 2.0])
    np.testing.assert_allclose(ctx.actions[:, 0], [a[0, 0] for a in taken[2:]], rtol=1e-6)
    np.testing.assert_allclose(taken[0][:, 0], np.tanh([0.0 + 10.0, 0.0 + 10.0]), rtol=1e-6)
    np.testing.assert_array_equal(policy.context(1).obs, np.stack([o[1] for o in obs[2:]]))
    policy.begin_episode(0)
    policy(obs[0])
    ctx = policy.context(0)
    assert ctx.length == 1 and ctx.step == 1 and ctx.to_go == [10.0, 4.0] and ctx.reward_to_go[0] == 10.0


def _cdt(data, run_dir, cdt=SMALL, **kw) -> TrainConfig:
    return small_config(data, run_dir, algo="cdt", cdt=cdt, **kw)


def test_contract(toy_file, tmp_path):
    """The learners' contract; and ``learner.act`` (the action at an episode's first step) agrees with the saved
    sequence policy's first call."""
    from o3srl.policy import SequencePolicy

    make = lambda d, **kw: _cdt(toy_file, d, cost_limit=5.0, **kw)
    info = check_contract(make, tmp_path, "loss/actor", "sequence")
    assert info["cdt_target_reward_source"] == "frontier" and info["cdt_target_cost"] == 5.0
    assert info["cdt_augmented"] > 0 and "arms" not in info

    check_first_step(make, tmp_path, SequencePolicy)


def test_bad_cdt_config_is_one_clear_error(toy_file, tmp_path):
    from o3srl.train import run

    with pytest.raises(ConfigError, match=r"cdt.num_heads must be ≥ 1 and divide embedding_dim, got 3"):
        run(_cdt(toy_file, tmp_path / "bad", cdt=dataclasses.replace(SMALL, num_heads=3)))
    with pytest.raises(ConfigError, match=r"cdt.attention_dropout must be in \[0, 1\), got 1.5"):
        run(_cdt(toy_file, tmp_path / "bad", cdt=dataclasses.replace(SMALL, attention_dropout=1.5)))
    assert not (tmp_path / "bad").exists()


def _two_behaviours(tmp_path):
    """One-step episodes: half act −0.5 at no cost, half act +0.5 at cost 10; the rewards overlap (uniform in
    [0, 10] and [5, 15]), so only the cost tells the two apart at a reward of 7.5."""
    return two_actions(tmp_path, rewards=lambda costly, rng: rng.uniform(0, 10, len(costly)) + 5 * costly, cost=10.0)


def test_the_target_cost_decides_the_action(tmp_path):
    """After 600 steps on the two behaviours (no relabelling, no dropout), the policy at a reward target of 7.5 acts
    like the costless behaviour (−0.5) when asked for a cost of 0 and like the costly one (+0.5) when allowed 10
    (measured: −0.49 and +0.51 at every observation).

    The cost enters as 5 − Ĉ here (5 and −5) instead of OSRL's 50 − Ĉ (50 and 40): the embedding's LayerNorm does
    not see a token's scale, and at initialisation (zero biases, timestep embeddings of size 0.02) w · 50 and w · 40
    differ in little else, so with OSRL's offset the model must first grow a bias to read the cost (docs/algorithms/
    cdt.md)."""
    import o3srl
    from o3srl.train import run

    cdt = dataclasses.replace(
        SMALL,
        embedding_dim=32,
        batch_size=64,
        augment_percent=0.0,
        attention_dropout=0.0,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        cost_offset=5.0,
    )
    cfg = dataclasses.replace(
        _cdt(_two_behaviours(tmp_path), tmp_path / "run", cdt=cdt, steps=600, checkpoint_every=600, cost_limit=10.0),
        normalize_obs=False,
        reward_min=0.0,
        reward_max=15.0,
        env_id=TOY,
    )
    run(cfg)
    policy = o3srl.load_policy(tmp_path / "run")
    obs = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
    acts = {}
    for cost in (0.0, 10.0):
        policy.targets = (7.5, cost)
        for slot in range(len(obs)):
            policy.begin_episode(slot)
        acts[cost] = policy(obs)[:, 0]
    assert np.all(acts[0.0] < -0.25) and np.all(acts[10.0] > 0.25), acts

    # `o3srl eval --cost-limit 0`: episodes start at (R*_data(0), 0), R̂_0 from the source the run took it from.
    from o3srl.data.dataset import OfflineDataset, safe_frontier
    from o3srl.rundir import evaluate_run

    _, summary = evaluate_run(tmp_path / "run", episodes=2, seed=0, envs=1, cost_limit=0.0, env_id=TOY)
    frontier = safe_frontier(OfflineDataset.load(cfg.dataset).episodes, 0.0)
    assert summary["cdt_target_reward_source"] == "frontier" and summary["cdt_target_cost"] == 0.0
    assert summary["cdt_target_reward"] == pytest.approx(frontier)
