"""The contract every learner of the training loop meets, checked on a small run of the toy task: finite metrics,
actions within bounds, save → load → the in-memory policy's actions, same seed → same numbers, another seed →
other numbers, and a run killed between checkpoints resumes to bitwise-equal parameters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.test_train import _actions, _flatten, _rows

from o3srl.config import TrainConfig
from o3srl.logger import read_metrics


def check_contract(
    make: Callable[..., TrainConfig], tmp_path: Path, metric: str, kind: str = "single"
) -> dict[str, Any]:
    """``make(run_dir, **overrides)`` gives the config of a 400-step run logged every 100 steps; ``metric`` is a loss
    every row holds; ``kind`` the learner's output kind (a sequence policy's in-memory policy is built as the
    training loop builds it, :func:`o3srl.train.make_policy`). Returns the run's ``run.json`` for the caller's own
    checks."""
    import jax
    from flax import serialization

    from o3srl import logger
    from o3srl.checkpoint import load_checkpoint
    from o3srl.policy import Policy
    from o3srl.rundir import read_run
    from o3srl.train import build_learner, load_problem, make_policy, run

    cfg = make(tmp_path / "a")
    run(cfg)
    rows = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [100, 200, 300, 400]
    assert all(np.isfinite(r[metric]) for r in rows)
    actions = _actions(tmp_path / "a")
    assert actions.shape == (7, 1) and np.all(np.abs(actions) <= 1.0)

    resolved = cfg.resolved()
    learner = build_learner(resolved, load_problem(resolved))
    _, state, stats, _ = load_checkpoint(tmp_path / "a" / "checkpoint.msgpack", learner.init(jax.random.PRNGKey(0)))
    actor, output_kind = learner.output(state)
    assert output_kind == kind
    policy = Policy(learner.act, actor, stats) if kind == "single" else make_policy(resolved, learner, state, stats)
    np.testing.assert_array_equal(policy(np.linspace(0, 1, 7, dtype=np.float32)[:, None]), actions)

    # Same seed → same numbers is checked by the killed run below (the same seed, its rows and parameters equal
    # "a"'s); another seed must give other numbers.
    run(make(tmp_path / "c", seed=1))
    assert _rows(tmp_path / "a") != _rows(tmp_path / "c")

    original = logger.JsonlSink.write

    def dying_write(self, step, metrics):
        if step == 300:
            raise KeyboardInterrupt
        original(self, step, metrics)

    logger.JsonlSink.write = dying_write
    try:
        with pytest.raises(KeyboardInterrupt):
            run(make(tmp_path / "killed"))
    finally:
        logger.JsonlSink.write = original
    run(TrainConfig(), resume_dir=str(tmp_path / "killed"))
    assert _rows(tmp_path / "a") == _rows(tmp_path / "killed")
    saved = [
        dict(_flatten(serialization.msgpack_restore((tmp_path / d / "checkpoint.msgpack").read_bytes())["state"]))
        for d in ("a", "killed")
    ]
    assert saved[0].keys() == saved[1].keys()
    for key in saved[0]:
        np.testing.assert_array_equal(saved[0][key], saved[1][key], err_msg=key)
    return read_run(tmp_path / "a")[1]


def check_first_step(make: Callable[..., TrainConfig], tmp_path: Path, policy_type: type) -> tuple[Any, Any]:
    """For a sequence policy (CDT's; CAPS's and CCAC's, which read the cost received so far), after
    :func:`check_contract`: ``learner.act`` (the action at an episode's first step) agrees with the first call of the
    policy ``load_policy`` rebuilds from the run directory alone, which acts for the run's κ. Returns that policy and
    the run's last state."""
    import jax
    import jax.numpy as jnp

    import o3srl
    from o3srl.checkpoint import load_checkpoint
    from o3srl.data.sampler import denormalize_action, normalize_obs
    from o3srl.train import build_learner, load_problem

    resolved = make(tmp_path / "a").resolved()
    learner = build_learner(resolved, load_problem(resolved))
    _, state, stats, _ = load_checkpoint(tmp_path / "a" / "checkpoint.msgpack", learner.init(jax.random.PRNGKey(0)))
    obs = np.linspace(0, 1, 7, dtype=np.float32)[:, None]
    params, _ = learner.output(state)
    first = denormalize_action(np.asarray(learner.act(params, jnp.asarray(normalize_obs(obs, stats)))), stats)
    policy = o3srl.load_policy(tmp_path / "a")
    assert isinstance(policy, policy_type)
    assert getattr(policy, "cost_limit", resolved.cost_limit) == resolved.cost_limit
    np.testing.assert_allclose(policy(obs), first, atol=1e-6)
    return policy, state
