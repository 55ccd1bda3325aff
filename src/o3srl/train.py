"""The one training loop, shared by every algorithm.

``run(cfg)``: load and validate the dataset, build the learner, train in compiled chunks of rounds, log metrics
(console progress bar, ``metrics.jsonl``, optionally TensorBoard), checkpoint atomically, resume a killed run to the
same result, save the final policy (the last iterate) and evaluate it in the simulator. The run directory's
layout, its readers and the evaluation of a run belong to :mod:`o3srl.rundir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from tyro.conf import Positional
from tyro.conf import arg as tyro_arg

from o3srl.config import BASELINE_ALGOS, BC_ALGOS, TrainConfig, dumps, from_dict, read_config
from o3srl.errors import ConfigError, O3SRLError
from o3srl.io import file_sha256
from o3srl.rundir import (
    BANDIT_PLOT_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    EVAL_NAME,
    METRICS_NAME,
    POLICY_NAME,
    RUN_INFO_NAME,
    TENSORBOARD_DIR,
    TRACE_NAME,
    RoundTrace,
    checkpoint_differences,
    evaluate_policy,
    evaluate_run,
    read_json_object,
    run_summary,
    write_eval,
    write_output_info,
    write_run_files,
)

if TYPE_CHECKING:  # pragma: no cover
    from o3srl.algos.base import Learner, Setting
    from o3srl.algos.o3srl import O3SRL
    from o3srl.data.dataset import OfflineDataset
    from o3srl.data.sampler import NormStats
    from o3srl.policy import Policy


@dataclass(frozen=True)
class Problem:
    """The dataset and the facts derived from it and from the task."""

    dataset: OfflineDataset
    dataset_path: str
    dataset_sha256: str
    env_id: str
    reward_range: tuple[float, float]
    reference: str  # "dsrl", "given" or "dataset"
    episode_length: int
    frontier: float
    action_low: np.ndarray
    action_high: np.ndarray


def _env_facts(env_id: str) -> tuple[np.ndarray, np.ndarray, int, int | None]:
    """Action bounds, observation size and time limit (``None`` when the environment has none) of ``env_id``."""
    from o3srl.envs import make_env

    env = make_env(env_id)
    try:
        space, obs_space = env.action_space, env.observation_space
        spec = getattr(env, "spec", None)
        limit = getattr(spec, "max_episode_steps", None)
        limit = int(limit) if isinstance(limit, int) and limit > 0 else None
        return (
            np.asarray(space.low, np.float32),
            np.asarray(space.high, np.float32),
            int(np.prod(obs_space.shape)),
            limit,
        )
    finally:
        env.close()


def _action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray, int]:
    low, high, obs_dim, _ = _env_facts(env_id)
    return low, high, obs_dim


def load_problem(cfg: TrainConfig) -> Problem:
    """Resolve the dataset file, validate it against the environment, and pick the reference scores."""
    from o3srl.data.dataset import OfflineDataset, safe_frontier
    from o3srl.envs.make import EnvError
    from o3srl.envs.registry import DEFAULT_TASK, TASKS

    env_id = cfg.env_id or cfg.task
    spec = TASKS.get(env_id) or TASKS.get(cfg.task)
    if env_id in TASKS:
        # Registered tasks: shapes from the registry and the simulators' [−1, 1] actions (checked against the
        # simulators in tests/test_envs.py and tests/test_safety_gymnasium.py), so training needs no simulator;
        # only evaluation does.
        obs_dim = TASKS[env_id].obs_dim
        low = np.full(TASKS[env_id].act_dim, -1.0, np.float32)
        high = np.full(TASKS[env_id].act_dim, 1.0, np.float32)
        time_limit: int | None = TASKS[env_id].max_episode_steps
    else:
        try:
            low, high, obs_dim, time_limit = _env_facts(env_id)
        except EnvError as exc:
            known = ", ".join(sorted(TASKS))
            raise ConfigError(f"unknown task or environment {env_id!r} ({exc}); built-in tasks: {known}") from None
    if cfg.dataset is not None:
        path = cfg.dataset
    elif cfg.task == DEFAULT_TASK:
        from o3srl.behaviour.scripted import default_dataset

        path = str(default_dataset())
    else:
        raise ConfigError(
            f"no dataset given for task {cfg.task!r}: pass --dataset FILE.hdf5 (a DSRL file or one made by "
            f"'o3srl data make {cfg.task}')"
        )
    dataset = OfflineDataset.load(path, action_low=low, action_high=high)
    dataset.check_episode_lengths(time_limit if time_limit is not None else spec.max_episode_steps if spec else None)
    if dataset.obs_dim != obs_dim:
        raise ConfigError(
            f"dataset {path} has observations of dim {dataset.obs_dim} but environment {env_id!r} has dim {obs_dim}"
        )
    if cfg.reward_min is not None and cfg.reward_max is not None:
        reward_range, reference = (cfg.reward_min, cfg.reward_max), "given"
    elif spec is not None:
        reward_range, reference = (spec.min_reward, spec.max_reward), "dsrl"
    else:
        ep = dataset.episodes
        lo, hi = float(ep.reward_return.min()), float(ep.reward_return.max())
        if hi <= lo:
            raise ConfigError(f"dataset {path}: all episodes have the same reward; pass --reward-min/--reward-max")
        reward_range, reference = (lo, hi), "dataset"
    # T of the budget conversion: given, the registry's, the environment's own time limit, or the data's longest
    # episode (never another task's: an --env-id without --task is its own task).
    episode_length = cfg.episode_length or (
        spec.max_episode_steps if spec else time_limit or int(dataset.episodes.length.max())
    )
    return Problem(
        dataset=dataset,
        dataset_path=str(Path(path).resolve()),
        dataset_sha256=file_sha256(path),
        env_id=env_id,
        reward_range=reward_range,
        reference=reference,
        episode_length=episode_length,
        frontier=safe_frontier(dataset.episodes, cfg.cost_limit),
        action_low=low,
        action_high=high,
    )


def build_learner(cfg: TrainConfig, problem: Problem) -> Learner:
    """The learner ``cfg`` names (O3SRL, its theory variant, an oracle alone at a fixed λ, or behaviour cloning) for
    ``problem``."""
    from o3srl.algos.o3srl import O3SRL, make_oracle
    from o3srl.bandits import lambda_unit

    ds = problem.dataset
    if cfg.algo in BC_ALGOS:
        return _build_bc(cfg, problem)
    if cfg.algo == "cpq":
        from o3srl.algos.cpq import CPQ

        return CPQ(cfg.cpq, _setting(cfg, problem), cfg.o3srl.steps_per_round)
    if cfg.algo == "bcq-lag":
        from o3srl.algos.bcql import BCQL

        return BCQL(cfg.bcql, _setting(cfg, problem), cfg.o3srl.steps_per_round)
    if cfg.algo == "coptidice":
        from o3srl.algos.coptidice import COptiDICE

        return COptiDICE(cfg.coptidice, _setting(cfg, problem), cfg.o3srl.steps_per_round)
    if cfg.algo == "bear-lag":
        from o3srl.algos.bearl import BEARL

        return BEARL(cfg.bearl, _setting(cfg, problem), cfg.o3srl.steps_per_round)
    if cfg.algo == "cdt":
        from o3srl.algos.cdt import CDT

        return CDT(
            cfg.cdt,
            _setting(cfg, problem),
            cfg.o3srl.steps_per_round,
            task=cfg.task,
            rewards=ds["rewards"],
            costs=ds["costs"],
            episode_start=ds.episodes.start,
            episode_length=ds.episodes.length,
            seed=cfg.seed,
        )
    if cfg.algo == "fisor":
        from o3srl.algos.fisor import FISOR

        return FISOR(cfg.fisor, _setting(cfg, problem), cfg.o3srl.steps_per_round)
    if cfg.algo == "caps":
        from o3srl.algos.caps import CAPS

        return CAPS(cfg.caps, _setting(cfg, problem), cfg.o3srl.steps_per_round)
    if cfg.algo == "ccac":
        from o3srl.algos.ccac import CCAC, cost_to_go

        thresholds = cost_to_go(ds["costs"], ds.episodes.start, ds.episodes.length)
        return CCAC(cfg.ccac, _setting(cfg, problem), cfg.o3srl.steps_per_round, thresholds)
    oracle = make_oracle(cfg.oracle_name, cfg.td3bc, cfg.iql, ds.obs_dim, ds.act_dim)
    unit = lambda_unit(
        ds.episodes.reward_return, ds.episodes.cost_return, oracle.config.reward_scale, oracle.config.cost_scale
    )
    setting = _setting(cfg, problem, lambda_unit=unit)
    if cfg.algo == "o3srl" and cfg.variant == "theory":
        from o3srl.algos.o3srl_theory import O3SRLTheory

        return O3SRLTheory(cfg.theory, oracle, setting)
    fixed = None if cfg.algo == "o3srl" else cfg.fixed_lambda
    from o3srl.algos.cost_model import CostModel, unit_costs

    cost_model = CostModel(cfg.cost_model, ds.obs_dim, ds.act_dim, unit_costs=unit_costs(ds["costs"]))
    return O3SRL(cfg.o3srl, oracle, setting, fixed_lambda=fixed, cost_model=cost_model)


def _setting(cfg: TrainConfig, problem: Problem, lambda_unit: float = 1.0) -> Setting:
    """The facts of ``problem`` a learner of ``cfg`` is built for (:class:`~o3srl.algos.base.Setting`)."""
    from o3srl.algos.base import Setting

    ds = problem.dataset
    return Setting(
        obs_dim=ds.obs_dim,
        act_dim=ds.act_dim,
        cost_limit=cfg.cost_limit,
        episode_length=problem.episode_length,
        total_steps=cfg.steps,
        reward_abs_max=float(np.abs(ds["rewards"]).max()),
        cost_abs_max=float(np.abs(ds["costs"]).max()),
        lambda_unit=lambda_unit,
        budget_convention=cfg.budget_convention,
        reward_range=problem.reward_range,
    )


def _build_bc(cfg: TrainConfig, problem: Problem) -> Learner:
    """BC-All or BC-Safe (:mod:`o3srl.algos.bc`); BC-Safe imitates the episodes whose cost return is within κ."""
    from o3srl.algos.bc import BC, safe_transitions

    ds = problem.dataset
    setting = _setting(cfg, problem)
    if cfg.algo == "bc-safe":
        e = ds.episodes
        selected = safe_transitions(e.start, e.length, e.cost_return, cfg.cost_limit)
        return BC(cfg.bc, setting, "safe", cfg.o3srl.steps_per_round, selected)
    return BC(cfg.bc, setting, "all", cfg.o3srl.steps_per_round)


def make_policy(cfg: TrainConfig, learner: Learner, state: Any, stats: NormStats) -> Policy:
    """The learner's output policy (:meth:`~o3srl.algos.base.Learner.output`) in ``state`` as a callable, as
    ``o3srl.load_policy`` would load it."""
    from o3srl.policy import MixturePolicy, Policy, sequence_policy

    params, kind = learner.output(state)
    if kind == "mixture":
        return MixturePolicy(learner.act, params, stats, seed=cfg.eval_seed)
    if kind == "sequence":
        return sequence_policy(cfg, params, stats)
    return Policy(learner.act, params, stats)


def _default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{safe_name(cfg.task)}-{cfg.algo}-k{cfg.cost_limit:g}-s{cfg.seed}-{stamp}"
    return Path("runs") / name


def safe_name(text: str) -> str:
    """``text`` with every character but letters, digits and ``_.+=-`` replaced by ``_`` (a file-name part)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)


def env_task_name(env_id: str) -> str:
    """The task name of a run on ``env_id`` when no ``--task`` is given: a registered id itself, else the id or the
    class named after ``module:`` (``my_pkg.envs:Corridor`` → ``Corridor``), made safe for a directory name."""
    from o3srl.envs.registry import TASKS

    if env_id in TASKS:
        return env_id
    return safe_name(env_id.rpartition(":")[2] or env_id)


def _summarise(metrics: dict[str, Any]) -> dict[str, float]:
    """Chunk metrics (stacked per round) → one row: means, plus the last λ and arm probabilities."""
    row: dict[str, float] = {}
    for key, values in metrics.items():
        arr = np.asarray(values, np.float64)
        if key.startswith("bandit/p/") or key == "bandit/lambda":
            row[key] = float(arr[-1])
            if key == "bandit/lambda":
                row["bandit/lambda_mean"] = float(arr.mean())
        elif key == "bandit/arm":
            continue
        else:
            finite = arr[np.isfinite(arr)]
            row[key] = float(finite.mean()) if finite.size else math.nan
    return row


def run(cfg: TrainConfig, *, resume_dir: str | None = None) -> dict[str, Any]:
    """Train (or resume) one run and evaluate its final policy; returns the summary written to ``eval.json``.

    On resume the run's own ``config.json`` is used; ``cfg`` only confirms an environment entry point
    (``cfg.env_id``) that the saved config names, which is otherwise not imported. Every check (values, dataset,
    entry point, and on resume the dataset's hash and the checkpoint's config and network shapes) comes before
    anything is written.
    """
    return run_pack([cfg], resume_dirs=[resume_dir])[0]


PACKED_FIELDS = ("seed", "cost_limit", "fixed_lambda")
"""Config fields in which the runs of one pack may differ (besides where they write and how they are evaluated):
the seed lives in the state's keys, the cost limit and a fixed λ in :class:`o3srl.algos.o3srl.CellParams`."""
PACK_FREE_FIELDS = ("run_dir", "eval_episodes", "eval_seed", "eval_envs", "progress", "tensorboard")


def _packed_fields(cfg: TrainConfig) -> tuple[str, ...]:
    from o3srl.algos.o3srl import resolve_player

    if cfg.algo in BASELINE_ALGOS:
        return ()  # its runs train one at a time (only O3SRL's round loop trains in packs)
    if cfg.algo != "o3srl" and resolve_player(cfg.o3srl).feedback == "lagrangian":
        # That feedback scales by the largest arm as a number of the program, so fixed λs differ in code there.
        return tuple(f for f in PACKED_FIELDS if f != "fixed_lambda")
    return PACKED_FIELDS


def pack_key(cfg: TrainConfig) -> str:
    """Runs with the same key can be trained as one pack (:func:`run_pack`): the config without the fields a pack
    may vary (:data:`PACKED_FIELDS`) or that do not change the training (:data:`PACK_FREE_FIELDS`)."""
    from o3srl.config import to_dict

    d = to_dict(cfg)
    for name in _packed_fields(cfg) + PACK_FREE_FIELDS:
        d.pop(name, None)
    return json.dumps(d, sort_keys=True, default=str)


def run_pack(cfgs: list[TrainConfig], *, resume_dirs: list[str | None] | None = None) -> list[dict[str, Any]]:
    """Train (or resume) several runs as one compiled program, each with its own run directory, metrics,
    checkpoints and final evaluation exactly as :func:`run` writes them; returns their summaries.

    The runs must share the dataset and every config field but the seed and the cost limit (:func:`pack_key`), and
    resumed runs must stand at the same step. One run alone is :func:`run`: the learner's own program, unchanged.
    Several are ``jax.vmap``-ed over their states and their :class:`~o3srl.algos.o3srl.CellParams`; on a CPU that
    gains little (the work is FLOP-bound), on an accelerator it runs many cells in the time of a few. A packed run's
    numbers equal its run alone up to float rounding (batched matrix products may sum in another order; see
    docs/results/speed.md for the measured difference).
    """
    resume_dirs = list(resume_dirs) if resume_dirs is not None else [None] * len(cfgs)
    if not cfgs or len(resume_dirs) != len(cfgs):
        raise ConfigError("run_pack needs at least one config and one resume directory (or None) per config")
    problems: dict[str, Problem] = {}
    runs = [_open_run(cfg, resume_dir, problems) for cfg, resume_dir in zip(cfgs, resume_dirs)]
    _check_pack(runs)
    for r, resume_dir in zip(runs, resume_dirs):
        _start_files(r, resumed=resume_dir is not None)
    try:
        _train(runs)
    finally:
        for r in runs:
            for sink in r.sinks:
                with contextlib.suppress(OSError):
                    sink.close()
    return [_finish(r) for r in runs]


@dataclass
class _Run:
    """One run inside the training loop: its config, problem, learner, state and open files."""

    cfg: TrainConfig
    run_dir: Path
    problem: Problem
    learner: Learner
    stats: NormStats
    state: Any
    step: int
    config_json: str
    run_info: dict[str, Any]
    sinks: list[Any]
    trace: RoundTrace
    last_checkpoint: int


def _open_run(cfg: TrainConfig, resume_dir: str | None, problems: dict[str, Problem]) -> _Run:
    """Every check of one run, then its run directory, ``config.json``, ``run.json`` and metric sinks."""
    import jax

    from o3srl.checkpoint import load_checkpoint
    from o3srl.data.dataset import safe_frontier
    from o3srl.data.sampler import compute_norm_stats
    from o3srl.envs.make import check_entry_point, require_simulator
    from o3srl.envs.registry import TASKS

    if resume_dir is not None:
        run_dir = Path(resume_dir)
        config_path = run_dir / CONFIG_NAME
        if not config_path.exists():
            raise O3SRLError(f"cannot resume {run_dir}: it has no {CONFIG_NAME} (is it a run directory?)")
        confirmed_env = cfg.env_id
        cfg = read_config(config_path)
        if cfg.env_id is not None:
            check_entry_point(cfg.env_id, confirmed_env, f"{config_path}")
    cfg = cfg.resolved()
    record = _resume_record(run_dir, cfg) if resume_dir is not None else None
    # Runs of one pack read the same dataset: it is loaded and hashed once (the safe frontier depends on κ).
    source = json.dumps([cfg.task, cfg.env_id, cfg.dataset, cfg.reward_min, cfg.reward_max, cfg.episode_length])
    if source in problems:
        shared = problems[source]
        problem = dataclasses.replace(shared, frontier=safe_frontier(shared.dataset.episodes, cfg.cost_limit))
    else:
        problem = problems[source] = load_problem(cfg)
    if record is not None and record.get("dataset_sha256") not in (None, problem.dataset_sha256):
        raise O3SRLError(
            f"cannot resume {run_dir}: dataset {problem.dataset_path} has changed since the run started (sha256 "
            f"{problem.dataset_sha256[:12]}…, the run recorded {str(record['dataset_sha256'])[:12]}… in run.json); "
            "restore the file the run was trained on, or start a new run"
        )
    if cfg.eval_episodes > 0 and problem.env_id in TASKS:
        # An optional simulator that is missing would only fail at the evaluation, after the whole training.
        require_simulator(TASKS[problem.env_id], " (or pass --eval-episodes 0 to train without evaluating)")
    learner = build_learner(cfg, problem)
    stats = compute_norm_stats(
        problem.dataset, problem.action_low, problem.action_high, normalize_obs=cfg.normalize_obs
    )

    template = learner.init(jax.random.PRNGKey(cfg.seed))
    step = 0
    state = template
    if resume_dir is not None and (run_dir / CHECKPOINT_NAME).exists():
        step, state, stats, _ = load_checkpoint(run_dir / CHECKPOINT_NAME, template, learner.upgrade_state_dict)
    if resume_dir is None:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else _default_run_dir(cfg)
        if (run_dir / CHECKPOINT_NAME).exists():
            raise O3SRLError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --run-dir"
            )
    config_json = dumps(cfg)
    from o3srl import __version__

    run_info = {
        "dataset": problem.dataset_path,
        "dataset_sha256": problem.dataset_sha256,
        "env_id": problem.env_id,
        "reward_reference": problem.reference,
        "reward_range": list(problem.reward_range),
        "episode_length": problem.episode_length,
        **learner.run_info(),
        "safe_frontier": problem.frontier,
        "o3srl_version": __version__,
    }
    trace = RoundTrace.load(run_dir / TRACE_NAME, rounds=step // learner.steps_per_round)
    return _Run(
        cfg=cfg,
        run_dir=run_dir,
        problem=problem,
        learner=learner,
        stats=stats,
        state=state,
        step=step,
        config_json=config_json,
        run_info=run_info,
        sinks=[],
        trace=trace,
        last_checkpoint=step,
    )


def _start_files(r: _Run, resumed: bool) -> None:
    """The run directory with ``config.json`` and ``run.json``, and the open metric sinks (after every check)."""
    from o3srl.logger import JsonlSink, TensorBoardSink

    with _file_errors(f"cannot create run directory {r.run_dir}"):
        r.run_dir.mkdir(parents=True, exist_ok=True)
    with _file_errors(f"cannot write the run directory {r.run_dir}"):
        write_run_files(r.run_dir, r.config_json, r.run_info)
        r.sinks.append(JsonlSink(r.run_dir / METRICS_NAME, resume_step=r.step if resumed else None))
    if r.cfg.tensorboard:
        r.sinks.append(TensorBoardSink(r.run_dir / TENSORBOARD_DIR))


def _check_pack(runs: list[_Run]) -> None:
    """Runs trained as one program must compute the same program on the same data, from the same step."""
    if len(runs) == 1:
        return
    first = runs[0]
    names = ", ".join(str(r.run_dir) for r in runs[:3]) + (" …" if len(runs) > 3 else "")
    _round_loop(first.learner, names)
    if len({r.run_dir.resolve() for r in runs}) < len(runs):
        raise ConfigError(f"a pack holds the same run directory twice ({names})")
    for r in runs[1:]:
        if pack_key(r.cfg) != pack_key(first.cfg):
            from o3srl.config import to_dict

            differ = checkpoint_differences(to_dict(first.cfg), to_dict(r.cfg))
            free = _packed_fields(first.cfg)
            differ = [d for d in differ if d.split(":")[0] not in free + PACK_FREE_FIELDS]
            raise ConfigError(
                f"runs {first.run_dir} and {r.run_dir} cannot be trained as one pack: their configs differ in more "
                f"than {', '.join(free)} ({'; '.join(d.split(':')[0] for d in differ[:4])})"
            )
        if r.problem.dataset_sha256 != first.problem.dataset_sha256 or not all(
            np.array_equal(a, b) for a, b in zip(r.stats, first.stats)
        ):
            raise ConfigError(
                f"runs {first.run_dir} and {r.run_dir} cannot be trained as one pack: their datasets "
                "or normalisation statistics differ"
            )
        if r.step != first.step:
            raise ConfigError(
                f"runs {first.run_dir} (step {first.step}) and {r.run_dir} (step {r.step}) cannot be "
                "resumed as one pack: they stand at different steps"
            )
        this, other = _round_loop(r.learner), _round_loop(first.learner)
        if len(this.arms) != len(other.arms) or (
            this.max_lambda != other.max_lambda and this.config.feedback == "lagrangian"
        ):
            raise ConfigError(
                f"runs {first.run_dir} and {r.run_dir} cannot be trained as one pack: their λ arms differ"
            )


def _round_loop(learner: Learner, names: str = "") -> O3SRL:
    """A learner of a pack: O3SRL's round loop, whose numbers that differ between runs are data
    (:class:`~o3srl.algos.o3srl.CellParams`); other learners (the theory variant) train one run at a time."""
    from o3srl.algos.o3srl import O3SRL

    if not isinstance(learner, O3SRL):
        where = f" ({names})" if names else ""
        raise ConfigError(
            f"only O3SRL's round loop trains in packs; runs of {learner.title} are trained one at a time, not "
            f"packed{where}"
        )
    return learner


def _pack_program(learner: O3SRL, runs: list[_Run]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The packed chunk of rounds, ``fn(states, data, varying, num_rounds)``, and the per-run numbers it takes.

    A :class:`~o3srl.algos.o3srl.CellParams` field that is the same in every run stays a constant of the program
    (as in a run alone); only the fields that differ (e.g. the budget of runs at different cost limits) are stacked
    and passed as data."""
    import jax
    import jax.numpy as jnp

    from o3srl.algos.o3srl import CellParams

    own = [_round_loop(r.learner).cell_constants() for r in runs]
    constant: dict[str, Any] = {}
    varying: dict[str, Any] = {}
    for name in CellParams.__dataclass_fields__:
        values = [np.asarray(getattr(c, name), np.float64) for c in own]
        if all(np.array_equal(v, values[0]) for v in values):
            constant[name] = getattr(own[0], name)
        else:
            varying[name] = jnp.stack([getattr(_round_loop(r.learner).cell_params(), name) for r in runs])

    def one(state: Any, data: Any, cell: dict[str, Any], num_rounds: int) -> Any:
        return learner.run_rounds(state, data, num_rounds, CellParams(**constant, **cell))

    def packed(states: Any, data: Any, cells: dict[str, Any], num_rounds: int) -> Any:
        return jax.vmap(one, in_axes=(0, None, 0, None))(states, data, cells, num_rounds)

    return jax.jit(packed, static_argnums=3), varying


def _train(runs: list[_Run]) -> None:
    """The training loop: compiled chunks of ``log_every`` steps; after each, every run's NaN guard, round trace,
    metrics row, optional evaluation and checkpoint. One run trains alone with the learner's own program; a pack
    trains with the same program ``vmap``-ed over its runs."""
    import jax

    from o3srl.checkpoint import save_checkpoint
    from o3srl.data.sampler import to_device

    first = runs[0]
    cfg, learner = first.cfg, first.learner
    data = to_device(first.problem.dataset, first.stats)
    m = learner.steps_per_round
    step = first.step
    packed = len(runs) > 1
    if packed:
        program, varying = _pack_program(_round_loop(learner), runs)
        state = jax.tree.map(lambda *leaves: np.stack(leaves), *(r.state for r in runs))
        all_finite = jax.jit(jax.vmap(_all_finite))
    else:
        run_rounds = jax.jit(learner.run_rounds, static_argnums=2)
        state = first.state
    if step == 0:
        # Before the first round (the cost model's fit); a resumed run has it in its checkpoint.
        prepare = jax.vmap(learner.prepare, in_axes=(0, None)) if packed else learner.prepare
        state = jax.jit(prepare)(state, data)

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        desc = f"{cfg.algo} {cfg.task}" + (f" ×{len(runs)}" if packed else "")
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc=desc, dynamic_ncols=True)
    t_start = time.time()
    try:
        while step < cfg.steps:
            n = min(cfg.log_every, cfg.steps - step)
            if packed:
                state, metrics = program(state, data, varying, n // m)
                host_metrics, finite = jax.device_get((metrics, all_finite(state)))
                chunk = [{k: v[i] for k, v in host_metrics.items()} for i in range(len(runs))]
                # The runs' parameters come to the host only when something needs them (a checkpoint, an
                # evaluation, the end, or a parameter that is not finite): on an accelerator, copying every run's
                # networks after every chunk would cost as much as the training.
                done = step + n
                if (
                    not finite.all()
                    or done % cfg.checkpoint_every == 0
                    or done == cfg.steps
                    or (cfg.eval_every and done % cfg.eval_every == 0 and cfg.eval_every_episodes > 0)
                ):
                    host_state = jax.device_get(state)
                    states = [jax.tree.map(lambda x, i=i: x[i], host_state) for i in range(len(runs))]
                else:
                    states = [None] * len(runs)
            else:
                state, metrics = run_rounds(state, data, n // m)
                states, chunk = [state], [jax.device_get(metrics)]
            # Every run's guard before anything of these steps is written, so that a pack stays in step.
            for r, s, mets in zip(runs, states, chunk):
                bad = non_finite(s if s is not None else {}, mets)
                if bad is not None:
                    kept = (
                        f"the last good checkpoint (step {r.last_checkpoint}) is intact"
                        if r.last_checkpoint
                        else "no checkpoint was written"
                    )
                    ds = r.problem.dataset
                    raise TrainingDiverged(
                        f"training diverged in steps {step + 1}–{step + n}: {bad} is not finite (NaN or ±inf); nothing "
                        f"of these steps was written and {kept} in {r.run_dir}; lower the learning rates, or check the "
                        f"scale of the data's rewards and costs "
                        f"(largest |reward| {float(np.abs(ds['rewards']).max()):g}, "
                        f"|cost| {float(np.abs(ds['costs']).max()):g})"
                    )
            step += n
            rate = n / max(time.time() - t_start, 1e-9)  # each run of a pack advanced n steps in this time
            t_start = time.time()
            eval_now = (
                cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and cfg.eval_every_episodes > 0
            )
            for r, s, mets in zip(runs, states, chunk):
                r.step = step
                if s is not None:
                    r.state = s
                r.trace.extend(step, m, mets)
                row = _summarise(mets)
                row["time/steps_per_second"] = rate
                if eval_now:
                    result = _evaluate(r, s, r.cfg.eval_every_episodes)
                    row.update(result.metrics())
                with _file_errors(
                    f"cannot write the metrics of step {step} to {r.run_dir / METRICS_NAME}",
                    f"; the last checkpoint (step {r.last_checkpoint}) is intact: continue with --resume {r.run_dir}",
                ):
                    for sink in r.sinks:
                        sink.write(step, row)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    with _file_errors(
                        f"cannot write the checkpoint of step {step} in {r.run_dir}",
                        f"; the last checkpoint (step {r.last_checkpoint}) is intact: continue with "
                        f"--resume {r.run_dir}",
                    ):
                        r.trace.save(r.run_dir / TRACE_NAME)
                        save_checkpoint(
                            r.run_dir / CHECKPOINT_NAME, step=step, state=s, stats=r.stats, config_json=r.config_json
                        )
                    r.last_checkpoint = step
            if bar is not None:
                bar.update(n)
                post = {
                    "λ": row.get("bandit/lambda_mean", float("nan")),
                    "Ĉ": row.get("feedback/cost_estimate", float("nan")),
                }
                bar.set_postfix({k: f"{v:.3g}" for k, v in post.items()})
    finally:
        if bar is not None:
            bar.close()


def _all_finite(state: Any) -> Any:
    """Whether every floating-point leaf of one run's state is finite (a scalar, computed where the state lives)."""
    import jax
    import jax.numpy as jnp

    flags = [jnp.isfinite(x).all() for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.stack(flags).all() if flags else jnp.bool_(True)


def _finish(r: _Run) -> dict[str, Any]:
    """Save the run's final policy (and the bandit plot), evaluate it, write ``eval.json``; returns the summary."""
    cfg, run_dir, state, step = r.cfg, r.run_dir, r.state, r.step
    with _file_errors(
        f"cannot write the final policy to {run_dir}",
        f"; the checkpoint of step {step} is intact: finish with --resume {run_dir}",
    ):
        output = save_output(run_dir, r.learner, state, r.stats, r.config_json)
        arms = r.learner.bandit_arms()
        if arms is not None:
            from o3srl.plots import plot_bandit_history

            plot_bandit_history(run_dir / TRACE_NAME, run_dir / BANDIT_PLOT_NAME, arms)
    result = _evaluate(r, state, cfg.eval_episodes) if cfg.eval_episodes > 0 else None
    summary = run_summary(run_dir, cfg, {**r.run_info, **output}, step=step, result=result)
    with _file_errors(f"cannot write {run_dir / EVAL_NAME}"):
        write_eval(run_dir, summary)
    return summary


def save_output(run_dir: Path, learner: Learner, state: Any, stats: NormStats, config_json: str) -> dict[str, Any]:
    """Write the learner's output policy in ``state`` (``policy.msgpack``) and, for a mixture chosen by readings,
    which members it holds and why (``output.json``); returns the latter."""
    from o3srl.checkpoint import save_policy

    params, kind = learner.output(state)
    output_info = getattr(learner, "output_info", None)  # which members a mixture output holds, and why
    output = output_info(state) if output_info is not None else {}
    save_policy(run_dir / POLICY_NAME, actor=params, stats=stats, config_json=config_json, kind=kind)
    if output:
        write_output_info(run_dir, output)
    return output


def rechoose_output(run_dir: str | Path) -> dict[str, Any]:
    """Choose a finished run's output again, as the config in its ``config.json`` now names it, from its last
    checkpoint: for the outputs chosen from the tail's readings (``best``, ``mix``), whose training is the same
    whichever of them a run names. Rewrites ``policy.msgpack`` and ``output.json``; returns the latter."""
    run = load_finished_run(run_dir)
    return save_output(Path(run_dir), run.learner, run.state, run.stats, dumps(run.cfg))


class TrainingDiverged(O3SRLError):
    """A loss or a network parameter became NaN or infinite during training."""


def non_finite(state: Any, metrics: dict[str, Any]) -> str | None:
    """The name of the first floating-point parameter of ``state``, or loss in ``metrics``, that holds a NaN or
    ±inf; ``None`` when everything is finite. (A loss of NaN alone is no alarm: rounds without an actor step report
    their actor loss as NaN.)"""
    from o3srl.checkpoint import named_leaves

    bad = [
        name
        for name, leaf in named_leaves(state).items()
        if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(np.asarray(leaf)).all()
    ]
    if bad:
        # Name a network's own parameter rather than an optimiser's moment of it when there is one.
        first = next((name for name in bad if "_opt" not in name), bad[0])
        more = f" (and {len(bad) - 1} other array(s))" if len(bad) > 1 else ""
        return f"parameter {first}{more}"
    for key, values in metrics.items():
        if key.startswith("loss/") and np.isinf(np.asarray(values, np.float64)).any():
            return key
    return None


@contextmanager
def _file_errors(what: str, after: str = "") -> Iterator[None]:
    """Turn a file-system error (unwritable, under a file, disk full) into one :class:`O3SRLError` line."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        raise O3SRLError(f"{what}: {reason}{where}{after}") from None


def _resume_record(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """Check a run directory before it is resumed, writing nothing: its checkpoint (if any) must be readable and
    saved with the same config as ``config.json``; returns its ``run.json`` record (``None`` before the first one)."""
    from o3srl.checkpoint import CheckpointError, read_payload
    from o3srl.config import to_dict

    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.exists():
        payload = read_payload(checkpoint)
        try:
            saved = from_dict(json.loads(payload["config"])).resolved()
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint} holds no usable config ({exc})") from None
        differ = checkpoint_differences(to_dict(saved), to_dict(cfg))
        if differ:
            raise CheckpointError(
                f"cannot resume {run_dir}: its config.json differs from the config the checkpoint was saved with "
                f"({'; '.join(differ[:4])}); restore config.json, or start a new run"
            )
    info_path = run_dir / RUN_INFO_NAME
    if not info_path.exists():
        if checkpoint.exists():
            raise O3SRLError(f"cannot resume {run_dir}: {RUN_INFO_NAME} is missing, so the dataset cannot be checked")
        return None
    return read_json_object(info_path, f"cannot resume {run_dir}: {RUN_INFO_NAME}")


def _evaluate(r: _Run, state: Any, episodes: int) -> Any:
    """Evaluate the run's policy of ``state`` (not yet saved) as :func:`o3srl.rundir.evaluate_run` would."""
    policy = make_policy(r.cfg, r.learner, state, r.stats)
    return evaluate_policy(policy, r.run_info, r.cfg, episodes=episodes, seed=r.cfg.eval_seed, envs=r.cfg.eval_envs)


# ---------------------------------------------------------------------- command line
@dataclass(frozen=True)
class TrainArgs:
    """Train an agent (O3SRL with the TD3+BC oracle by default) and print the evaluated final policy."""

    cfg: Annotated[TrainConfig, tyro_arg(name="")]
    resume: str | None = None
    """Continue the killed (or finished) run in this directory; its saved config is used and other flags ignored."""


def _flag_from_argv(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _task_from_argv(argv: list[str]) -> str | None:
    return _flag_from_argv(argv, "--task")


def cli_train(argv: list[str], prog: str = "o3srl train") -> int:
    """``o3srl train``: the chosen task's preset fills the defaults; flags given on the command line win.

    ``--env-id`` without ``--task`` makes the environment its own task (its name, its time limit or the data's
    episode length, the dataset's reference scores), never the default task's."""
    import tyro

    from o3srl.config import preset
    from o3srl.envs.registry import DEFAULT_TASK

    task = _task_from_argv(argv)
    env_id = _flag_from_argv(argv, "--env-id")
    if task is None and env_id:
        task = env_task_name(env_id)
    defaults = TrainArgs(cfg=preset(task or DEFAULT_TASK))
    args = tyro.cli(TrainArgs, default=defaults, args=argv, prog=prog)
    summary = run(args.cfg, resume_dir=args.resume)
    print_summary(summary)
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from o3srl.transforms import is_safe

    table = Table(
        title=f"{summary['algo']} on {summary['task']}  (κ = {summary['cost_limit']:g}, seed {summary['seed']})"
    )
    for col in ("episode reward", "episode cost", "normalized reward", "normalized cost", "safe"):
        table.add_column(col, justify="right")
    if "eval/reward" in summary:
        safe = is_safe(summary["eval/normalized_cost"])
        table.add_row(
            f"{summary['eval/reward']:.1f} ± {summary.get('eval/reward_std', float('nan')):.1f}",
            f"{summary['eval/cost']:.2f} ± {summary.get('eval/cost_std', float('nan')):.2f}",
            f"{summary['eval/normalized_reward']:.3f}",
            f"{summary['eval/normalized_cost']:.3f}",
            "[green]yes[/green]" if safe else "[red]NO[/red]",
        )
    console = Console()
    if "eval/reward" in summary:
        console.print(table)
    else:
        console.print("not evaluated (--eval-episodes 0); evaluate later with: o3srl eval RUN_DIR")
    ref = summary["reward_reference"]
    lo, hi = summary["reward_range"]
    names = {
        "dsrl": "DSRL's reference scores",
        "dataset": "the dataset's own min/max episode reward",
        "given": "the reference scores given on the command line",
    }
    console.print(f"normalized reward uses {names.get(ref, ref)}: [{lo:g}, {hi:g}]; safe ⇔ normalized cost ≤ 1")
    if "eval/frontier_fraction" in summary and summary["eval/frontier_fraction"] is not None:
        console.print(f"reward / dataset safe frontier R*_data(κ) = {summary['eval/frontier_fraction']:.3f}")
    console.print(f"run directory: {summary['run_dir']}")


def cli_eval(
    run_dir: Positional[str],
    episodes: int = 20,
    cost_limit: float | None = None,
    seed: int = 10_000,
    envs: int = 4,
    env_id: str | None = None,
) -> int:
    """Re-evaluate the policy saved in a run directory.

    Args:
        run_dir: a directory written by ``o3srl train``.
        episodes: evaluation episodes.
        cost_limit: κ for the normalised cost (default: the run's own). CAPS, CCAC and CDT also act for it (CAPS
            switches by the budget left of it, CCAC's actor reads the budget left of it, CDT starts its episodes at
            the targets for it); every other policy was trained for the run's κ and is only scored against this one.
        seed: evaluation seed.
        envs: environment copies stepped together.
        env_id: environment to evaluate on (default: the run's). A module:Class entry point recorded in the run is
            imported only when named here too, so a run directory from elsewhere cannot run code.
    """
    from o3srl.validation import COUNT, NON_NEGATIVE, SEED, check_number

    check_number("--episodes", episodes, COUNT)
    check_number("--envs", envs, COUNT)
    check_number("--seed", seed, SEED)
    if cost_limit is not None:
        check_number("--cost-limit", cost_limit, NON_NEGATIVE)
    _, summary = evaluate_run(run_dir, episodes=episodes, seed=seed, envs=envs, cost_limit=cost_limit, env_id=env_id)
    print_summary(summary)
    return 0


@dataclass
class FinishedRun:
    """A run directory read back whole, for analysis scripts: its config, problem, learner and checkpointed state."""

    cfg: TrainConfig
    problem: Problem
    learner: Any  # the concrete learner (O3SRL, O3SRLTheory): analysis scripts read its own attributes
    state: Any
    stats: Any


def load_finished_run(run_dir: str | Path) -> FinishedRun:
    """The config, problem (its dataset loaded), learner and last checkpoint of ``run_dir`` (a checkpoint in an
    earlier layout is brought up to date)."""
    import jax

    from o3srl.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    cfg = read_config(run_dir / CONFIG_NAME).resolved()
    problem = load_problem(cfg)
    learner = build_learner(cfg, problem)
    template = learner.init(jax.random.PRNGKey(cfg.seed))
    _, state, stats, _ = load_checkpoint(run_dir / CHECKPOINT_NAME, template, learner.upgrade_state_dict)
    return FinishedRun(cfg=cfg, problem=problem, learner=learner, state=state, stats=stats)
