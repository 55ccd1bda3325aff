"""o3srl: offline safe reinforcement learning with online optimisation (O3SRL).

``import o3srl`` is light: no simulator and no JAX is imported until a function that needs one is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from o3srl.policy import Policy


def load_policy(run_dir: str) -> Policy:
    """Load the final policy of a run directory as a callable ``obs -> action`` (numpy in, numpy out)."""
    from o3srl.policy import load_policy as _load_policy

    return _load_policy(run_dir)


def __getattr__(name: str) -> Any:
    if name == "OfflineDataset":
        from o3srl.data.dataset import OfflineDataset

        return OfflineDataset
    raise AttributeError(f"module 'o3srl' has no attribute {name!r}")


__all__ = ["OfflineDataset", "__version__", "load_policy"]
