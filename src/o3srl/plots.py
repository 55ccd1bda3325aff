"""Plots written into run directories (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def plot_bandit_history(metrics_path: str | Path, out_path: str | Path, arms: Sequence[float]) -> Path | None:
    """Arm probabilities and λ (last and chunk mean) over training, from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from o3srl.io import atomic_write_bytes
    from o3srl.logger import read_metrics

    rows = [r for r in read_metrics(metrics_path) if "bandit/p/0" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    fig, (ax_p, ax_l) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for k, lam in enumerate(arms):
        ax_p.plot(steps, [r.get(f"bandit/p/{k}") for r in rows], label=f"λ = {lam:g}")
    ax_p.set_ylabel("arm probability")
    ax_p.legend(fontsize=8, ncol=min(len(arms), 5))
    ax_l.plot(steps, [r.get("bandit/lambda_mean") for r in rows], label="mean λ over the logging window")
    ax_l.set_ylabel("λ")
    ax_l.set_xlabel("gradient step")
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out_path, buf.getvalue())
