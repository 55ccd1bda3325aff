"""How well each cost estimate the λ-player could read knows what a finished run's policy really costs.

    python benchmarks/cost_estimate_probe.py RUN [RUN ...] [--md table.md]

For each run directory (TD3+BC oracle): the cost critics' estimate at the dataset's initial states, mean over the
twins of Q_c(s0, π(s0)) (a discounted value; the budget it is compared with is B), the cost model's estimate of the
episode cost (the run's own fitted model when it has one, else a model fit here with the run's ``cost_model``
settings, once per dataset), and the evaluated episode cost of the last iterate (``eval.json``, the simulator).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from o3srl.algos.cost_model import CostModel, unit_costs
from o3srl.data.sampler import sample_init_obs, to_device
from o3srl.report import show_markdown_table
from o3srl.train import load_finished_run

HEADER = ("run", "κ", "critic Q_c(s0)", "critic budget B", "model episode cost (± members)", "evaluated episode cost")


def probe(run_dir: Path, fitted: dict[str, tuple[CostModel, object]]) -> tuple[str, ...]:
    run = load_finished_run(run_dir)
    cfg, problem, learner, state, stats = run.cfg, run.problem, run.learner, run.state, run.stats
    if cfg.oracle_name != "td3bc":
        raise SystemExit(f"{run_dir}: the probe reads TD3+BC cost critics; this run's oracle is {cfg.oracle_name}")
    data = to_device(problem.dataset, stats)
    scale = learner.oracle.config.cost_scale
    s0 = sample_init_obs(jax.random.PRNGKey(0), data, 256)
    _, q_c = learner.oracle.policy_values(state.oracle, s0, "mean")
    if state.model is not None and np.isfinite(float(state.model.fit_loss)):
        model, model_state = learner.cost_model, state.model
    else:
        key = problem.dataset_path
        if key not in fitted:
            ds = problem.dataset
            model = CostModel(cfg.cost_model, ds.obs_dim, ds.act_dim, unit_costs=unit_costs(ds["costs"]))
            fitted[key] = (model, jax.jit(model.fit)(model.init(jax.random.PRNGKey(0)), data, jax.random.PRNGKey(1)))
        model, model_state = fitted[key]
    init = sample_init_obs(jax.random.PRNGKey(0), data, model.config.rollout_states)
    costs = np.asarray(
        model.episode_cost(
            model_state, lambda s: learner.oracle.act(state.oracle.actor, s), init, problem.episode_length
        )
    )
    evaluated = json.loads((run_dir / "eval.json").read_text())
    return (
        f"{run_dir.parent.name}/{run_dir.name}",
        f"{cfg.cost_limit:g}",
        f"{float(np.mean(q_c)) / scale:.2f}",
        f"{learner.budget.reported_value:.2f}",
        f"{costs.mean():.1f} ± {costs.mean(axis=1).std():.1f}",
        f"{evaluated['eval/cost']:.1f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with checkpoint.msgpack and eval.json")
    parser.add_argument("--md", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    fitted: dict[str, tuple[CostModel, object]] = {}
    rows = [probe(run, fitted) for run in args.runs]
    show_markdown_table(HEADER, rows, args.md)


if __name__ == "__main__":
    main()
