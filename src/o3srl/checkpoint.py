"""Checkpoints: complete, versioned, atomic, and loadable without pickle.

A checkpoint is one msgpack file (``flax.serialization``) holding the format version, the step, the whole learner
state (network parameters, optimiser states, bandit state, RNG key), the normalisation statistics and the resolved
config as JSON. Restoring needs a template state of the same structure, which the training code rebuilds from the
config, so no code objects are ever deserialised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from o3srl.data.sampler import NormStats
from o3srl.errors import O3SRLError
from o3srl.io import atomic_write_bytes
from o3srl.rundir import CHECKPOINT_NAME as CHECKPOINT_NAME  # the file names belong to o3srl.rundir
from o3srl.rundir import POLICY_NAME as POLICY_NAME

FORMAT_VERSION = 1


class CheckpointError(O3SRLError):
    """A checkpoint is missing, of another format version, or does not match the run's config."""


def _stats_dict(stats: NormStats) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in stats._asdict().items()}


def save_checkpoint(path: str | Path, *, step: int, state: Any, stats: NormStats, config_json: str) -> Path:
    payload = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "state": serialization.to_state_dict(state),
        "norm_stats": _stats_dict(stats),
        "config": config_json,
    }
    return atomic_write_bytes(path, serialization.msgpack_serialize(payload))


def read_payload(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 — msgpack raises several error types on a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc})") from None
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this o3srl reads version {FORMAT_VERSION}"
        )
    return payload


def load_checkpoint(
    path: str | Path, template: Any, upgrade: Callable[[Any, Any], Any] | None = None
) -> tuple[int, Any, NormStats, dict[str, Any]]:
    """Restore ``(step, state, norm_stats, config_dict)`` into the structure of ``template``.

    ``upgrade(state_dict, template)``, if given, brings a state written by an earlier layout of the learner into
    today's (filling what was added since with the values that reproduce the earlier behaviour)."""
    payload = read_payload(path)
    state_dict = payload.get("state")
    if upgrade is not None and isinstance(state_dict, dict):
        state_dict = upgrade(state_dict, template)
    state = restore(template, state_dict, f"checkpoint {path}", "the run's networks")
    try:
        return int(payload["step"]), state, stats_from_dict(payload["norm_stats"]), json.loads(payload["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete or damaged ({type(exc).__name__}: {exc})") from None


def path_name(path: tuple[Any, ...]) -> str:
    """A pytree path as ``oracle/critic/params/Dense_0/kernel``."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def named_leaves(tree: Any) -> dict[str, Any]:
    """Every array of a pytree by its :func:`path_name`."""
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(path): leaf for path, leaf in flat}


def restore(template: Any, state_dict: Any, source: str, what: str) -> Any:
    """``flax.serialization.from_state_dict`` that also checks every array's shape and dtype against ``template``.

    flax itself puts arrays of any shape into the template; a mismatch (a config or file whose network sizes were
    edited) would only surface later inside a network call. Raises one :class:`CheckpointError` naming the array.
    """
    try:
        state = serialization.from_state_dict(template, state_dict)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{source} does not match {what} ({type(exc).__name__}: {exc})") from None
    want, got = named_leaves(template), named_leaves(state)
    if want.keys() != got.keys():
        missing = sorted(set(want) - set(got)) or sorted(set(got) - set(want))
        raise CheckpointError(f"{source} does not match {what}: its arrays differ (first: {missing[0]})")
    for name, leaf in want.items():
        other = np.asarray(got[name])
        if tuple(np.shape(leaf)) != other.shape or np.asarray(leaf).dtype != other.dtype:
            raise CheckpointError(
                f"{source} does not match {what}: {name} has shape {other.shape} ({other.dtype}) but the "
                f"config gives {tuple(np.shape(leaf))} ({np.asarray(leaf).dtype})"
            )
    return state


def stats_from_dict(d: dict[str, Any]) -> NormStats:
    return NormStats(**{k: np.asarray(d[k], np.float32) for k in NormStats._fields})


def save_policy(path: str | Path, *, actor: Any, stats: NormStats, config_json: str, kind: str = "single") -> Path:
    """The compact artefact ``load_policy`` reads: actor parameters (or a stack of them for a mixture) and stats."""
    payload = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "actor": serialization.to_state_dict(actor),
        "norm_stats": _stats_dict(stats),
        "config": config_json,
    }
    return atomic_write_bytes(path, serialization.msgpack_serialize(payload))
