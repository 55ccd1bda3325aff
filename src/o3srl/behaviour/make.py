"""``o3srl data make``: a DSRL-like dataset for one task, collected from its behaviour zoo.

DSRL recorded every episode of a long Lagrangian training run and thinned them with a grid filter on the
(cost return, reward return) plane. Here each episode i is played by one (member, snapshot) of the task's zoo, drawn
at random, with Gaussian action noise of a per-episode scale σ_i ~ U(0, noise_max), and in half of the episodes a
second random snapshot takes over at a random step: the snapshots spread episodes along training (low to high
reward) and across cost limits (safe to unsafe), the switches fill the plane between them, and the noise spreads
episodes around each policy. Episodes above the task's max cost are dropped and the grid filter thins dense cells
down to about DSRL's trajectory count, as DSRL did.

Reproducible and resumable: everything about episode i (policy, σ_i, action noise, reset seed) is drawn from
``SeedSequence([seed, i])``, each chunk of episodes is played on a fresh environment and saved atomically under
``<out>.partial/``, so a rerun continues from the saved chunks and any number of workers gives the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from o3srl.behaviour.scripted import grid_filter, per_cell_for_target
from o3srl.data.dataset import KEYS, Episodes, OfflineDataset, data_dir
from o3srl.envs.registry import TaskSpec, get_task
from o3srl.errors import O3SRLError
from o3srl.io import atomic_write_bytes, atomic_write_text, file_sha256

GENERATOR_VERSION = "zoo-ppolag-1"
STEP_BUDGET = 600_000
"""Default collection size in environment steps: about five minutes on two cores for the slowest task."""


class MakeError(O3SRLError, RuntimeError):
    """A dataset cannot be made as asked (stale partial directory, empty result)."""


@dataclass(frozen=True)
class MakeConfig:
    """What ``o3srl data make`` collects (fields that change the data are recorded in the partial directory)."""

    task: str
    episodes: int | None = None
    """Episodes collected before filtering (default: 2 × DSRL's count, capped at ~600k environment steps)."""
    seed: int = 0
    target: int | None = None
    """Episodes kept by the grid filter (default: DSRL's trajectory count for the task)."""
    noise_max: float = 0.6
    """Per-episode action-noise scale σ_i ~ U(0, noise_max) (actions live in [−1, 1])."""
    switch_prob: float = 0.5
    """Probability that a second zoo policy takes over at a random step of the episode."""
    cost_bins: int = 20
    reward_bins: int = 20
    chunk_episodes: int = 25


def default_episodes(spec: TaskSpec) -> int:
    return int(min(2 * spec.dsrl_num_trajectories, max(200, STEP_BUDGET // spec.max_episode_steps)))


# ---------------------------------------------------------------------------------------------------- collection
@dataclass(frozen=True)
class EpisodePlan:
    member: int
    snapshot: int
    noise: float
    reset_seed: int
    second_member: int
    second_snapshot: int
    switch_step: int
    """Step at which the second policy takes over (the episode length when there is no switch)."""


def plan_episode(
    policies: Sequence[tuple[int, int]], seed: int, index: int, noise_max: float, horizon: int, switch_prob: float
) -> EpisodePlan:
    """Draw episode ``index``'s policies, switch step, noise scale and reset seed from ``SeedSequence([seed, index])``
    alone. With probability ``switch_prob`` a second (member, snapshot) takes over at a uniform step: the episode's
    reward and cost then fall between those of the two policies, filling the plane between the members' clusters
    as the gradual limit sweep of DSRL's training run did."""
    rng = np.random.default_rng([seed, index, 0])
    member, snapshot = policies[int(rng.integers(len(policies)))]
    noise = float(rng.uniform(0.0, noise_max))
    reset_seed = int(rng.integers(0, 2**31 - 1))
    second, second_snap = policies[int(rng.integers(len(policies)))]
    switch = int(rng.integers(1, horizon)) if rng.uniform() < switch_prob else horizon
    return EpisodePlan(member, snapshot, noise, reset_seed, second, second_snap, switch)


def _policies(members: Sequence[Any]) -> list[tuple[int, int]]:
    return [(m, s) for m, member in enumerate(members) for s in range(len(member.snapshots))]


def collect_episodes(
    task_id: str, members: Sequence[Any], seed: int, indices: range, noise_max: float, switch_prob: float = 0.5
) -> dict[str, np.ndarray]:
    """Play episodes ``indices`` on one fresh environment; DSRL arrays plus per-episode ``member``/``snapshot``/
    ``noise`` columns (prefixed ``episode_``)."""
    from o3srl.behaviour.ppo_lag import snapshot_action
    from o3srl.envs import make_env

    policies = _policies(members)
    horizon = get_task(task_id).max_episode_steps
    env = make_env(task_id)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    meta: dict[str, list[float]] = {
        "episode_member": [],
        "episode_snapshot": [],
        "episode_noise": [],
        "episode_switch": [],
    }
    try:
        for i in indices:
            plan = plan_episode(policies, seed, i, noise_max, horizon, switch_prob)
            first = members[plan.member].snapshots[plan.snapshot]
            second = members[plan.second_member].snapshots[plan.second_snapshot]
            noise_rng = np.random.default_rng([seed, i, 1])
            obs, _ = env.reset(seed=plan.reset_seed)
            ep: dict[str, list[Any]] = {k: [] for k in KEYS}
            done, t = False, 0
            while not done:
                obs = np.asarray(obs, np.float64).reshape(-1)
                snap = first if t < plan.switch_step else second
                action = snapshot_action(snap, obs[None])[0] + plan.noise * noise_rng.normal(
                    size=env.action_space.shape
                )
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
                nxt, reward, terminated, truncated, info = env.step(action)
                for key, value in zip(
                    KEYS,
                    (obs, np.asarray(nxt, np.float64).reshape(-1), action, reward, info["cost"], terminated, truncated),
                ):
                    ep[key].append(value)
                obs, done, t = nxt, bool(terminated or truncated), t + 1
            for key in KEYS:
                cols[key].append(np.asarray(ep[key]))
            meta["episode_member"].append(plan.member)
            meta["episode_snapshot"].append(plan.snapshot)
            meta["episode_noise"].append(plan.noise)
            meta["episode_switch"].append(plan.switch_step)
    finally:
        env.close()
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out = {k: (v.astype(np.bool_) if k in ("terminals", "timeouts") else v.astype(np.float32)) for k, v in out.items()}
    out.update({k: np.asarray(v) for k, v in meta.items()})
    return out


_WORKER_ZOO: dict[tuple[str, str | None], list[Any]] = {}


def _collect_chunk(job: tuple[str, str | None, int, int, int, float, float, str]) -> int:
    """Worker: play one chunk and save it atomically; returns its number of episodes."""
    from o3srl.behaviour.zoo import load_zoo

    task_id, zoo, seed, start, stop, noise_max, switch_prob, path = job
    if (task_id, zoo) not in _WORKER_ZOO:
        _WORKER_ZOO[(task_id, zoo)] = load_zoo(task_id, zoo)
    arrays = collect_episodes(task_id, _WORKER_ZOO[(task_id, zoo)], seed, range(start, stop), noise_max, switch_prob)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags
    atomic_write_bytes(path, buf.getvalue())
    return stop - start


def _zoo_fingerprint(task_id: str, zoo: str | None) -> tuple[str, list[dict[str, Any]]]:
    from o3srl.behaviour.zoo import zoo_dir

    root = (Path(zoo) if zoo else zoo_dir()) / task_id
    manifest = json.loads((root / "manifest.json").read_text())
    h = hashlib.sha256()
    for entry in manifest["members"]:
        h.update((root / f"{entry['name']}.msgpack").read_bytes())
    return h.hexdigest(), manifest["members"]


def make_dataset(
    config: MakeConfig,
    out: str | os.PathLike[str] | None = None,
    *,
    workers: int = 1,
    zoo: str | None = None,
    progress: bool = True,
    max_chunks: int | None = None,
) -> Path | None:
    """Collect, filter and write the dataset with its JSON sidecar; returns the file, or ``None`` when
    ``max_chunks`` (for tests and time-boxed runs) stopped the collection early, leaving the partial directory."""
    from o3srl.behaviour.zoo import load_zoo
    from o3srl.envs.make import require_simulator
    from o3srl.io import ensure_writable_dir
    from o3srl.validation import COUNT, check_fields, check_number

    spec = get_task(config.task)
    check_fields(config)
    check_number("workers", workers, COUNT)
    require_simulator(spec)
    episodes = config.episodes if config.episodes is not None else default_episodes(spec)
    target = config.target if config.target is not None else spec.dsrl_num_trajectories
    if episodes < 1 or config.chunk_episodes < 1 or target < 1:
        raise MakeError("episodes, target and chunk_episodes must be at least 1")
    path = Path(out) if out is not None else data_dir() / f"{spec.task_id}.hdf5"
    if path.suffix.lower() not in (".hdf5", ".h5"):
        raise MakeError(f"output {path} must be a .hdf5 file (DSRL's format)")
    # Minutes of collection must not end in a directory that cannot take the file.
    ensure_writable_dir(path.absolute().parent, f"dataset output {path}")
    load_zoo(spec.task_id, zoo)  # fails early, naming the missing members
    zoo_sha, zoo_entries = _zoo_fingerprint(spec.task_id, zoo)
    t0 = time.time()
    partial = _partial_dir(path, config, episodes, target, zoo_sha)

    chunk_path, jobs, done_episodes = _chunk_jobs(spec, config, zoo, episodes, partial)
    resumed = len(chunk_path) - len(jobs)
    if max_chunks is not None:
        jobs = jobs[:max_chunks]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=episodes, initial=done_episodes, unit="episode", desc=f"collect {spec.task_id}")
    try:
        _collect_chunks(jobs, workers, bar)
    finally:
        if bar is not None:
            bar.close()
    if not all(p.exists() for p in chunk_path):
        return None
    collect_seconds = time.time() - t0

    arrays = _merged_chunks(chunk_path)
    raw = OfflineDataset({k: arrays[k] for k in KEYS}, action_low=-1.0, action_high=1.0)
    ep = raw.episodes
    keep, per_cell = _grid_filtered(ep, config, spec, target)
    if keep.size == 0:
        raise MakeError(f"no episode of {spec.task_id} has cost ≤ {spec.max_cost}; the zoo is too unsafe")
    index = np.concatenate([np.arange(ep.start[i], ep.start[i] + ep.length[i]) for i in keep])
    dataset = OfflineDataset({k: v[index] for k, v in raw.arrays.items()}, action_low=-1.0, action_high=1.0)
    dataset.save(path)
    sidecar = _sidecar(
        spec,
        config,
        path,
        dataset,
        arrays,
        ep,
        keep,
        per_cell=per_cell,
        target=target,
        zoo_entries=zoo_entries,
        zoo_sha=zoo_sha,
        resumed=resumed,
        workers=workers,
        t0=t0,
        collect_seconds=collect_seconds,
        episodes=episodes,
    )
    atomic_write_text(Path(str(path) + ".json"), json.dumps(sidecar, indent=2) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    return path


def _chunk_jobs(
    spec: TaskSpec, config: MakeConfig, zoo: str | None, episodes: int, partial: Path
) -> tuple[list[Path], list[tuple[Any, ...]], int]:
    """Every chunk's file in ``partial``, the jobs (:func:`_collect_chunk`) of the chunks not collected yet, and
    how many episodes the collected ones hold."""
    starts = list(range(0, episodes, config.chunk_episodes))
    chunk_path = [partial / f"chunk-{c:05d}.npz" for c in range(len(starts))]
    jobs = [
        (
            spec.task_id,
            zoo,
            config.seed,
            s,
            min(s + config.chunk_episodes, episodes),
            config.noise_max,
            config.switch_prob,
            str(chunk_path[c]),
        )
        for c, s in enumerate(starts)
        if not chunk_path[c].exists()
    ]
    done_episodes = sum(
        min(s + config.chunk_episodes, episodes) - s for c, s in enumerate(starts) if chunk_path[c].exists()
    )
    return chunk_path, jobs, done_episodes


def _grid_filtered(ep: Episodes, config: MakeConfig, spec: TaskSpec, target: int) -> tuple[np.ndarray, int]:
    """The episodes DSRL's (cost, reward) grid filter keeps, aiming at ``target`` episodes, and the per-cell cap
    that aim gives."""
    per_cell = per_cell_for_target(
        ep.cost_return,
        ep.reward_return,
        target=target,
        cost_bins=config.cost_bins,
        reward_bins=config.reward_bins,
        max_cost=spec.max_cost,
    )
    keep = grid_filter(
        ep.cost_return,
        ep.reward_return,
        cost_bins=config.cost_bins,
        reward_bins=config.reward_bins,
        per_cell=per_cell,
        max_cost=spec.max_cost,
        rng=np.random.default_rng([config.seed, 2]),
    )
    return keep, per_cell


def _partial_dir(path: Path, config: MakeConfig, episodes: int, target: int, zoo_sha: str) -> Path:
    """The directory of a collection's chunks beside ``path``, with the plan they belong to; chunks of another plan
    (seed, size, zoo or version) there are an error."""
    partial = Path(str(path) + ".partial")
    plan = {
        "generator": GENERATOR_VERSION,
        "config": asdict(config) | {"episodes": episodes, "target": target},
        "zoo_sha256": zoo_sha,
    }
    plan_path = partial / "plan.json"
    if plan_path.exists():
        if json.loads(plan_path.read_text()) != plan:
            raise MakeError(
                f"{partial} holds chunks of a different collection (other seed, size, zoo or version); "
                "delete it or choose another --out"
            )
    else:
        atomic_write_text(plan_path, json.dumps(plan, indent=2) + "\n")
    return partial


def _collect_chunks(jobs: list[tuple[Any, ...]], workers: int, bar: Any) -> None:
    """Collect the chunks of ``jobs`` in this process or in ``workers`` single-threaded processes."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            n = _collect_chunk(job)
            if bar is not None:
                bar.update(n)
        return
    from o3srl.behaviour.zoo import SINGLE_THREAD_XLA_FLAGS

    os.environ.setdefault("XLA_FLAGS", SINGLE_THREAD_XLA_FLAGS)
    with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        for n in pool.imap_unordered(_collect_chunk, jobs):
            if bar is not None:
                bar.update(n)


def _merged_chunks(chunk_paths: list[Path]) -> dict[str, np.ndarray]:
    """The chunks' arrays, concatenated in episode order."""
    chunks = []
    for p in chunk_paths:
        with np.load(p) as f:
            chunks.append({k: f[k] for k in f.files})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _sidecar(
    spec: TaskSpec,
    config: MakeConfig,
    path: Path,
    dataset: OfflineDataset,
    arrays: dict[str, np.ndarray],
    ep: Episodes,
    keep: np.ndarray,
    *,
    per_cell: int,
    target: int,
    zoo_entries: list[dict[str, Any]],
    zoo_sha: str,
    resumed: int,
    workers: int,
    t0: float,
    collect_seconds: float,
    episodes: int,
) -> dict[str, Any]:
    """The JSON record written beside the dataset: how it was made, what was kept, its hash and times."""
    kept = dataset.episodes
    member_col = arrays["episode_member"]
    zoo_rows = []
    for m, entry in enumerate(zoo_entries):
        zoo_rows.append(
            {
                "name": entry["name"],
                "cost_limit": entry["cost_limit"],
                "snapshots": entry["snapshots"],
                "episodes_collected": int((member_col == m).sum()),
                "episodes_kept": int((member_col[keep] == m).sum()),
            }
        )
    sidecar = {
        "task": spec.task_id,
        "generator": GENERATOR_VERSION,
        "behaviour": "PPO-Lagrangian zoo snapshots with per-episode Gaussian action noise σ ~ U(0, noise_max); "
        "with probability switch_prob a second snapshot takes over at a uniform step",
        "seed": config.seed,
        "episode_seeds": "episode i: policy, noise and reset seed from numpy SeedSequence([seed, i, 0]); "
        "action noise from SeedSequence([seed, i, 1]); grid filter from SeedSequence([seed, 2])",
        "noise_max": config.noise_max,
        "switch_prob": config.switch_prob,
        "episodes_switched": int((arrays["episode_switch"] < spec.max_episode_steps).sum()),
        "episodes_collected": len(ep),
        "episodes_above_max_cost": int((ep.cost_return > spec.max_cost).sum()),
        "episodes_kept": len(kept),
        "target_episodes": target,
        "transitions": len(dataset),
        "grid_filter": {
            "cost_bins": config.cost_bins,
            "reward_bins": config.reward_bins,
            "per_cell": per_cell,
            "max_cost": spec.max_cost,
        },
        "zoo": zoo_rows,
        "zoo_sha256": zoo_sha,
        "reward_return_range": [float(kept.reward_return.min()), float(kept.reward_return.max())],
        "cost_return_range": [float(kept.cost_return.min()), float(kept.cost_return.max())],
        "sha256": file_sha256(path),
        "chunks_resumed": resumed,
        "workers": workers,
        "seconds": round(time.time() - t0, 1),
        "collect_seconds_this_run": round(collect_seconds, 1),
        "command": f"o3srl data make {spec.task_id} --episodes {episodes} --seed {config.seed}",
    }
    return sidecar


def cli_make(
    task: str,
    /,
    episodes: int | None = None,
    seed: int = 0,
    out: str | None = None,
    workers: int = 1,
    target: int | None = None,
    noise_max: float = 0.6,
    switch_prob: float = 0.5,
    zoo: str | None = None,
    quiet: bool = False,
) -> int:
    """Make a DSRL-format dataset for TASK from its behaviour zoo (resumable: rerun the same command to continue).

    Args:
        task: task id, e.g. OfflineCarCircle-v0.
        episodes: episodes collected before filtering (default: 2 × DSRL's count, capped at ~600k steps).
        seed: collection seed; the same seed gives the same file.
        out: output .hdf5 (default: the data directory's <task>.hdf5); a <out>.json sidecar is written beside it.
        workers: processes collecting chunks side by side.
        target: episodes kept by the grid filter (default: DSRL's trajectory count).
        noise_max: largest per-episode action-noise scale.
        switch_prob: probability that a second zoo policy takes over at a random step of an episode.
        zoo: zoo root to use instead of the one in the package.
        quiet: no progress bar.
    """
    config = MakeConfig(
        task=task, episodes=episodes, seed=seed, target=target, noise_max=noise_max, switch_prob=switch_prob
    )
    path = make_dataset(config, out, workers=workers, zoo=zoo, progress=not quiet)
    assert path is not None
    side = json.loads(Path(str(path) + ".json").read_text())
    print(
        f"{path}: {side['episodes_kept']} of {side['episodes_collected']} episodes kept, "
        f"{side['transitions']} transitions, {side['seconds']}s",
        flush=True,
    )
    return 0
