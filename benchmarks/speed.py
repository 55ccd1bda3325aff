"""Training speed, side by side in one run on the same shapes: the oracles alone and inside O3SRL, O3SRL packed
(many runs as one vmapped program), an eager PyTorch TD3+BC with cost critics of the same maths, the machine's
measured matmul peak and our fraction of it, and the end-to-end wall time of one task-seed with evaluation.

Shapes: Ant-sized synthetic data (obs 33, act 8), 2×256 networks, batch 256, twin reward and twin cost critics
(the defaults). On a CPU, XLA and PyTorch run single-threaded (one core, as the grid's workers do) unless
``--threads all``. Writes a Markdown page (``--out``) with the command, machine and date.

    python benchmarks/speed.py --out docs/results/speed.md               # CPU; GPU where JAX finds one
    python benchmarks/speed.py --steps 20 --packs 1 2 --e2e-steps 0     # a quick look

PyTorch comes with the ``benchmark`` extra (``pip install 'o3srl[benchmark]'``); without it that row says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SINGLE_THREAD = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
OBS, ACT, HIDDEN, BATCH = 33, 8, (256, 256), 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="gradient steps per timed call (one run)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per measurement; the best counts")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 8, 32, 128], help="runs per packed program")
    parser.add_argument(
        "--pack-steps",
        type=int,
        default=None,
        help="gradient steps per run in a timed packed call (default: --steps / runs, ≥ one round)",
    )
    parser.add_argument(
        "--e2e-steps",
        type=int,
        default=100_000,
        help="steps of the end-to-end 'o3srl train' run on the default task (0: skip it)",
    )
    parser.add_argument("--e2e-episodes", type=int, default=20, help="its evaluation episodes")
    parser.add_argument(
        "--threads",
        choices=["one", "all"],
        default="one",
        help="one: single-threaded XLA and PyTorch (as the grid runs); all: their defaults",
    )
    parser.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN), help="hidden layer widths")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown page here")
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be ≥ 1")
    if any(n < 1 for n in args.packs) or any(h < 1 for h in args.hidden) or args.e2e_steps < 0:
        parser.error("--packs and --hidden must be ≥ 1 and --e2e-steps ≥ 0")
    return args


def synthetic(n: int = 50_000, T: int = 200) -> Any:
    """Random transitions of the benchmark's shapes (speed does not depend on the numbers)."""
    import numpy as np

    from o3srl.data import OfflineDataset

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    return OfflineDataset(
        {
            "observations": obs,
            "next_observations": np.roll(obs, -1, axis=0),
            "actions": rng.uniform(-1, 1, (n, ACT)),
            "rewards": rng.normal(size=n),
            "costs": (rng.uniform(size=n) < 0.1).astype(np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": np.arange(n) % T == T - 1,
        }
    )


def learner(
    oracle: str, fixed: float | None, ds: Any, hidden: tuple[int, ...], batch: int, player: str = "earlier"
) -> Any:
    """O3SRL (``fixed`` None) or its oracle at a fixed λ; ``player``: the λ-player. The adaptive one reads its cost
    model every round (T = 200 steps from 16 initial states by 5 members); its fit is a one-off and not timed."""
    from o3srl.algos.iql import IQLConfig
    from o3srl.algos.o3srl import O3SRL, O3SRLConfig, Setting, make_oracle
    from o3srl.algos.td3bc import TD3BCConfig

    setting = Setting(ds.obs_dim, ds.act_dim, 5.0, 200, 100_000, 1.0, 1.0)
    orc = make_oracle(
        oracle,
        TD3BCConfig(hidden=hidden, batch_size=batch),
        IQLConfig(hidden=hidden, batch_size=batch),
        ds.obs_dim,
        ds.act_dim,
    )
    return O3SRL(O3SRLConfig(player=player), orc, setting, fixed_lambda=fixed)


def best_rate(call: Callable[[], Any], work: float, repeats: int) -> float:
    """``work`` units per second of ``call`` (compiled by a first, untimed call), best of ``repeats``."""
    import jax

    jax.block_until_ready(call())
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(call())
        best = max(best, work / (time.perf_counter() - t))
    return best


def alone(
    oracle: str, fixed: float | None, data: Any, ds: Any, args: argparse.Namespace, player: str = "earlier"
) -> float:
    """Gradient steps per second of one run: the oracle at a fixed λ, or inside O3SRL (``fixed`` None)."""
    import jax

    lrn = learner(oracle, fixed, ds, tuple(args.hidden), args.batch, player)
    rounds = max(1, args.steps // lrn.steps_per_round)
    fn = jax.jit(lrn.run_rounds, static_argnums=2)
    box = [lrn.init(jax.random.PRNGKey(0))]

    def call() -> Any:
        box[0], _ = fn(box[0], data, rounds)
        return box[0]

    return best_rate(call, rounds * lrn.steps_per_round, args.repeats)


def packed(n: int, data: Any, ds: Any, args: argparse.Namespace) -> tuple[float, float]:
    """Total gradient steps per second of ``n`` O3SRL runs (seeds 0..n−1) as one vmapped program (what
    ``o3srl.train.run_pack`` compiles for runs whose per-run numbers are equal), and the largest difference between
    the packed parameters of seed 0 after one call and those of seed 0 trained alone."""
    import jax
    import numpy as np

    lrn = learner("td3bc", None, ds, tuple(args.hidden), args.batch)
    per_run = args.pack_steps or max(lrn.steps_per_round, args.steps // n)
    rounds = max(1, per_run // lrn.steps_per_round)
    fn = jax.jit(jax.vmap(lambda s, d: lrn.run_rounds(s, d, rounds), in_axes=(0, None)))
    init = jax.vmap(lrn.init)(jax.random.split(jax.random.PRNGKey(0), n))
    box = [init]

    def call() -> Any:
        box[0], _ = fn(box[0], data)
        return box[0]

    rate = best_rate(call, n * rounds * lrn.steps_per_round, args.repeats)
    # Equivalence: one call from the same start, packed and alone.
    first_packed, _ = fn(init, data)
    start = jax.tree.map(lambda x: x[0], init)
    first_alone, _ = jax.jit(lrn.run_rounds, static_argnums=2)(start, data, rounds)
    diff = max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b[0], np.float64)), initial=0.0))
        for a, b in zip(jax.tree.leaves(first_alone), jax.tree.leaves(first_packed))
    )
    return rate, diff


def step_flops(ds: Any, data: Any, args: argparse.Namespace) -> float:
    """XLA's count of floating-point operations of one O3SRL oracle step (TD3+BC, both critic pairs, actor)."""
    import jax
    import jax.numpy as jnp

    from o3srl.data.sampler import sample_batch

    lrn = learner("td3bc", None, ds, tuple(args.hidden), args.batch)
    orc = lrn.oracle
    state = orc.init(jax.random.PRNGKey(0))
    batch = sample_batch(jax.random.PRNGKey(1), data, args.batch)
    # The actor's step runs every policy_delay steps; count one step with it and one without.
    with_actor = jax.jit(orc.update).lower(state, batch, jnp.float32(1.0), 0.1, jax.random.PRNGKey(2))
    cost = with_actor.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def matmul_peak(repeats: int) -> float:
    """The best fp32 matrix-product rate (FLOP/s) this process reaches, XLA or NumPy, 1024² to 2048²."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    best = 0.0
    for n in (1024, 2048):
        a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
        f = jax.jit(lambda x: x @ x)
        x = jnp.asarray(a)
        best = max(best, best_rate(lambda: f(x), 2.0 * n**3, repeats + 1))
        for _ in range(repeats + 1):
            t = time.perf_counter()
            a @ a
            best = max(best, 2.0 * n**3 / (time.perf_counter() - t))
    return best


def torch_td3bc(args: argparse.Namespace) -> float | str:
    """Gradient steps per second of an eager PyTorch TD3+BC with twin reward and twin cost critics (LayerNorm
    critics, delayed actor with the shaped value, Polyak targets): the same maths as the project's TD3+BC step."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return "not installed (pip install 'o3srl[benchmark]')"
    if args.threads == "one":
        torch.set_num_threads(1)
    torch.manual_seed(0)

    def mlp(inp: int, out: int, ln: bool) -> nn.Module:
        layers: list[nn.Module] = []
        for h in args.hidden:
            layers += [nn.Linear(inp, h)] + ([nn.LayerNorm(h)] if ln else []) + [nn.ReLU()]
            inp = h
        return nn.Sequential(*layers, nn.Linear(inp, out))

    actor = mlp(OBS, ACT, False)
    critics = nn.ModuleList([mlp(OBS + ACT, 1, True) for _ in range(4)])  # reward ×2, cost ×2
    actor_t = mlp(OBS, ACT, False)
    actor_t.load_state_dict(actor.state_dict())
    critics_t = nn.ModuleList([mlp(OBS + ACT, 1, True) for _ in range(4)])
    critics_t.load_state_dict(critics.state_dict())
    opt_a = torch.optim.Adam(actor.parameters(), lr=3e-4)
    opt_c = torch.optim.Adam(critics.parameters(), lr=3e-4)
    n = 50_000
    data = {k: torch.randn(n, d) for k, d in (("obs", OBS), ("act", ACT), ("next", OBS))}
    data["act"] = data["act"].clamp(-1, 1)
    rew, cost = torch.randn(n), (torch.rand(n) < 0.1).float()
    gamma, tau, lam, budget = 0.99, 0.005, 1.0, 0.1

    def step(i: int) -> None:
        idx = torch.randint(0, n, (args.batch,))
        obs, act, nxt = data["obs"][idx], data["act"][idx], data["next"][idx]
        with torch.no_grad():
            target_a = torch.tanh(actor_t(nxt))
            noisy = (target_a + (0.2 * torch.randn_like(target_a)).clamp(-0.5, 0.5)).clamp(-1, 1)
            qr = torch.min(critics_t[0](torch.cat([nxt, noisy], 1)), critics_t[1](torch.cat([nxt, noisy], 1)))
            qc = 0.5 * (critics_t[2](torch.cat([nxt, target_a], 1)) + critics_t[3](torch.cat([nxt, target_a], 1)))
            y_r = 0.1 * rew[idx, None] + gamma * qr
            y_c = cost[idx, None] + gamma * qc.clamp_min(0)
        sa = torch.cat([obs, act], 1)
        loss = sum(((critics[k](sa) - (y_r if k < 2 else y_c)) ** 2).mean() for k in range(4))
        opt_c.zero_grad()
        loss.backward()
        opt_c.step()
        if i % 2 == 0:
            pi = torch.tanh(actor(obs))
            spi = torch.cat([obs, pi], 1)
            q_lam = critics[0](spi) - lam * (critics[2](spi).clamp_min(0) - budget / (1 - gamma))
            a_loss = -2.5 / (q_lam.abs().mean().detach() + 1e-6) * q_lam.mean() + ((pi - act) ** 2).mean()
            opt_a.zero_grad()
            a_loss.backward()
            opt_a.step()
            with torch.no_grad():
                for net, tgt in ((actor, actor_t), (critics, critics_t)):
                    for p, tp in zip(net.parameters(), tgt.parameters()):
                        tp.mul_(1 - tau).add_(tau * p)

    steps = max(2, args.steps)
    for i in range(10):
        step(i)
    best = 0.0
    for _ in range(args.repeats):
        t = time.perf_counter()
        for i in range(steps):
            step(i)
        best = max(best, steps / (time.perf_counter() - t))
    return best


def end_to_end(args: argparse.Namespace) -> tuple[float, float, str]:
    """Wall time of ``o3srl train`` on the default task (train ``--e2e-steps`` steps, then evaluate), in a fresh
    process with this benchmark's thread settings; returns (total seconds, evaluation seconds, the command)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "o3srl.cli",
            "train",
            "--steps",
            str(args.e2e_steps),
            "--eval-episodes",
            str(args.e2e_episodes),
            "--run-dir",
            str(Path(tmp) / "run"),
            "--no-progress",
        ]
        env = {**os.environ, **(SINGLE_THREAD if args.threads == "one" else {})}
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - t
        from o3srl.logger import logged_seconds

        trained = logged_seconds(Path(tmp) / "run" / "metrics.jsonl") or 0.0
    shown = "o3srl train " + " ".join(cmd[4:-3] + ["--no-progress"])
    return total, total - trained, shown


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    if args.threads == "one":
        os.environ.update(SINGLE_THREAD)
    import jax

    from o3srl.data.sampler import compute_norm_stats, to_device

    backend = jax.default_backend()
    device = jax.devices()[0].device_kind if backend != "cpu" else platform.processor() or platform.machine()
    ds = synthetic()
    data = to_device(ds, compute_norm_stats(ds))
    say = print
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    threads = "single-threaded (one core)" if args.threads == "one" and backend == "cpu" else "default threads"
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {backend} ({device}), {os.cpu_count()} cores visible, {threads}; jax {jax.__version__}, "
        f"Python {platform.python_version()}; date: {time.strftime('%Y-%m-%d')}  ",
        f"Shapes: obs {OBS}, act {ACT}, hidden {tuple(args.hidden)}, batch {args.batch}, twin reward and twin cost "
        f"critics; best of {args.repeats} timed calls of {args.steps} steps after a compiling call.",
        "",
        "| what | gradient steps/s |",
        "|---|---|",
    ]

    def row(what: str, value: float | str, fmt: str = "{:,.0f}") -> None:
        lines.append(f"| {what} | {fmt.format(value) if isinstance(value, float) else value} |")
        say(lines[-1], flush=True)

    rates: dict[str, float] = {}
    for name, oracle, fixed, player in (
        ("TD3+BC alone (fixed λ)", "td3bc", 1.0, "earlier"),
        ("TD3+BC inside O3SRL", "td3bc", None, "earlier"),
        ("TD3+BC inside O3SRL, adaptive λ-player (cost model read every round)", "td3bc", None, "adaptive"),
        ("IQL alone (fixed λ)", "iql", 1.0, "earlier"),
        ("IQL inside O3SRL", "iql", None, "earlier"),
    ):
        rates[name] = alone(oracle, fixed, data, ds, args, player)
        row(name, rates[name])
    row("O3SRL / oracle alone, TD3+BC", rates["TD3+BC inside O3SRL"] / rates["TD3+BC alone (fixed λ)"], "{:.2f}")
    row(
        "O3SRL, adaptive λ-player / oracle alone, TD3+BC",
        rates["TD3+BC inside O3SRL, adaptive λ-player (cost model read every round)"] / rates["TD3+BC alone (fixed λ)"],
        "{:.2f}",
    )
    row("O3SRL / oracle alone, IQL", rates["IQL inside O3SRL"] / rates["IQL alone (fixed λ)"], "{:.2f}")
    diffs = {}
    for n in args.packs:
        rate, diffs[n] = packed(n, data, ds, args)
        row(f"O3SRL (TD3+BC) packed, {n} run{'s' if n > 1 else ''}: total over the runs", rate)
    ref = torch_td3bc(args)
    row("eager PyTorch TD3+BC with cost critics (same maths)", ref)
    flops = step_flops(ds, data, args)
    peak = matmul_peak(args.repeats)
    lines.append(f"| measured fp32 matmul peak | {peak / 1e9:.1f} GFLOP/s |")
    say(lines[-1])
    lines.append(f"| one TD3+BC step with its actor update (XLA's count) | {flops / 1e9:.2f} GFLOP |")
    say(lines[-1])
    # Half the steps update the actor: the count above is an upper bound of the mean step.
    achieved = rates["TD3+BC inside O3SRL"] * flops
    lines.append(f"| O3SRL (TD3+BC) alone: fraction of the peak | ≤ {achieved / peak:.2f} |")
    say(lines[-1])
    lines.append(
        "| largest absolute difference, packed − alone, of seed 0's parameters after one call | "
        + ", ".join(f"{d:.1e} ({n} run{'s' if n > 1 else ''})" for n, d in diffs.items())
        + " |"
    )
    say(lines[-1])
    if args.e2e_steps:
        total, evaluation, shown = end_to_end(args)
        lines.append(
            f"| end to end: `{shown}` (default task) | {total:.0f} s wall, of which {evaluation:.0f} s "
            "outside the training loop (start, compilation, evaluation) |"
        )
        say(lines[-1])
    if args.out is not None:
        write_section(args.out, "cpu" if backend == "cpu" else "accelerator", lines)
    return lines


SECTIONS = {"cpu": "CPU", "accelerator": "Accelerator"}


def write_section(path: Path, section: str, lines: list[str]) -> None:
    """Put ``lines`` into their section of the page (between its markers), keeping the rest of the page as written,
    so that a run on a CPU machine and one on an accelerator machine each update their own table."""
    from o3srl.io import atomic_write_text

    begin, end = f"<!-- speed.py {section} begin -->", f"<!-- speed.py {section} end -->"
    block = "\n".join([begin, *lines, end])
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (
            (text.rstrip("\n") + "\n\n" if text else "# Training speed\n\n")
            + f"## {SECTIONS[section]}\n\n"
            + block
            + "\n"
        )
    atomic_write_text(path, text)


if __name__ == "__main__":
    main()
