"""``o3srl extras install safety-gymnasium``: the optional Safety-Gymnasium simulator, installed and patched.

``pip install safety-gymnasium`` fails on Python 3.11 (it pins pygame 2.1.0, which has no 3.11 wheel), so the extra
cannot be a plain pip extra. This command runs the recipe that works, with the current interpreter's pip:

1. ``pip install "gymnasium==0.28.1" "mujoco==2.3.3" xmltodict pyyaml imageio`` (mujoco ≤ 2.3.3: the Hopper and
   Walker2d velocity tasks break on newer MuJoCo);
2. ``pip install --no-deps "safety-gymnasium==0.4.0"`` (skipping its pygame pin; pygame is only for rendering);
3. two source patches of the installed package: Python 3.11 rejects the dataclass fields
   ``color: np.array = COLOR[...]`` (a mutable default), and with numpy 2 the sensor set-up of the Point/Car agents
   passes a one-element array to ``model.jnt``;
4. a check, in a fresh interpreter, that the package imports and every velocity task (and one Car task, which
   exercises the second patch) resets and steps.

Every step is idempotent: pip is skipped when the pinned versions are already installed, and each patch is an
exact replacement that is a no-op once applied and fails with one clear error if the source is not the expected one.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from o3srl.errors import O3SRLError

SAFETY_GYMNASIUM_VERSION = "0.4.0"
INSTALL_COMMAND = "o3srl extras install safety-gymnasium"
REQUIREMENTS: tuple[tuple[str, str | None], ...] = (
    ("gymnasium", "0.28.1"),
    ("mujoco", "2.3.3"),
    ("xmltodict", None),
    ("pyyaml", None),
    ("imageio", None),
)
"""(distribution, exact version or None for any) installed in step 1."""


class ExtraError(O3SRLError, RuntimeError):
    """An optional extra could not be installed, patched or verified."""


@dataclass(frozen=True)
class Patch:
    """Replace ``old`` by ``new`` in ``path`` (relative to the package directory), exactly once."""

    path: str
    old: str
    new: str
    why: str


# The asset dataclasses whose ``color`` default is a numpy array, and the COLOR key each one uses.
_COLOR_FIELDS: dict[str, str] = {
    "assets/free_geoms/push_box.py": "push_box",
    "assets/free_geoms/vases.py": "vase",
    "assets/geoms/apples.py": "apple",
    "assets/geoms/buttons.py": "button",
    "assets/geoms/circle.py": "circle",
    "assets/geoms/goal.py": "goal",
    "assets/geoms/hazards.py": "hazard",
    "assets/geoms/oranges.py": "orange",
    "assets/geoms/pillars.py": "pillar",
    "assets/geoms/sigwalls.py": "sigwall",
    "assets/geoms/walls.py": "wall",
    "assets/mocaps/gremlins.py": "gremlin",
}
# These two import ``dataclass`` alone; the patched field needs ``field`` too.
_NEEDS_FIELD_IMPORT = ("assets/geoms/circle.py", "assets/geoms/sigwalls.py")

_DATACLASS_WHY = "Python 3.11 rejects a numpy array as a dataclass default"
_JNT_WHY = "numpy 2 no longer converts a one-element array to the int that model.jnt expects"

SAFETY_GYMNASIUM_PATCHES: tuple[Patch, ...] = (
    *(
        Patch(p, "from dataclasses import dataclass\n", "from dataclasses import dataclass, field\n", _DATACLASS_WHY)
        for p in _NEEDS_FIELD_IMPORT
    ),
    *(
        Patch(
            p,
            f"    color: np.array = COLOR['{key}']\n",
            f"    color: np.array = field(default_factory=lambda: COLOR['{key}'].copy())\n",
            _DATACLASS_WHY,
        )
        for p, key in _COLOR_FIELDS.items()
    ),
    Patch(
        "assets/robot.py",
        "joint_type = self.model.jnt(joint_id).type\n",
        "joint_type = self.model.jnt(int(joint_id[0])).type\n",
        _JNT_WHY,
    ),
    Patch(
        "bases/base_agent.py",
        "joint_type = self.engine.model.jnt(joint_id).type\n",
        "joint_type = self.engine.model.jnt(int(joint_id[0])).type\n",
        _JNT_WHY,
    ),
)


# ---------------------------------------------------------------------------------------------------- patching
def apply_patch(text: str, patch: Patch) -> tuple[str, bool]:
    """Return (patched text, whether it changed). Already-patched text is returned unchanged; anything else that
    does not hold ``patch.old`` exactly once is an error, so an unexpected source is never half-patched."""
    count = text.count(patch.old)
    if count == 1:
        return text.replace(patch.old, patch.new), True
    if count == 0 and patch.new in text:
        return text, False
    found = "more than once" if count > 1 else "not at all (and the patched text is not there either)"
    raise ExtraError(
        f"cannot patch {patch.path}: the expected line {patch.old.strip()!r} occurs {found}; "
        f"is this safety-gymnasium {SAFETY_GYMNASIUM_VERSION}?"
    )


def patch_package(root: Path, patches: Sequence[Patch]) -> list[str]:
    """Apply ``patches`` to the package at ``root``; returns the files that changed. All files are checked before
    any is written, so a mismatch leaves the package as it was."""
    texts: dict[str, str] = {}
    changed: set[str] = set()
    for patch in patches:
        path = root / patch.path
        if patch.path not in texts:
            if not path.is_file():
                raise ExtraError(
                    f"cannot patch {path}: no such file; is this safety-gymnasium {SAFETY_GYMNASIUM_VERSION}?"
                )
            texts[patch.path] = path.read_text(encoding="utf-8")
        texts[patch.path], did = apply_patch(texts[patch.path], patch)
        if did:
            changed.add(patch.path)
    for rel in sorted(changed):
        try:
            (root / rel).write_text(texts[rel], encoding="utf-8")
        except OSError as exc:
            raise ExtraError(f"cannot write {root / rel}: {exc}") from exc
    return sorted(changed)


# ---------------------------------------------------------------------------------------------------- installing
def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_requirements() -> list[str]:
    """pip requirement strings of step 1 that are not installed at the pinned versions."""
    return [
        f"{name}=={version}" if version else name
        for name, version in REQUIREMENTS
        if _installed_version(name) is None or (version is not None and _installed_version(name) != version)
    ]


def _pip(args: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "install", *args]
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        raise ExtraError(f"pip failed: {' '.join(command)}")


def package_dir(distribution: str = "safety-gymnasium", package: str = "safety_gymnasium") -> Path:
    """Where the installed package's sources are, found from the distribution's metadata (without importing it,
    which fails before the patches)."""
    importlib.invalidate_caches()
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ExtraError(f"{distribution} is not installed: run `{INSTALL_COMMAND}`") from exc
    root = Path(str(dist.locate_file(package)))
    if not (root / "__init__.py").is_file():
        raise ExtraError(f"{distribution} is installed but {root} holds no package {package!r}")
    return root


_CHECK = """
import numpy as np, safety_gymnasium
for env_id in {env_ids!r}:
    env = safety_gymnasium.make(env_id)
    env.reset(seed=0)
    obs, reward, cost, terminated, truncated, info = env.step(env.action_space.sample())
    assert np.all(np.isfinite(obs)) and np.isfinite(reward) and np.isfinite(cost), env_id
    env.close()
    print("  ok", env_id, flush=True)
"""

CHECK_ENV_IDS = (
    "SafetyAntVelocity-v1",
    "SafetyHalfCheetahVelocity-v1",
    "SafetyHopperVelocity-v1",
    "SafetySwimmerVelocity-v1",
    "SafetyWalker2dVelocity-v1",
    "SafetyCarGoal1-v0",
)
"""Stepped by the check: the five velocity tasks, and one Car navigation task (it exercises the ``model.jnt``
patch; navigation tasks take a second or two per reset)."""


def verify_safety_gymnasium(env_ids: Sequence[str] = CHECK_ENV_IDS) -> None:
    """Import the patched package and reset + step each environment, in a fresh interpreter (so a module cached by
    this process before patching cannot mask a failure)."""
    out = subprocess.run([sys.executable, "-c", _CHECK.format(env_ids=tuple(env_ids))], capture_output=True, text=True)
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise ExtraError(f"safety-gymnasium was installed and patched but does not work:\n{tail}")


def install_safety_gymnasium(*, verify: bool = True) -> list[str]:
    """Run the whole recipe (idempotent); returns the files patched by this call."""
    missing = missing_requirements()
    if missing:
        _pip(missing)
    else:
        print("gymnasium 0.28.1, mujoco 2.3.3, xmltodict, pyyaml, imageio: already installed", flush=True)
    if _installed_version("safety-gymnasium") != SAFETY_GYMNASIUM_VERSION:
        _pip(["--no-deps", f"safety-gymnasium=={SAFETY_GYMNASIUM_VERSION}"])
    else:
        print(f"safety-gymnasium {SAFETY_GYMNASIUM_VERSION}: already installed", flush=True)
    root = package_dir()
    changed = patch_package(root, SAFETY_GYMNASIUM_PATCHES)
    print(
        f"patched {len(changed)} file(s) under {root}" if changed else f"patches already applied under {root}",
        flush=True,
    )
    if verify:
        verify_safety_gymnasium()
    return changed


def cli_install(extra: Literal["safety-gymnasium"], /, check: bool = True) -> int:
    """Install an optional simulator into the current Python environment (safe to rerun).

    Args:
        extra: the extra to install: safety-gymnasium (the MuJoCo velocity tasks Offline*VelocityGymnasium-v1).
        check: reset and step the environments after installing (``--no-check`` skips it).
    """
    t0 = time.time()
    install_safety_gymnasium(verify=check)
    print(
        f"safety-gymnasium {SAFETY_GYMNASIUM_VERSION} ready in {time.time() - t0:.0f}s: the tasks "
        "Offline{Ant,HalfCheetah,Hopper,Swimmer,Walker2d}VelocityGymnasium-v1 can be made",
        flush=True,
    )
    return 0


__all__ = [
    "CHECK_ENV_IDS",
    "INSTALL_COMMAND",
    "SAFETY_GYMNASIUM_PATCHES",
    "ExtraError",
    "Patch",
    "apply_patch",
    "cli_install",
    "install_safety_gymnasium",
    "missing_requirements",
    "package_dir",
    "patch_package",
    "verify_safety_gymnasium",
]
