"""End to end on a toy task whose constrained optimum is known: O3SRL keeps the cost under the limit, λ = 0 does not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from o3srl.envs.toy import EPISODE_LENGTH, ToyRunEnv, toy_optimum


def rollout(policy) -> tuple[float, float]:
    env = ToyRunEnv()
    obs, _ = env.reset()
    total_r = total_c = 0.0
    for _ in range(EPISODE_LENGTH):
        obs, r, _, _, info = env.step(policy(obs))
        total_r += r
        total_c += info["cost"]
    return total_r, total_c


def toy_config(toy_file, hidden: int, **fields):
    """A run on the toy task's data file: TD3+BC with two hidden layers of ``hidden`` units (γ = 0.9, reward scale 1),
    no progress bar and no evaluation unless ``fields`` (the rest of the TrainConfig) says otherwise."""
    from o3srl.algos.td3bc import TD3BCConfig
    from o3srl.config import TrainConfig

    base = dict(task="toy", env_id="o3srl.envs.toy:ToyRunEnv", dataset=str(toy_file), eval_episodes=0, progress=False)
    return TrainConfig(**{**base, **fields}, td3bc=TD3BCConfig(hidden=(hidden, hidden), gamma=0.9, reward_scale=1.0))


def test_toy_optimum_closed_form():
    assert toy_optimum(5.0) == pytest.approx(16.25)
    # The closed form matches a constant policy that spends exactly the budget: a = ½ + κ / (2T).
    a = 0.5 + 5.0 / (2 * EPISODE_LENGTH)
    r, c = rollout(lambda obs: np.array([a]))
    assert r == pytest.approx(16.25) and c == pytest.approx(5.0)


def test_o3srl_is_safe_where_unconstrained_is_not(toy_file, tmp_path):
    import o3srl
    from o3srl.algos.cost_model import CostModelConfig
    from o3srl.algos.o3srl import O3SRLConfig
    from o3srl.train import run

    kappa = 5.0
    cfg = toy_config(
        toy_file,
        64,
        cost_limit=kappa,
        steps=6_000,
        log_every=1_000,
        checkpoint_every=6_000,
        o3srl=O3SRLConfig(feedback_batch=64),
        # The default (adaptive) λ-player with a smaller cost model than the default's (5 × 200 × 200, 20k steps).
        cost_model=CostModelConfig(members=3, hidden=(64, 64), fit_steps=3_000),
    )
    run(dataclasses.replace(cfg, run_dir=str(tmp_path / "o3srl")))
    run(dataclasses.replace(cfg, run_dir=str(tmp_path / "lam0"), algo="td3bc", fixed_lambda=0.0))
    r_o3, c_o3 = rollout(o3srl.load_policy(tmp_path / "o3srl"))
    r_0, c_0 = rollout(o3srl.load_policy(tmp_path / "lam0"))
    assert c_0 > kappa, f"the unconstrained policy should violate the limit (cost {c_0:.2f})"
    assert c_o3 <= kappa, f"O3SRL should meet the limit (cost {c_o3:.2f})"
    # Safe behaviour in this data is worth at least ¾ per step; O3SRL must not collapse below the data's safe level.
    assert r_o3 >= 0.75 * toy_optimum(kappa)


def test_tail_mixture_output_holds_the_last_iterates_and_an_old_checkpoint_resumes(toy_file, tmp_path):
    """``--o3srl.output tail``: the policy is the uniform mixture of ``tail_members`` iterates spread over the last
    ``tail_fraction`` of the rounds, slot 0 being the last iterate itself. A checkpoint in the layout before the
    adaptive λ-player (no bandit hint, no tail) still resumes, with the values that reproduce what it ran."""
    import jax
    from flax import serialization

    import o3srl
    from o3srl.algos.o3srl import O3SRLConfig
    from o3srl.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from o3srl.policy import MixturePolicy
    from o3srl.train import build_learner, load_problem, run

    cfg = toy_config(
        toy_file,
        32,
        cost_limit=5.0,
        steps=2_000,
        log_every=500,
        checkpoint_every=1_000,
        run_dir=str(tmp_path / "tail"),
        # The earlier λ-player (no cost model): the tail and the old layout are about the loop, not the player.
        o3srl=O3SRLConfig(player="earlier", feedback_batch=32, output="tail", tail_members=4, tail_fraction=0.2),
    )
    run(cfg)
    policy = o3srl.load_policy(tmp_path / "tail")
    assert isinstance(policy, MixturePolicy) and policy.num_members == 4
    learner = build_learner(cfg.resolved(), load_problem(cfg.resolved()))
    assert (learner.tail_stride, learner.tail_members) == (10, 4)  # 200 rounds: tail of 40 rounds, every 10th
    _, state, _, _ = load_checkpoint(tmp_path / "tail" / CHECKPOINT_NAME, learner.init(jax.random.PRNGKey(0)))
    for member, last in zip(jax.tree.leaves(state.tail), jax.tree.leaves(state.oracle.actor)):
        np.testing.assert_array_equal(member[0], last)  # slot 0 is the last iterate
    assert not np.array_equal(jax.tree.leaves(state.tail)[0][1], jax.tree.leaves(state.tail)[0][0])

    # An earlier layout: drop the hint and the tail from a step-1000 checkpoint, then resume it.
    old_dir = tmp_path / "old"
    old_cfg = dataclasses.replace(
        cfg, run_dir=str(old_dir), steps=1_000, o3srl=O3SRLConfig(player="earlier", feedback_batch=32)
    )
    run(old_cfg)
    learner = build_learner(old_cfg.resolved(), load_problem(old_cfg.resolved()))
    _, state, stats, _ = load_checkpoint(old_dir / CHECKPOINT_NAME, learner.init(jax.random.PRNGKey(0)))
    old = serialization.to_state_dict(state)
    del old["tail"], old["bandit"]["hint"], old["tail_readings"]
    save_checkpoint(
        old_dir / CHECKPOINT_NAME,
        step=1_000,
        state=old,
        stats=stats,
        config_json=(old_dir / "config.json").read_text().strip(),
    )
    with pytest.raises(Exception):
        load_checkpoint(old_dir / CHECKPOINT_NAME, learner.init(jax.random.PRNGKey(0)))
    _, upgraded, _, _ = load_checkpoint(
        old_dir / CHECKPOINT_NAME, learner.init(jax.random.PRNGKey(0)), learner.upgrade_state_dict
    )
    assert np.all(np.asarray(upgraded.bandit.hint) == 0)
    np.testing.assert_array_equal(upgraded.bandit.log_weights, state.bandit.log_weights)
    run(dataclasses.replace(old_cfg, steps=2_000), resume_dir=str(old_dir))  # train.run applies the upgrade itself
    assert (old_dir / "policy.msgpack").exists()


def test_best_output_mixes_the_best_safe_reading_members_without_changing_the_rounds(toy_file, tmp_path):
    """``--o3srl.output best`` (the adaptive player's): every tail member is read by the cost model's rollouts (its
    reward head) in the round it is kept, and the output is the mixture of the ``best_members`` with the highest
    reward reading among those whose cost reading is within (1 − δ) κ. The reward head never reaches the λ-player:
    the rounds are those of a run without it, bit for bit; nor does the output (``mix``: the same rounds)."""
    import json

    import jax
    from flax import serialization

    import o3srl
    from o3srl.algos.cost_model import CostModelConfig
    from o3srl.algos.o3srl import O3SRLConfig, best_members, hull_members, mixed_members
    from o3srl.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from o3srl.data.sampler import sample_init_obs, to_device
    from o3srl.policy import MixturePolicy
    from o3srl.train import build_learner, load_finished_run, load_problem, run

    kappa = 5.0
    cfg = toy_config(
        toy_file,
        32,
        cost_limit=kappa,
        steps=1_000,
        log_every=500,
        checkpoint_every=1_000,
        eval_episodes=2,
        run_dir=str(tmp_path / "best"),
        o3srl=O3SRLConfig(player="adaptive", feedback_batch=16, tail_members=6, tail_fraction=0.3, best_members=2),
        cost_model=CostModelConfig(members=2, hidden=(32,), fit_steps=200, rollout_states=4),
    )
    run(cfg)
    tail_cfg = dataclasses.replace(
        cfg,
        run_dir=str(tmp_path / "tail"),
        o3srl=dataclasses.replace(cfg.o3srl, output="tail"),
        cost_model=dataclasses.replace(cfg.cost_model, reward_head=False),
    )
    run(tail_cfg)
    traces = [np.load(tmp_path / name / "rounds.npz") for name in ("best", "tail")]
    for key in ("bandit__lambda", "feedback__cost_estimate"):
        np.testing.assert_array_equal(traces[0][key], traces[1][key])

    learner = build_learner(cfg.resolved(), load_problem(cfg.resolved()))
    _, state, _, _ = load_checkpoint(tmp_path / "best" / CHECKPOINT_NAME, learner.init(jax.random.PRNGKey(0)))
    readings = np.asarray(state.tail_readings)
    assert readings.shape == (6, 4) and (readings[:, 3] == 1).all()
    # Slot 0 is the last round: its readings are the last round's model readings.
    assert readings[0, 1] == pytest.approx(float(traces[0]["feedback__cost_estimate"][-1]), rel=1e-5)
    assert readings[0, 2] == pytest.approx(float(traces[0]["feedback__cost_estimate_spread"][-1]), rel=1e-5)
    finished = load_finished_run(tmp_path / "best")
    model, actor = finished.learner.cost_model, jax.tree.map(lambda x: x[0], state.tail)
    init = sample_init_obs(jax.random.PRNGKey(0), to_device(finished.problem.dataset, finished.stats), 4)
    horizon = learner.setting.episode_length
    _, reward = model.episode_returns(state.model, lambda s: learner.act(actor, s), init, horizon)
    assert readings[0, 0] == pytest.approx(float(reward.mean()), rel=1e-4, abs=1e-4)
    chosen = best_members(readings, 0.8 * kappa, 2, pessimism=1.0)
    summary = json.loads((tmp_path / "best" / "eval.json").read_text())
    assert summary["output_members"] == chosen.tolist()
    assert len(summary["tail_model_readings"]) == 6
    # output.json is written with the policy, so an evaluation from the run directory alone (o3srl eval, a grid's
    # evaluate stage) reports it too.
    assert json.loads((tmp_path / "best" / "output.json").read_text())["output_members"] == chosen.tolist()
    from o3srl.rundir import evaluate_run

    _, again = evaluate_run(tmp_path / "best", episodes=1, seed=0, envs=1, env_id=cfg.env_id)
    assert again["output_members"] == chosen.tolist()
    policy = o3srl.load_policy(tmp_path / "best")
    assert isinstance(policy, MixturePolicy) and policy.num_members == len(chosen)
    for saved, member in zip(jax.tree.leaves(policy.actor_params), jax.tree.leaves(state.tail)):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(member)[chosen])
    safe = readings[:, 1] + readings[:, 2] <= 0.8 * kappa
    if safe.any():  # each chosen member reads safe, and no safe-reading member left out reads a higher reward
        assert safe[chosen].all()
        assert readings[chosen, 0].min() >= readings[safe & ~np.isin(np.arange(6), chosen), 0].max(initial=-np.inf)

    # The mix output is chosen from the same training: the same rounds, the members mixed_members picks (repeats
    # included) saved as the policy.
    mix_cfg = dataclasses.replace(
        cfg, run_dir=str(tmp_path / "mix"), o3srl=dataclasses.replace(cfg.o3srl, output="mix", mix_slots=5)
    )
    run(mix_cfg)
    mix_trace = np.load(tmp_path / "mix" / "rounds.npz")
    for key in ("bandit__lambda", "feedback__cost_estimate"):
        np.testing.assert_array_equal(traces[0][key], mix_trace[key])
    mixed = mixed_members(readings, 0.8 * kappa, 2, pessimism=1.0, slots=5)
    assert json.loads((tmp_path / "mix" / "output.json").read_text())["output_members"] == mixed.tolist()
    policy = o3srl.load_policy(tmp_path / "mix")
    assert isinstance(policy, MixturePolicy) and policy.num_members == len(mixed)
    for saved, member in zip(jax.tree.leaves(policy.actor_params), jax.tree.leaves(state.tail)):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(member)[mixed])

    # The hull output reads the same tail: a learner built for it chooses hull_members from the same readings.
    hull_cfg = dataclasses.replace(cfg, o3srl=dataclasses.replace(cfg.o3srl, output="hull", mix_slots=5)).resolved()
    hull_learner = build_learner(hull_cfg, load_problem(hull_cfg))
    hulled = hull_members(readings, 0.8 * kappa, pessimism=1.0, slots=5)
    assert hull_learner.output_members(state).tolist() == hulled.tolist()
    assert hull_learner.output_info(state)["output_members"] == hulled.tolist()

    # A checkpoint of an adaptive run from before the reward head (no tail readings; its cost model had none)
    # resumes, and its config (saved without the field) reads back without the head.
    saved = json.loads((tmp_path / "tail" / "config.json").read_text())
    assert saved["cost_model"]["reward_head"] is False
    del saved["cost_model"]["reward_head"]
    from o3srl.config import from_dict

    assert from_dict(saved).cost_model.reward_head is False
    tail_learner = build_learner(tail_cfg.resolved(), load_problem(tail_cfg.resolved()))
    _, tail_state, stats, _ = load_checkpoint(
        tmp_path / "tail" / CHECKPOINT_NAME, tail_learner.init(jax.random.PRNGKey(0))
    )
    old = serialization.to_state_dict(tail_state)
    del old["tail_readings"]
    for key in ("reward_params", "reward_scale", "reward_estimate"):
        old["model"].pop(key, None)
    save_checkpoint(
        tmp_path / "tail" / CHECKPOINT_NAME,
        step=1_000,
        state=old,
        stats=stats,
        config_json=(tmp_path / "tail" / "config.json").read_text().strip(),
    )
    _, upgraded, _, _ = load_checkpoint(
        tmp_path / "tail" / CHECKPOINT_NAME, tail_learner.init(jax.random.PRNGKey(0)), tail_learner.upgrade_state_dict
    )
    assert (np.asarray(upgraded.tail_readings) == 0).all()
    run(dataclasses.replace(tail_cfg, steps=1_200), resume_dir=str(tmp_path / "tail"))
