"""Read a finished run's cost critics where O3SRL's arm feedback can read them, next to what the policy really cost.

    python benchmarks/cost_critic_probe.py runs/bench/kappa5_bullet/OfflineDroneCircle-v0__o3srl__k5__s0 [RUN ...]
    python benchmarks/cost_critic_probe.py RUN ... --md table.md      # also write the table as markdown

For each run directory (TD3+BC oracle): the discounted cost estimate mean Q_c(s, π(s)) over 4096 dataset initial
states (``feedback_states = "initial"``, the default) and over 4096 dataset states (``"batch"``), the budget B it is
compared with (all in cost units), and the evaluated episode cost of the last iterate (``eval.json``). A critic that
reads Q_c(s0) far below B for a policy whose episode cost is far above κ makes every arm look feasible.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from o3srl.data.sampler import sample_batch, sample_init_obs, to_device
from o3srl.report import show_markdown_table
from o3srl.train import load_finished_run

HEADER = ("run", "budget B", "Q_c at initial states", "Q_c at dataset states", "eval cost / episode", "κ")


def probe(run_dir: Path, states: int = 4096, seed: int = 0) -> tuple[str, ...]:
    run = load_finished_run(run_dir)  # the run's own normalisation; an earlier layout is brought up to date
    cfg, problem, learner, state, stats = run.cfg, run.problem, run.learner, run.state, run.stats
    if cfg.oracle_name != "td3bc":
        raise SystemExit(f"{run_dir}: the probe reads TD3+BC cost critics; this run's oracle is {cfg.oracle_name}")
    data = to_device(problem.dataset, stats)
    scale = learner.oracle.config.cost_scale
    key = jax.random.PRNGKey(seed)
    _, qc_init = learner.oracle.policy_values(state.oracle, sample_init_obs(key, data, states))
    _, qc_data = learner.oracle.policy_values(state.oracle, sample_batch(key, data, states).obs)
    evaluated = json.loads((run_dir / "eval.json").read_text())
    return (
        run_dir.name,
        f"{learner.budget.reported_value:.3f}",
        f"{float(np.mean(qc_init)) / scale:.3f}",
        f"{float(np.mean(qc_data)) / scale:.3f}",
        f"{evaluated['eval/cost']:.2f}",
        f"{cfg.cost_limit:g}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with checkpoint.msgpack and eval.json")
    parser.add_argument("--states", type=int, default=4096, help="states sampled per estimate")
    parser.add_argument("--md", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    rows = [probe(run, args.states) for run in args.runs]
    show_markdown_table(HEADER, rows, args.md)


if __name__ == "__main__":
    main()
