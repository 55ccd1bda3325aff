"""Arm feedback × budget convention × bandit on the toy task, whose constrained optimum is known in closed form.

Each cell trains one agent on a toy dataset whose behaviour is mostly unsafe, then evaluates the policy exactly
(the toy task is deterministic; a mixture policy is evaluated as the average over its members). Rows are appended
to a JSONL file as they finish; re-running skips finished cells. A markdown summary is written at the end.

    python benchmarks/toy_ablation.py --out docs/results/toy_ablation.md --rows docs/results/toy_ablation.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from o3srl.algos.cost_model import CostModelConfig
from o3srl.algos.o3srl import O3SRLConfig
from o3srl.algos.o3srl_theory import TheoryConfig
from o3srl.algos.td3bc import TD3BCConfig
from o3srl.config import TrainConfig
from o3srl.data import OfflineDataset
from o3srl.envs.toy import EPISODE_LENGTH, ToyRunEnv, toy_dataset, toy_optimum


def rollout(policy, member_count: int = 1) -> tuple[float, float]:
    rewards, costs = [], []
    for member in range(member_count):
        if hasattr(policy, "begin_episode"):
            policy._members[0] = member  # evaluate every member of a mixture once: exact mixture value
        env = ToyRunEnv()
        obs, _ = env.reset()
        r_sum = c_sum = 0.0
        for _ in range(EPISODE_LENGTH):
            obs, r, _, _, info = env.step(policy(obs[None])[0])
            r_sum += r
            c_sum += info["cost"]
        rewards.append(r_sum)
        costs.append(c_sum)
    return float(np.mean(rewards)), float(np.mean(costs))


# The λ-player before the adaptive design (2026-11-30): absolute arms, no optimism, no margin, the twins' mean at
# initial states. Cells of the earlier ablation use it, so that they measure what they measured then.
EARLIER = dict(lambda_scale=1.0, optimism=0.0, margin=0.0, cost_estimate="mean", feedback_states="initial")


# The adaptive player's knobs each design's rows were run with, pinned so that they reproduce whatever the
# player's defaults become (tail_members = 10 and the whole tail as output: the player's defaults then).
ADAPTIVE_DESIGNS: dict[str, dict] = {
    "default": dict(oracle_lambda="drawn", hint_decay=0.0, tail_members=10, output="tail"),
    "mean λ": dict(oracle_lambda="mean", hint_decay=0.0, tail_members=10, output="tail"),
    "mean λ, averaged hint": dict(oracle_lambda="mean", hint_decay=0.95, tail_members=10, output="tail"),
    "mean λ, averaged hint, probability cost head": dict(
        oracle_lambda="mean", hint_decay=0.95, tail_members=10, output="tail"
    ),
    "mean λ, averaged hint, probability cost head, hint violations up to one scale": dict(
        oracle_lambda="mean", hint_decay=0.95, tail_members=10, hint_violation=1.0, output="tail"
    ),
    "mean λ, averaged hint, probability cost head, best output": dict(
        oracle_lambda="mean",
        hint_decay=0.95,
        tail_members=20,
        tail_fraction=0.1,
        output="best",
        best_members=3,
        best_pessimism=0.0,
    ),
    "mean λ, averaged hint, probability cost head, best output, pessimistic choice": dict(
        oracle_lambda="mean",
        hint_decay=0.95,
        tail_members=100,
        tail_fraction=0.5,
        output="best",
        best_members=3,
        best_pessimism=1.0,
    ),
    "mean λ, averaged hint, probability cost head, mix output": dict(
        oracle_lambda="mean",
        hint_decay=0.95,
        tail_members=100,
        tail_fraction=0.5,
        output="mix",
        best_members=3,
        best_pessimism=1.0,
        mix_slots=20,
        mix_min_share=0.0,
    ),
    "mean λ, averaged hint, probability cost head, hull output": dict(
        oracle_lambda="mean",
        hint_decay=0.95,
        tail_members=100,
        tail_fraction=0.5,
        output="hull",
        best_members=3,
        best_pessimism=1.0,
        mix_slots=20,
    ),
}
OLD_MODEL = CostModelConfig(cost_head="regression", fit_steps=5000)
"""The cost model these results were measured with (its defaults before the probability head)."""
DESIGN_MODELS: dict[str, CostModelConfig] = {
    "mean λ, averaged hint, probability cost head": CostModelConfig(),
    "mean λ, averaged hint, probability cost head, hint violations up to one scale": CostModelConfig(),
    "mean λ, averaged hint, probability cost head, best output": CostModelConfig(reward_head=True),
    "mean λ, averaged hint, probability cost head, best output, pessimistic choice": CostModelConfig(reward_head=True),
    "mean λ, averaged hint, probability cost head, mix output": CostModelConfig(reward_head=True),
    "mean λ, averaged hint, probability cost head, hull output": CostModelConfig(reward_head=True),
}
"""Designs measured with another cost model: the defaults since (cost_head auto, 20,000 fit steps)."""


def adaptive_cells(seeds: list[int], kappas: list[float]) -> list[dict]:
    """O3SRL with the adaptive λ-player (design "default" in the rows: the cells were run while it was the default)
    next to the earlier λ-player (shaped/EXP3, still the deep default) and fixed λ's, on the same data."""
    # (bandit, feedback, design) of each O3SRL cell; "default" is the drawn-arm adaptive design of probes 6–11.
    o3srl_cells = [
        ("exp3box", "lagrangian", "default"),
        ("exp3box", "lagrangian", "mean λ"),
        ("exp3box", "lagrangian", "mean λ, averaged hint"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint, probability cost head"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint, probability cost head, hint violations up to one scale"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint, probability cost head, best output"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint, probability cost head, best output, pessimistic choice"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint, probability cost head, mix output"),
        ("hedgebox", "lagrangian", "mean λ, averaged hint, probability cost head, hull output"),
        ("exp3", "shaped", "earlier"),
    ]
    out = []
    for kappa, seed in itertools.product(kappas, seeds):
        for bandit, feedback, design in o3srl_cells:
            out.append(
                dict(algo="o3srl", variant="practical", bandit=bandit, feedback=feedback, budget="osrl",
                     design=design, kappa=kappa, seed=seed)
            )  # fmt: skip
        for lam in (0.0, 0.5, 1.25, 5.0):
            out.append(
                dict(algo="td3bc", variant=f"fixed λ={lam:g}", bandit="-", feedback="-", budget="osrl", design="-",
                     kappa=kappa, seed=seed, lam=lam)
            )  # fmt: skip
    return out


def cells(seeds: list[int], kappas: list[float]) -> list[dict]:
    out = []
    for kappa, seed in itertools.product(kappas, seeds):
        for feedback, conv in itertools.product(["lagrangian", "shaped"], ["osrl", "average", "discounted"]):
            out.append(
                dict(
                    algo="o3srl",
                    variant="practical",
                    bandit="exp3",
                    feedback=feedback,
                    budget=conv,
                    kappa=kappa,
                    seed=seed,
                )
            )
        out.append(
            dict(
                algo="o3srl",
                variant="practical",
                bandit="hedge",
                feedback="lagrangian",
                budget="osrl",
                kappa=kappa,
                seed=seed,
            )
        )
        out.append(
            dict(algo="o3srl", variant="theory", bandit="-", feedback="fqe", budget="osrl", kappa=kappa, seed=seed)
        )
        for lam in (0.0, 1.25, 5.0):
            out.append(
                dict(
                    algo="td3bc",
                    variant=f"fixed λ={lam:g}",
                    bandit="-",
                    feedback="-",
                    budget="osrl",
                    kappa=kappa,
                    seed=seed,
                    lam=lam,
                )
            )
    return out


def key_of(cell: dict) -> str:
    return json.dumps(cell, sort_keys=True)


def run_cell(cell: dict, dataset: Path, steps: int) -> dict:
    import o3srl
    from o3srl.train import run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            algo=cell["algo"],
            variant="theory" if cell["variant"] == "theory" else "practical",
            task="toy",
            env_id="o3srl.envs.toy:ToyRunEnv",
            dataset=str(dataset),
            cost_limit=cell["kappa"],
            budget_convention=cell["budget"],
            seed=cell["seed"],
            steps=steps,
            log_every=1000,
            checkpoint_every=steps,
            eval_episodes=0,
            progress=False,
            fixed_lambda=cell.get("lam", 0.0),
            run_dir=str(Path(tmp) / "run"),
            td3bc=TD3BCConfig(hidden=(64, 64), gamma=0.9, reward_scale=1.0),
            o3srl=O3SRLConfig(
                feedback_batch=64, player="adaptive", **ADAPTIVE_DESIGNS[cell["design"]], bandit=cell["bandit"]
            )
            if cell.get("design") in ADAPTIVE_DESIGNS
            else O3SRLConfig(
                feedback=cell["feedback"] if cell["feedback"] in ("lagrangian", "shaped") else "lagrangian",
                bandit=cell["bandit"] if cell["bandit"] != "-" else "exp3",
                feedback_batch=64,
                **EARLIER,
            ),
            theory=TheoryConfig(iterations=10, fqe_steps=1000),
            cost_model=DESIGN_MODELS.get(cell.get("design", ""), OLD_MODEL),
        )
        t0 = time.time()
        run(cfg)
        policy = o3srl.load_policy(Path(tmp) / "run")
        members = getattr(policy, "num_members", 1)
        reward, cost = rollout(policy, members)
    return {**cell, "reward": reward, "cost": cost, "optimum": toy_optimum(cell["kappa"]), "seconds": time.time() - t0}


def summarise(rows: list[dict], out: Path, command: str) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        variant = r["variant"] + {
            "default": ", adaptive λ-player",
            "mean λ": ", adaptive λ-player, oracle on the mean λ",
            "mean λ, averaged hint": ", adaptive λ-player, oracle on the mean λ, averaged hint",
            "mean λ, averaged hint, probability cost head": ", adaptive λ-player, oracle on the mean λ, averaged "
            "hint, cost model's current defaults (probability head, 20k fit steps)",
            "mean λ, averaged hint, probability cost head, hint violations up to one scale": ", adaptive λ-player, "
            "oracle on the mean λ, averaged hint, cost model's current defaults, the hint's violations counted up to "
            "one budget scale (G_h = 1)",
            "mean λ, averaged hint, probability cost head, best output": ", adaptive λ-player, oracle on the mean λ, "
            "averaged hint, cost model's current defaults, 20 tail members, output: the 3 safe-reading members with "
            "the highest model reward",
            "mean λ, averaged hint, probability cost head, best output, pessimistic choice": ", adaptive λ-player, "
            "oracle on the mean λ, averaged hint, cost model's current defaults, 100 tail members over the last half, "
            "output: the 3 members with the highest model reward whose model cost + 1 spread is within (1 − δ) κ",
            "mean λ, averaged hint, probability cost head, mix output": ", adaptive λ-player, oracle on the mean λ, "
            "averaged hint, cost model's current defaults, 100 tail members over the last half, output: those 3 "
            "members mixed with the 3 highest-reward members above the target where the readings leave room (mix; "
            "today's adaptive defaults)",
            "mean λ, averaged hint, probability cost head, hull output": ", adaptive λ-player, oracle on the mean λ, "
            "averaged hint, cost model's current defaults, 100 tail members over the last half, output: the best "
            "mixture of at most two members whose mean model cost + 1 spread is within (1 − δ) κ (hull)",
        }.get(r.get("design", ""), "")
        groups.setdefault((r["kappa"], r["algo"], variant, r["bandit"], r["feedback"], r["budget"]), []).append(r)
    lines = [
        "# Toy task: arm feedback, budget convention and bandit",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; date: {time.strftime('%Y-%m-%d')}  ",
        "Task: `o3srl.envs.toy:ToyRunEnv` (T = 20, reward (1 + a)/2, cost 2 max(0, a − ½)); data: 300 episodes of",
        "behaviour speeds uniform in [0.2, 1] (mostly unsafe). Optimum R*(κ) = 15 + κ/4. TD3+BC oracle with 64×64",
        "networks, γ = 0.9, reward scale 1, 6,000 gradient steps. Exact evaluation (deterministic task; a mixture is",
        "evaluated as the average of its members). Mean ± std over seeds; **unsafe** marks mean cost > κ.",
        "",
        "| κ | algorithm | bandit | feedback | budget | reward | cost | reward / R* | safe seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (kappa, algo, variant, bandit, feedback, budget), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "o3srl", kv[0][2], kv[0][3], kv[0][4], kv[0][5])
    ):
        rew = np.array([r["reward"] for r in rs])
        cost = np.array([r["cost"] for r in rs])
        safe = int((cost <= kappa + 1e-9).sum())
        mark = "" if cost.mean() <= kappa + 1e-9 else " **unsafe**"
        name = f"{algo} ({variant})"
        lines.append(
            f"| {kappa:g} | {name} | {bandit} | {feedback} | {budget} | {rew.mean():.2f} ± {rew.std():.2f} | "
            f"{cost.mean():.2f} ± {cost.std():.2f}{mark} | {rew.mean() / rs[0]['optimum']:.3f} | {safe}/{len(rs)} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=Path, default=Path("docs/results/toy_ablation.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/toy_ablation.md"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--kappas", type=float, nargs="+", default=[2.0, 5.0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument(
        "--cells",
        choices=["ablation", "adaptive"],
        default="ablation",
        help="ablation: the earlier feedback × budget × bandit grid; adaptive: the default λ-player "
        "next to the earlier default and fixed λ's",
    )
    args = parser.parse_args()
    dataset = Path(tempfile.gettempdir()) / "o3srl_toy_ablation.hdf5"
    OfflineDataset(toy_dataset(300, seed=0, low=0.2)).save(dataset)
    done = {}
    if args.rows.exists():
        for line in args.rows.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    make = adaptive_cells if args.cells == "adaptive" else cells
    todo = [c for c in make(list(range(args.seeds)), args.kappas) if key_of(c) not in done]
    print(f"{len(done)} cells done, {len(todo)} to run", flush=True)
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    for i, cell in enumerate(todo):
        row = run_cell(cell, dataset, args.steps)
        row["key"] = key_of(cell)
        with open(args.rows, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{i + 1}/{len(todo)}] {cell} → reward {row['reward']:.2f} cost {row['cost']:.2f}", flush=True)
        done[row["key"]] = row
    command = "python benchmarks/toy_ablation.py " + " ".join(
        [
            f"--seeds {args.seeds}",
            "--kappas " + " ".join(f"{k:g}" for k in args.kappas),
            f"--steps {args.steps}",
            f"--cells {args.cells}",
            f"--rows {args.rows}",
            f"--out {args.out}",
        ]
    )
    summarise(list(done.values()), args.out, command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
