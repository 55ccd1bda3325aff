"""CPQ on the one-step problem of ``tests/test_cpq.py``: its critics' readings and its policy's action per cost limit.

    python benchmarks/cpq_one_step.py 0.5 400        # one JSON line per cost limit

Half of the one-step episodes act +0.5 (reward 0, cost 0), half −0.5 (reward 1, cost 1); 3,000 steps of CPQ with
32-wide networks, seed 0. Each line: the threshold B, the mean action of the evaluated policy tanh(μ(s)), and the
cost and reward critics (ensemble minimum) at a = −1, −0.5, 0, 0.5, 1 for s = 0.5, and α at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_cpq import _cpq, _one_step  # noqa: E402
from tests.test_train import _actions  # noqa: E402

from o3srl.checkpoint import load_checkpoint  # noqa: E402
from o3srl.train import build_learner, load_problem, run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cost_limits", type=float, nargs="+")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = _one_step(Path(tmp))
        for kappa in args.cost_limits:
            run_dir = Path(tmp) / f"k{kappa:g}"
            cfg = dataclasses.replace(
                _cpq(data, run_dir, cost_limit=kappa, steps=args.steps),
                normalize_obs=False,
                reward_min=0.0,
                reward_max=1.0,
            )
            run(cfg)
            resolved = cfg.resolved()
            learner = build_learner(resolved, load_problem(resolved))
            _, state, _, _ = load_checkpoint(run_dir / "checkpoint.msgpack", learner.init(jax.random.PRNGKey(0)))
            obs = jnp.full((5, 1), 0.5)
            out: dict[str, float] = {"kappa": kappa, "B": learner.threshold, "policy": float(_actions(run_dir).mean())}
            for a in (-1.0, -0.5, 0.0, 0.5, 1.0):
                act = jnp.full((5, 1), a)
                out[f"q_c({a:g})"] = float(learner.q_c.apply(state.critic["cost"], obs, act).min(0).mean())
                out[f"q_r({a:g})"] = float(learner.q_r.apply(state.critic["reward"], obs, act).min(0).mean())
            out["alpha"] = float(jnp.exp(state.log_alpha))
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
