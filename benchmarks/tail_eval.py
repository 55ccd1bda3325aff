"""Evaluate a finished O3SRL run's two outputs side by side: its tail mixture and every tail member alone.

    python benchmarks/tail_eval.py RUN [RUN ...] [--episodes 20] [--member-episodes 4] [--md table.md]

Every run keeps its tail members in the checkpoint (slot 0 is the last iterate), so either output can be scored
after training, whichever one the run's ``o3srl.output`` named. The mixture draws one member per episode (as
``--o3srl.output tail`` does); each member alone is rolled out for ``--member-episodes`` episodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax

from o3srl.evaluate import EvalResult
from o3srl.policy import MixturePolicy, Policy
from o3srl.report import show_markdown_table
from o3srl.rundir import evaluate_policy, read_run
from o3srl.train import load_finished_run

HEADER = ("run", "κ", "tail mixture: reward / cost", "last iterate", "the other members (newest first)")


def tail_row(run_dir: Path, episodes: int, member_episodes: int) -> tuple[str, ...]:
    run = load_finished_run(run_dir)
    cfg, learner, state, stats = run.cfg, run.learner, run.state, run.stats
    _, info = read_run(run_dir)

    def score(policy: Policy, n: int) -> EvalResult:  # as the run's own evaluation scores it
        return evaluate_policy(policy, info, cfg, episodes=n, seed=cfg.eval_seed, envs=cfg.eval_envs)

    mixture = score(MixturePolicy(learner.act, state.tail, stats, seed=cfg.eval_seed), episodes)
    members = []
    for i in range(learner.tail_members):
        result = score(Policy(learner.act, jax.tree.map(lambda x, i=i: x[i], state.tail), stats), member_episodes)
        members.append(f"{result.reward:.0f} / {result.cost:.0f}")
    return (
        f"{run_dir.parent.name}/{run_dir.name}",
        f"{cfg.cost_limit:g}",
        f"{mixture.reward:.1f} / {mixture.cost:.2f}{'' if mixture.safe else ' **unsafe**'}",
        members[0],
        ", ".join(members[1:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--member-episodes", type=int, default=4)
    parser.add_argument("--md", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    rows = [tail_row(run, args.episodes, args.member_episodes) for run in args.runs]
    show_markdown_table(HEADER, rows, args.md)


if __name__ == "__main__":
    main()
