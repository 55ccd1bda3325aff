"""Score a finished adaptive O3SRL run's outputs side by side, chosen from its own tail members' model readings.

    python benchmarks/best_output.py RUN [RUN ...] [--episodes 20] [--pools 20 100 100/5] [--pessimism 0 1]
        [--md table.md]

Every run keeps its tail members and, with the cost model's reward head, each member's model readings (episode
reward and cost in the model's rollouts, read in the round the member was kept; slot 0 is the last iterate). A tail of
N members one every s rounds holds, in its first n slots, exactly the tail of n members one every s rounds, and in
every k-th of them the tail of n / k members one every k s rounds, so one wide run scores the ``best`` output
(o3srl.algos.o3srl.best_members) for every pool given with ``--pools`` (``n``: the first n slots; ``n/k``: every k-th
of them) and every pessimism k given with ``--pessimism`` (a member reads safe when its model cost plus k spreads of
the model's members is within (1 − δ) κ), next to the uniform mixture of the first 20 slots (the ``tail`` output of
a 20-member tail). Every member is read again by the run's own model from the same initial states (the readings
the run keeps, checked against them; a run kept before the spread column restores the spread as 0). Every choice is made from
the model readings alone; the evaluations (the run's own evaluation settings) only score them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o3srl.io import atomic_write_text
from o3srl.policy import MixturePolicy
from o3srl.report import show_markdown_table
from o3srl.rundir import evaluate_policy, read_run
from o3srl.train import load_finished_run

HEADER = (
    "run",
    "κ",
    "pool",
    "output",
    "k",
    "members (slot: model reward / cost ± spread)",
    "evaluated reward / cost",
)


def pool_slots(spec: str) -> np.ndarray:
    """The tail slots of a pool: ``"n"`` the first n, ``"n/k"`` every k-th of the first n (slot 0 included)."""
    n, _, k = spec.partition("/")
    return np.arange(0, int(n), int(k) if k else 1)


def read_again(run) -> np.ndarray:
    """(members, 4): every tail member read by the run's own cost model from the λ-player's initial states, as the
    run reads a member in the round it keeps it (reward, cost, the spread of the model's members' costs, 1)."""
    from o3srl.data.sampler import sample_init_obs, to_device

    learner, state = run.learner, run.state
    model = learner.cost_model
    init = sample_init_obs(
        jax.random.PRNGKey(0), to_device(run.problem.dataset, run.stats), model.config.rollout_states
    )

    @jax.jit
    def read(actor):
        costs, rewards = model.episode_returns(
            state.model, lambda s: learner.act(actor, s), init, learner.setting.episode_length
        )
        return jnp.stack([rewards.mean(), model.reading(costs), costs.mean(axis=1).std(), 1.0])

    n = jax.tree.leaves(state.tail)[0].shape[0]
    return np.stack([np.asarray(read(jax.tree.map(lambda x, j=j: x[j], state.tail))) for j in range(n)])


def rows_of(
    run_dir: Path, pools: list[str], pessimism: list[float], episodes: int, mix_shares: list[float] | None = None
) -> list[tuple[str, ...]]:
    from o3srl.algos.o3srl import best_members, mixed_members

    run = load_finished_run(run_dir)
    cfg, learner, state, stats = run.cfg, run.learner, run.state, run.stats
    _, info = read_run(run_dir)
    readings = np.asarray(state.tail_readings, np.float64)
    if not (readings[:, -1] == 1).all():
        raise SystemExit(f"{run_dir}: its tail members have no model readings (a run without the reward head)")
    # Read again: a run kept before the spread column restores it as 0. With the λ-player reading the mean, the
    # reward and cost read again are the run's own.
    again = read_again(run)
    if learner.cost_model.config.pessimism == 0:
        np.testing.assert_allclose(again[:, :2], readings[:, :2], rtol=1e-3, atol=1e-2)
    readings = again
    kappa = cfg.cost_limit
    target = (1.0 - learner.player.margin) * kappa

    def score(slots: np.ndarray) -> str:
        members = jax.tree.map(lambda x: x[slots], state.tail)
        result = evaluate_policy(
            MixturePolicy(learner.act, members, stats, seed=cfg.eval_seed),
            info,
            cfg,
            episodes=episodes,
            seed=cfg.eval_seed,
            envs=cfg.eval_envs,
        )
        return f"{result.reward:.1f} / {result.cost:.2f}{'' if result.cost <= kappa else ' **unsafe**'}"

    def read(slots: np.ndarray) -> str:
        members, counts = np.unique(slots, return_counts=True)
        share = (lambda c: f" ×{c}") if len(members) < len(slots) else (lambda c: "")
        return ", ".join(
            f"{j}{share(c)}: {readings[j, 0]:.0f} / {readings[j, 1]:.1f} ± {readings[j, 2]:.1f}"
            for j, c in zip(members, counts)
        )

    name = f"{run_dir.parent.name}/{run_dir.name}"
    out = []
    uniform = np.arange(min(20, len(readings)))
    out.append((name, f"{kappa:g}", str(len(uniform)), "tail (uniform)", "–", "all", score(uniform)))
    scored: dict[tuple[int, ...], str] = {}
    for pool in pools:
        slots = pool_slots(pool)
        if slots[-1] >= len(readings):
            continue
        count = learner.config.best_members
        for k in pessimism:
            choices = [(f"best {count}", slots[best_members(readings[slots], target, count, k)])]
            for share in mix_shares or []:
                mixed = mixed_members(readings[slots], target, count, k, learner.config.mix_slots, share)
                choices.append((f"mix {count}" + (f" ≥ {share:g}" if share else ""), slots[mixed]))
            for output, chosen in choices:
                key = tuple(chosen.tolist())
                if key not in scored:  # the same members: the same evaluation
                    scored[key] = score(chosen)
                out.append((name, f"{kappa:g}", pool, output, f"{k:g}", read(chosen), scored[key]))
                print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--pools", nargs="+", default=["20", "100"], help="n (the first n slots) or n/k")
    parser.add_argument("--pessimism", type=float, nargs="+", default=[0.0, 1.0], help="k values to compare")
    parser.add_argument(
        "--mix", action="store_true", help="also score the mix output (o3srl.algos.o3srl.mixed_members)"
    )
    parser.add_argument(
        "--mix-min-share", type=float, nargs="+", default=[0.0], help="with --mix: the smallest shares to compare"
    )
    parser.add_argument("--md", type=Path, help="also write the page to this markdown file")
    args = parser.parse_args()
    shares = args.mix_min_share if args.mix else []
    rows = [row for run in args.runs for row in rows_of(run, args.pools, args.pessimism, args.episodes, shares)]
    table = show_markdown_table(HEADER, rows)
    if args.md:
        runs = " ".join(str(r) for r in args.runs)
        mix_flags = ""
        if args.mix:
            mix_flags = " --mix" + (f" --mix-min-share {' '.join(f'{x:g}' for x in shares)}" if shares != [0.0] else "")
        pools = " ".join(str(p) for p in args.pools)
        intro = [
            "# The best" + (" and mix outputs" if args.mix else " output") + " from a run's own tail readings",
            "",
            f"Command: `python benchmarks/best_output.py {runs} --episodes {args.episodes} --pools {pools} "
            f"--pessimism {' '.join(f'{k:g}' for k in args.pessimism)}{mix_flags} --md {args.md}`  ",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores; date: {datetime.date.today()}  ",
            "",
            "Pool n: the first n tail slots (slot 0 is the last iterate, one slot every 30 rounds here, so pool 20 is",
            "the tail output's 20 members over the last 10 % of rounds); n/k: every k-th of them (100/5: a tail of",
            "20 members over the last half of the rounds). tail (uniform): the uniform mixture of the",
            "first 20 slots. best 3: the 3 members of the pool with the highest model reward among those whose model",
            "cost plus k spreads of the model's members is at most (1 − δ) κ; members: slot: model reward / cost ±",
            "spread. mix 3: those members and the 3 with the highest model reward above the target, the latter in the",
            "largest share (of 20 slots; ×j: a member in j of them) that keeps the mean model cost plus k spreads",
            "within the target and raises the mean model reward (mix 3 ≥ s: only a share of at least s). Each output",
            "is evaluated as the run evaluates its own",
            f"({args.episodes} episodes, one member per episode); the same members are evaluated once.",
            "",
        ]
        atomic_write_text(args.md, "\n".join(intro) + table + "\n")


if __name__ == "__main__":
    main()
