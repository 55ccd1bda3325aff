"""The built-in default dataset: DSRL-like ``OfflineBallRun-v0`` data made locally, deterministically.

DSRL's files cannot be downloaded everywhere, so the default task's data is generated on first use and cached
(``$O3SRL_DATA_DIR`` or ``~/.cache/o3srl/datasets``). Behaviour: a family of scripted Ball controllers — a PD
controller that runs at a "fast" speed (above the 2.5 velocity limit: cost 1 per step) for the first k steps and at
a "slow", safe speed afterwards, tracking a lateral offset that is usually inside the ±2 safety boundary and
sometimes outside it — with Gaussian action noise. Varying k, the speeds, the offset and the noise spreads episodes
over the (cost, reward) plane from cost 0 to the task's max cost, with the best reward rising with cost, as in DSRL's
figure. Episodes above the max cost (80) are dropped and a (cost, reward) grid filter thins dense cells, as DSRL does.

The file is DSRL's exact layout; a JSON sidecar beside it records the generator version, seed, counts and sha256.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from o3srl.data.dataset import KEYS, OfflineDataset, data_dir
from o3srl.io import atomic_write_text, file_sha256

GENERATOR_VERSION = "scripted-ballrun-1"
DEFAULT_SEED = 0


def grid_cells(
    costs: np.ndarray, rewards: np.ndarray, *, cost_bins: int, reward_bins: int, max_cost: float
) -> tuple[np.ndarray, np.ndarray]:
    """The (cost, reward) grid of DSRL's filter: indices of the episodes with cost ≤ ``max_cost`` and, for each, its
    cell in a ``cost_bins × reward_bins`` grid over [0, max_cost] × [min reward, max reward] of those episodes."""
    ok = np.flatnonzero(costs <= max_cost)
    if ok.size == 0:
        return ok, ok
    r = rewards[ok]
    lo, hi = float(r.min()), float(r.max())
    ci = np.minimum((costs[ok] / max(max_cost, 1e-12) * cost_bins).astype(int), cost_bins - 1)
    ri = np.minimum(((r - lo) / max(hi - lo, 1e-12) * reward_bins).astype(int), reward_bins - 1)
    return ok, ci * reward_bins + ri


def grid_filter(
    costs: np.ndarray,
    rewards: np.ndarray,
    *,
    cost_bins: int,
    reward_bins: int,
    per_cell: int,
    max_cost: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of the episodes kept: cost ≤ ``max_cost``, then at most ``per_cell`` per cell of a
    ``cost_bins × reward_bins`` grid over [0, max_cost] × [min reward, max reward] (a random subset of a full cell),
    so dense regions of the reward–cost plane are thinned and sparse ones kept whole. Returned in ascending order."""
    ok, cell = grid_cells(costs, rewards, cost_bins=cost_bins, reward_bins=reward_bins, max_cost=max_cost)
    if ok.size == 0:
        return ok
    keep: list[np.ndarray] = []
    for c in np.unique(cell):
        members = ok[cell == c]
        if members.size > per_cell:
            members = rng.choice(members, per_cell, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep))


def per_cell_for_target(
    costs: np.ndarray, rewards: np.ndarray, *, target: int, cost_bins: int, reward_bins: int, max_cost: float
) -> int:
    """The smallest per-cell cap with which :func:`grid_filter` keeps at least ``target`` episodes (or all of them
    when fewer are eligible): the cap that thins the densest cells most while still reaching the wanted size."""
    _, cell = grid_cells(costs, rewards, cost_bins=cost_bins, reward_bins=reward_bins, max_cost=max_cost)
    if cell.size == 0:
        return 1
    counts = np.bincount(cell)
    counts = counts[counts > 0]
    for cap in range(1, int(counts.max()) + 1):
        if np.minimum(counts, cap).sum() >= target:
            return cap
    return int(counts.max())


def _controller_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    outside = rng.uniform(size=n) < 0.2
    always_slow = rng.uniform(size=n) < 0.3
    return {
        "fast_speed": rng.uniform(2.6, 9.0, n),
        "slow_speed": rng.uniform(0.5, 2.4, n),
        "fast_steps": np.where(always_slow, 0, rng.integers(0, 90, n)),
        "y_target": np.where(outside, rng.uniform(-3.5, 3.5, n), rng.uniform(-1.5, 1.5, n)),
        "noise": rng.uniform(0.05, 0.4, n),
    }


def collect_ballrun(num_episodes: int, seed: int, num_envs: int = 8) -> dict[str, np.ndarray]:
    """Roll out ``num_episodes`` scripted episodes (episode i reset with seed ``seed + i``); DSRL-format arrays."""
    from o3srl.envs import make_env

    rng = np.random.default_rng(seed)
    params = _controller_params(rng, num_episodes)
    noise_rng = np.random.default_rng([seed, 1])
    env = make_env("OfflineBallRun-v0")
    columns: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    try:
        for i in range(num_episodes):
            obs, _ = env.reset(seed=seed + i)
            t, done = 0, False
            ep: dict[str, list] = {k: [] for k in KEYS}
            while not done:
                # Ball observation: [x, y, 0.2 vx, 0.2 vy, 0.1 ω (3)]; action: force in x, y in [−1, 1].
                vx, vy, y = obs[2] / 0.2, obs[3] / 0.2, obs[1]
                speed = params["fast_speed"][i] if t < params["fast_steps"][i] else params["slow_speed"][i]
                action = np.array([speed - vx, -0.8 * (y - params["y_target"][i]) - 0.5 * vy])
                action = action + params["noise"][i] * noise_rng.normal(size=2)
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
                next_obs, reward, terminated, truncated, info = env.step(action)
                for key, value in zip(KEYS, (obs, next_obs, action, reward, info["cost"], terminated, truncated)):
                    ep[key].append(value)
                obs, t, done = next_obs, t + 1, terminated or truncated
            for key in KEYS:
                columns[key].append(np.asarray(ep[key]))
    finally:
        env.close()
    return {k: np.concatenate(v) for k, v in columns.items()}


def make_default_dataset(path: Path, *, episodes: int = 1_600, seed: int = DEFAULT_SEED, per_cell: int = 12) -> Path:
    """Generate the default BallRun dataset into ``path`` (atomic) with its JSON sidecar."""
    from o3srl.envs.registry import get_task

    spec = get_task("OfflineBallRun-v0")
    t0 = time.time()
    raw = OfflineDataset(collect_ballrun(episodes, seed), action_low=-1.0, action_high=1.0)
    ep = raw.episodes
    keep = grid_filter(
        ep.cost_return,
        ep.reward_return,
        cost_bins=16,
        reward_bins=16,
        per_cell=per_cell,
        max_cost=spec.max_cost,
        rng=np.random.default_rng([seed, 2]),
    )
    index = np.concatenate([np.arange(ep.start[i], ep.start[i] + ep.length[i]) for i in keep])
    dataset = OfflineDataset({k: v[index] for k, v in raw.arrays.items()}, action_low=-1.0, action_high=1.0)
    dataset.save(path)
    sha = file_sha256(path)
    kept = dataset.episodes
    sidecar = {
        "task": spec.task_id,
        "generator": GENERATOR_VERSION,
        "behaviour": "scripted PD controllers (fast-then-slow speed schedule, lateral offset, Gaussian action noise)",
        "seed": seed,
        "episodes_collected": len(ep),
        "episodes_kept": len(kept),
        "transitions": len(dataset),
        "grid_filter": {"cost_bins": 16, "reward_bins": 16, "per_cell": per_cell, "max_cost": spec.max_cost},
        "reward_return_range": [float(kept.reward_return.min()), float(kept.reward_return.max())],
        "cost_return_range": [float(kept.cost_return.min()), float(kept.cost_return.max())],
        "sha256": sha,
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(Path(str(path) + ".json"), json.dumps(sidecar, indent=2) + "\n")
    return Path(path)


def default_dataset(directory: str | os.PathLike[str] | None = None) -> Path:
    """Path of the built-in ``OfflineBallRun-v0`` dataset, generating it (about half a minute) if it is not cached."""
    directory = Path(directory) if directory is not None else data_dir()
    path = directory / f"OfflineBallRun-v0-{GENERATOR_VERSION}-s{DEFAULT_SEED}.hdf5"
    if not path.exists():
        from o3srl.io import ensure_writable_dir

        ensure_writable_dir(directory, "the data directory ($O3SRL_DATA_DIR or ~/.cache/o3srl/datasets)")
        print(f"generating the built-in OfflineBallRun-v0 dataset into {path} (once; about half a minute)", flush=True)
        make_default_dataset(path)
    return path
