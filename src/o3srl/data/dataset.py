"""The offline dataset: DSRL's seven arrays, validated on construction, with episode views and IO.

A DSRL file is one flat gzip HDF5 file whose top level holds exactly these datasets::

    observations (N, obs) f32   next_observations (N, obs) f32   actions (N, act) f32
    rewards (N,) f32            costs (N,) f32                   terminals (N,) bool   timeouts (N,) bool

Episode boundaries are ``terminals | timeouts``; there is no per-episode index, so it is derived here.
``.npz`` files and in-memory dicts with the same keys are accepted too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from o3srl.errors import O3SRLError
from o3srl.io import publish

KEYS: tuple[str, ...] = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "costs",
    "terminals",
    "timeouts",
)
FLOAT_KEYS = ("observations", "next_observations", "actions", "rewards", "costs")
FLAG_KEYS = ("terminals", "timeouts")
MATRIX_KEYS = ("observations", "next_observations", "actions")


class DatasetError(O3SRLError, ValueError):
    """A dataset is malformed; the message names the key and what is wrong."""


@dataclass(frozen=True)
class Episodes:
    """Per-episode views of a dataset (all arrays have one entry per episode)."""

    start: np.ndarray
    """Index of the first transition of each episode."""
    length: np.ndarray
    reward_return: np.ndarray
    """Undiscounted sum of rewards."""
    cost_return: np.ndarray
    """Undiscounted sum of costs."""

    def __len__(self) -> int:
        return int(self.start.shape[0])


def _as_array(name: str, value: object) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 — numpy raises several types for ragged input
        raise DatasetError(f"{name}: cannot be read as an array ({exc})") from None


class OfflineDataset:
    """An offline safe-RL dataset in DSRL's layout.

    Construction validates everything a user's file can get wrong and raises :class:`DatasetError` naming the key.
    Float arrays are stored as float32 and flags as bool, as DSRL writes them.
    """

    def __init__(
        self,
        arrays: Mapping[str, object],
        *,
        action_low: np.ndarray | float | None = None,
        action_high: np.ndarray | float | None = None,
        source: str = "<memory>",
    ) -> None:
        self.source = source
        self.arrays: dict[str, np.ndarray] = self._validate(arrays, action_low, action_high)

    # ------------------------------------------------------------------ validation
    def _validate(
        self,
        arrays: Mapping[str, object],
        action_low: np.ndarray | float | None,
        action_high: np.ndarray | float | None,
    ) -> dict[str, np.ndarray]:
        where = f"dataset {self.source}"
        if not isinstance(arrays, Mapping):
            raise DatasetError(f"{where}: expected a mapping of arrays, got {type(arrays).__name__}")
        missing = [k for k in KEYS if k not in arrays]
        if missing:
            raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}; a DSRL dataset has {', '.join(KEYS)}")
        extra = sorted(set(arrays) - set(KEYS))
        if extra:
            raise DatasetError(
                f"{where}: unexpected key(s) {', '.join(extra)}; a DSRL dataset has exactly {', '.join(KEYS)}"
            )

        out: dict[str, np.ndarray] = {}
        for key in KEYS:
            a = _as_array(f"{where}: {key}", arrays[key])
            if key in FLAG_KEYS:
                if a.dtype != np.bool_:
                    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
                        raise DatasetError(f"{where}: {key} has dtype {a.dtype}; expected bool")
                    if a.size and not np.isin(a, (0, 1)).all():
                        raise DatasetError(f"{where}: {key} must hold only 0/1 (or bool) values")
                    a = a.astype(np.bool_)
            else:
                if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                    raise DatasetError(f"{where}: {key} has dtype {a.dtype}; expected a float array")
                a = a.astype(np.float32, copy=False)
            expected_ndim = 2 if key in MATRIX_KEYS else 1
            if a.ndim != expected_ndim:
                shape = "(N, dim)" if expected_ndim == 2 else "(N,)"
                raise DatasetError(f"{where}: {key} has shape {a.shape}; expected {shape}")
            out[key] = a

        n = out["observations"].shape[0]
        for key in KEYS:
            if out[key].shape[0] != n:
                raise DatasetError(
                    f"{where}: {key} has {out[key].shape[0]} rows but observations has {n}; all keys must agree"
                )
        if n == 0:
            raise DatasetError(f"{where}: the dataset is empty (0 transitions)")
        if out["next_observations"].shape[1] != out["observations"].shape[1]:
            raise DatasetError(
                f"{where}: next_observations has dim {out['next_observations'].shape[1]} "
                f"but observations has dim {out['observations'].shape[1]}"
            )
        if out["actions"].shape[1] == 0 or out["observations"].shape[1] == 0:
            raise DatasetError(f"{where}: observations and actions need at least one dimension")
        for key in FLOAT_KEYS:
            bad = ~np.isfinite(out[key])
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise DatasetError(f"{where}: {key} has {int(bad.sum())} non-finite value(s), first at row {row}")
        negative = out["costs"] < 0
        if negative.any():
            row = int(np.argmax(negative))
            raise DatasetError(
                f"{where}: costs has {int(negative.sum())} negative value(s), first at row {row} "
                f"({out['costs'][row]:g}); costs must be ≥ 0 (a cost is a count or measure of constraint violation, "
                "and the cost critics, the cost estimate and the safe frontier all assume so)"
            )
        done = out["terminals"] | out["timeouts"]
        if not done[-1]:
            raise DatasetError(
                f"{where}: the last episode has no boundary (terminals[-1] and timeouts[-1] are both false); "
                "truncate the dataset or mark its last transition as a timeout"
            )
        if action_low is not None or action_high is not None:
            act = out["actions"]
            low = np.broadcast_to(np.asarray(-np.inf if action_low is None else action_low, np.float32), act.shape[1:])
            high = np.broadcast_to(
                np.asarray(np.inf if action_high is None else action_high, np.float32), act.shape[1:]
            )
            tol = 1e-5
            outside = (act < low - tol) | (act > high + tol)
            if outside.any():
                row, col = (int(i) for i in np.argwhere(outside)[0])
                raise DatasetError(
                    f"{where}: actions has {int(outside.any(axis=1).sum())} row(s) outside the environment's bounds "
                    f"[{low[col]:g}, {high[col]:g}] (first: row {row}, dim {col}, value {act[row, col]:g})"
                )
        return out

    def check_episode_lengths(self, time_limit: int | None) -> None:
        """Raise :class:`DatasetError` when the episode boundaries look missing: an episode longer than the
        environment's ``time_limit``, or (no limit known) a dataset that is one single episode."""
        ep = self.episodes
        where = f"dataset {self.source}"
        hint = (
            "mark the last transition of every episode in timeouts (or terminals); episode boundaries are "
            "terminals | timeouts"
        )
        if time_limit is not None:
            long = np.flatnonzero(ep.length > time_limit)
            if long.size:
                i = int(long[0])
                raise DatasetError(
                    f"{where}: {long.size} episode(s) are longer than the environment's time limit of {time_limit} "
                    f"steps (first: episode {i}, rows {int(ep.start[i])}–{int(ep.start[i] + ep.length[i] - 1)}, "
                    f"{int(ep.length[i])} steps); {hint}"
                )
        elif len(ep) == 1 and len(self) > 1:
            raise DatasetError(
                f"{where}: all {len(self)} transitions form one single episode (no boundary but the last row); {hint}"
            )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.arrays["observations"].shape[0])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def obs_dim(self) -> int:
        return int(self.arrays["observations"].shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.arrays["actions"].shape[1])

    @cached_property
    def episodes(self) -> Episodes:
        done = self.arrays["terminals"] | self.arrays["timeouts"]
        ends = np.flatnonzero(done)
        starts = np.concatenate([[0], ends[:-1] + 1])
        lengths = ends - starts + 1
        rewards = np.add.reduceat(self.arrays["rewards"].astype(np.float64), starts)
        costs = np.add.reduceat(self.arrays["costs"].astype(np.float64), starts)
        return Episodes(start=starts, length=lengths, reward_return=rewards, cost_return=costs)

    # ------------------------------------------------------------------ IO
    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: object) -> OfflineDataset:
        """Load a DSRL HDF5 file (``.hdf5``/``.h5``) or an ``.npz`` file."""
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"dataset file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix in (".hdf5", ".h5"):
            arrays = _read_hdf5(path)
        elif suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as f:
                    arrays = {k: f[k] for k in f.files}
            except (OSError, ValueError) as exc:
                raise DatasetError(f"dataset {path}: not a readable .npz file ({exc})") from None
        else:
            raise DatasetError(f"dataset {path}: unknown file type {suffix!r}; expected .hdf5, .h5 or .npz")
        return cls(arrays, source=str(path), **kwargs)  # type: ignore[arg-type]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the dataset atomically, as DSRL does for ``.hdf5`` (flat, gzip) or as ``.npz``."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".hdf5", ".h5", ".npz"):
            raise DatasetError(f"cannot save dataset to {path}: expected a .hdf5, .h5 or .npz file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            if suffix == ".npz":
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, **self.arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags
            else:
                write_dsrl_hdf5(tmp, self.arrays)
            publish(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __repr__(self) -> str:
        return (
            f"OfflineDataset({self.source}: {len(self)} transitions, {len(self.episodes)} episodes, "
            f"obs {self.obs_dim}, act {self.act_dim})"
        )


def write_dsrl_hdf5(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write the seven arrays exactly as DSRL lays them out: top-level gzip datasets, f32 and bool."""
    import h5py

    with h5py.File(path, "w") as f:
        for key in KEYS:
            dtype = np.bool_ if key in FLAG_KEYS else np.float32
            f.create_dataset(key, data=np.asarray(arrays[key], dtype=dtype), compression="gzip")


def _read_hdf5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}
            for key in f:
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise DatasetError(f"dataset {path}: {key} is an HDF5 group; DSRL files hold only top-level arrays")
                arrays[key] = node[()]
            return arrays
    except OSError as exc:
        raise DatasetError(f"dataset {path}: not a readable HDF5 file ({exc})") from None


def safe_frontier(episodes: Episodes, cost_limit: float) -> float:
    """R*_data(κ): the best episode reward among episodes whose cost return is ≤ κ (NaN if there is none)."""
    ok = episodes.cost_return <= cost_limit + 1e-9
    return float(episodes.reward_return[ok].max()) if ok.any() else float("nan")


def data_dir() -> Path:
    """Where generated datasets are cached: ``$O3SRL_DATA_DIR`` or ``~/.cache/o3srl/datasets``."""
    env = os.environ.get("O3SRL_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "o3srl" / "datasets"
