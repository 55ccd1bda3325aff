"""The cost critic along the policy's own trajectory: where does Q_c(s_t, π(s_t)) lose track of the real cost?

    python benchmarks/critic_on_path.py RUN [RUN ...] [--episodes 1] [--steps 0 1 2 3 5 8 10 25 50 95]

For each run directory (TD3+BC oracle) the last iterate is rolled out in the simulator; at the listed steps t of
each episode the table gives the discounted cost-to-go actually collected from s_t to the episode's end
(Σ_{u ≥ t} γ^{u−t} c_u) and the twin cost critics' Q_c(s_t, π(s_t)) (their smaller–larger value), both in cost
units. The critics bootstrap through timeouts, so near the end of an episode they also count the cost after it;
early in the episode the two should agree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from o3srl.data.sampler import denormalize_action, normalize_obs
from o3srl.envs import make_env
from o3srl.train import load_finished_run


def on_path(run_dir: Path, episodes: int, steps: list[int]) -> list[str]:
    run = load_finished_run(run_dir)
    cfg, problem, learner, state, stats = run.cfg, run.problem, run.learner, run.state, run.stats
    if cfg.oracle_name != "td3bc":
        raise SystemExit(f"{run_dir}: the probe reads TD3+BC cost critics; this run's oracle is {cfg.oracle_name}")
    oracle = learner.oracle
    act = jax.jit(oracle.act)
    q_cost = jax.jit(lambda o, a: oracle.critic.apply(state.oracle.critic["cost"], o, a))
    env = make_env(problem.env_id)
    lines = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=cfg.eval_seed + episode)
        visited, costs, done = [], [], False
        while not done:
            o = normalize_obs(obs, stats).astype(np.float32)
            visited.append(o)
            a = np.asarray(act(state.oracle.actor, o[None]))[0]
            obs, _, terminated, truncated, info = env.step(np.asarray(denormalize_action(a, stats)))
            costs.append(float(info.get("cost", 0.0)))
            done = terminated or truncated
        obs_t = np.stack(visited)
        to_go, acc = np.zeros(len(costs)), 0.0
        for t in range(len(costs) - 1, -1, -1):
            acc = costs[t] + oracle.config.gamma * acc
            to_go[t] = acc
        q = np.asarray(q_cost(obs_t, act(state.oracle.actor, obs_t))) / oracle.config.cost_scale
        cells = [f"{to_go[t]:.1f} / {q[:, t].min():.1f}–{q[:, t].max():.1f}" for t in steps if t < len(costs)]
        lines.append(f"| {run_dir.parent.name}/{run_dir.name} | {sum(costs):.0f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2, 3, 5, 8, 10, 25, 50, 95])
    args = parser.parse_args()
    print("| run | episode cost | " + " | ".join(f"t = {t}: real / Q_c" for t in args.steps) + " |")
    print("|---|---|" + "---|" * len(args.steps))
    for run in args.runs:
        print("\n".join(on_path(run, args.episodes, args.steps)))


if __name__ == "__main__":
    main()
