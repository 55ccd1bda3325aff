"""Tasks and environments. The registry is light; simulators are imported only when an environment is built.

Importing this package registers the ``Offline*-v0`` ids with gymnasium (entry-point strings only, no simulator is
loaded), so ``gymnasium.make("OfflineBallRun-v0")`` works afterwards, as it does after ``import dsrl``.
"""

from o3srl.envs.registry import DEFAULT_TASK, TASKS, TaskSpec, UnknownTaskError, get_task
from o3srl.envs.make import make_env, register_offline_envs

try:
    register_offline_envs()
except ImportError:  # pragma: no cover - gymnasium is a core dependency; make_env reports its absence clearly
    pass

__all__ = ["DEFAULT_TASK", "TASKS", "TaskSpec", "UnknownTaskError", "get_task", "make_env", "register_offline_envs"]
