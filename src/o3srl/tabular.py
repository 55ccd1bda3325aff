"""Exact ground truth for O3SRL: finite CMDPs, their constrained optimum by linear programming, and tabular O3SRL.

On a finite CMDP the constrained optimum is the solution of a linear program over discounted occupancy measures, so
every number an O3SRL run produces can be compared with the exact answer. This module holds

* the CMDP type and two generators: a gridworld with hazard cells and randomly drawn CMDPs;
* exact policy evaluation (a linear solve) and the T-step episodic evaluation DSRL reports;
* the constrained optimum by LP (HiGHS), the best *deterministic* feasible policy by MILP (the practical variant's
  last iterate is a best response to one λ, deterministic or nearly so, while the LP optimum mixes two policies),
  and the finite-horizon LP for the undiscounted episodic problem;
* offline datasets drawn from a behaviour policy, in DSRL's keys, and the empirical model estimated from them;
* tabular O3SRL, practical (EXP3 over λ-arms, M warm-started oracle steps per round, last iterate) and theoretical
  (projected OGD on λ with exact evaluation on the empirical model, uniform mixture of iterates), reusing the
  project's own λ-player (:mod:`o3srl.bandits`) and transforms (:mod:`o3srl.transforms`).

Which objective the LP solves
    The deep critics bootstrap through timeouts, so they estimate the values of the *stationary discounted* problem
    ``max V_r(π) s.t. V_c(π) ≤ B`` with ``V = E_μ[Σ γ^t ·]`` and the value budget
    ``B = budget_value(budget_per_step(κ, γ, T, convention), γ)``. That is exactly the problem the O3SRL game is
    played on, and the problem :func:`solve_lp` solves, so "O3SRL vs LP" isolates the λ-player, the feedback and the
    oracle from the modelling question of how κ becomes B. The modelling question is answered separately: every
    output is also evaluated on DSRL's measure (undiscounted sums over one T-step episode from μ,
    :func:`evaluate_episode`), against the cost limit κ itself and against :func:`solve_episodic_lp`, the optimum of
    that episodic problem (over non-stationary policies, so an upper bound for the stationary policies O3SRL
    outputs). Which budget convention makes the discounted game meet the episodic limit is then an empirical fact.

The tabular oracle mirrors the deep one (TD3+BC with reward and cost critics): it keeps critics ``Q_r`` and ``Q_c`` of
the current policy and a deterministic policy; one oracle step is one expected TD backup of both critics on the
empirical model (the analogue of one critic gradient step) followed by a greedy policy step on the shaped value
``Q_r − λ (Q_c − b / (1 − γ))`` restricted to actions seen in the data (the analogue of the BC-regularised actor
step). State is carried over from round to round (warm start) and shared by all arms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse

from o3srl import bandits
from o3srl.transforms import BudgetConvention, budget_per_step, budget_value, shaped_value

# ----------------------------------------------------------------------------------------------------------- type


@dataclass(frozen=True)
class CMDP:
    """A finite constrained MDP with discount ``gamma`` and the episode length ``horizon`` its data is cut into.

    ``transitions[s, a, s']`` = P(s' | s, a); ``rewards[s, a]`` and ``costs[s, a]`` are expected per-step values;
    ``initial`` is the start distribution μ.
    """

    transitions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    initial: np.ndarray
    gamma: float
    horizon: int
    name: str = "cmdp"

    def __post_init__(self) -> None:
        s, a, s2 = self.transitions.shape
        if s != s2 or self.rewards.shape != (s, a) or self.costs.shape != (s, a) or self.initial.shape != (s,):
            raise ValueError("inconsistent CMDP shapes")
        if not np.allclose(self.transitions.sum(-1), 1.0) or not np.isclose(self.initial.sum(), 1.0):
            raise ValueError("transition rows and the initial distribution must sum to 1")
        if not 0.0 <= self.gamma < 1.0 or self.horizon < 1:
            raise ValueError("need 0 ≤ γ < 1 and a positive horizon")

    @property
    def num_states(self) -> int:
        return int(self.transitions.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.transitions.shape[1])


class Values(NamedTuple):
    """Reward and cost of a policy under one measure (discounted from μ, or one undiscounted episode)."""

    reward: float
    cost: float


def value_budget(cmdp: CMDP, cost_limit: float, convention: BudgetConvention) -> float:
    """The discounted value budget B that the episodic limit κ stands for under a convention (as the critics use)."""
    return budget_value(budget_per_step(cost_limit, cmdp.gamma, cmdp.horizon, convention), cmdp.gamma)


# ----------------------------------------------------------------------------------------------------- generators


def gridworld(
    size: int = 7,
    river_rows: int = 1,
    extra_hazards: int = 2,
    slip: float = 0.1,
    goal_reward: float = 5.0,
    gamma: float = 0.99,
    horizon: int = 200,
    seed: int = 0,
) -> CMDP:
    """A ``size × size`` grid with a river of hazard cells between the start (bottom middle) and the goal (top
    middle); the river spans the middle ``river_rows`` rows except the two edge columns, and ``extra_hazards`` more
    hazard cells are scattered at random (``seed``).

    Actions up/right/down/left move one cell (walls: stay); with probability ``slip`` a uniformly random other
    direction is taken instead. Any action in a hazard cell costs 1. Any action at the goal earns ``goal_reward`` and
    returns the agent to the start, so the task is continuing and its reward *rate* depends on the route: straight
    across the river (short, costly) or around it along an edge (about twice as long, safe). That trade-off is what
    makes the constraint bind; the default reward puts the optimal multiplier λ* inside the arm grid [0, 5].
    """
    rng = np.random.default_rng(seed)
    n = size * size
    mid = size // 2
    start, goal = (size - 1) * size + mid, mid  # row-major, row 0 at the top
    top = (size - river_rows) // 2
    river = [r * size + c for r in range(top, top + river_rows) for c in range(1, size - 1)]
    others = np.array([s for s in range(n) if s not in (start, goal, *river) and s % size not in (0, size - 1)])
    extra: np.ndarray | list[int] = (
        rng.choice(others, size=min(extra_hazards, len(others)), replace=False) if extra_hazards else []
    )
    hazards = np.array([*river, *extra], dtype=int)
    moves = [(-1, 0), (0, 1), (1, 0), (0, -1)]
    p = np.zeros((n, 4, n))
    for s in range(n):
        r, c = divmod(s, size)
        for a in range(4):
            for b, (dr, dc) in enumerate(moves):
                prob = (1.0 - slip) if b == a else slip / 3.0
                rr, cc = r + dr, c + dc
                nxt = rr * size + cc if 0 <= rr < size and 0 <= cc < size else s
                p[s, a, nxt] += prob
    mu = np.zeros(n)
    mu[start] = 1.0
    p[goal] = mu  # every action at the goal returns to the start
    rewards = np.zeros((n, 4))
    rewards[goal] = goal_reward
    costs = np.zeros((n, 4))
    costs[hazards] = 1.0
    return CMDP(p, rewards, costs, mu, gamma, horizon, f"grid{size}-r{river_rows}-h{extra_hazards}-s{seed}")


def random_cmdp(
    num_states: int = 20,
    num_actions: int = 4,
    concentration: float = 0.3,
    cost_probability: float = 0.3,
    cost_bonus: float = 1.0,
    gamma: float = 0.99,
    horizon: int = 200,
    seed: int = 0,
) -> CMDP:
    """A random CMDP: Dirichlet(``concentration``) transitions; rewards U(0, 1); a fraction of (s, a) pairs cost
    U(½, 1) and pay ``cost_bonus`` × their cost as extra reward, so that reward and cost conflict.

    Every state keeps at least one zero-cost action, so the cost can be driven to zero and every budget is feasible.
    """
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(num_states, concentration), size=(num_states, num_actions))
    costly = rng.uniform(size=(num_states, num_actions)) < cost_probability
    costly[np.arange(num_states), rng.integers(num_actions, size=num_states)] = False
    costs = np.where(costly, rng.uniform(0.5, 1.0, size=costly.shape), 0.0)
    rewards = rng.uniform(size=(num_states, num_actions)) + cost_bonus * costs
    mu = rng.dirichlet(np.ones(num_states))
    return CMDP(p, rewards, costs, mu, gamma, horizon, f"rand{num_states}x{num_actions}-s{seed}")


# ----------------------------------------------------------------------------------------------------- evaluation


def as_stochastic(policy: np.ndarray, num_actions: int) -> np.ndarray:
    """A deterministic policy (S,) of action indices as an (S, A) matrix; an (S, A) matrix is returned as is."""
    policy = np.asarray(policy)
    if policy.ndim == 1:
        return np.eye(num_actions)[policy.astype(int)]
    return policy


def state_values(cmdp: CMDP, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact discounted state values (v_r, v_c) of a stationary policy: ``v = (I − γ P_π)^{-1} r_π``."""
    pi = as_stochastic(policy, cmdp.num_actions)
    p_pi = np.einsum("sa,sat->st", pi, cmdp.transitions)
    system = np.eye(cmdp.num_states) - cmdp.gamma * p_pi
    rhs = np.stack([(pi * cmdp.rewards).sum(1), (pi * cmdp.costs).sum(1)], axis=1)
    v = np.linalg.solve(system, rhs)
    return v[:, 0], v[:, 1]


def evaluate(cmdp: CMDP, policy: np.ndarray) -> Values:
    """Discounted reward and cost values from the start distribution: the quantities the LP optimises."""
    v_r, v_c = state_values(cmdp, policy)
    return Values(float(cmdp.initial @ v_r), float(cmdp.initial @ v_c))


def evaluate_episode(cmdp: CMDP, policy: np.ndarray) -> Values:
    """Undiscounted reward and cost summed over one ``horizon``-step episode from μ: DSRL's measure, compared with κ.

    A non-stationary policy is given as (T, S, A).
    """
    pi = np.asarray(policy)
    d = cmdp.initial.copy()
    reward = cost = 0.0
    for t in range(cmdp.horizon):
        pt = pi[t] if pi.ndim == 3 else as_stochastic(pi, cmdp.num_actions)
        sa = d[:, None] * pt
        reward += float((sa * cmdp.rewards).sum())
        cost += float((sa * cmdp.costs).sum())
        d = np.einsum("sa,sat->t", sa, cmdp.transitions)
    return Values(reward, cost)


def evaluate_mixture(cmdp: CMDP, policies: np.ndarray, episodic: bool = False) -> Values:
    """Value of the uniform mixture that draws one member per episode: the average of the members' values.

    Iterates repeat (greedy best responses cycle among few policies), so each distinct member is evaluated once.
    """
    fn = evaluate_episode if episodic else evaluate
    flat = np.round(np.asarray(policies).reshape(len(policies), -1), 6)
    unique, weights = np.unique(flat, axis=0, return_counts=True)
    vals = np.array([fn(cmdp, u.reshape(policies.shape[1:])) for u in unique])
    w = weights / weights.sum()
    return Values(float(w @ vals[:, 0]), float(w @ vals[:, 1]))


def value_iteration(cmdp: CMDP, signal: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """The greedy optimal policy (S,) of the unconstrained discounted problem with per-step ``signal``."""
    q = np.zeros_like(signal)
    while True:
        q_new = signal + cmdp.gamma * cmdp.transitions @ q.max(1)
        if np.abs(q_new - q).max() < tol:
            return q_new.argmax(1)
        q = q_new


# ------------------------------------------------------------------------------------------------ exact optima


class Optimum(NamedTuple):
    """An exact optimum: the policy (S, A) (or (T, S, A) for the episodic LP), its values and the cost multiplier.

    ``feasible`` is False when no policy meets the budget; the policy is then the minimum-cost one.
    ``multiplier`` is the LP dual of the cost constraint (the optimal λ*); NaN where no dual exists (MILP).
    """

    policy: np.ndarray
    reward: float
    cost: float
    multiplier: float
    feasible: bool


def _flow_constraints(cmdp: CMDP) -> tuple[np.ndarray, np.ndarray]:
    """Bellman flow of discounted occupancies d(s, a): ``Σ_a d(s', a) − γ Σ_{s,a} P(s'|s,a) d(s, a) = μ(s')``."""
    s, a = cmdp.num_states, cmdp.num_actions
    a_eq = np.kron(np.eye(s), np.ones((1, a))) - cmdp.gamma * cmdp.transitions.reshape(s * a, s).T
    return a_eq, cmdp.initial


def _occupancy_policy(d: np.ndarray, num_states: int, num_actions: int) -> np.ndarray:
    """π(a|s) = d(s, a) / Σ_a d(s, a); uniform where the state is never visited (any action is optimal there)."""
    d = np.maximum(d.reshape(num_states, num_actions), 0.0)
    mass = d.sum(1, keepdims=True)
    return np.where(mass > 1e-12, d / np.maximum(mass, 1e-300), 1.0 / num_actions)


def solve_lp(cmdp: CMDP, budget: float | None) -> Optimum:
    """The constrained optimum ``max_d r·d  s.t.  flow(d) = μ, c·d ≤ B, d ≥ 0`` over discounted occupancies.

    Its optimal policy may be stochastic (at most one state randomises when the constraint binds). With
    ``budget=None`` it is the unconstrained optimum (equal to value iteration's). If B is below the least achievable
    cost, the minimum-cost policy is returned with ``feasible=False``.
    """
    s, a = cmdp.num_states, cmdp.num_actions
    a_eq, b_eq = _flow_constraints(cmdp)
    ub = {} if budget is None else {"A_ub": cmdp.costs.reshape(1, -1), "b_ub": [budget]}
    res = scipy.optimize.linprog(-cmdp.rewards.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs", **ub)
    if res.status == 2:
        least = scipy.optimize.linprog(cmdp.costs.ravel(), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        pi = _occupancy_policy(least.x, s, a)
        v = evaluate(cmdp, pi)
        return Optimum(pi, v.reward, v.cost, math.nan, False)
    if res.status != 0:
        raise RuntimeError(f"LP failed: {res.message}")
    pi = _occupancy_policy(res.x, s, a)
    multiplier = 0.0 if budget is None else float(-res.ineqlin.marginals[0])
    return Optimum(pi, float(-res.fun), float(cmdp.costs.ravel() @ res.x), multiplier, True)


def solve_deterministic(cmdp: CMDP, budget: float, time_limit: float = 120.0) -> Optimum:
    """The best deterministic feasible policy, by a MILP: binary z(s, a) picks one action per state, and
    ``d(s, a) ≤ z(s, a) / (1 − γ)`` lets only the picked action carry occupancy.

    The practical variant's last iterate is (nearly) deterministic, and the LP optimum is in general stochastic,
    so this is the reference a last iterate can at best reach. If the solver stops at ``time_limit`` seconds, the best
    policy found so far is returned (a lower bound on the deterministic optimum).
    """
    s, a = cmdp.num_states, cmdp.num_actions
    n = s * a
    a_flow, b_flow = _flow_constraints(cmdp)
    big = 1.0 / (1.0 - cmdp.gamma)
    constraints = [
        scipy.optimize.LinearConstraint(np.hstack([a_flow, np.zeros((s, n))]), b_flow, b_flow),
        scipy.optimize.LinearConstraint(np.hstack([cmdp.costs.reshape(1, -1), np.zeros((1, n))]), -np.inf, budget),
        scipy.optimize.LinearConstraint(np.hstack([np.zeros((s, n)), np.kron(np.eye(s), np.ones((1, a)))]), 1, 1),
        scipy.optimize.LinearConstraint(np.hstack([np.eye(n), -big * np.eye(n)]), -np.inf, 0),
    ]
    res = scipy.optimize.milp(
        np.concatenate([-cmdp.rewards.ravel(), np.zeros(n)]),
        constraints=constraints,
        integrality=np.concatenate([np.zeros(n), np.ones(n)]),
        bounds=scipy.optimize.Bounds(np.zeros(2 * n), np.concatenate([np.full(n, np.inf), np.ones(n)])),
        options={"time_limit": time_limit},
    )
    if res.x is None:
        least = solve_lp(cmdp, -1.0)  # infeasible by construction → the minimum-cost policy
        det = least.policy.argmax(1)
        v = evaluate(cmdp, det)
        return Optimum(as_stochastic(det, a), v.reward, v.cost, math.nan, False)
    det = res.x[n:].reshape(s, a).argmax(1)
    v = evaluate(cmdp, det)  # re-evaluate exactly (the MILP's values carry solver tolerance)
    return Optimum(as_stochastic(det, a), v.reward, v.cost, math.nan, True)


def solve_episodic_lp(cmdp: CMDP, cost_limit: float) -> Optimum:
    """DSRL's problem itself: max Σ_{t<T} E[r_t]  s.t.  Σ_{t<T} E[c_t] ≤ κ, undiscounted over one T-step episode.

    An LP over time-indexed occupancies d_t(s, a); its optimum is over non-stationary policies, so it bounds from
    above what any stationary policy (O3SRL's outputs) can reach on the episodic measure.
    """
    s, a, horizon = cmdp.num_states, cmdp.num_actions, cmdp.horizon
    sum_a = scipy.sparse.kron(scipy.sparse.eye(s), np.ones((1, a)))
    flow = scipy.sparse.csr_matrix(cmdp.transitions.reshape(s * a, s).T)
    a_eq = scipy.sparse.kron(scipy.sparse.eye(horizon), sum_a) - scipy.sparse.kron(
        scipy.sparse.eye(horizon, k=-1), flow
    )
    b_eq = np.concatenate([cmdp.initial, np.zeros(s * (horizon - 1))])
    res = scipy.optimize.linprog(
        -np.tile(cmdp.rewards.ravel(), horizon),
        A_ub=scipy.sparse.csr_matrix(np.tile(cmdp.costs.ravel(), horizon)[None]),
        b_ub=[cost_limit],
        A_eq=a_eq.tocsr(),
        b_eq=b_eq,
        bounds=(0, None),
        method="highs-ipm",  # interior point (with crossover): ~10× faster than simplex on these long, sparse LPs
    )
    if res.status != 0:
        return Optimum(np.zeros((horizon, s, a)), math.nan, math.nan, math.nan, False)
    d = res.x.reshape(horizon, s * a)
    pi = np.stack([_occupancy_policy(d[t], s, a) for t in range(horizon)])
    cost = float(np.tile(cmdp.costs.ravel(), horizon) @ res.x)
    return Optimum(pi, float(-res.fun), cost, float(-res.ineqlin.marginals[0]), True)


# ----------------------------------------------------------------------------------------------------------- data


def behaviour_policy(cmdp: CMDP, epsilon: float = 0.5, base: np.ndarray | None = None) -> np.ndarray:
    """``(1 − ε) π_base + ε uniform``; by default π_base is the unconstrained reward-optimal policy, so the data is
    mostly unsafe (as on the DSRL tasks, where the best-rewarded behaviour violates small limits)."""
    if base is None:
        base = value_iteration(cmdp, cmdp.rewards)
    return (1.0 - epsilon) * as_stochastic(base, cmdp.num_actions) + epsilon / cmdp.num_actions


def sample_dataset(cmdp: CMDP, behaviour: np.ndarray, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """``episodes`` episodes of ``horizon`` steps from μ under ``behaviour`` (S, A), in DSRL's keys.

    Observations are state indices. Episodes end by timeout only (the CMDPs are continuing), so ``terminals`` is
    all False and ``timeouts`` marks every T-th transition, exactly as on the time-limited DSRL tasks.
    """
    rng = np.random.default_rng(seed)
    s_cum = np.cumsum(cmdp.initial)
    state = np.searchsorted(s_cum, rng.uniform(size=episodes) * s_cum[-1], side="right")
    state = np.minimum(state, cmdp.num_states - 1)
    pi_cum = np.cumsum(behaviour, axis=1)
    p_cum = np.cumsum(cmdp.transitions, axis=2)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "actions", "next_observations")}
    for _ in range(cmdp.horizon):
        u = rng.uniform(size=episodes)[:, None]
        action = np.minimum((u * pi_cum[state, -1:] > pi_cum[state]).sum(1), cmdp.num_actions - 1)
        u = rng.uniform(size=episodes)[:, None]
        nxt = np.minimum((u * p_cum[state, action, -1:] > p_cum[state, action]).sum(1), cmdp.num_states - 1)
        cols["observations"].append(state)
        cols["actions"].append(action)
        cols["next_observations"].append(nxt)
        state = nxt
    out = {k: np.stack(v, axis=1).reshape(-1).astype(np.int32) for k, v in cols.items()}  # episode-major order
    out["rewards"] = cmdp.rewards[out["observations"], out["actions"]].astype(np.float32)
    out["costs"] = cmdp.costs[out["observations"], out["actions"]].astype(np.float32)
    out["terminals"] = np.zeros(episodes * cmdp.horizon, bool)
    out["timeouts"] = np.tile(np.arange(cmdp.horizon) == cmdp.horizon - 1, episodes)
    return out


def empirical_model(
    data: dict[str, np.ndarray], num_states: int, num_actions: int, gamma: float, horizon: int
) -> tuple[CMDP, np.ndarray]:
    """The maximum-likelihood CMDP of the data and the visit counts n(s, a).

    Pairs never seen in the data get a pessimistic stand-in (self-loop, the smallest reward and largest cost seen),
    so no plan can profit from what the data does not show; the oracle also never picks them (support constraint).
    """
    obs, act, nxt = data["observations"], data["actions"], data["next_observations"]
    counts = np.zeros((num_states, num_actions))
    np.add.at(counts, (obs, act), 1.0)
    trans = np.zeros((num_states, num_actions, num_states))
    np.add.at(trans, (obs, act, nxt), 1.0)
    r_sum = np.zeros((num_states, num_actions))
    c_sum = np.zeros((num_states, num_actions))
    np.add.at(r_sum, (obs, act), data["rewards"])
    np.add.at(c_sum, (obs, act), data["costs"])
    seen = counts > 0
    safe = np.maximum(counts, 1.0)
    rewards = np.where(seen, r_sum / safe, float(data["rewards"].min()))
    costs = np.where(seen, c_sum / safe, float(data["costs"].max()))
    loops = np.broadcast_to(np.eye(num_states)[:, None, :], trans.shape)
    trans = np.where(seen[..., None], trans / safe[..., None], loops)
    starts = np.concatenate([[True], (data["terminals"] | data["timeouts"])[:-1]])
    mu = np.bincount(obs[starts], minlength=num_states).astype(float)
    return CMDP(trans, rewards, costs, mu / mu.sum(), gamma, horizon, "empirical"), counts


# ------------------------------------------------------------------------------------------------ tabular oracle


ActorKind = Literal["softmax", "greedy"]
_OUTSIDE = -1e9  # logit of actions outside the data's support (finite, so that softmax never produces NaN)


class OracleState(NamedTuple):
    """Critics of the current policy and the policy's logits: the tabular twin of the deep oracle's state."""

    q_reward: jax.Array  # (S, A)
    q_cost: jax.Array  # (S, A)
    logits: jax.Array  # (S, A); the policy is softmax(logits), one-hot for the greedy actor


class _Model(NamedTuple):
    transitions: jax.Array
    rewards: jax.Array
    costs: jax.Array
    initial: jax.Array
    allowed: jax.Array  # (S, A) bool: actions in the data's support
    visits: jax.Array  # (S,) the data's state frequencies (where "batch" feedback reads the critics)


def _as_model(model: CMDP, counts: np.ndarray, min_count: int) -> _Model:
    allowed = counts >= min_count
    allowed[~allowed.any(1)] = True  # a state the data never shows: nothing to constrain to
    f = jnp.float32
    visits = counts.sum(1) / max(counts.sum(), 1.0)
    return _Model(
        jnp.asarray(model.transitions, f),
        jnp.asarray(model.rewards, f),
        jnp.asarray(model.costs, f),
        jnp.asarray(model.initial, f),
        jnp.asarray(allowed),
        jnp.asarray(visits, f),
    )


def init_oracle(counts: np.ndarray, min_count: int = 1) -> OracleState:
    """Zero critics and the behaviour-cloning policy: the data's action frequencies within the support."""
    s, a = counts.shape
    allowed = counts >= min_count
    allowed[~allowed.any(1)] = True
    freq = np.maximum(counts, 1.0) / np.maximum(counts.sum(1, keepdims=True), 1.0)
    logits = np.where(allowed, np.log(freq), _OUTSIDE)
    return OracleState(jnp.zeros((s, a)), jnp.zeros((s, a)), jnp.asarray(logits, jnp.float32))


def oracle_policy(state: OracleState) -> jax.Array:
    """The oracle's current policy π(a|s), (S, A)."""
    return jax.nn.softmax(state.logits, axis=1)


def oracle_step(
    model: _Model,
    gamma: float,
    budget_step: jax.Array,
    actor: ActorKind,
    actor_lr: jax.Array,
    state: OracleState,
    lam: jax.Array,
) -> OracleState:
    """One oracle step: one expected TD backup of Q_r and Q_c for the current policy on the empirical model (the
    critic step), then one actor step on the shaped value ``Q_r − λ (Q_c − b / (1 − γ))`` within the data's support.

    ``softmax``: a mirror-descent (natural policy gradient) step, logits += η·advantage: the analogue of one actor
    gradient step, so the policy moves a little per step and integrates the λ's of recent rounds, as the deep actor
    does. ``greedy``: jump to the argmax (an exact best response to the current critics; deterministic policies).
    """
    pi = oracle_policy(state)
    q_r = model.rewards + gamma * model.transitions @ (pi * state.q_reward).sum(1)
    q_c = model.costs + gamma * model.transitions @ (pi * state.q_cost).sum(1)
    score = shaped_value(q_r, q_c, lam, budget_step, gamma)
    if actor == "greedy":
        best = jnp.argmax(jnp.where(model.allowed, score, -jnp.inf), axis=1)
        logits = jnp.where(jax.nn.one_hot(best, score.shape[1], dtype=bool), 0.0, _OUTSIDE)
    else:
        advantage = score - (pi * score).sum(1, keepdims=True)
        logits = jnp.where(model.allowed, state.logits + actor_lr * advantage, _OUTSIDE)
        logits = logits - logits.max(1, keepdims=True)
    return OracleState(q_r, q_c, logits)


def _initial_values(model: _Model, state: OracleState, where: str = "initial") -> tuple[jax.Array, jax.Array]:
    """The critics' V̂_r, V̂_c of the current policy at the data's initial states, or averaged over the data's state
    frequencies (``where="batch"``, the analogue of reading the critics on training batches): the feedback's input."""
    pi = oracle_policy(state)
    weights = model.visits if where == "batch" else model.initial
    return weights @ (pi * state.q_reward).sum(1), weights @ (pi * state.q_cost).sum(1)


# ----------------------------------------------------------------------------------------- O3SRL, practical


@dataclass(frozen=True)
class TabularConfig:
    """Tabular O3SRL (practical, Algorithm 2). Defaults follow the deep version: K = 5, C = 5, M = 10, EXP3."""

    num_arms: int = 5
    max_lambda: float = 5.0
    arms: tuple[float, ...] | None = None
    """Explicit λ values (overrides K and C); one value = the fixed-λ oracle."""
    steps_per_round: int = 10
    rounds: int = 10_000
    """10,000 rounds of M = 10: the deep version's 100k oracle steps."""
    bandit: bandits.BanditKind = "exp3box"
    feedback: bandits.FeedbackKind = "lagrangian"
    learning_rate: float | None = None
    """None: as the deep version (0.2 for exp3s, the textbook rate for the others)."""
    exploration: float | None = None
    """None: as the deep version (share 0.01 for exp3s, Auer et al.'s mix for exp3)."""
    budget_convention: BudgetConvention = "osrl"
    min_scale: float = 1.0
    margin: float = 0.2
    """δ: the lagrangian feedback plays against the budget (1 − δ) B."""
    relative_scale: float = 1.0
    """ρ: the lagrangian feedback's violation is measured in units of ρ · max(B, min_scale)."""
    optimism: float = 8.0
    """β: the draw anticipates the last round's losses, p ∝ exp(−η L̂ − β ℓ_last) (0: off)."""
    max_gap: float = bandits.MAX_GAP
    """exp3box's box W: no arm's log-weight more than this below the best one's (unused by the other bandits)."""
    lambda_scale: float = 1.0
    """Unit of the arm grid: arms = lambda_scale × linspace(0, C, K) (e.g. o3srl.bandits.lambda_unit of the data)."""
    feedback_states: Literal["initial", "batch"] = "initial"
    actor: ActorKind = "softmax"
    actor_lr: float = 0.01
    """Mirror-descent step per unit of shaped advantage (softmax actor)."""
    min_count: int = 1
    """Actions seen fewer times in a state are outside the support the policy may use."""
    oracle_lambda: Literal["drawn", "mean"] = "drawn"
    hint_decay: float = 0.0
    """ρ: the optimism's hint is the exponential average of past losses (0: the last round's), as the deep version."""
    """The λ the oracle's steps use: the drawn arm, or the mean λ of the draw's distribution (as the deep version)."""
    tail_fraction: float = 0.1
    tail_members: int = 20
    """The tail mixture: ``tail_members`` iterates spread evenly over the last ``tail_fraction`` of the rounds."""


class PracticalResult(NamedTuple):
    """The last iterate π_T (S, A) and the per-round trace of the λ-player."""

    policy: np.ndarray
    lambdas: np.ndarray
    cost_estimates: np.ndarray
    reward_estimates: np.ndarray
    final_probs: np.ndarray
    budget: float
    tail: np.ndarray
    """(N, S, A): iterates spread evenly over the last ``tail_fraction`` of the rounds (the tail mixture's members)."""


def resolve_arms(config: TabularConfig) -> np.ndarray:
    if config.arms:
        return np.asarray(config.arms, np.float32)
    return np.asarray(bandits.arm_grid(config.num_arms, config.max_lambda * config.lambda_scale), np.float32)


@partial(
    jax.jit,
    static_argnames=(
        "bandit",
        "feedback",
        "actor",
        "steps_per_round",
        "rounds",
        "max_lambda",
        "min_scale",
        "where",
        "oracle_lambda",
    ),
)
def _practical(
    model: _Model,
    oracle: OracleState,
    arms: jax.Array,
    key: jax.Array,
    gamma: float,
    budget_step: jax.Array,
    budget: jax.Array,
    value_scale: jax.Array,
    learning_rate: jax.Array,
    exploration: jax.Array,
    actor_lr: jax.Array,
    margin: jax.Array,
    relative_scale: jax.Array,
    optimism: jax.Array,
    max_gap: jax.Array,
    hint_decay: jax.Array,
    *,
    bandit: bandits.BanditKind,
    feedback: bandits.FeedbackKind,
    actor: ActorKind,
    steps_per_round: int,
    rounds: int,
    max_lambda: float,
    min_scale: float,
    where: str,
    oracle_lambda: str = "drawn",
) -> tuple[OracleState, tuple[jax.Array, ...], jax.Array]:
    def step(lam: jax.Array) -> Callable[[int, OracleState], OracleState]:
        return lambda _, o: oracle_step(model, gamma, budget_step, actor, actor_lr, o, lam)

    def round_(carry: tuple[OracleState, bandits.BanditState], k: jax.Array):
        o, b = carry
        probs = bandits.arm_probabilities(b, bandit, exploration, optimism)
        arm = bandits.draw_arm(k, probs)
        lam = bandits.played_lambda(arms, probs, arm, oracle_lambda)
        o = jax.lax.fori_loop(0, steps_per_round, step(lam), o)  # M warm-started oracle steps at λ
        reward_est, cost_est = _initial_values(model, o, where)
        if feedback == "lagrangian":
            losses = bandits.lagrangian_feedback(arms, max_lambda, cost_est, budget, min_scale, margin, relative_scale)
        else:
            losses = bandits.shaped_feedback(arms, reward_est, cost_est, budget, value_scale)
        b = bandits.update_bandit(
            b, bandit, arm, losses, probs, learning_rate, exploration, optimism, max_gap=max_gap, hint_decay=hint_decay
        )
        return (o, b), (lam, cost_est, reward_est, oracle_policy(o))

    (o, b), trace = jax.lax.scan(round_, (oracle, bandits.init_bandit(arms.shape[0])), jax.random.split(key, rounds))
    return o, trace, bandits.arm_probabilities(b, bandit, exploration, optimism)


def run_practical(
    model: CMDP, counts: np.ndarray, cost_limit: float, config: TabularConfig, seed: int
) -> PracticalResult:
    """Tabular O3SRL, Algorithm 2, on an empirical model: returns the last iterate and the λ-player's trace."""
    arms = resolve_arms(config)
    k = len(arms)
    max_lambda = float(max(arms.max(), 1e-12))
    lr, expl = bandits.default_rates(config.bandit, k, config.rounds, config.learning_rate, config.exploration)
    b_step = budget_per_step(cost_limit, model.gamma, model.horizon, config.budget_convention)
    budget = budget_value(b_step, model.gamma)
    # As in the deep version: the largest possible |Lagrangian| given the data's reward and cost ranges.
    value_scale = (np.abs(model.rewards).max() + max_lambda * np.abs(model.costs).max()) / (1.0 - model.gamma)
    f = jnp.float32
    o, (lams, costs, rewards, iterates), probs = _practical(
        _as_model(model, counts, config.min_count),
        init_oracle(counts, config.min_count),
        jnp.asarray(arms),
        jax.random.PRNGKey(seed),
        model.gamma,
        f(b_step),
        f(budget),
        f(value_scale),
        f(lr),
        f(expl),
        f(config.actor_lr),
        f(config.margin),
        f(config.relative_scale),
        f(config.optimism),
        f(config.max_gap),
        f(config.hint_decay),
        bandit=config.bandit,
        feedback=config.feedback,
        actor=config.actor,
        steps_per_round=config.steps_per_round,
        rounds=config.rounds,
        max_lambda=max_lambda,
        min_scale=config.min_scale,
        where=config.feedback_states,
        oracle_lambda=config.oracle_lambda,
    )
    tail = max(1, int(round(config.rounds * config.tail_fraction)))
    members = np.asarray(iterates[-tail:][:: max(1, tail // config.tail_members)], np.float64)
    return PracticalResult(
        np.asarray(oracle_policy(o), np.float64),
        np.asarray(lams),
        np.asarray(costs),
        np.asarray(rewards),
        np.asarray(probs),
        budget,
        members,
    )


# -------------------------------------------------------------------------------------------- O3SRL, theory


@dataclass(frozen=True)
class TabularTheoryConfig:
    """Algorithm 1: projected OGD on λ ∈ [0, C], exact evaluation of each iterate on the empirical model.

    The oracle is the greedy one by default: Algorithm 1 assumes a best response per iteration, and
    ``steps_per_iteration`` greedy steps (policy iteration with partial evaluation) approximate it.
    """

    iterations: int = 2_000
    steps_per_iteration: int = 50
    """2,000 × 50 = 100k oracle steps, as in the practical variant; the OGD regret term shrinks as 1 / √T."""
    max_lambda: float = 5.0
    lambda_lr: float | None = None
    """None: C / (D √T), D = the largest possible |V_c − B| (as in the deep theory variant)."""
    initial_lambda: float = 0.0
    budget_convention: BudgetConvention = "osrl"
    actor: ActorKind = "greedy"
    actor_lr: float = 0.01
    min_count: int = 1


class TheoryResult(NamedTuple):
    """The T iterates (T, S, A) whose uniform mixture is the output, and λ_t with the evaluations V̂_r, V̂_c."""

    policies: np.ndarray
    lambdas: np.ndarray
    reward_estimates: np.ndarray
    cost_estimates: np.ndarray
    budget: float


def exact_values(model: _Model, gamma: float, pi: jax.Array) -> tuple[jax.Array, jax.Array]:
    """V_r, V_c of a policy (S, A) at the model's initial distribution by a linear solve: FQE run to its fixed
    point on the empirical model (tabular FQE converges to exactly this)."""
    p_pi = jnp.einsum("sa,sat->st", pi, model.transitions)
    rhs = jnp.stack([(pi * model.rewards).sum(1), (pi * model.costs).sum(1)], axis=1)
    v = jnp.linalg.solve(jnp.eye(pi.shape[0]) - gamma * p_pi, rhs)
    return model.initial @ v[:, 0], model.initial @ v[:, 1]


@partial(jax.jit, static_argnames=("actor", "iterations", "steps"))
def _theory(
    model: _Model,
    oracle: OracleState,
    gamma: float,
    budget_step: jax.Array,
    budget: jax.Array,
    max_lambda: jax.Array,
    lr: jax.Array,
    lam0: jax.Array,
    actor_lr: jax.Array,
    *,
    actor: ActorKind,
    iterations: int,
    steps: int,
) -> tuple[jax.Array, ...]:
    def iteration(carry: tuple[OracleState, jax.Array], _: None):
        o, lam = carry
        o = jax.lax.fori_loop(0, steps, lambda _, x: oracle_step(model, gamma, budget_step, actor, actor_lr, x, lam), o)
        pi = oracle_policy(o)
        v_r, v_c = exact_values(model, gamma, pi)
        nxt = jnp.clip(lam + lr * (v_c - budget), 0.0, max_lambda)  # OGD on the λ-player's loss −λ (V̂_c − B)
        return (o, nxt), (pi, lam, v_r, v_c)

    _, out = jax.lax.scan(iteration, (oracle, lam0), None, length=iterations)
    return out


def run_theory(model: CMDP, counts: np.ndarray, cost_limit: float, config: TabularTheoryConfig) -> TheoryResult:
    """Tabular O3SRL, Algorithm 1: returns the iterates (their uniform mixture is the output) and λ_t."""
    b_step = budget_per_step(cost_limit, model.gamma, model.horizon, config.budget_convention)
    budget = budget_value(b_step, model.gamma)
    spread = max(np.abs(model.costs).max() / (1.0 - model.gamma) - budget, budget, 1e-6)
    lr = config.lambda_lr
    if lr is None:
        lr = config.max_lambda / (spread * math.sqrt(config.iterations))
    f = jnp.float32
    pols, lams, v_r, v_c = _theory(
        _as_model(model, counts, config.min_count),
        init_oracle(counts, config.min_count),
        model.gamma,
        f(b_step),
        f(budget),
        f(config.max_lambda),
        f(lr),
        f(config.initial_lambda),
        f(config.actor_lr),
        actor=config.actor,
        iterations=config.iterations,
        steps=config.steps_per_iteration,
    )
    return TheoryResult(np.asarray(pols, np.float64), np.asarray(lams), np.asarray(v_r), np.asarray(v_c), budget)
