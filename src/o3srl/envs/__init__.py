"""Tasks and environments. The registry is light; simulators are imported only by :func:`make_env`."""

from o3srl.envs.registry import DEFAULT_TASK, TASKS, TaskSpec, UnknownTaskError, get_task
from o3srl.envs.make import make_env, register_offline_envs

__all__ = ["DEFAULT_TASK", "TASKS", "TaskSpec", "UnknownTaskError", "get_task", "make_env", "register_offline_envs"]
