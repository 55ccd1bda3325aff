"""Can a finished O3SRL run's own dynamics model tell its tail members apart by reward as well as by cost?

    python benchmarks/tail_model_reading.py RUN [RUN ...] [--member-episodes 4] [--md docs/results/tail_model_reading.md]

The adaptive λ-player reads each round's policy through a dynamics-and-cost model of the data (o3srl.algos.cost_model)
and outputs the uniform mixture of its tail members. The model reads cost only, so nothing in the loop sees a member
that is safe but slow. This script fits a reward model beside it (an ensemble of MLPs, one per dynamics member, the
cost model's widths, predicting the step reward from (s, a) by least squares), rolls every tail member out in the
run's own dynamics model from the same initial states the λ-player used, sums the predicted rewards and costs, and
evaluates every member alone in the simulator. It reports the rank correlation of the model's readings with the
evaluated ones, and what three outputs built from the members would have scored (each the uniform mixture of some
members, scored as the mean of those members' evaluations, as a mixture's expected return is):
- ``all``: every tail member (the run's output);
- ``safe-reading``: the members whose model cost is at most (1 − δ) κ;
- ``best safe-reading``: the quarter of the safe-reading members with the highest model reward (at least one).
No choice here uses an evaluation: the evaluations only score what the model chose.
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
import optax

from o3srl.algos.cost_model import _Ensemble
from o3srl.data.sampler import sample_init_obs, to_device
from o3srl.evaluate import evaluate
from o3srl.io import atomic_write_text
from o3srl.policy import Policy
from o3srl.report import show_markdown_table
from o3srl.train import load_finished_run

FIT_STEPS = 10_000


def fit_reward_model(data, members: int, hidden: tuple[int, ...], seed: int):
    """An ensemble predicting the step reward (over its standard deviation) from (s, a): (net, params, scale)."""
    net = _Ensemble(tuple(hidden), 1, members)
    obs_dim, act_dim = data.obs.shape[1], data.actions.shape[1]
    params = net.init(jax.random.PRNGKey(seed), jnp.zeros((members, 1, obs_dim)), jnp.zeros((members, 1, act_dim)))
    tx = optax.adam(1e-3)
    opt = tx.init(params)
    scale = float(jnp.std(data.rewards)) + 1e-6

    @jax.jit
    def step(params, opt, key):
        idx = jax.random.randint(key, (members, 256), 0, data.obs.shape[0])

        def loss(p):
            return ((net.apply(p, data.obs[idx], data.actions[idx])[..., 0] - data.rewards[idx] / scale) ** 2).mean()

        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    key = jax.random.PRNGKey(seed + 1)
    for _ in range(FIT_STEPS):
        key, k = jax.random.split(key)
        params, opt = step(params, opt, k)
    return net, params, scale


def read_members(run, data, reward_net, reward_params, reward_scale) -> np.ndarray:
    """(members, 2): each tail member's model episode reward and cost, from the λ-player's own initial states
    (``data``: the run's dataset on the device)."""
    learner, model = run.learner, run.learner.cost_model
    init = sample_init_obs(jax.random.PRNGKey(0), data, model.config.rollout_states)  # the λ-player's states
    m = model.config.members

    @jax.jit
    def read(actor):
        def body(carry, _):
            obs, alive, ret, cost = carry
            act = learner.act(actor, obs)
            nxt, c, term = model.predict(run.state.model, obs, act)
            r = reward_net.apply(reward_params, obs, act)[..., 0] * reward_scale
            return (nxt, alive * (1.0 - term), ret + alive * r, cost + alive * c), None

        obs = jnp.broadcast_to(init, (m, *init.shape))
        zero = jnp.zeros(obs.shape[:2])
        (_, _, ret, cost), _ = jax.lax.scan(
            body, (obs, jnp.ones_like(zero), zero, zero), None, length=learner.setting.episode_length
        )
        return jnp.stack([ret.mean(), cost.mean()])

    tail = run.state.tail
    n = jax.tree_util.tree_leaves(tail)[0].shape[0]
    return np.stack([np.asarray(read(jax.tree.map(lambda x: x[j], tail))) for j in range(n)])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--member-episodes", type=int, default=4)
    parser.add_argument("--md", type=Path, default=None)
    args = parser.parse_args()
    rows, members_md = [], []
    for run_dir in args.runs:
        run = load_finished_run(run_dir)
        cfg, learner = run.cfg, run.learner
        if learner.cost_model is None:
            raise SystemExit(f"{run_dir}: not an adaptive O3SRL run (no cost model)")
        data = to_device(run.problem.dataset, run.stats)
        net, params, scale = fit_reward_model(
            data, learner.cost_model.config.members, learner.cost_model.config.hidden, cfg.seed
        )
        model = read_members(run, data, net, params, scale)
        evals = []
        for j in range(len(model)):
            actor = jax.tree.map(lambda x, j=j: x[j], run.state.tail)
            res = evaluate(
                Policy(learner.act, actor, run.stats),
                run.problem.env_id,
                episodes=args.member_episodes,
                cost_limit=cfg.cost_limit,
                seed=cfg.eval_seed,
            )
            evals.append((res.reward, res.cost))
        evals = np.asarray(evals)
        kappa = cfg.cost_limit
        target = (1.0 - learner.player.margin) * kappa
        safe = np.flatnonzero(model[:, 1] <= target)
        best = safe[np.argsort(-model[safe, 0])][: max(1, len(safe) // 4)] if len(safe) else safe

        def score(idx: np.ndarray) -> str:
            if not len(idx):
                return "—"
            r, c = evals[idx].mean(axis=0)
            return f"{r:.1f} / {c:.2f}{'' if c <= kappa else ' ✗'} ({len(idx)})"

        name = run_dir.name
        rows.append(
            (
                name,
                f"{kappa:g}",
                f"{spearman(model[:, 0], evals[:, 0]):.3f}",
                f"{spearman(model[:, 1], evals[:, 1]):.3f}",
                f"{np.abs(model[:, 0] - evals[:, 0]).mean():.1f}",
                score(np.arange(len(model))),
                score(safe),
                score(best),
            )
        )
        members_md.append(f"\n**{name}** (member 0 is the last iterate): model reward / cost → evaluated\n")
        members_md.append(
            ", ".join(f"{m[0]:.0f} / {m[1]:.1f} → {e[0]:.0f} / {e[1]:.1f}" for m, e in zip(model, evals)) + "\n"
        )
        print(rows[-1], flush=True)
    header = (
        "run",
        "κ",
        "rank corr., reward",
        "rank corr., cost",
        "mean |model − evaluated| reward",
        "all members: reward / cost (n)",
        "safe-reading members",
        "best safe-reading quarter",
    )
    intro = [
        "# Reading the tail members' reward with the run's own model",
        "",
        f"Command: `python benchmarks/tail_model_reading.py {' '.join(str(r) for r in args.runs)} --member-episodes "
        f"{args.member_episodes} --md {args.md}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; date: {datetime.date.today()}  ",
        "",
        "Each run's tail members (the adaptive λ-player's output is their uniform mixture) are read by the run's own",
        "dynamics-and-cost model, with a reward model fit beside it to the same data (an ensemble of the cost model's",
        f"widths, {FIT_STEPS:,} Adam steps), from the λ-player's 16 initial states, and evaluated alone in the",
        f"simulator for {args.member_episodes} episodes each. A set of members is scored as the mean of their",
        "evaluations (the expected return of their uniform mixture); n: how many members. Safe-reading: model cost",
        "≤ (1 − δ) κ. Best safe-reading quarter: the safe-reading members with the highest model reward, a quarter of",
        "them (at least one). The evaluations only score these choices; none is made with them.",
        "",
    ]
    text = "\n".join(intro) + show_markdown_table(header, rows) + "\n" + "".join(members_md)
    print(text)
    if args.md:
        atomic_write_text(args.md, text)


if __name__ == "__main__":
    main()
