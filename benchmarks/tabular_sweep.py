"""Tabular O3SRL against the exact constrained optimum: feedback × bandit × budget convention × actor, theory, fixed λ.

For every instance (river gridworlds and random CMDPs), cost limit κ and seed, an offline dataset is drawn from a
mostly unsafe behaviour policy, the empirical model is estimated from it, and each method is trained on that model.
Every output is then evaluated exactly on the *true* CMDP, on two measures:

* discounted, from μ: reward against the LP optimum (and the deterministic MILP optimum) for the value budget
  ``B = budget_value(budget_per_step(κ, γ, T, convention), γ)`` the run used; cost against B.
* one undiscounted T-step episode (DSRL's measure): reward against the episodic LP optimum for κ; cost against κ.

κ is set per instance between the episodic cost of the least-cost policy and of the unconstrained optimum:
``κ = C_min + τ (C_max − C_min)``, τ ∈ {0.25, 0.5, 0.75}. Rows are appended to a JSONL file as they finish;
re-running skips finished rows. The markdown report is rewritten at the end.

    python benchmarks/tabular_sweep.py --rows docs/results/tabular.jsonl --out docs/results/tabular.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from o3srl import bandits
from o3srl import tabular as tb

CONVENTIONS = ("osrl", "average", "discounted")
TAUS = (0.25, 0.5, 0.75)


def instances(num_grid: int, num_random: int) -> list[tb.CMDP]:
    grids = [tb.gridworld(seed=s) for s in range(num_grid)]
    rands = [tb.random_cmdp(seed=s) for s in range(num_random)]
    return grids + rands


@dataclass(frozen=True)
class Method:
    """One trained configuration; ``kind`` is practical, theory or fixed.

    ``design`` "earlier" is the λ-player before the adaptive one (textbook EXP3 rates, no share, no optimism, no
    margin): the rows of the first sweep. "adaptive" is today's default (EXP3.S, optimism, margin) with the
    knobs in ``ablate`` changed; ``output`` is the last iterate or the tail mixture."""

    kind: str
    feedback: str = "-"
    bandit: str = "-"
    convention: str = "osrl"
    actor: str = "softmax"
    lam: float = float("nan")
    design: str = "earlier"
    ablate: str = ""
    output: str = "last"

    @property
    def key(self) -> str:
        if self.kind == "fixed":
            return f"fixed λ={self.lam:g} ({self.actor})"
        if self.kind == "theory":
            return f"theory ({self.convention})"
        if self.design == "adaptive":
            what = f"adaptive {self.bandit}" + (f", {self.ablate}" if self.ablate else "")
            return f"{what} ({self.convention}, {self.output})"
        return f"practical {self.feedback}/{self.bandit} ({self.convention}, {self.actor})"

    def config(self) -> tb.TabularConfig:
        if self.kind == "fixed":
            return tb.TabularConfig(
                arms=(self.lam,),
                bandit="exp3",
                margin=0.0,
                optimism=0.0,
                budget_convention=self.convention,
                actor=self.actor,
            )
        if self.design == "adaptive":
            knobs = {
                "no margin": {"margin": 0.0},
                "no optimism": {"optimism": 0.0},
                "oracle on the mean λ": {"oracle_lambda": "mean"},
                "oracle on the mean λ, averaged hint": {"oracle_lambda": "mean", "hint_decay": 0.95},
                "data-scaled arms": {},
                "": {},
            }[self.ablate]
            return tb.TabularConfig(bandit=self.bandit, budget_convention=self.convention, actor=self.actor, **knobs)
        return tb.TabularConfig(
            feedback=self.feedback,
            bandit=self.bandit,
            margin=0.0,
            optimism=0.0,
            budget_convention=self.convention,
            actor=self.actor,
        )


# The adaptive λ-player: the default (EXP3 on a box) with both outputs, and one knob changed at a time (the other
# bandits with their own default rates: exp3s η = 0.2 and share 0.01; exp3 and hedge the textbook rate).
ADAPTIVE = [
    Method("practical", "lagrangian", "exp3box", "osrl", design="adaptive", output="last"),
    Method("practical", "lagrangian", "exp3box", "osrl", design="adaptive", output="tail"),
    Method("practical", "lagrangian", "exp3box", "osrl", design="adaptive", ablate="data-scaled arms", output="last"),
    Method("practical", "lagrangian", "exp3box", "osrl", design="adaptive", ablate="no margin", output="last"),
    Method("practical", "lagrangian", "exp3box", "osrl", design="adaptive", ablate="no margin", output="tail"),
    Method("practical", "lagrangian", "exp3box", "osrl", design="adaptive", ablate="no optimism", output="last"),
    Method(
        "practical", "lagrangian", "exp3box", "osrl", design="adaptive", ablate="oracle on the mean λ", output="last"
    ),
    Method(
        "practical", "lagrangian", "exp3box", "osrl", design="adaptive", ablate="oracle on the mean λ", output="tail"
    ),
    *[
        Method("practical", "lagrangian", bandit, "osrl", design="adaptive", ablate=a, output=out)
        for bandit in ("exp3box", "hedgebox")
        for a in ("oracle on the mean λ, averaged hint",)
        for out in ("last", "tail")
    ],
    Method("practical", "lagrangian", "exp3s", "osrl", design="adaptive", output="last"),
    Method("practical", "lagrangian", "exp3", "osrl", design="adaptive", output="last"),
    Method("practical", "lagrangian", "hedge", "osrl", design="adaptive", output="last"),
]


def methods() -> list[Method]:
    out = list(ADAPTIVE)
    out += [
        Method("practical", fb, bd, conv)
        for fb in ("lagrangian", "shaped")
        for bd in ("exp3", "hedge")
        for conv in CONVENTIONS
    ]
    out += [Method("practical", fb, "exp3", "osrl", "greedy") for fb in ("lagrangian", "shaped")]
    out += [Method("theory", "fqe", "ogd", conv, "greedy") for conv in CONVENTIONS]
    out += [Method("fixed", lam=lam) for lam in (0.0, 1.25, 2.5, 3.75, 5.0)]
    return out


def row_id(instance: str, tau: float, seed: int, method: Method) -> str:
    return f"{instance}|{tau}|{seed}|{method.key}"


def references(cmdp: tb.CMDP, tau: float) -> dict:
    """κ for this τ, and the exact optima: LP and MILP per convention's budget, the episodic LP for κ."""
    unconstrained = tb.solve_lp(cmdp, None)
    least = tb.solve_lp(cmdp, -1.0)
    c_max = tb.evaluate_episode(cmdp, unconstrained.policy).cost
    c_min = tb.evaluate_episode(cmdp, least.policy).cost
    kappa = c_min + tau * (c_max - c_min)
    ref: dict = {"kappa": kappa, "unconstrained_reward": unconstrained.reward}
    for conv in CONVENTIONS:
        budget = tb.value_budget(cmdp, kappa, conv)
        lp = tb.solve_lp(cmdp, budget)
        milp = tb.solve_deterministic(cmdp, budget)
        ref[conv] = {
            "budget": budget,
            "lp_reward": lp.reward,
            "lp_cost": lp.cost,
            "lp_multiplier": lp.multiplier,
            "lp_feasible": lp.feasible,
            "milp_reward": milp.reward,
            "milp_cost": milp.cost,
        }
    episodic = tb.solve_episodic_lp(cmdp, kappa)
    ref["episodic_lp_reward"] = episodic.reward
    return ref


def cached_references(rows_path: Path, cmdp: tb.CMDP, tau: float) -> dict:
    """:func:`references`, kept in ``<rows>.refs.json`` (the MILPs take minutes) so that adding methods is cheap."""
    path = rows_path.with_suffix(".refs.json")
    cache = json.loads(path.read_text()) if path.exists() else {}
    key = f"{cmdp.name}|{tau}"
    if key not in cache:
        cache[key] = references(cmdp, tau)
        path.write_text(json.dumps(cache, indent=1) + "\n")
    return cache[key]


def train(
    model: tb.CMDP, counts: np.ndarray, kappa: float, method: Method, seed: int, data_unit: float = 1.0
) -> tuple[np.ndarray, bool, dict]:
    """Returns the output policy (or the stack of mixture members), whether it is a mixture, and trace facts."""
    if method.kind == "theory":
        res = tb.run_theory(model, counts, kappa, tb.TabularTheoryConfig(budget_convention=method.convention))
        return res.policies, True, {"lambda_mean": float(res.lambdas.mean()), "lambda_last": float(res.lambdas[-1])}
    config = method.config()
    if method.ablate == "data-scaled arms":
        config = dataclasses.replace(config, lambda_scale=data_unit)
    res = tb.run_practical(model, counts, kappa, config, seed)
    tail = res.lambdas[-len(res.lambdas) // 10 :]
    if method.output == "tail":
        return (
            res.tail,
            True,
            {
                "lambda_mean": float(tail.mean()),
                "lambda_last": float(res.lambdas[-1]),
                "final_probs": [round(float(p), 4) for p in res.final_probs],
            },
        )
    return (
        res.policy,
        False,
        {
            "lambda_mean": float(tail.mean()),
            "lambda_last": float(res.lambdas[-1]),
            "final_probs": [round(float(p), 4) for p in res.final_probs],
        },
    )


def run(args: argparse.Namespace) -> None:
    rows_path = Path(args.rows)
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if rows_path.exists():
        done = {json.loads(line)["id"] for line in rows_path.read_text().splitlines() if line.strip()}
    for cmdp in instances(args.grids, args.randoms):
        for tau in args.taus:
            todo = [(s, m) for s in range(args.seeds) for m in methods() if row_id(cmdp.name, tau, s, m) not in done]
            if not todo:
                continue
            t0 = time.time()
            ref = cached_references(rows_path, cmdp, tau)
            print(f"{cmdp.name} τ={tau}: κ={ref['kappa']:.2f}, references in {time.time() - t0:.1f}s", flush=True)
            kappa = ref["kappa"]
            by_seed: dict[int, tuple[tb.CMDP, np.ndarray, dict]] = {}
            for seed, method in todo:
                if seed not in by_seed:
                    behaviour = tb.behaviour_policy(cmdp, args.epsilon)
                    data = tb.sample_dataset(cmdp, behaviour, args.episodes, seed=1000 + seed)
                    model, counts = tb.empirical_model(
                        data, cmdp.num_states, cmdp.num_actions, cmdp.gamma, cmdp.horizon
                    )
                    beh = {
                        "behaviour_reward": tb.evaluate(cmdp, behaviour).reward,
                        "behaviour_cost": tb.evaluate(cmdp, behaviour).cost,
                    }
                    returns = [data[k].reshape(-1, cmdp.horizon).sum(1) for k in ("rewards", "costs")]
                    by_seed[seed] = (model, counts, beh, bandits.lambda_unit(*returns))
                model, counts, beh, unit = by_seed[seed]
                t1 = time.time()
                policy, mixture, trace = train(model, counts, kappa, method, seed, unit)
                seconds = time.time() - t1
                disc = tb.evaluate_mixture(cmdp, policy) if mixture else tb.evaluate(cmdp, policy)
                epi = tb.evaluate_mixture(cmdp, policy, episodic=True) if mixture else tb.evaluate_episode(cmdp, policy)
                conv_ref = ref[method.convention]
                row = {
                    "id": row_id(cmdp.name, tau, seed, method),
                    "instance": cmdp.name,
                    "family": "gridworld" if cmdp.name.startswith("grid") else "random",
                    "states": cmdp.num_states,
                    "actions": cmdp.num_actions,
                    "gamma": cmdp.gamma,
                    "horizon": cmdp.horizon,
                    "tau": tau,
                    "kappa": kappa,
                    "seed": seed,
                    "method": method.key,
                    **asdict(method),
                    **conv_ref,
                    "episodic_lp_reward": ref["episodic_lp_reward"],
                    "reward": disc.reward,
                    "cost": disc.cost,
                    "episode_reward": epi.reward,
                    "episode_cost": epi.cost,
                    **beh,
                    **trace,
                    "seconds": seconds,
                }
                with rows_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            print(f"  {len(todo)} rows in {time.time() - t0:.1f}s", flush=True)
    report(rows_path, Path(args.out), args)


def _fmt(values: list[float], digits: int = 3) -> str:
    a = np.asarray(values)
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"


def report(rows_path: Path, out: Path, args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    tol = 1e-3  # relative: a cost within 0.1 % of the budget counts as meeting it (solver and float32 round-off)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["method"])].append(r)
    order = [m.key for m in methods()]
    lines = [
        "# Tabular CMDPs: O3SRL against the exact constrained optimum",
        "",
        f"Command: `python benchmarks/tabular_sweep.py --seeds {args.seeds} --grids {args.grids} --randoms {args.randoms}`  ",
        f"Machine: {platform.machine()}, 2 cores; date: {datetime.date.today().isoformat()}; rows: "
        f"`{rows_path.as_posix()}` ({len(rows)} runs).",
        "",
        "Instances (`src/o3srl/tabular.py`): 7×7 river gridworlds (start bottom middle, goal top middle, a row of",
        "hazard cells between them with gaps at the edges, 2 extra random hazards, slip 0.1, goal reward 5 and reset",
        "to the start) and random CMDPs (20 states, 4 actions, Dirichlet(0.3) transitions, 30 % of pairs costly with",
        "a matching reward bonus); γ = 0.99, episodes of T = 200 steps. κ = C_min + τ (C_max − C_min) between the",
        "episodic costs of the least-cost and the unconstrained-optimal policies, τ ∈ {0.25, 0.5, 0.75}. Data: 100",
        "episodes (20,000 transitions) of ½ unconstrained-optimal + ½ uniform behaviour (mostly unsafe); every method",
        "trains on the empirical model and is evaluated exactly on the true CMDP. Practical: K = 5, C = 5, M = 10,",
        "10,000 rounds, softmax actor (mirror-descent step 0.01 per unit of shaped advantage) unless marked greedy;",
        "theory: 2,000 OGD iterations × 50 greedy oracle steps, exact evaluation on the empirical model, output = the",
        "uniform mixture of iterates. Fixed λ: the same oracle at one λ for 100k steps.",
        "",
        "Columns: **reward / LP** = discounted reward of the output over the LP optimum for the run's value budget B",
        "(from κ by the run's budget convention); **MILP / LP** = the best deterministic policy's share (the",
        "reference for deterministic last iterates); **cost / B**; **safe** = runs with cost ≤ B (0.1 % tolerance);",
        "**ep. reward / ep. LP** and **ep. cost / κ** = the same on one undiscounted T-step episode (DSRL's",
        "measure) against the episodic LP optimum for κ; **ep. safe** = runs with episode cost ≤ κ. Mean ± std over",
        "instances × τ × seeds. **unsafe** marks a mean cost over its limit.",
        "",
    ]
    lines += [
        "## Exact references (osrl budget)",
        "",
        "| instance | τ | κ | B | LP reward | LP cost | λ* | MILP reward | episodic LP reward |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in rows:
        if r["convention"] != "osrl" or (r["instance"], r["tau"]) in seen:
            continue
        seen.add((r["instance"], r["tau"]))
        lines.append(
            f"| {r['instance']} | {r['tau']} | {r['kappa']:.2f} | {r['budget']:.2f} | {r['lp_reward']:.2f} | {r['lp_cost']:.2f} | "
            f"{r['lp_multiplier']:.2f} | {r['milp_reward']:.2f} | {r['episodic_lp_reward']:.2f} |"
        )
    lines += [
        "",
        'Analysis and the choice of defaults: `docs/algorithms/o3srl.md`, section "Exact ground truth: tabular CMDPs".',
        "",
    ]
    # All 45 runs (both families) for the adaptive λ-player and the earlier defaults: the acceptance view.
    lines += [
        "## All instances (osrl budget): the adaptive λ-player and the earlier defaults",
        "",
        "Adaptive = the default λ-player (EXP3 on a box of width W = 6, η = 0.03, optimism β = 8, lagrangian "
        "feedback against 0.8 B, arms linspace(0, 5, 5), 10,000 rounds of M = 10); *last* is its last iterate, "
        "*tail* the uniform mixture of 20 iterates spread over the last 10 % of rounds; each ablation changes "
        "one thing (data-scaled arms: the grid's unit from the data's reward and cost returns, as the deep "
        "version does by default; exp3s: fixed share 0.01 instead of the box, η = 0.2; exp3 and hedge: no box, "
        "textbook rate). λ (last 10 %) is the mean pulled λ over the last 1,000 rounds, λ* the LP's multiplier "
        "(means over the 45 runs).",
        "",
        "| method | reward / LP | cost / B | safe | reward / LP of safe runs | λ (last 10 %) | λ* |",
        "|---|---|---|---|---|---|---|",
    ]
    earlier = [
        Method("practical", "shaped", "exp3").key,
        Method("practical", "lagrangian", "exp3").key,
        Method("practical", "lagrangian", "hedge").key,
    ]
    for key in [m.key for m in ADAPTIVE] + earlier:
        rs = [r for r in rows if r["method"] == key]
        if not rs:
            continue
        ok = [r for r in rs if r["cost"] <= r["budget"] * (1 + tol)]
        safe_ratio = f"{np.mean([r['reward'] / r['lp_reward'] for r in ok]):.3f}" if ok else "-"
        lines.append(
            f"| {key} | {_fmt([r['reward'] / r['lp_reward'] for r in rs])} | {_fmt([r['cost'] / r['budget'] for r in rs])} | "
            f"{len(ok)}/{len(rs)} | {safe_ratio} | {np.mean([r['lambda_mean'] for r in rs]):.2f} | "
            f"{np.mean([r['lp_multiplier'] for r in rs]):.2f} |"
        )
    lines.append("")
    for family in ("gridworld", "random"):
        lines += [
            f"## {family}",
            "",
            "| method | reward / LP | MILP / LP | cost / B | safe | ep. reward / ep. LP | ep. cost / κ | ep. safe | λ (last 10 %) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key in order:
            rs = groups.get((family, key))
            if not rs:
                continue
            ratio = [r["reward"] / r["lp_reward"] for r in rs]
            milp = [r["milp_reward"] / r["lp_reward"] for r in rs]
            cost = [r["cost"] / r["budget"] for r in rs]
            safe = sum(r["cost"] <= r["budget"] * (1 + tol) for r in rs)
            ep_ratio = [r["episode_reward"] / r["episodic_lp_reward"] for r in rs]
            ep_cost = [r["episode_cost"] / r["kappa"] for r in rs]
            ep_safe = sum(r["episode_cost"] <= r["kappa"] * (1 + tol) for r in rs)
            lam = f"{np.mean([r['lambda_mean'] for r in rs]):.2f}" if rs[0]["kind"] != "fixed" else "-"
            mark = " **unsafe**" if np.mean(cost) > 1 + tol else ""
            ep_mark = " **unsafe**" if np.mean(ep_cost) > 1 + tol else ""
            lines.append(
                f"| {key} | {_fmt(ratio)} | {np.mean(milp):.3f} | {_fmt(cost)}{mark} | {safe}/{len(rs)} | "
                f"{_fmt(ep_ratio)} | {_fmt(ep_cost)}{ep_mark} | {ep_safe}/{len(rs)} | {lam} |"
            )
        lines.append("")
    # Per τ: the defaults' candidates only, to see where each fails.
    lines += [
        "## By tightness τ (practical, EXP3, osrl, softmax; theory osrl)",
        "",
        "| family | τ | method | reward / LP | cost / B | safe | λ* (LP) |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = [
        ADAPTIVE[0].key,
        ADAPTIVE[1].key,
        Method("practical", "lagrangian", "exp3").key,
        Method("practical", "shaped", "exp3").key,
        Method("theory", "fqe", "ogd", "osrl", "greedy").key,
    ]
    for family in ("gridworld", "random"):
        for tau in sorted({r["tau"] for r in rows}):
            for key in keys:
                rs = [r for r in groups.get((family, key), []) if r["tau"] == tau]
                if not rs:
                    continue
                cost = [r["cost"] / r["budget"] for r in rs]
                safe = sum(r["cost"] <= r["budget"] * (1 + tol) for r in rs)
                lam_star = np.mean([r["lp_multiplier"] for r in rs])
                lines.append(
                    f"| {family} | {tau} | {key} | {_fmt([r['reward'] / r['lp_reward'] for r in rs])} | {_fmt(cost)} | {safe}/{len(rs)} | {lam_star:.2f} |"
                )
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="docs/results/tabular.jsonl")
    parser.add_argument("--out", default="docs/results/tabular.md")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--grids", type=int, default=2)
    parser.add_argument("--randoms", type=int, default=3)
    parser.add_argument("--taus", type=float, nargs="+", default=list(TAUS))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--epsilon", type=float, default=0.5)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.report_only:
        report(Path(args.rows), Path(args.out), args)
    else:
        run(args)


if __name__ == "__main__":
    main()
