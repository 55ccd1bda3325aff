"""Plots written into run directories (matplotlib, headless)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_bandit_history(trace_path: str | Path, out_path: str | Path, arms: Sequence[float]) -> Path | None:
    """Arm probabilities and λ over training, one point per round, from ``rounds.npz``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from o3srl.io import atomic_write_bytes
    from o3srl.rundir import read_trace

    cols = read_trace(Path(trace_path))
    if cols is None or "bandit/p/0" not in cols:
        return None
    rounds = cols["round"]
    fig, (ax_p, ax_l, ax_c) = plt.subplots(3, 1, figsize=(7.5, 7.5), sharex=True)
    for k, arm in enumerate(arms):
        ax_p.plot(rounds, cols[f"bandit/p/{k}"], label=f"λ = {arm:g}", lw=1)
    ax_p.set_ylabel("arm probability")
    ax_p.legend(fontsize=8, ncol=min(len(arms), 5))
    lam = cols["bandit/lambda"]
    window = max(1, len(lam) // 100)
    smooth = np.convolve(lam, np.ones(window) / window, mode="valid")
    ax_l.plot(rounds, lam, ".", ms=1, alpha=0.3, label="pulled λ")
    ax_l.plot(rounds[window - 1 :], smooth, label=f"mean over {window} rounds")
    ax_l.set_ylabel("λ")
    ax_l.legend(fontsize=8)
    ax_c.plot(rounds, cols["feedback/cost_estimate"], lw=1, label="critic's cost estimate V̂_c(s0)")
    ax_c.axhline(float(cols["feedback/budget"][0]), color="k", ls="--", lw=1, label="budget B")
    ax_c.set_ylabel("discounted cost")
    ax_c.set_xlabel("round")
    ax_c.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out_path, buf.getvalue())
