"""Task registry: ids, shapes, episode lengths and DSRL reference scores.

This module imports no simulator, so it is cheap to import. The constants come from DSRL
(``dsrl/infos.py``, Apache-2.0) and from bullet-safety-gym 1.4.0's own registrations; they are the
reference scores that the DSRL-normalised reward of a policy is computed against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from o3srl.errors import O3SRLError


@dataclass(frozen=True)
class TaskSpec:
    """Everything the project knows about one offline safe-RL task."""

    task_id: str
    """DSRL-style id, e.g. ``OfflineBallRun-v0``."""
    agent: str
    """bullet-safety-gym agent name (``Ball``, ``RaceCar``, ``Drone``, ``Ant``)."""
    task: str
    """bullet-safety-gym task class (``RunTask`` or ``CircleTask``)."""
    world: dict = field(hash=False, compare=False)
    """bullet-safety-gym world description."""
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    min_reward: float
    """DSRL's reference minimum episode reward (normalised reward 0)."""
    max_reward: float
    """DSRL's reference maximum episode reward (normalised reward 1)."""
    max_cost: float
    """Episodes with a larger cost return are dropped when a dataset is made (as DSRL does)."""
    dsrl_num_trajectories: int
    """How many episodes the real DSRL file holds (a size target for generated data)."""
    cost_limits: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    """The cost limits κ usually studied on this task."""


_RUN_WORLD = {"name": "Plane200", "factor": 1}
_CIRCLE_WORLD = {"name": "Octagon"}

_TASKS = [
    TaskSpec("OfflineAntCircle-v0", "Ant", "CircleTask", _CIRCLE_WORLD, 34, 8, 500, 0.0177, 460.71, 200.0, 5728),
    TaskSpec("OfflineAntRun-v0", "Ant", "RunTask", _RUN_WORLD, 33, 8, 200, 0.001767, 955.48, 150.0, 1816),
    TaskSpec("OfflineBallCircle-v0", "Ball", "CircleTask", _CIRCLE_WORLD, 8, 2, 200, 0.3831, 881.46, 80.0, 886),
    TaskSpec("OfflineBallRun-v0", "Ball", "RunTask", _RUN_WORLD, 7, 2, 100, 26.34, 1327.4, 80.0, 940),
    TaskSpec("OfflineCarCircle-v0", "RaceCar", "CircleTask", _CIRCLE_WORLD, 8, 2, 300, 3.484, 534.31, 100.0, 1450),
    TaskSpec("OfflineCarRun-v0", "RaceCar", "RunTask", _RUN_WORLD, 7, 2, 200, 204.3, 574.65, 40.0, 651),
    TaskSpec("OfflineDroneCircle-v0", "Drone", "CircleTask", _CIRCLE_WORLD, 18, 4, 300, 207.8, 996.39, 100.0, 1923),
    TaskSpec("OfflineDroneRun-v0", "Drone", "RunTask", _RUN_WORLD, 17, 4, 200, 10.56, 682.83, 140.0, 1990),
]

TASKS: dict[str, TaskSpec] = {t.task_id: t for t in _TASKS}
DEFAULT_TASK = "OfflineBallRun-v0"


class UnknownTaskError(O3SRLError, KeyError):
    """Raised for a task id the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


def get_task(task_id: str) -> TaskSpec:
    """Return the spec of ``task_id`` or raise one clear error listing the known ids."""
    try:
        return TASKS[task_id]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise UnknownTaskError(f"unknown task {task_id!r}; known tasks: {known}") from None
