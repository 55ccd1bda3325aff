"""The two λ-players: which knobs each sets, explicit flags winning, and the arms each builds."""

from __future__ import annotations

import numpy as np
import pytest

from o3srl.algos.iql import IQLConfig
from o3srl.algos.o3srl import O3SRL, O3SRLConfig, Setting, make_oracle, resolve_player
from o3srl.algos.td3bc import TD3BCConfig
from o3srl.errors import ConfigError


def test_each_player_fills_only_the_knobs_left_unset():
    earlier = resolve_player(O3SRLConfig())
    assert (
        earlier.bandit,
        earlier.feedback,
        earlier.optimism,
        earlier.margin,
        earlier.lambda_scale,
        earlier.cost_estimate,
    ) == ("exp3", "shaped", 0.0, 0.0, 1.0, "mean")
    adaptive = resolve_player(O3SRLConfig(player="adaptive", margin=0.1))
    assert (adaptive.bandit, adaptive.feedback, adaptive.optimism, adaptive.margin, adaptive.cost_estimate) == (
        "exp3box",
        "lagrangian",
        8.0,
        0.1,
        "model",
    )
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
