"""The behaviour-policy zoo: per task, PPO-Lagrangian members trained at several cost limits, with snapshots.

The zoo is small (a few 64×64 actors per task), so it is committed inside the package under
``o3srl/assets/zoo/<task>/``: one ``<member>.msgpack`` per member (flax msgpack, no pickle) holding its snapshots,
a ``<member>.json`` with its config and training curve summary, and ``manifest.json`` listing the members. Making a
dataset then needs only collection. ``o3srl data train-behaviour`` retrains members, one single-threaded process
per member, so all members of all tasks can train side by side on a many-core machine.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from o3srl.envs.registry import BULLET_TASKS, TaskSpec, get_task
from o3srl.errors import O3SRLError
from o3srl.io import atomic_write_bytes, atomic_write_text

ZOO_VERSION = 1
SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class ZooError(O3SRLError, FileNotFoundError):
    """The zoo of a task is missing or unreadable."""


def zoo_dir() -> Path:
    """The committed zoo inside the package."""
    return Path(__file__).resolve().parent.parent / "assets" / "zoo"


# Environment steps per member. Chosen so that one member fits in a few single-core minutes: Ball learns its best
# behaviour within ~100k steps; the legged and flying agents get more (and are slower per step).
DEFAULT_STEPS: dict[str, int] = {
    "OfflineBallRun-v0": 300_000,
    "OfflineBallCircle-v0": 300_000,
    "OfflineCarRun-v0": 300_000,
    "OfflineCarCircle-v0": 300_000,
    "OfflineDroneRun-v0": 500_000,
    "OfflineDroneCircle-v0": 500_000,
    "OfflineAntRun-v0": 500_000,
    # The Ant learns to circle slowly (training reward ≈ 10 after 300k steps, 8–64 after 2M): ≈ 20 CPU min/member.
    "OfflineAntCircle-v0": 2_000_000,
    # Safety-Gymnasium velocity tasks (optional extra). MuJoCo steps are cheap (a HopperVelocity member of 500k
    # steps took ~1 CPU minute), but episodes last 1000 steps, so a member sees only a few hundred of them.
    "OfflineAntVelocityGymnasium-v1": 500_000,
    "OfflineHalfCheetahVelocityGymnasium-v1": 500_000,
    "OfflineHopperVelocityGymnasium-v1": 500_000,
    "OfflineSwimmerVelocityGymnasium-v1": 500_000,
    "OfflineWalker2dVelocityGymnasium-v1": 500_000,
}

# Seconds per environment step relative to Ball (measured on PPO-Lagrangian training), used only to start the
# longest members first when several train side by side.
RELATIVE_STEP_COST: dict[tuple[str, str], float] = {
    ("bullet", "Ball"): 1.0,
    ("bullet", "RaceCar"): 3.5,
    ("bullet", "Drone"): 2.0,
    ("bullet", "Ant"): 4.0,
    ("safety_gymnasium", "Hopper"): 0.75,
}


def default_cost_limits(spec: TaskSpec) -> tuple[float, ...]:
    """Cost limits from very safe (κ = 5) to the task's max cost, so the members' final policies span the frontier
    and their early snapshots fill in the low-reward region."""
    m = spec.max_cost
    return (5.0, round(m / 4, 1), round(m / 2, 1), m)


def member_name(cost_limit: float) -> str:
    return f"ppolag-k{cost_limit:g}"


@dataclass(frozen=True)
class Member:
    """One trained zoo member as loaded for collection."""

    task_id: str
    name: str
    cost_limit: float
    snapshots: tuple[dict[str, Any], ...]


def _to_state_dict(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        str(i): {k: (np.asarray(v) if isinstance(v, (int, float)) else v) for k, v in s.items()}
        for i, s in enumerate(snapshots)
    }


def save_member(
    directory: Path, result: Any, previous: PreviousMember | None = None, origin: dict[str, Any] | None = None
) -> Path:
    """Write one trained member (``TrainResult``) as ``<member>.msgpack`` + ``<member>.json`` (atomic).

    With ``previous`` (the member this run continued), the new snapshots are appended to the previous ones, their
    steps counted on from the previous run's last, so the member keeps its whole learning curve; its json lists
    the runs (``segments``) that made it. Only the newest snapshot keeps the state needed to continue again.
    ``origin``: the member this one started from (``--init-from``), recorded in its json.
    """
    from flax import serialization

    from o3srl.behaviour.ppo_lag import config_dict

    cfg = result.config
    directory.mkdir(parents=True, exist_ok=True)
    name = member_name(cfg.cost_limit)
    offset = previous.steps if previous is not None else 0
    new = [dict(s, step=int(s["step"]) + offset) for s in result.snapshots]
    old = [{k: v for k, v in s.items() if k != "resume"} for s in previous.snapshots] if previous is not None else []
    snapshots = old + new
    blob = serialization.msgpack_serialize(_to_state_dict(snapshots))
    segment = {
        "steps": cfg.total_steps,
        "seed": cfg.seed,
        "seconds": round(result.seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "snapshots": len(new),
    }
    segments = (previous.segments if previous is not None else []) + [segment]
    tail = [r for r in result.history[-5:] if "rollout/episode_reward" in r]
    meta = {
        "zoo_version": ZOO_VERSION,
        "task": cfg.task_id,
        "name": name,
        "algorithm": "ppo-lagrangian",
        "cost_limit": cfg.cost_limit,
        "config": config_dict(cfg) | {"total_steps": sum(g["steps"] for g in segments)},
        "segments": segments,
        **({"initialised_from": origin} if origin else {}),
        "seconds": round(sum(g["seconds"] for g in segments), 1),
        "cpu_seconds": _sum_or_none([g.get("cpu_seconds") for g in segments]),
        "snapshots": [
            {
                "step": int(s["step"]),
                "episode_reward": _num(s["episode_reward"]),
                "episode_cost": _num(s["episode_cost"]),
                "lambda": _num(s["lambda"]),
            }
            for s in snapshots
        ],
        "final_episode_reward": _num(np.mean([r["rollout/episode_reward"] for r in tail])) if tail else None,
        "final_episode_cost": _num(np.mean([r["rollout/episode_cost"] for r in tail])) if tail else None,
    }
    # Snapshots first, then the json that describes them: a write interrupted between the two leaves a member whose
    # snapshot count disagrees with its json, which read_member refuses to continue.
    atomic_write_bytes(directory / f"{name}.msgpack", blob)
    atomic_write_text(directory / f"{name}.json", json.dumps(meta, indent=2) + "\n")
    return directory / f"{name}.msgpack"


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else round(float(sum(values)), 1)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PreviousMember:
    """A trained member that a new run continues: its snapshots, steps so far and the runs that made it."""

    snapshots: tuple[dict[str, Any], ...]
    steps: int
    segments: list[dict[str, Any]]
    config: dict[str, Any]


def read_member(directory: Path, name: str) -> PreviousMember:
    """Read member ``name`` of a task's zoo directory, to continue it."""
    from flax import serialization

    meta_path, blob_path = directory / f"{name}.json", directory / f"{name}.msgpack"
    if not meta_path.exists() or not blob_path.exists():
        raise ZooError(f"cannot continue {name}: {directory} has no such member (train it first, without --continue)")
    meta = json.loads(meta_path.read_text())
    state = serialization.msgpack_restore(blob_path.read_bytes())
    snapshots = tuple(state[str(i)] for i in range(len(state)))
    if len(snapshots) != len(meta["snapshots"]):
        raise ZooError(
            f"{blob_path} holds {len(snapshots)} snapshots but {meta_path} describes "
            f"{len(meta['snapshots'])}: the member is half-written; restore it or retrain it"
        )
    cfg = meta["config"]
    segments = meta.get("segments") or [
        {
            "steps": cfg["total_steps"],
            "seed": cfg["seed"],
            "seconds": meta["seconds"],
            "cpu_seconds": meta.get("cpu_seconds"),
            "snapshots": len(snapshots),
        }
    ]
    return PreviousMember(snapshots, int(snapshots[-1]["step"]), segments, cfg)


def _num(x: Any) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, 3)


def write_manifest(directory: Path, task_id: str) -> Path:
    """(Re)build ``manifest.json`` from the member sidecars present, so separately trained members join the zoo."""
    members = []
    for meta_path in sorted(directory.glob("ppolag-*.json")):
        meta = json.loads(meta_path.read_text())
        members.append(
            {
                k: meta.get(k)
                for k in (
                    "name",
                    "algorithm",
                    "cost_limit",
                    "seconds",
                    "cpu_seconds",
                    "final_episode_reward",
                    "final_episode_cost",
                )
            }
            | {"snapshots": len(meta["snapshots"])}
        )
    members.sort(key=lambda m: m["cost_limit"])
    manifest = {"zoo_version": ZOO_VERSION, "task": task_id, "members": members}
    return atomic_write_text(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def load_zoo(task_id: str, directory: str | os.PathLike[str] | None = None) -> list[Member]:
    """The members of ``task_id``'s zoo (from the package unless ``directory``, a zoo root, is given)."""
    from flax import serialization

    spec = get_task(task_id)
    root = Path(directory) if directory is not None else zoo_dir()
    manifest_path = root / spec.task_id / "manifest.json"
    if not manifest_path.exists():
        raise ZooError(
            f"no behaviour zoo for {spec.task_id} in {root}: train one with `o3srl data train-behaviour {spec.task_id}`"
        )
    manifest = json.loads(manifest_path.read_text())
    members = []
    for entry in manifest["members"]:
        blob = (root / spec.task_id / f"{entry['name']}.msgpack").read_bytes()
        state = serialization.msgpack_restore(blob)
        snaps = tuple(state[str(i)] for i in range(len(state)))
        members.append(Member(spec.task_id, entry["name"], float(entry["cost_limit"]), snaps))
    if not members:
        raise ZooError(f"the behaviour zoo of {spec.task_id} in {root} has no members")
    return members


# ---------------------------------------------------------------------------------------------------- training
# Iterations of value-only training when a member continues from snapshots without value heads (members trained
# before snapshots kept them): 10 × 2000 steps let the fresh value heads fit before the policy moves again.
VALUE_WARMUP_ITERATIONS = 10


def _continued_config(previous: PreviousMember, steps: int, start: dict[str, Any] | None = None, **changes: Any) -> Any:
    """The config of a run continuing ``previous`` from ``start`` (default: its newest snapshot): its
    hyperparameters, ``steps`` more steps, a fresh seed (``changes`` override fields, e.g. the cost limit of a
    member started from another); a value-only warm-up first when ``start`` carries no value heads."""
    from o3srl.behaviour.ppo_lag import PPOLagConfig

    fields: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in previous.config.items()
        if k in PPOLagConfig.__dataclass_fields__
    }
    # A new seed per segment: the same seed would replay the environments' reset seeds of the first run.
    fields.update(
        total_steps=steps,
        seed=int(previous.segments[0]["seed"]) + 7919 * len(previous.segments),
        value_warmup_iterations=0,
    )
    fields.update(changes)
    config = PPOLagConfig(**fields)
    if "resume" not in (start if start is not None else previous.snapshots[-1]):
        from dataclasses import replace

        config = replace(config, value_warmup_iterations=min(VALUE_WARMUP_ITERATIONS, config.iterations // 2))
    return config


def _train_member(job: tuple[Any, ...]) -> dict[str, Any]:
    """Train (or continue) and save one member (runs in a worker process, single-threaded).

    ``job`` = (task, cost limit, steps, seed, zoo root[, continue[, init-from member[, its task's zoo directory
    (another task's), input dimensions to zero]]]).
    """
    from o3srl.behaviour.ppo_lag import PPOLagConfig, train_ppo_lag, widen_snapshot

    task_id, cost_limit, steps, seed, out, *rest = job
    cont = bool(rest[0]) if rest else False
    init_from = rest[1] if len(rest) > 1 else None
    directory = Path(out) / task_id
    source_dir = Path(rest[2]) if len(rest) > 2 and rest[2] else directory
    zero_inputs = tuple(int(i) for i in rest[3]) if len(rest) > 3 else ()
    previous = read_member(directory, member_name(cost_limit)) if cont else None
    start, origin = None, None
    if previous is not None:
        config = _continued_config(previous, steps)
        start = previous.snapshots[-1]
    elif init_from is not None:
        # Start from another member, as DSRL swept the cost limit of one run: its policy, value heads and statistics,
        # this member's own κ and seed, and the multiplier back at 0 for the new limit to set.
        source = read_member(source_dir, init_from)
        start = source.snapshots[-1]
        origin = {"member": init_from, "steps": source.steps}
        if source_dir != directory:
            # Another task's member (the same robot): its policy widened to this task's observation; fresh value
            # heads, statistics and multiplier, the value heads fitted first.
            start = widen_snapshot(start, get_task(task_id).obs_dim, zero_inputs)
            origin = {"task": source_dir.name} | origin | {"zeroed_inputs": list(zero_inputs)}
        elif "resume" in start:
            start = dict(
                start, resume=dict(start["resume"], **{"lambda": np.asarray(0.0), "lambda_integral": np.asarray(0.0)})
            )
        config = _continued_config(source, steps, start=start, task_id=task_id, cost_limit=cost_limit, seed=seed)
    else:
        config = PPOLagConfig(task_id, cost_limit=cost_limit, total_steps=steps, seed=seed)
    every = max(1, config.iterations // 10)
    offset = previous.steps if previous is not None else 0

    def log(row: dict[str, float]) -> None:
        # A line every tenth of the run, so a background log shows the learning curve of each member.
        if int(row["step"]) // (config.num_envs * config.rollout_len) % every == 0:
            print(
                f"  {task_id} {member_name(cost_limit)} step {int(row['step']) + offset}: "
                f"reward {row.get('rollout/episode_reward', float('nan')):.1f} "
                f"cost {row.get('rollout/episode_cost', float('nan')):.1f} λ {row['lagrange/lambda']:.2f} "
                f"({row['time/seconds']:.0f}s)",
                flush=True,
            )

    result = train_ppo_lag(config, log=log, start=start)
    save_member(directory, result, previous, origin)
    tail = [r for r in result.history[-5:] if "rollout/episode_reward" in r]
    return {
        "task": task_id,
        "member": member_name(cost_limit),
        "seconds": round(result.seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "reward": float(np.mean([r["rollout/episode_reward"] for r in tail])) if tail else float("nan"),
        "cost": float(np.mean([r["rollout/episode_cost"] for r in tail])) if tail else float("nan"),
    }


def train_zoo(
    tasks: Sequence[str],
    *,
    cost_limits: Sequence[float] | None = None,
    steps: int | None = None,
    workers: int = 1,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    continue_training: bool = False,
    init_from: str | None = None,
    init_zero_inputs: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """Train every member of every task in ``tasks`` and write the zoo (members + manifests) under ``out``.

    ``continue_training``: each member continues from its current state in ``out`` for ``steps`` more steps (with
    the hyperparameters it was trained with) instead of starting afresh; its new snapshots join the old ones.
    ``init_from``: every member starts from that member of the task's zoo in ``out`` (its newest snapshot; the
    multiplier restarts at 0) instead of a fresh initialisation. ``TASK/MEMBER`` names a member of another task
    with the same robot (from ``out`` if it is there, else from the package's zoo): its policy, widened to this
    task's observation by :func:`o3srl.behaviour.ppo_lag.widen_snapshot` with ``init_zero_inputs``; value heads,
    statistics and multiplier start afresh.

    Members run in ``workers`` spawned processes, each pinned to one XLA thread (several threads per process only
    contend when every core already runs a member); the longest jobs start first so the wall time is close to
    max(longest member, total work / workers).
    """
    from o3srl.envs.make import require_simulator

    specs = [get_task(t) for t in tasks]
    for spec in specs:
        require_simulator(spec)
    root = Path(out) if out is not None else zoo_dir()
    jobs = []
    for spec in specs:
        limits = tuple(cost_limits) if cost_limits else default_cost_limits(spec)
        n = steps if steps is not None else DEFAULT_STEPS[spec.task_id]
        # Each member gets its own seed: with one shared seed, members whose cost stays under both limits (λ = 0)
        # would play identical runs until their multipliers diverge.
        # Fail before any training starts, not in a worker after an hour.
        if continue_training:
            for k in limits:
                read_member(root / spec.task_id, member_name(float(k)))
        source_dir, source_member = _init_source(spec, root, init_from, init_zero_inputs)
        if source_dir == root / spec.task_id and source_member in {member_name(float(k)) for k in limits}:
            raise O3SRLError(
                f"--init-from {init_from} names a member being trained: use --continue to train a member further"
            )
        init = (source_member, str(source_dir) if source_dir else None, tuple(int(i) for i in init_zero_inputs))
        jobs += [
            (spec.task_id, float(k), int(n), seed + int(round(10 * k)), str(root), continue_training, *init)
            for k in limits
        ]
    jobs.sort(key=lambda j: -j[2] * _step_cost(get_task(j[0])))
    t0 = time.time()
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for job in jobs:
            results.append(_train_member(job))
            print(_line(results[-1], t0), flush=True)
    else:
        os.environ["XLA_FLAGS"] = SINGLE_THREAD_XLA_FLAGS  # inherited by the spawned workers before they import jax
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), maxtasksperchild=1) as pool:
            for res in pool.imap_unordered(_train_member, jobs):
                results.append(res)
                print(_line(res, t0), flush=True)
    for spec in specs:
        write_manifest(root / spec.task_id, spec.task_id)
    return results


def _init_source(
    spec: TaskSpec, root: Path, init_from: str | None, zero_inputs: Sequence[int]
) -> tuple[Path | None, str | None]:
    """(zoo directory, member) that ``--init-from`` names for ``spec``'s members, checked before any training."""
    if zero_inputs and (init_from is None or "/" not in init_from):
        raise O3SRLError(
            "--init-zero-inputs goes with --init-from TASK/MEMBER (a member of another task); a member "
            "of the same task starts with all its inputs"
        )
    if init_from is None:
        return None, None
    if "/" not in init_from:
        read_member(root / spec.task_id, init_from)
        return root / spec.task_id, init_from
    task, member = init_from.split("/", 1)
    source = get_task(task)
    if source.task_id == spec.task_id:
        raise O3SRLError(f"--init-from {init_from}: name a member of the same task without its task ({member})")
    if (source.simulator, source.agent, source.act_dim) != (
        spec.simulator,
        spec.agent,
        spec.act_dim,
    ) or source.obs_dim > spec.obs_dim:
        raise O3SRLError(
            f"--init-from {init_from}: {source.task_id} ({source.agent}, obs {source.obs_dim}, act "
            f"{source.act_dim}) cannot start {spec.task_id} ({spec.agent}, obs {spec.obs_dim}, act "
            f"{spec.act_dim}): the robot must be the same and its observation a prefix of this task's"
        )
    directory = root / source.task_id
    if not (directory / f"{member}.json").exists():
        directory = zoo_dir() / source.task_id
    read_member(directory, member)
    bad = [i for i in zero_inputs if not 0 <= int(i) < source.obs_dim]
    if bad:
        raise O3SRLError(
            f"--init-zero-inputs {bad}: {source.task_id}'s observation has dimensions 0..{source.obs_dim - 1}"
        )
    return directory, member


def _step_cost(spec: TaskSpec) -> float:
    return RELATIVE_STEP_COST.get((spec.simulator, spec.agent), 1.0)


def _line(res: dict[str, Any], t0: float) -> str:
    return (
        f"[{time.time() - t0:7.1f}s] {res['task']} {res['member']}: {res['seconds']:.0f}s "
        f"({res.get('cpu_seconds', float('nan')):.0f}s CPU), "
        f"final episode reward {res['reward']:.1f}, cost {res['cost']:.1f}"
    )


def cli_train_behaviour(
    tasks: tuple[str, ...],
    /,
    cost_limits: tuple[float, ...] = (),
    steps: int | None = None,
    workers: int = 1,
    seed: int = 0,
    out: str | None = None,
    continue_: Annotated[bool, tyro.conf.arg(name="continue")] = False,
    init_from: str | None = None,
    init_zero_inputs: tuple[int, ...] = (),
) -> int:
    """Retrain the behaviour-policy zoo of one or more tasks (``all`` for the 8 Bullet tasks).

    Long training can be split over several sittings: ``--continue --steps N`` trains each member N more steps from
    where it stopped (its value heads, statistics and multiplier included) and appends the new snapshots to it.

    The Safety-Gymnasium velocity tasks (``Offline*VelocityGymnasium-v1``) need the optional simulator
    (``o3srl extras install safety-gymnasium``); of them, only HopperVelocity has a committed zoo.

    Args:
        tasks: task ids, e.g. OfflineBallRun-v0 OfflineCarRun-v0, or ``all``.
        cost_limits: the members' cost limits (default: 5, max cost / 4, max cost / 2, max cost).
        steps: environment steps per member (default: per task, 300k–500k).
        workers: members trained side by side, one single-threaded process each.
        seed: base training seed (member with cost limit κ uses seed + round(10 κ)).
        out: zoo root to write (default: the package's ``o3srl/assets/zoo``).
        continue_: continue the members already in the zoo root for ``--steps`` more steps instead of retraining.
        init_from: start every member from this member of the task's zoo (e.g. ``ppolag-k5``) instead of from
            scratch, as DSRL swept the cost limit along one run; the multiplier restarts at 0. ``TASK/MEMBER``
            (e.g. ``OfflineAntRun-v0/ppolag-k37.5`` for AntCircle) starts from a member of another task with the
            same robot: the policy walks from the start and only the new task's behaviour is left to learn.
        init_zero_inputs: with ``--init-from TASK/MEMBER``, observation dimensions whose input weights start at zero
            because their meaning changes between the tasks (``0 1``: the x, y position).
    """
    from o3srl.validation import COUNT, NON_NEGATIVE, SEED, check_number

    for kappa in cost_limits:
        check_number("--cost-limits (each)", kappa, NON_NEGATIVE)
    if steps is not None:
        check_number("--steps", steps, COUNT)
    check_number("--workers", workers, COUNT)
    check_number("--seed", seed, SEED)
    names = list(BULLET_TASKS) if list(tasks) == ["all"] else list(tasks)
    if not names:
        raise O3SRLError("name at least one task (or `all`)")
    t0 = time.time()
    if continue_ and steps is None:
        raise O3SRLError("--continue needs --steps: how many more steps each member trains")
    if continue_ and init_from is not None:
        raise O3SRLError(
            "--continue and --init-from exclude each other: a member either continues itself or starts from another"
        )
    train_zoo(
        names,
        cost_limits=cost_limits or None,
        steps=steps,
        workers=workers,
        seed=seed,
        out=out,
        continue_training=continue_,
        init_from=init_from,
        init_zero_inputs=init_zero_inputs,
    )
    print(f"zoo written under {Path(out) if out else zoo_dir()} in {time.time() - t0:.0f}s", flush=True)
    return 0


__all__ = [
    "DEFAULT_STEPS",
    "Member",
    "PreviousMember",
    "ZooError",
    "cli_train_behaviour",
    "default_cost_limits",
    "load_zoo",
    "member_name",
    "read_member",
    "save_member",
    "train_zoo",
    "write_manifest",
    "zoo_dir",
]
