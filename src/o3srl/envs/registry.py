"""Task registry: ids, shapes, episode lengths and DSRL reference scores.

This module imports no simulator, so it is cheap to import. The constants come from DSRL (``dsrl/infos.py`` in
github.com/liuzuxin/DSRL, Apache-2.0) and from the simulators' own registrations; they are the reference scores
that the DSRL-normalised reward of a policy is computed against.

Two simulators: the eight Bullet tasks are built with bullet-safety-gym (a core dependency); the five
Safety-Gymnasium velocity tasks need the optional extra (``o3srl extras install safety-gymnasium``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from o3srl.errors import O3SRLError

Simulator = Literal["bullet", "safety_gymnasium"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the project knows about one offline safe-RL task."""

    task_id: str
    """DSRL-style id, e.g. ``OfflineBallRun-v0``."""
    agent: str
    """The agent: bullet-safety-gym's agent name (``Ball``, ``RaceCar``, ``Drone``, ``Ant``) for Bullet tasks, the
    MuJoCo robot (``HalfCheetah``, ...) for Safety-Gymnasium tasks."""
    task: str
    """bullet-safety-gym task class (``RunTask`` or ``CircleTask``); ``Velocity`` for the velocity tasks."""
    world: dict = field(hash=False, compare=False)
    """bullet-safety-gym world description (empty for other simulators)."""
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
    simulator: Simulator = "bullet"
    """Which simulator builds the task (Bullet tasks need no extra)."""
    simulator_id: str | None = None
    """The simulator's own environment id, for simulators that have one (``SafetyHalfCheetahVelocity-v1``)."""


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


def _velocity(
    robot: str, obs_dim: int, act_dim: int, min_reward: float, max_reward: float, max_cost: float, num_trajectories: int
) -> TaskSpec:
    """A Safety-Gymnasium velocity task as DSRL registers it: ``Offline<Robot>VelocityGymnasium-v1`` is
    safety-gymnasium's ``Safety<Robot>Velocity-v1`` (MuJoCo, v4 robots; per-step cost 1 when the robot's speed
    exceeds the task's threshold) with 1000-step episodes and the cost moved into ``info["cost"]``."""
    return TaskSpec(
        f"Offline{robot}VelocityGymnasium-v1",
        robot,
        "Velocity",
        {},
        obs_dim,
        act_dim,
        1000,
        min_reward,
        max_reward,
        max_cost,
        num_trajectories,
        simulator="safety_gymnasium",
        simulator_id=f"Safety{robot}Velocity-v1",
    )


# DSRL's dsrl/infos.py (github.com/liuzuxin/DSRL): MIN_EPISODE_REWARD, MAX_EPISODE_REWARD, MAX_EPISODE_COST, and
# the trajectory count from the dataset file name in DATASET_URLS
# (Safety<Robot>VelocityGymnasium-v1-<max cost>-<trajectories>.hdf5). Shapes: safety-gymnasium 0.4.0's spaces.
_TASKS += [
    _velocity("Ant", 27, 8, 6.1519012451171875, 2976.276611328125, 250.0, 2249),
    _velocity("HalfCheetah", 17, 6, 5.7509765625, 2806.93310546875, 250.0, 2495),
    _velocity("Hopper", 11, 3, 37.05154800415039, 1911.396728515625, 250.0, 2240),
    _velocity("Swimmer", 8, 2, 0.07114458084106445, 238.95831298828125, 200.0, 1686),
    _velocity("Walker2d", 17, 6, 18.668498992919922, 3418.223876953125, 300.0, 2729),
]

TASKS: dict[str, TaskSpec] = {t.task_id: t for t in _TASKS}
DEFAULT_TASK = "OfflineBallRun-v0"
BULLET_TASKS: tuple[str, ...] = tuple(t.task_id for t in _TASKS if t.simulator == "bullet")
SAFETY_GYMNASIUM_TASKS: tuple[str, ...] = tuple(t.task_id for t in _TASKS if t.simulator == "safety_gymnasium")


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
