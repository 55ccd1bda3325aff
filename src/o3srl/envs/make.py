"""Environment construction: the only place that imports simulators.

The registry's ids are built exactly as DSRL builds them, with the episode length as ``max_episode_steps``:
Bullet tasks (``Offline*-v0``) with bullet-safety-gym's ``EnvironmentBuilder`` and the registry's agent, task and
world; Safety-Gymnasium tasks (``Offline*Gymnasium-v1``, an optional extra) as safety-gymnasium's own environment
class, with its 6-tuple ``step`` turned into gymnasium's 5-tuple and the cost moved into ``info["cost"]``. Any
other gymnasium id (including ``module:Class`` entry points) is passed to ``gymnasium.make``; its ``info`` must
carry ``"cost"``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from o3srl.envs.registry import TASKS, TaskSpec
from o3srl.errors import O3SRLError

_ENTRY_POINT = "o3srl.envs.make:build_offline_env"


class EnvError(O3SRLError, RuntimeError):
    """An environment could not be made (unknown id, missing simulator)."""


def _gym() -> Any:
    try:
        import gymnasium
    except ImportError as exc:  # pragma: no cover - gymnasium is a core dependency
        raise EnvError("gymnasium is not installed: pip install 'gymnasium==0.28.1'") from exc
    return gymnasium


@contextlib.contextmanager
def _process_streams() -> Iterator[None]:
    """Point ``sys.stdout``/``sys.stderr`` at the process's own streams while pybullet starts.

    bullet-safety-gym silences pybullet by redirecting the C-level stream named by ``sys.stdout.name``; under a
    replaced ``sys.stdout`` (pytest's capture, Jupyter) that name is not a C symbol and the environment fails to build.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.__stdout__ or saved[0]
    sys.stderr = sys.__stderr__ or saved[1]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _seeded_reset_wrapper(gym: Any, env: Any) -> Any:
    """Make ``reset(seed=s)`` reproducible for bullet-safety-gym, whose resets ignore the seed and draw their
    initial-state noise from numpy's global random state: that state is seeded with ``s`` for the reset only and
    restored afterwards, so the caller's global random stream is left as it was."""

    class SeededReset(gym.Wrapper):
        def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
            if seed is None:
                return self.env.reset(options=options)
            saved = np.random.get_state()
            np.random.seed(seed % (2**32))
            try:
                return self.env.reset(seed=seed, options=options)
            finally:
                np.random.set_state(saved)

    return SeededReset(env)


def _safety_gymnasium_wrapper(gym: Any, env: Any) -> Any:
    """Gymnasium's 5-tuple ``step`` for a safety-gymnasium environment, whose ``step`` returns
    ``(obs, reward, cost, terminated, truncated, info)``: the cost goes to ``info["cost"]``, as every other task
    of the project reports it. Seeded resets are already reproducible (MuJoCo environments reseed their own
    generator on ``reset(seed=s)``)."""

    class CostInInfo(gym.Wrapper):
        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
            obs, reward, cost, terminated, truncated, info = self.env.step(action)
            info["cost"] = float(cost)
            return obs, float(reward), bool(terminated), bool(truncated), info

    return CostInInfo(env)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def simulator_missing(spec: TaskSpec) -> str | None:
    """Why ``spec``'s simulator cannot be loaded (one line naming the command that installs it), or ``None``.
    Checked without importing the simulator, so callers can fail before hours of training rather than after."""
    if spec.simulator == "safety_gymnasium" and not _importable("safety_gymnasium"):
        from o3srl.envs.extras import INSTALL_COMMAND

        return f"{spec.task_id} needs the optional Safety-Gymnasium simulator: run `{INSTALL_COMMAND}`"
    return None


def require_simulator(spec: TaskSpec, hint: str = "") -> None:
    """Raise one :class:`EnvError` naming the install command when ``spec``'s simulator is missing (``hint`` is
    appended to the message); called before long work (training, collection) that would otherwise fail late."""
    reason = simulator_missing(spec)
    if reason is not None:
        raise EnvError(reason + hint)


def _build_safety_gymnasium(gym: Any, spec: TaskSpec) -> Any:
    require_simulator(spec)
    from gymnasium.envs.registration import load_env_creator

    from o3srl.envs.extras import INSTALL_COMMAND

    try:
        importlib.import_module("safety_gymnasium")  # registers the Safety* ids with gymnasium
        # The bare environment class, as DSRL instantiates it: gymnasium.make adds the time limit and checks on top.
        env_class = load_env_creator(gym.envs.registry[spec.simulator_id].entry_point)
    except Exception as exc:  # an unpatched install fails inside its own dataclasses (ValueError) or numpy calls
        raise EnvError(
            f"safety-gymnasium is installed but {spec.simulator_id} cannot be loaded "
            f"({type(exc).__name__}: {exc}); run `{INSTALL_COMMAND}` to install the supported version "
            "and patch it"
        ) from exc
    return _safety_gymnasium_wrapper(gym, env_class())


def build_offline_env(task_id: str) -> Any:
    """Gymnasium entry point of the registry's ids. Bullet tasks: bullet-safety-gym's ``EnvironmentBuilder`` with
    the registry's agent, task and world (exactly DSRL's construction), built under the process's own streams and
    wrapped so that ``reset(seed=s)`` is reproducible. Safety-Gymnasium tasks: the simulator's environment class
    with the cost in ``info``. ``gymnasium.make`` adds the time limit on top."""
    from o3srl.envs.registry import get_task

    spec = get_task(task_id)
    gym = _gym()
    if spec.simulator == "safety_gymnasium":
        return _build_safety_gymnasium(gym, spec)
    try:
        with _process_streams():
            builder = importlib.import_module("bullet_safety_gym.envs.builder")
    except ImportError as exc:
        raise EnvError("bullet-safety-gym is not installed: pip install 'bullet-safety-gym==1.4.0' pybullet") from exc
    with _process_streams():
        env = builder.EnvironmentBuilder(agent=spec.agent, task=spec.task, obstacles={}, world=dict(spec.world))
    return _seeded_reset_wrapper(gym, env)


def register_offline_envs() -> None:
    """Register the registry's ids with gymnasium (idempotent), the optional Safety-Gymnasium ones included.

    Registration only records an entry-point string, so it imports no simulator; pybullet (or safety-gymnasium) is
    loaded by the first ``gymnasium.make`` of one of these ids. ``info["cost"]`` carries the per-step cost.
    """
    gym = _gym()
    for spec in TASKS.values():
        if spec.task_id in gym.envs.registry:
            continue
        gym.register(
            id=spec.task_id,
            entry_point=_ENTRY_POINT,
            max_episode_steps=spec.max_episode_steps,
            kwargs={"task_id": spec.task_id},
        )


def make_env(env_id: str, **kwargs: Any) -> Any:
    """Make one environment: a registered task, any gymnasium id, or ``module:Class``."""
    gym = _gym()
    if env_id in TASKS:
        require_simulator(TASKS[env_id])
        register_offline_envs()
        return gym.make(env_id, **kwargs)
    elif ":" in env_id and env_id not in gym.envs.registry:
        module_name, _, attr = env_id.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # an entry point's module can fail to import in any way
            raise EnvError(f"cannot import environment entry point {env_id!r}: {type(exc).__name__}: {exc}") from exc
        if hasattr(module, attr):
            try:
                return getattr(module, attr)(**kwargs)
            except Exception as exc:
                raise EnvError(f"cannot make environment {env_id!r}: {type(exc).__name__}: {exc}") from exc
        if attr in gym.envs.registry:
            # Gymnasium's own "module:EnvId" form: importing the module registered the id.
            return gym.make(attr, **kwargs)
        raise EnvError(
            f"cannot make environment {env_id!r}: module {module_name!r} has no attribute {attr!r} and "
            f"registers no gymnasium id {attr!r}"
        )
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise EnvError(f"cannot make environment {env_id!r}: {exc}") from exc


def entry_point_module(env_id: str) -> str | None:
    """The module that making ``env_id`` imports (the ``module`` of ``module:Class`` or gymnasium's ``module:EnvId``),
    or ``None`` for the registry's ids and plain gymnasium ids, which import nothing named by the id."""
    if env_id in TASKS or ":" not in env_id:
        return None
    return env_id.partition(":")[0]


def check_entry_point(env_id: str, confirmed: str | None, source: str, flag: str = "--env-id") -> None:
    """Refuse to import an entry point that only a file (``source``: a run's config or record) names.

    Evaluating or resuming a run directory received from someone else must not run their code: an entry point is
    imported only when the caller names it too (``confirmed``, e.g. ``--env-id`` on the command line). Modules of
    this package itself are trusted.
    """
    module = entry_point_module(env_id)
    if module is None or module == "o3srl" or module.startswith("o3srl.") or confirmed == env_id:
        return
    raise EnvError(
        f"{source} names the environment entry point {env_id!r}, which would import and run module "
        f"{module!r}; o3srl imports code named by a run directory only when you name it too: pass "
        f"{flag} {env_id} if you trust it"
    )
