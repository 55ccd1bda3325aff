"""How close the cost model's reading of a finished run's output policy is to its evaluated cost, per model setting.

    python benchmarks/cost_model_calibration.py RESULTS.jsonl --variants fit_steps=5000 fit_steps=30000 \
        --md docs/results/cost_model_calibration.md

The λ-player of the adaptive O3SRL reads the cost model's mean episode cost of the current policy (rollouts of every
member of the model ensemble from the dataset's initial states) and moves λ until that reading sits at (1 − δ)κ. A
run then ends as safe as the reading is true. This script takes the finished cells of a grid (their run directories
hold the output policy and the evaluated cost), fits a cost model per task and setting (``CostModelConfig`` fields,
``key=value`` joined by commas; seed ``--seed``), reads every run's policy with it (the mixture's members each, then
their mean, as the evaluation follows each member equally often), and reports the reading against the evaluated
episode cost: mean error (bias), root-mean-square error and their ratio to κ, the correlation, and how many runs the
model reads below what they cost by more than 0.2 κ (the margin the player keeps). Needs the grid's datasets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from o3srl.algos.cost_model import CostModel, CostModelConfig, unit_costs
from o3srl.config import from_dict
from o3srl.data import OfflineDataset
from o3srl.data.dataset import data_dir
from o3srl.data.sampler import sample_init_obs, to_device
from o3srl.policy import MixturePolicy, load_policy
from o3srl.results import read_rows


def parse_variant(text: str) -> dict[str, Any]:
    """``fit_steps=30000,rollout_states=64`` → the CostModelConfig fields it sets ("" or "default": none, i.e. the
    runs' own settings)."""
    fields = {f.name: f for f in dataclasses.fields(CostModelConfig)}
    out: dict[str, Any] = {}
    for part in filter(None, text.replace("default", "").split(",")):
        key, _, value = part.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown cost model field {key!r}; choose from {', '.join(fields)}")
        kind = type(getattr(CostModelConfig(), key))
        out[key] = tuple(int(v) for v in value.split("x")) if kind is tuple else kind(value)
    return out


def member_costs(
    model: CostModel, state: Any, run_dir: str, init: jax.Array, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """The model's reading of each member of the run's output policy, and each model member's mean episode cost of
    it (policy members × model members)."""
    from o3srl.algos.o3srl import make_oracle

    policy = load_policy(run_dir)
    cfg = from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    oracle = make_oracle(cfg.oracle_name, cfg.td3bc, cfg.iql, model.obs_dim, model.act_dim)
    params = policy.actor_params
    if not isinstance(policy, MixturePolicy):
        params = jax.tree.map(lambda x: x[None], params)

    def one(p: Any) -> tuple[jax.Array, jax.Array]:
        costs = model.episode_cost(state, lambda s: oracle.act(p, s), init, horizon)
        return model.reading(costs), costs.mean(axis=1)

    readings, by_member = jax.jit(jax.vmap(one))(params)
    return np.asarray(readings), np.asarray(by_member)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a grid's results file (its rows name the run directories)")
    parser.add_argument("--variants", nargs="+", default=["default"], help="cost model settings, key=value,...")
    parser.add_argument("--seed", type=int, default=0, help="the model's seed (rows of another seed than 0 say so)")
    parser.add_argument("--md", type=Path, default=None)
    parser.add_argument("--rows", type=Path, default=None, help="write one JSON line per run and setting here")
    parser.add_argument(
        "--from-rows", type=Path, nargs="+", default=None, help="only write the page from rows written before"
    )
    args = parser.parse_args()
    if args.from_rows:
        out = [json.loads(line) for f in args.from_rows for line in f.read_text().splitlines() if line.startswith("{")]
        args.variants = list(dict.fromkeys(o["variant"] for o in out))
        if args.md:
            write_page(args.md, page(out, args))
        return
    rows = [r for r in read_rows(args.results) if r.get("status") == "ok"]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    out: list[dict[str, Any]] = []
    for variant in args.variants:
        fields = parse_variant(variant)
        for task, task_rows in sorted(by_task.items()):
            ds = OfflineDataset.load(data_dir() / f"{task}.hdf5")
            first = load_policy(task_rows[0]["run_dir"])
            data = to_device(ds, first.stats)
            # The runs' own model settings (a field added since they ran at its old behaviour), then the variant's.
            run_cfg = from_dict(json.loads((Path(task_rows[0]["run_dir"]) / "config.json").read_text()))
            config = dataclasses.replace(run_cfg.cost_model, **fields)
            model = CostModel(config, ds.obs_dim, ds.act_dim, unit_costs=unit_costs(ds["costs"]))
            t0 = time.time()
            state = jax.jit(model.fit)(
                model.init(jax.random.PRNGKey(args.seed)), data, jax.random.PRNGKey(args.seed + 1)
            )
            jax.block_until_ready(state)
            fit_s = time.time() - t0
            init = sample_init_obs(jax.random.PRNGKey(0), data, config.rollout_states)
            horizon = int(json.loads((Path(task_rows[0]["run_dir"]) / "run.json").read_text())["episode_length"])
            for r in task_rows:
                readings, by_member = member_costs(model, state, r["run_dir"], init, horizon)
                out.append(
                    {
                        "variant": variant if args.seed == 0 else f"{variant} (model seed {args.seed})",
                        "task": task,
                        "cell_id": r["cell_id"],
                        "cost_limit": r["cost_limit"],
                        "model_cost": float(readings.mean()),
                        "model_member_costs": [round(float(c), 2) for c in by_member.mean(axis=0)],
                        "evaluated_cost": float(r["metrics"]["eval/cost"]),
                        "fit_seconds": round(fit_s, 1),
                        "fit_loss": float(state.fit_loss),
                    }
                )
                print(json.dumps(out[-1]), flush=True)
    if args.rows:
        args.rows.write_text("".join(json.dumps(o) + "\n" for o in out))
    if args.md:
        write_page(args.md, page(out, args))


BEGIN, END = "<!-- cost_model_calibration begin -->", "<!-- cost_model_calibration end -->"


def write_page(path: Path, generated: str) -> None:
    """Write the generated tables between the page's markers, keeping the text around them (a new page: the title
    and the tables)."""
    block = f"{BEGIN}\n{generated}{END}\n"
    if path.exists() and BEGIN in (text := path.read_text()) and END in text:
        head, _, rest = text.partition(BEGIN)
        path.write_text(head + block + rest.partition(END)[2].lstrip("\n"))
    else:
        path.write_text("# Cost model calibration\n\n" + block)


def summary(items: list[dict[str, Any]]) -> dict[str, float]:
    est = np.array([o["model_cost"] for o in items])
    true = np.array([o["evaluated_cost"] for o in items])
    kappa = np.array([o["cost_limit"] for o in items])
    err = est - true
    return {
        "n": len(items),
        "bias": float(err.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "bias_k": float((err / kappa).mean()),
        "rmse_k": float(np.sqrt(((err / kappa) ** 2).mean())),
        "corr": float(np.corrcoef(est, true)[0, 1]) if est.std() > 0 and true.std() > 0 else float("nan"),
        "under": int((err < -0.2 * kappa).sum()),
    }


def page(out: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python benchmarks/cost_model_calibration.py {args.results} --variants {' '.join(args.variants)}"
        f" --rows ROWS`, then `--from-rows ROWS --md {args.md}`  ",
        f"Machine: {platform.machine()} CPU, jax {jax.__version__}; date: {time.strftime('%Y-%m-%d')}",
        "",
        "Per setting (CostModelConfig fields over the runs' own) and task: the model's reading of each run's output "
        "policy against its evaluated episode cost (20 episodes). error = reading − evaluated; /κ: divided by the "
        "run's cost limit; under: runs read below their cost by more than 0.2 κ (the player's margin).",
        "",
        "| setting | task | runs | bias | RMSE | bias / κ | RMSE / κ | corr | under | fit (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in args.variants:
        tasks = sorted({o["task"] for o in out if o["variant"] == variant})
        for task in [*tasks, "all"] if len(tasks) > 1 else tasks:
            items = [o for o in out if o["variant"] == variant and (task == "all" or o["task"] == task)]
            s = summary(items)
            fit = max(o["fit_seconds"] for o in items)
            lines.append(
                f"| {variant} | {task} | {s['n']} | {s['bias']:+.1f} | {s['rmse']:.1f} | {s['bias_k']:+.2f} | "
                f"{s['rmse_k']:.2f} | {s['corr']:.2f} | {s['under']} | {fit:.0f} |"
            )
    lines += [
        "",
        "Per run (reading / evaluated):",
        "",
        "| run | " + " | ".join(args.variants) + " |",
        "|---|" + "---|" * len(args.variants),
    ]
    cells = sorted({o["cell_id"] for o in out})
    for cell in cells:
        vals = []
        for variant in args.variants:
            o = next((o for o in out if o["cell_id"] == cell and o["variant"] == variant), None)
            vals.append("–" if o is None else f"{o['model_cost']:.1f} / {o['evaluated_cost']:.1f}")
        lines.append(f"| {cell} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
