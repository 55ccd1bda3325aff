"""``o3srl data compare``: do two dataset files hold the same data, up to floating-point noise?

Generated datasets are bit-identical only on machines whose simulator arithmetic is identical: the physics engine's
floating-point results depend on the CPU's vector instructions, so the same command on another CPU can give the same
episodes whose numbers differ in the 7th or 8th significant digit, and so another sha256. This compares the data
itself: the same keys and shapes, the same episode boundaries exactly, and every float within a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from tyro.conf import Positional
from tyro.conf import arg as tyro_arg

from o3srl.data.dataset import FLAG_KEYS, FLOAT_KEYS, OfflineDataset


@dataclass(frozen=True)
class KeyDifference:
    key: str
    max_abs: float
    max_rel: float
    within: bool
    """Every value within ``atol + rtol · |b|`` (numpy's ``allclose`` rule)."""


def compare_datasets(
    a: OfflineDataset, b: OfflineDataset, *, rtol: float, atol: float
) -> tuple[str | None, list[KeyDifference]]:
    """``(structural difference or None, per-float-key differences)``. A structural difference (transition count,
    dimensions, episode boundaries) makes the float comparison meaningless, so it is reported instead."""
    if len(a) != len(b):
        return f"{len(a)} transitions against {len(b)}", []
    for key in ("observations", "actions"):
        if a[key].shape != b[key].shape:
            return f"{key} has shape {a[key].shape} against {b[key].shape}", []
    for key in FLAG_KEYS:
        differ = np.flatnonzero(a[key] != b[key])
        if differ.size:
            return (
                f"{key} differs in {differ.size} row(s), first at row {int(differ[0])} (other episode boundaries)",
                [],
            )
    out = []
    for key in FLOAT_KEYS:
        x, y = a[key].astype(np.float64), b[key].astype(np.float64)
        diff = np.abs(x - y)
        rel = diff / np.maximum(np.abs(y), np.finfo(np.float32).tiny)
        out.append(
            KeyDifference(key, float(diff.max()), float(rel.max()), bool(np.all(diff <= atol + rtol * np.abs(y))))
        )
    return None, out


def cli_compare(
    file_a: Annotated[str, Positional, tyro_arg(metavar="A")],
    file_b: Annotated[str, Positional, tyro_arg(metavar="B")],
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> int:
    """Check that two DSRL-format files hold the same data within a tolerance (exit 0) or say where they differ
    (exit 1): the same transitions and episode boundaries exactly, and every float within atol + rtol · |B|.

    Args:
        file_a: a DSRL-format .hdf5/.h5 or .npz file.
        file_b: the file to compare it with.
        rtol: relative tolerance of float values.
        atol: absolute tolerance of float values.
    """
    from o3srl.io import file_sha256
    from o3srl.validation import NON_NEGATIVE, check_number

    check_number("--rtol", rtol, NON_NEGATIVE)
    check_number("--atol", atol, NON_NEGATIVE)
    a, b = OfflineDataset.load(file_a), OfflineDataset.load(file_b)
    if file_sha256(file_a) == file_sha256(file_b):
        print(f"identical files (sha256 {file_sha256(file_a)[:12]}…)")
        return 0
    structural, keys = compare_datasets(a, b, rtol=rtol, atol=atol)
    if structural is not None:
        print(f"different data: {structural}")
        return 1
    for k in keys:
        print(
            f"  {k.key:<18} max |A − B| {k.max_abs:.3g}   max relative {k.max_rel:.3g}   "
            f"{'within' if k.within else 'OUTSIDE'} tolerance"
        )
    ea, eb = a.episodes, b.episodes
    print(
        f"  episode returns: max |ΔR| {float(np.abs(ea.reward_return - eb.reward_return).max()):.3g}, "
        f"max |ΔC| {float(np.abs(ea.cost_return - eb.cost_return).max()):.3g} over {len(ea)} episodes"
    )
    if all(k.within for k in keys):
        print(f"same data within rtol {rtol:g}, atol {atol:g} (the files differ in their bytes only by float noise)")
        return 0
    print(
        f"different data: {', '.join(k.key for k in keys if not k.within)} differ beyond rtol {rtol:g}, atol {atol:g}"
    )
    return 1
