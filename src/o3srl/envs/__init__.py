"""Tasks and environments. The registry is light; simulators are imported only when an environment is built.

Importing this package registers the ``Offline*-v0`` ids with gymnasium (entry-point strings only, no simulator is
loaded), so ``gymnasium.make("OfflineBallRun-v0")`` works afterwards, as it does after ``import dsrl``.
"""

import contextlib

from o3srl.envs.make import EnvError, make_env, register_offline_envs
from o3srl.envs.registry import DEFAULT_TASK, TASKS, TaskSpec, UnknownTaskError, get_task

# gymnasium is a core dependency; should it be missing (a machine that only trains, say), make_env reports its absence
# clearly when an environment is needed.
with contextlib.suppress(EnvError):
    register_offline_envs()

__all__ = ["DEFAULT_TASK", "TASKS", "TaskSpec", "UnknownTaskError", "get_task", "make_env", "register_offline_envs"]
