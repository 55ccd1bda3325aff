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


def test_toy_optimum_closed_form():
    assert toy_optimum(5.0) == pytest.approx(16.25)
    # The closed form matches a constant policy that spends exactly the budget: a = ½ + κ / (2T).
    a = 0.5 + 5.0 / (2 * EPISODE_LENGTH)
    r, c = rollout(lambda obs: np.array([a]))
    assert r == pytest.approx(16.25) and c == pytest.approx(5.0)


def test_o3srl_is_safe_where_unconstrained_is_not(toy_file, tmp_path):
    import o3srl
    from o3srl.algos.o3srl import O3SRLConfig
    from o3srl.algos.td3bc import TD3BCConfig
    from o3srl.config import TrainConfig
    from o3srl.train import run

    kappa = 5.0
    cfg = TrainConfig(
        task="toy", env_id="o3srl.envs.toy:ToyRunEnv", dataset=str(toy_file), cost_limit=kappa, steps=6_000,
        log_every=1_000, checkpoint_every=6_000, eval_episodes=0, progress=False,
        td3bc=TD3BCConfig(hidden=(64, 64), gamma=0.9, reward_scale=1.0), o3srl=O3SRLConfig(feedback_batch=64),
    )
    run(dataclasses.replace(cfg, run_dir=str(tmp_path / "o3srl")))
    run(dataclasses.replace(cfg, run_dir=str(tmp_path / "lam0"), algo="td3bc", fixed_lambda=0.0))
    r_o3, c_o3 = rollout(o3srl.load_policy(tmp_path / "o3srl"))
    r_0, c_0 = rollout(o3srl.load_policy(tmp_path / "lam0"))
    assert c_0 > kappa, f"the unconstrained policy should violate the limit (cost {c_0:.2f})"
    assert c_o3 <= kappa, f"O3SRL should meet the limit (cost {c_o3:.2f})"
    # Safe behaviour in this data is worth at least ¾ per step; O3SRL must not collapse below the data's safe level.
    assert r_o3 >= 0.75 * toy_optimum(kappa)
