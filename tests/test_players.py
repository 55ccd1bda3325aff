"""The two λ-players: which knobs each sets, explicit flags winning, and the arms each builds."""

from __future__ import annotations

import flax.struct
import numpy as np
import pytest

from o3srl.algos.iql import IQLConfig
from o3srl.algos.o3srl import O3SRL, O3SRLConfig, Setting, hull_members, make_oracle, resolve_player
from o3srl.algos.td3bc import TD3BCConfig
from o3srl.errors import ConfigError


def test_each_player_fills_only_the_knobs_left_unset():
    assert O3SRLConfig().player == "adaptive"  # the default λ-player
    earlier = resolve_player(O3SRLConfig(player="earlier"))
    assert (
        earlier.bandit,
        earlier.feedback,
        earlier.optimism,
        earlier.margin,
        earlier.lambda_scale,
        earlier.cost_estimate,
        earlier.oracle_lambda,
        earlier.hint_decay,
        earlier.output,
    ) == ("exp3", "shaped", 0.0, 0.0, 1.0, "mean", "drawn", 0.0, "last")
    adaptive = resolve_player(O3SRLConfig(margin=0.1))
    assert (
        adaptive.bandit,
        adaptive.feedback,
        adaptive.optimism,
        adaptive.margin,
        adaptive.cost_estimate,
        adaptive.oracle_lambda,
        adaptive.hint_decay,
        adaptive.output,
    ) == ("hedgebox", "lagrangian", 8.0, 0.1, "model", "mean", 0.95, "mix")
    assert adaptive.lambda_scale is None  # the data's unit
    with pytest.raises(ConfigError, match="o3srl.player"):
        resolve_player(O3SRLConfig(player="bogus"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "player,arms", [("earlier", [0.0, 1.25, 2.5, 3.75, 5.0]), ("adaptive", [0.0, 0.5, 1.0, 1.5, 2.0])]
)
def test_arms_of_each_player(player, arms):
    setting = Setting(
        obs_dim=3,
        act_dim=1,
        cost_limit=5.0,
        episode_length=20,
        total_steps=1000,
        reward_abs_max=1.0,
        cost_abs_max=1.0,
        lambda_unit=0.4,
    )
    oracle = make_oracle("td3bc", TD3BCConfig(hidden=(8,)), IQLConfig(), 3, 1)
    learner = O3SRL(O3SRLConfig(player=player), oracle, setting)
    np.testing.assert_allclose(learner.arms, arms, rtol=1e-6)  # adaptive: u = 0.4 times linspace(0, 5, 5)
    assert learner.config.player == player and learner.config.bandit is not None


class _ActorOnly(flax.struct.PyTreeNode):
    actor: dict


class _RecordingOracle:
    """An oracle that learns nothing and reports the λ each of its steps was given."""

    def __init__(self) -> None:
        self.config = TD3BCConfig(hidden=(4,), batch_size=4)

    def init(self, key):
        import jax.numpy as jnp

        return _ActorOnly(actor={"w": jnp.zeros((1,))})

    def update(self, state, batch, lam, budget_step, key):
        return state, {"step/lambda": lam}

    def policy_values(self, state, obs, reduce):
        import jax.numpy as jnp

        n = obs.shape[0]
        return jnp.zeros((n,)), jnp.full((n,), 10.0)  # a cost critic reading 10: always over the budget

    def act(self, params, obs):
        import jax.numpy as jnp

        return jnp.zeros((*obs.shape[:-1], 1))


@pytest.mark.parametrize("oracle_lambda", ["drawn", "mean"])
def test_the_oracle_steps_on_the_drawn_arm_or_on_the_mean_of_the_draw(oracle_lambda):
    import jax
    import jax.numpy as jnp

    from o3srl.data.sampler import DeviceData

    oracle = _RecordingOracle()
    setting = Setting(
        obs_dim=1, act_dim=1, cost_limit=5.0, episode_length=10, total_steps=60, reward_abs_max=1.0, cost_abs_max=1.0
    )
    config = O3SRLConfig(
        player="adaptive",
        cost_estimate="mean",
        arms=(0.0, 1.0, 3.0),
        steps_per_round=2,
        oracle_lambda=oracle_lambda,
        feedback_batch=4,
        output="tail",
    )
    learner = O3SRL(config, oracle, setting)  # type: ignore[arg-type]
    n = 8
    data = DeviceData(
        obs=jnp.zeros((n, 1)),
        actions=jnp.zeros((n, 1)),
        rewards=jnp.zeros(n),
        costs=jnp.zeros(n),
        next_obs=jnp.zeros((n, 1)),
        terminals=jnp.zeros(n),
        init_obs=jnp.zeros((2, 1)),
    )
    _, metrics = learner.run_rounds(learner.init(jax.random.PRNGKey(3)), data, 30)
    stepped = np.asarray(metrics["step/lambda"])
    probs = np.stack([np.asarray(metrics[f"bandit/p/{k}"]) for k in range(3)], axis=1)
    drawn = np.asarray([0.0, 1.0, 3.0])[np.asarray(metrics["bandit/arm"]).astype(int)]
    expected = probs @ np.asarray([0.0, 1.0, 3.0]) if oracle_lambda == "mean" else drawn
    np.testing.assert_allclose(stepped, expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(metrics["bandit/lambda"]), expected, rtol=1e-5)
    # The bandit itself learns the same way under both: a cost over the budget every round moves p to λ = 3.
    assert probs[-1, 2] > probs[0, 2]


def test_an_explicit_oracle_lambda_wins_over_the_players():
    assert resolve_player(O3SRLConfig(player="adaptive", oracle_lambda="drawn")).oracle_lambda == "drawn"
    assert resolve_player(O3SRLConfig(oracle_lambda="mean")).oracle_lambda == "mean"


def test_a_mixture_follows_every_member_equally_often_over_whole_blocks():
    import jax.numpy as jnp

    from o3srl.data.sampler import NormStats
    from o3srl.policy import MixturePolicy

    one = np.ones(1, np.float32)
    stats = NormStats(obs_mean=0 * one, obs_std=one, action_low=-one, action_high=one)
    policy = MixturePolicy(
        lambda params, obs: params["w"] + 0 * obs, {"w": jnp.arange(5.0)[:, None] / 10}, stats, seed=7
    )
    drawn = [policy.begin_episode(slot % 2) for slot in range(15)]
    for block in range(3):
        assert sorted(drawn[5 * block : 5 * block + 5]) == [0, 1, 2, 3, 4]  # each block a permutation
    assert drawn[:5] != drawn[5:10] or drawn[5:10] != drawn[10:]  # and not always the same one
    # Each row acts with the member drawn for it.
    policy.begin_episode(0)
    member = policy.begin_episode(1)
    action = policy(np.zeros((2, 1), np.float32))
    assert action.shape == (2, 1) and action[1, 0] == pytest.approx(member / 10, abs=1e-6)


def test_a_fixed_lambda_run_has_no_lambda_player_so_it_takes_the_earlier_players_knobs():
    from o3srl.config import TrainConfig

    adaptive = O3SRLConfig(player="adaptive")
    assert TrainConfig(o3srl=adaptive).resolved().o3srl.player == "adaptive"
    for algo in ("td3bc", "iql"):
        cfg = TrainConfig(algo=algo, fixed_lambda=1.0, o3srl=adaptive).resolved()
        assert cfg.o3srl.player == "earlier"  # no cost model to fit, the last iterate as output
        assert resolve_player(cfg.o3srl).cost_estimate == "mean" and resolve_player(cfg.o3srl).output == "last"


@pytest.mark.parametrize("hint_violation", [None, 1.0])
def test_one_round_hint_counts_violations_up_to_its_own_cap(toy_file, tmp_path, hint_violation):
    """One round of the lagrangian λ-player on the toy task: the weights take −η ℓ with violations counted up to
    G = 20, and the first hint is this round's losses with violations counted up to G_h (G when unset)."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    from tests.test_train import small_config

    from o3srl import bandits
    from o3srl.data.sampler import compute_norm_stats, to_device
    from o3srl.train import build_learner, load_problem

    o3 = O3SRLConfig(
        player="adaptive", cost_estimate="max", output="last", feedback_batch=32, hint_violation=hint_violation
    )
    # κ = 0.05 (below the floor of the budget's scale, 1): any cost the critics read counts as a large violation
    cfg = dataclasses.replace(small_config(toy_file, tmp_path / "r", cost_limit=0.05, o3srl=o3)).resolved()
    problem = load_problem(cfg)
    learner = build_learner(cfg, problem)
    stats = compute_norm_stats(problem.dataset, problem.action_low, problem.action_high)
    data = to_device(problem.dataset, stats)
    state = learner.prepare(learner.init(jax.random.PRNGKey(0)), data)
    # make the cost critics read a large cost: the last layer's bias of both twins (and their targets) at 30
    cost = jax.tree_util.tree_map(lambda x: x, state.oracle.critic["cost"])
    out = f"Dense_{len(cfg.td3bc.hidden)}"
    cost["params"]["VmapMLP_0"][out]["bias"] = jnp.full_like(cost["params"]["VmapMLP_0"][out]["bias"], 30.0)
    critic = {**state.oracle.critic, "cost": cost}
    state = state.replace(oracle=state.oracle.replace(critic=critic, critic_target=critic))
    new, metrics = learner._round(state, data)
    arms = jnp.asarray(learner.arms)
    c_hat = metrics["feedback/cost_estimate"] * cfg.td3bc.cost_scale
    budget = learner.budget_value
    full = bandits.lagrangian_feedback(arms, learner.cell_constants().max_lambda, c_hat, budget, 1.0, 0.2, 1.0, 20.0)
    g_h = 20.0 if hint_violation is None else hint_violation
    hint = bandits.lagrangian_feedback(arms, learner.cell_constants().max_lambda, c_hat, budget, 1.0, 0.2, 1.0, g_h)
    assert float(c_hat) > 10 * budget  # a violation beyond one scale, so the caps differ
    np.testing.assert_allclose(new.bandit.hint, hint, rtol=1e-5)
    expected_w = jnp.maximum(-0.03 * full - jnp.max(-0.03 * full), -6.0)
    np.testing.assert_allclose(new.bandit.log_weights, expected_w, rtol=1e-5, atol=1e-6)
    if hint_violation == 1.0:
        np.testing.assert_allclose(hint, 0.5 * (1 - arms / arms[-1]), rtol=1e-5)  # g clipped at 1


def test_best_members_by_hand():
    """The ``best`` output: among the members whose model cost is within the target, the highest model rewards
    (ties to the more recent slot); none within it: the lowest costs; an unread member is never preferred."""
    from o3srl.algos.o3srl import best_members

    readings = np.array(
        [
            [100.0, 0.0, 0.0, 1.0],
            [300.0, 6.0, 0.0, 1.0],  # the highest reward, over the target
            [250.0, 4.0, 0.0, 1.0],  # exactly at the target: safe-reading
            [250.0, 3.9, 0.5, 1.0],
            [400.0, 0.0, 0.0, 0.0],  # never read
            [200.0, 1.0, 2.0, 1.0],
            [np.nan, 0.0, 0.0, 1.0],  # a NaN reading
        ]
    )
    assert best_members(readings, 4.0, 2).tolist() == [2, 3]
    assert best_members(readings, 4.0, 3).tolist() == [2, 3, 5]
    assert best_members(readings, 4.0, 10).tolist() == [0, 2, 3, 5]  # only the four safe-reading ones
    assert best_members(readings, 4.0, 0).tolist() == [2]  # at least one
    assert best_members(readings, 6.0, 1).tolist() == [1]
    # Nothing reads within −1: the lowest cost readings, 0 (slot 0) then 1 (slot 5).
    assert best_members(readings, -1.0, 2).tolist() == [0, 5]
    # One spread of pessimism: slot 3 reads 3.9 + 0.5 = 4.4 and slot 5 1 + 2 = 3, so the safe-reading are 0, 2, 5.
    assert best_members(readings, 4.0, 2, pessimism=1.0).tolist() == [2, 5]
    # Two: slot 5 reads 5; by the pessimistic cost, none within −1 gives 0 (0) then 2 (4).
    assert best_members(readings, 4.0, 10, pessimism=2.0).tolist() == [0, 2]
    assert best_members(readings, -1.0, 2, pessimism=2.0).tolist() == [0, 2]


def test_mixed_members_by_hand():
    """The ``mix`` output: the ``best`` members L, and the highest-reward members H above the target in the most of
    the slots that keeps the slots' mean cost reading within the target, when that raises the mean reward reading."""
    from o3srl.algos.o3srl import mixed_members

    readings = np.array(
        [
            [100.0, 0.0, 0.0, 1.0],
            [150.0, 2.0, 0.0, 1.0],
            [400.0, 20.0, 5.0, 1.0],
            [300.0, 12.0, 0.0, 1.0],
            [50.0, 30.0, 0.0, 1.0],
            [900.0, 25.0, 0.0, 0.0],  # never read: never in H
        ]
    )
    # Target 4, one member per group: L = [1] (150 at 2), H = [2] (400 at 20). n slots of H among 10 cost
    # (20 n + 2 (10 − n)) / 10 ≤ 4 for n ≤ 1: reward (400 + 9 · 150) / 10 = 175 > 150.
    assert mixed_members(readings, 4.0, 1, slots=10).tolist() == [1] * 9 + [2]
    # Target 8: n ≤ 3 (cost 7.4).
    assert mixed_members(readings, 8.0, 1, slots=10).tolist() == [1] * 7 + [2] * 3
    # A smallest share: 1 of 10 slots is below 0.2, so L alone; 3 of 10 is not.
    assert mixed_members(readings, 4.0, 1, slots=10, min_share=0.2).tolist() == [1]
    assert mixed_members(readings, 8.0, 1, slots=10, min_share=0.2).tolist() == [1] * 7 + [2] * 3
    assert mixed_members(readings, 8.0, 1, slots=10, min_share=0.3).tolist() == [1] * 7 + [2] * 3
    assert mixed_members(readings, 8.0, 1, slots=10, min_share=0.31).tolist() == [1]
    # Two per group: L = [1, 0], H = [2, 3], each spread in turn from its best. n = 4: H's slots 2, 3, 2, 3 cost 64,
    # L's six 1, 0, 1, 0, 1, 0 cost 6, mean 7.0 ≤ 8 (n = 5: 9.0); reward 215 > 125.
    assert mixed_members(readings, 8.0, 2, slots=10).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    # One spread of pessimism: slot 2 reads 25, so one slot of it already costs (25 + 18) / 10 = 4.3 > 4: L alone.
    assert mixed_members(readings, 4.0, 1, pessimism=1.0, slots=10).tolist() == [1]
    # The same choice of L and H with the share set on the mean readings (share k = 0): as without pessimism, one
    # slot of 10 (cost (20 + 9 · 2) / 10 = 3.8 ≤ 4). With share k = 0.5 slot 2 reads 22.5: (22.5 + 18) / 10 > 4.
    assert mixed_members(readings, 4.0, 1, pessimism=1.0, slots=10, share_pessimism=0.0).tolist() == [1] * 9 + [2]
    assert mixed_members(readings, 4.0, 1, pessimism=1.0, slots=10, share_pessimism=0.5).tolist() == [1]
    # Target 8, share k = 0.5: n slots cost (22.5 n + 2 (10 − n)) / 10 ≤ 8 for n ≤ 2 (n = 3: 8.15).
    assert mixed_members(readings, 8.0, 1, pessimism=1.0, slots=10, share_pessimism=0.5).tolist() == [1] * 8 + [2] * 2
    # Mixing that does not raise the reward reading is not taken; nothing safe-reading: best_members's choice.
    cautious = np.array([[100.0, 0.0, 0.0, 1.0], [50.0, 30.0, 0.0, 1.0]])
    assert mixed_members(cautious, 4.0, 1, slots=10).tolist() == [0]
    assert mixed_members(readings, -1.0, 2, slots=10).tolist() == [0, 1]
    # A mixture's mean reading is within the target whatever the slots.
    for target in (1.0, 4.0, 8.0, 15.0):
        for slots in (2, 7, 20):
            chosen = mixed_members(readings, target, 2, slots=slots)
            assert readings[chosen, 1].mean() <= target


def test_the_best_output_needs_the_models_reward_reading():
    setting = Setting(
        obs_dim=1, act_dim=1, cost_limit=5.0, episode_length=10, total_steps=60, reward_abs_max=1.0, cost_abs_max=1.0
    )
    oracle = make_oracle("td3bc", TD3BCConfig(hidden=(8,)), IQLConfig(hidden=(8,)), 1, 1)
    with pytest.raises(ConfigError, match="o3srl.output 'mix'.*choose o3srl.output 'tail' or 'last'"):
        O3SRL(O3SRLConfig(player="adaptive", cost_estimate="mean"), oracle, setting)
    with pytest.raises(ConfigError, match="o3srl.output 'best'.*choose o3srl.output 'tail' or 'last'"):
        O3SRL(O3SRLConfig(player="adaptive", cost_estimate="mean", output="best"), oracle, setting)
    from o3srl.algos.cost_model import CostModel, CostModelConfig

    no_head = CostModel(CostModelConfig(reward_head=False), 1, 1)
    with pytest.raises(ConfigError, match="cost_model.reward_head true"):
        O3SRL(O3SRLConfig(player="adaptive"), oracle, setting, cost_model=no_head)
    # At a fixed λ the output is the last iterate whatever o3srl.output says: nothing to read.
    O3SRL(O3SRLConfig(player="adaptive", cost_estimate="mean"), oracle, setting, fixed_lambda=1.0)


def test_the_best_output_spreads_its_tail_over_the_last_half_and_the_mixture_over_the_last_tenth():
    from o3srl.algos.o3srl import tail_fraction_of, tail_members_of

    assert tail_members_of(O3SRLConfig(player="adaptive")) == 100
    assert tail_members_of(O3SRLConfig(player="adaptive", output="tail")) == 20
    assert tail_members_of(O3SRLConfig(player="adaptive", tail_members=7)) == 7
    assert tail_fraction_of(O3SRLConfig(player="adaptive")) == 0.5  # output mix, as best
    assert tail_fraction_of(O3SRLConfig(player="adaptive", output="tail")) == 0.1
    assert tail_fraction_of(O3SRLConfig(player="earlier")) == 0.1  # the earlier player's last iterate
    assert tail_fraction_of(O3SRLConfig(player="adaptive", tail_fraction=0.3)) == 0.3
    setting = Setting(
        obs_dim=1, act_dim=1, cost_limit=5.0, episode_length=10, total_steps=1000, reward_abs_max=1.0, cost_abs_max=1.0
    )
    oracle = make_oracle("td3bc", TD3BCConfig(hidden=(8,)), IQLConfig(hidden=(8,)), 1, 1)
    # 100 rounds: the best output's 100 members over the last 50 rounds are the last 100 rounds' iterates; with 20,
    # one every 2 rounds. The mixture's last 10 rounds hold fewer than 20 members, so its 20 are the last 20 rounds'.
    best = O3SRL(O3SRLConfig(player="adaptive"), oracle, setting)
    assert (best.tail_stride, best.tail_members) == (1, 100)
    best = O3SRL(O3SRLConfig(player="adaptive", tail_members=20), oracle, setting)
    assert (best.tail_stride, best.tail_members) == (2, 20)
    mixture = O3SRL(O3SRLConfig(player="adaptive", output="tail"), oracle, setting)
    assert (mixture.tail_stride, mixture.tail_members) == (1, 20)


def test_hull_members_by_hand():
    hull = hull_members
    readings = np.array(
        [
            [100.0, 0.0, 0.0, 1.0],
            [150.0, 2.0, 1.0, 1.0],
            [400.0, 20.0, 5.0, 1.0],
            [300.0, 12.0, 0.0, 1.0],
            [900.0, 25.0, 0.0, 0.0],  # never read: never chosen
        ]
    )
    # Target 8, k = 0, 10 slots. Pairs (safe i, above j): (0, 2): n ≤ 10 · 8 / 20 = 4 → (4 · 400 + 6 · 100) / 10 =
    # 220; (1, 2): n ≤ 10 · 6 / 18 → 3 → (1200 + 1050) / 10 = 225; (0, 3): n ≤ 10 · 8 / 12 → 6 → (1800 + 400) / 10 =
    # 220; (1, 3): n ≤ 10 · 6 / 10 = 6 → (1800 + 600) / 10 = 240, the best.
    assert hull(readings, 8.0, 0.0, slots=10).tolist() == [1] * 4 + [3] * 6
    # k = 1: slot 1 reads 3, slot 2 reads 25. (1, 3): n ≤ 10 · 5 / 9 → 5 → (1500 + 750) / 10 = 225; (0, 3): 220;
    # (0, 2): n ≤ 10 · 8 / 25 → 3 → 190; (1, 2): n ≤ 10 · 5 / 22 → 2 → 200.
    assert hull(readings, 8.0, 1.0, slots=10).tolist() == [1] * 5 + [3] * 5
    # Nothing mixes into a safe single member that is already the best: target 12 with k = 0 takes slot 3 alone
    # (300 > any mixture with slot 2 read at 20: (1, 2) n ≤ 10 · 10 / 18 → 5 → 275).
    assert hull(readings, 12.0, 0.0, slots=10).tolist() == [3]
    # Nothing within the target: the lowest pessimistic cost.
    assert hull(readings, -1.0, 1.0, slots=10).tolist() == [0]
    # Whatever the target, the mixture's mean pessimistic reading is within it when any member reads safe.
    for target in (0.5, 3.0, 8.0, 15.0, 30.0):
        chosen = hull(readings, target, 1.0, slots=20)
        assert (readings[chosen, 1] + readings[chosen, 2]).mean() <= target + 1e-9
