"""Score rules for choosing an adaptive O3SRL run's output from its tail members' model readings, on finished runs.

    python benchmarks/output_rules.py RUN [RUN ...] [--member-episodes 5] [--md docs/results/output_rules.md]

Every adaptive run keeps its tail members (slot 0 is the last iterate) and each member's model readings (episode
reward, cost and the spread of the cost across the model's members, read in the round the member was kept). An output
is a multiset of slots, one drawn per episode, so its expected episode reward and cost are the means of its members'
own. This script evaluates every tail member alone in the simulator (``--member-episodes`` episodes each, with the
run's evaluation seed; cached in ``RUN/member_table.json`` with the readings, and with ``--save-dir`` copied
there, so that rules can be scored again from the tables alone) and then scores any number of choice rules from those
evaluations at no further simulation cost: each rule chooses from the readings alone (as the run does), and the
evaluations only score what it chose. Compare rules on the same runs; the per-member means carry the evaluation's
noise (a member followed for 5 episodes), the same for every rule.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from o3srl.algos.o3srl import best_members, hull_members, mixed_members
from o3srl.io import atomic_write_text
from o3srl.policy import Policy
from o3srl.report import show_markdown_table
from o3srl.rundir import evaluate_policy, read_run
from o3srl.train import load_finished_run

Rule = Callable[[np.ndarray, float, float], np.ndarray]
"""(readings (members, 4), cost target (1 − δ) κ, κ) → the slots drawn from (a member listed j times is followed in j
of every len(slots) episodes)."""


def rules(best: int = 3, slots: int = 20) -> dict[str, Rule]:
    """The rules compared: today's outputs and the variants under study."""
    return {
        "last iterate": lambda r, t, k: np.array([0]),
        "tail (first 20, uniform)": lambda r, t, k: np.arange(min(20, len(r))),
        "best, k = 1": lambda r, t, k: best_members(r, t, best, 1.0),
        "mix, k = 1 (default)": lambda r, t, k: mixed_members(r, t, best, 1.0, slots),
        "mix, k = 0": lambda r, t, k: mixed_members(r, t, best, 0.0, slots),
        "mix, k = 1, share k = 0": lambda r, t, k: mixed_members(r, t, best, 1.0, slots, share_pessimism=0.0),
        "mix, k = 1, share k = 0.5": lambda r, t, k: mixed_members(r, t, best, 1.0, slots, share_pessimism=0.5),
        "hull, k = 1": lambda r, t, k: hull_members(r, t, 1.0, slots),
        "hull, k = 0.5": lambda r, t, k: hull_members(r, t, 0.5, slots),
        "hull, k = 0": lambda r, t, k: hull_members(r, t, 0.0, slots),
        "hull, k = 0.5, δ = 0.1": lambda r, t, k: hull_members(r, 0.9 * k, 0.5, slots),
        "hull, k = 0, δ = 0.1": lambda r, t, k: hull_members(r, 0.9 * k, 0.0, slots),
        "mix, k = 1, δ = 0.1": lambda r, t, k: mixed_members(r, 0.9 * k, best, 1.0, slots),
    }


CEILING = "ceiling: the best ≤ 2-member mixture on the evaluations (not a rule)"
"""The reference row: the hull chosen from the members' own evaluated reward and cost at κ itself, what the best
mixture of this tail would score if the readings were exact (an upper bound for every rule on the same evaluations,
up to their noise)."""


def member_table(run_dir: Path, episodes: int) -> dict[str, Any]:
    """A run's tail members as the rules need them: their model readings (as the run kept them) and each member
    evaluated alone (``episodes`` episodes, the run's evaluation seed), with the run's κ, margin and R*_data(κ).
    Cached in ``run_dir/member_table.json``; the file alone is enough to score rules again."""
    cache = run_dir / "member_table.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("episodes") == episodes:
            return saved
    run = load_finished_run(run_dir)
    cfg, learner, state, stats = run.cfg, run.learner, run.state, run.stats
    _, info = read_run(run_dir)
    readings = np.asarray(state.tail_readings, np.float64)
    if not (readings[:, 3] == 1).all():
        raise SystemExit(f"{run_dir}: its tail members have no model readings (a run without the reward head)")
    rewards, costs = [], []
    for j in range(learner.tail_members):
        member = Policy(learner.act, jax.tree.map(lambda x, j=j: x[j], state.tail), stats)
        result = evaluate_policy(member, info, cfg, episodes=episodes, seed=cfg.eval_seed, envs=cfg.eval_envs)
        rewards.append(float(result.reward))
        costs.append(float(result.cost))
    frontier = info.get("safe_frontier")
    table = {
        "run": f"{run_dir.parent.name}/{run_dir.name}",
        "task": cfg.task,
        "seed": cfg.seed,
        "kappa": float(cfg.cost_limit),
        "margin": float(learner.player.margin),
        "frontier": float(frontier) if isinstance(frontier, (int, float)) else None,
        "tail_stride_rounds": int(learner.tail_stride),
        "episodes": episodes,
        "readings": readings.round(4).tolist(),
        "reward": rewards,
        "cost": costs,
    }
    atomic_write_text(cache, json.dumps(table))
    return table


def score_table(table: dict[str, Any], chosen_rules: dict[str, Rule]) -> list[dict[str, Any]]:
    """Each rule's choice from ``table``'s readings, scored by the chosen members' evaluations."""
    readings = np.asarray(table["readings"], np.float64)
    reward, cost = np.asarray(table["reward"]), np.asarray(table["cost"])
    kappa = float(table["kappa"])
    target = (1.0 - float(table["margin"])) * kappa
    frontier = table["frontier"] if table["frontier"] is not None else float("nan")
    rows = []
    evaluated = np.stack([reward, cost, np.zeros_like(cost), np.ones_like(cost)], axis=1)
    choices = [(name, np.asarray(rule(readings, target, kappa))) for name, rule in chosen_rules.items()]
    choices.append((CEILING, hull_members(evaluated, kappa, 0.0)))
    for name, slots in choices:
        rows.append(
            {
                "run": table["run"],
                "kappa": kappa,
                "rule": name,
                "reward": float(reward[slots].mean()),
                "cost": float(cost[slots].mean()),
                "model_reward": float(readings[slots, 0].mean()),
                "model_cost": float(readings[slots, 1].mean()),
                "frontier": float(frontier),
                "members": len(set(slots.tolist())),
            }
        )
    return rows


def load_table(path: Path, episodes: int, save_dir: Path | None) -> dict[str, Any]:
    """A member table from a run directory (evaluated and cached there) or from a saved ``.json`` table; with
    ``save_dir``, a run's table is also written there (one file per run)."""
    if path.is_file():
        return json.loads(path.read_text())
    table = member_table(path, episodes)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(save_dir / f"{path.parent.name}__{path.name}.json", json.dumps(table))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or saved member tables (.json)")
    parser.add_argument("--member-episodes", type=int, default=5)
    parser.add_argument("--save-dir", type=Path, help="also save each run's member table here")
    parser.add_argument("--md", type=Path, help="also write the page to this markdown file")
    args = parser.parse_args()
    chosen = rules()
    tables = [load_table(run, args.member_episodes, args.save_dir) for run in args.runs]
    rows = [row for table in tables for row in score_table(table, chosen)]
    header = ("run", "κ", "rule", "reward / cost (× R*_data(κ))", "model reward / cost", "members")
    table_rows = []
    for r in rows:
        unsafe = " **unsafe**" if r["cost"] > r["kappa"] else ""
        ratio = r["reward"] / r["frontier"] if r["frontier"] == r["frontier"] else float("nan")
        table_rows.append(
            (
                str(r["run"]),
                f"{r['kappa']:g}",
                str(r["rule"]),
                f"{r['reward']:.1f} / {r['cost']:.2f}{unsafe} ({ratio:.2f})",
                f"{r['model_reward']:.1f} / {r['model_cost']:.2f}",
                str(r["members"]),
            )
        )
    summary = []
    for name in [*chosen, CEILING]:
        mine = [r for r in rows if r["rule"] == name]
        ratios = [r["reward"] / r["frontier"] for r in mine]
        safe = sum(r["cost"] <= r["kappa"] for r in mine)
        summary.append((name, f"{np.mean(ratios):.3f}", f"{min(ratios):.3f}", f"{safe} / {len(mine)}"))
    summary_table = show_markdown_table(("rule", "mean × R*_data(κ)", "lowest", "safe runs"), summary)
    table = show_markdown_table(header, table_rows)
    print(summary_table)
    if args.md:
        runs = " ".join(str(r) for r in args.runs)
        intro = [
            "# Choosing the output from the tail members' readings: rules compared on finished runs",
            "",
            f"Command: `python benchmarks/output_rules.py {runs} --member-episodes {args.member_episodes} "
            f"--md {args.md}`  ",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores; date: {datetime.date.today()}  ",
            "",
            "Every tail member of each run is evaluated alone for the given episodes (the run's evaluation seed);",
            "an output's reward and cost are the means of its members' (a member listed j times counted j times),",
            "its expected return as a mixture drawing one member per episode. Each rule chooses from the model",
            "readings alone. × R*_data(κ): the data's best episode reward among episodes with cost ≤ κ. k: the",
            "pessimism (model cost plus k spreads of the model's members) with which members read safe; share k:",
            "the pessimism with which the mix output's share of bolder members is set (default: k). δ: the margin",
            "of the cost target (1 − δ) κ (the run's own, 0.2, unless named). The ceiling row is not a rule: the",
            "best two-member mixture chosen on the evaluations themselves at κ, what exact readings would allow.",
            "",
            "## Summary over the runs",
            "",
            summary_table,
            "",
            "## Per run",
            "",
        ]
        atomic_write_text(args.md, "\n".join(intro) + table + "\n")


if __name__ == "__main__":
    main()
