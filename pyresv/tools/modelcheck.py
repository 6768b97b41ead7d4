"""Exhaustive model check of a small multi-cluster controller: ``pyresv check``.

The claim "cannot deadlock" (DESIGN section 1, patent [0020]-[0022]) is backed
here by brute force. A small controller of ``clusters`` clusters, each with one
real allocator, runs ``max_ops`` concurrent operations. Operation ``k`` is the
FIG 7 flow ([0036]): it starts on cluster ``k % clusters`` at depth level 1,
and each of its ``hops`` steps holds one TCB on its cluster while it calls the
next cluster, one level deeper ([0038]: each hop across clusters increments
the depth level). The deepest step waits on nothing; it finishes and the steps
release their TCBs in reverse order.

Every interleaving of the operations' steps is explored breadth-first. A
*transition* moves one operation by one step; each operation has at most one
step enabled at a time:

* ``start``: acquire the first TCB (``acquire(op, 1)``, level 1, FIG 4);
* ``acquire``: the step at depth ``s`` calls the next cluster
  (``acquire(op, s, remote=True)``, level ``s + 1``, FIG 5A);
* ``finish``/``release``: the deepest step finishes, then each step returns
  its TCB (FIG 6A/6B); grants made by a release (``take_grants``) wake the
  operations whose queued request they serve, in the same transition.

An acquire that returns ``PENDING`` blocks its operation until a grant names it.
A state in which some operation is unfinished and no step is enabled is
*deadlocked*. BFS finds the shortest trace to the first deadlocked state.

State identity. A state is the operations' program counters, what each holds
and the allocators' states. Two allocator states that differ only in which of
several identical TCBs (one pool's TCBs, the free pools of one level, the
unreserved TCBs) carries which id have the same future up to renaming, so the
state key names TCBs by their class (``level_of``: pool level, 0 for unreserved)
instead of by id, plus each cluster's wait queue in arrival order. Counters are
not part of a state. ``states`` is the number of distinct keys reached. Every
new state is checked for conservation on the cluster that changed: the
allocator's ``check()``, every TCB free or held by exactly the operation the
model says holds it, and the pending counts.

A transition works on a private copy of the one allocator it touches (the
other clusters' are shared with the parent state). For the compiled core the
copy is made by replaying that cluster's calls on a fresh allocator (about
6 us + 0.2 us per call), which is several times cheaper than a pickle round
trip (about 50 us to unpickle, 60 us to pickle); the pure-Python reference is
copied by pickle. Both give the same states (``clone=`` selects one).

Every path from the initial state to a given state makes the same number of
allocator calls (a transition is one call; grants ride along), so the BFS
depth is the length of the longest run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pickle
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from pyresv._factory import ALLOCATORS, allocator_class
from pyresv.errors import PENDING, AllocatorError, ConfigError
from pyresv.sim.config import MAX_CLUSTERS, Config, depths_value, parse_toml, read_input, show
from pyresv.sim.policies import POLICIES
from pyresv.sim.policies import allocator_args as policy_allocator_args

if TYPE_CHECKING:
    from pyresv._factory import AllocatorFactory

__all__ = [
    "CheckConfig",
    "CheckResult",
    "ConfigError",
    "Step",
    "add_arguments",
    "add_parser",
    "allocator_class",
    "check",
    "load_config",
    "main",
    "Replay",
    "replay",
    "run_cli",
]

WAKE_POLICIES = ("deepest", "fifo")
CLONE_METHODS = ("replay", "pickle")

#: Default model: 2 clusters x 3 levels, one pool of one TCB per level and two
#: unreserved TCBs per cluster (5 TCBs; under ``shared`` all 5 are unreserved),
#: 5 operations: 236,072 distinct states under ``depth``.
DEFAULT_DEPTHS: tuple[tuple[int, int], ...] = ((1, 1), (1, 1), (1, 1))
DEFAULT_UNRESERVED = 2
DEFAULT_MAX_OPS = 5
#: The default state cap: about 700 bytes per state at 5-6 operations (measured
#: RSS: 158 MB for the default's 236,072 states, 387 MB for 500,000 at
#: --max-ops 6), so the default search stops near 1 GB with exit status 3.
DEFAULT_MAX_STATES = 1_000_000

#: Bounds of a check model, checked before the search: what one search can
#: hold (states), and what each explored state costs to check (every TCB of
#: the cluster that moved is compared with the model's holder).
MAX_CHECK_STATES = 5_000_000
MAX_CHECK_OPS = 64
MAX_CHECK_TCBS = 4096

_USED = {
    "controller": ("clusters", "policy"),
    "reservation": ("depths", "unreserved", "wake"),
    "check": ("max_ops", "hops", "max_states"),
}

# Exit codes of ``pyresv check``.
EXIT_OK = 0  # every interleaving completes
EXIT_FAILED = 1  # a deadlocked state (or a conservation violation) was found
EXIT_BAD_INPUT = 2  # bad config file, key or value
EXIT_INCOMPLETE = 3  # max_states reached before the exploration ended




# --------------------------------------------------------------------- config
@dataclass(frozen=True)
class CheckConfig:
    """What to explore: the controller, its reservation and the workload bound.

    ``depths``/``unreserved`` describe one cluster under policy ``depth``; under
    ``shared`` and ``deepest-first`` each cluster instead has
    ``DepthPoolAllocator([(0, 1)] * D, n)`` with ``n`` the same number of TCBs,
    all unreserved, woken FIFO or deepest first (DESIGN section 3).
    """

    clusters: int = 2
    policy: str = "depth"
    depths: tuple[tuple[int, int], ...] = DEFAULT_DEPTHS
    unreserved: int = DEFAULT_UNRESERVED
    wake: str = "deepest"
    max_ops: int = DEFAULT_MAX_OPS
    hops: int | None = None  # None: one step per level, up to the patent's 3
    max_states: int = DEFAULT_MAX_STATES

    def __post_init__(self) -> None:
        _int_at_least("controller.clusters", self.clusters, 2, MAX_CLUSTERS)
        if self.policy not in POLICIES:
            shown = " | ".join(repr(p) for p in POLICIES)
            raise ConfigError(f"controller.policy must be one of {shown}, got {show(self.policy)}")
        object.__setattr__(self, "depths", depths_value("reservation.depths", self.depths))
        _int_at_least("reservation.unreserved", self.unreserved, 0, MAX_CHECK_TCBS)
        if self.wake not in WAKE_POLICIES:
            raise ConfigError(f"reservation.wake must be 'deepest' or 'fifo', got {show(self.wake)}")
        _int_at_least("check.max_ops", self.max_ops, 1, MAX_CHECK_OPS)
        levels = len(self.depths)
        if self.hops is None:
            object.__setattr__(self, "hops", min(levels, 3))
        hops = _int_at_least("check.hops", self.hops, 1)
        if hops > levels:
            raise ConfigError(
                f"check.hops = {self.hops} needs {self.hops} depth levels "
                f"(one per hop, [0038]) but reservation.depths has {levels}"
            )
        _int_at_least("check.max_states", self.max_states, 1, MAX_CHECK_STATES)
        if self.tcbs_per_cluster > MAX_CHECK_TCBS:
            raise ConfigError(
                f"reservation.depths: {self.tcbs_per_cluster:,} TCBs per cluster; a check holds at most "
                f"{MAX_CHECK_TCBS:,} (each state compares every TCB with the model)"
            )

    @property
    def levels(self) -> int:
        """Depth levels D of every cluster's allocator."""
        return len(self.depths)

    @property
    def tcbs_per_cluster(self) -> int:
        """TCBs of one cluster: reserved plus unreserved (the same under every policy)."""
        return sum(p * s for p, s in self.depths) + self.unreserved

    def allocator_args(self) -> tuple[list[tuple[int, int]], int, str]:
        """``(depths, unreserved, wake)`` of one cluster's allocator under ``policy``
        (:func:`pyresv.sim.policies.allocator_args`: ``shared`` is all unreserved
        and FIFO, ``deepest-first`` all unreserved and deepest first)."""
        return policy_allocator_args(self.policy, self.depths, self.unreserved, self.wake)

    def route(self, op: int) -> tuple[int, ...]:
        """Cluster of each step of operation ``op``: it starts on ``op % clusters``
        and each step hops to the next cluster (FIG 7)."""
        assert self.hops is not None  # __post_init__ filled in the default
        return tuple((op + s) % self.clusters for s in range(self.hops))


def _int_at_least(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {show(value)}")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {show(value)}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be <= {maximum:,}, got {show(value)}")
    return value


def load_config(path: str | Path | None = None, **overrides: Any) -> tuple[CheckConfig, list[str]]:
    """Read a check config from TOML; return it and the ignored simulator keys.

    Tables and keys used: ``[controller]`` clusters, policy; ``[reservation]``
    depths, unreserved, wake; ``[check]`` max_ops, hops, max_states. The other
    keys and tables of the simulator's config (``controller.seed``,
    ``[workload]``, ``[[flashcopy]]``, ...) mean nothing here: they are ignored
    and returned, so one file can serve ``simulate`` and ``check``. ``overrides`` (e.g. ``policy="shared"``; ``None``
    values are skipped) win over the file.

    Raises :class:`ConfigError` naming the key for an unknown key or a bad
    value, and for a file that is missing or not TOML.
    """
    raw: dict[str, Any] = {}
    simulator = _simulator_keys()
    if path is not None:
        raw = parse_toml(read_input(path), str(path))
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for table, content in raw.items():
        if table not in _USED:
            if table in simulator:
                ignored.append(table)
                continue
            raise ConfigError(f"{table}: unknown table (check reads [controller], [reservation], [check])")
        if not isinstance(content, dict):
            raise ConfigError(f"{table} must be a table, got {show(content)}")
        for key, value in content.items():
            if key in _USED[table]:
                values[key] = value
            elif key in simulator.get(table, ()):
                ignored.append(f"{table}.{key}")
            else:
                raise ConfigError(f"{table}.{key}: unknown key (check uses {', '.join(_USED[table])})")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "depths" in values:
        values["depths"] = depths_value("reservation.depths", values["depths"])
    return CheckConfig(**values), ignored


def _simulator_keys() -> dict[str, frozenset[str]]:
    """Tables of the simulator's config and their keys (empty for arrays of tables)."""
    out: dict[str, frozenset[str]] = {}
    for f in dataclasses.fields(Config):
        d = f.default
        out[f.name] = frozenset(g.name for g in dataclasses.fields(d)) if dataclasses.is_dataclass(d) else frozenset()
    return out


# --------------------------------------------------------------- allocators
# ---------------------------------------------------------------- the model
# Program counter of one operation (``pc``), with H = hops:
#   IDLE                 not started
#   UP h,   1 <= h <= H  holds steps 0..h-1; next: acquire step h, or finish if h == H
#   WAIT s, 0 <= s < H   holds steps 0..s-1; step s's request pends
#   DOWN h, 1 <= h < H   deepest step done; holds steps 0..h-1; next: release step h-1
#   DONE
IDLE, UP, WAIT, DOWN, DONE = range(5)


@dataclass
class Step:
    """One transition of a trace: what operation ``op`` did on ``cluster``."""

    op: int
    cluster: int
    action: str  # "start" | "acquire" | "finish" | "release"
    level: int  # level of the request or of the released step (1..D)
    depth: int | None = None  # acquire/start: the depth argument of acquire()
    remote: bool | None = None  # acquire/start: the remote argument
    result: int | None = None  # acquire/start: the TCB id, or PENDING (-1)
    tcb: int | None = None  # finish/release: the TCB released
    grants: list[tuple[int, int]] = field(default_factory=list)  # (op, tcb) woken

    def text(self) -> str:
        """A readable line, e.g. ``op1 c0 acquire L2 -> PENDING``."""
        head = f"op{self.op} c{self.cluster}"
        if self.action in ("start", "acquire"):
            got = "PENDING" if self.result == PENDING else f"tcb {self.result}"
            return f"{head} {self.action} L{self.level} -> {got}"
        verb = "finish L{0}, release" if self.action == "finish" else "release L{0}"
        line = f"{head} {verb.format(self.level)} tcb {self.tcb}"
        for op, tcb in self.grants:
            line += f" -> grant tcb {tcb} to op{op}"
        return line


class _Model:
    """Transition function over concrete states.

    A concrete state is ``(pcs, classes, tcbs, pending, saved)``: per op a
    ``(mode, h)`` program counter and the class (``level_of``) and id of each
    TCB it holds; per cluster the ops whose request pends there, in arrival
    order, and its allocator, saved. Tuples throughout: states share parts and
    are never mutated; a transition restores a private copy of the one
    allocator it touches, and saves it only if the new state is new.

    ``clone`` says how an allocator is saved: ``"pickle"`` stores its pickle;
    ``"replay"`` stores the calls made on it since it was fresh and restores it
    by making them again on a fresh allocator (allocators are deterministic).
    """

    def __init__(self, cfg: CheckConfig, factory: Callable[..., Any], clone: str = "replay") -> None:
        if clone not in CLONE_METHODS:
            raise ValueError(f"clone must be 'replay' or 'pickle', got {clone!r}")
        self.cfg = cfg
        assert cfg.hops is not None  # CheckConfig.__post_init__ filled in the default
        self.hops: int = cfg.hops
        self.routes = [cfg.route(k) for k in range(cfg.max_ops)]
        depths, unreserved, wake = cfg.allocator_args()
        kwargs = dict(
            max_processes=cfg.max_ops,
            max_waiters=cfg.max_ops,  # each op pends at most one request at a time
            wake=wake,
        )
        self.new_allocator: Callable[[], Any] = lambda: factory(depths, unreserved, **kwargs)
        self.fresh = [self.new_allocator() for _ in range(cfg.clusters)]
        # acquire() arguments of step s of op k, by call code k * hops + s.
        self.calls = [
            (k, 1, False) if s == 0 else (k, s, True) for k in range(cfg.max_ops) for s in range(self.hops)
        ]
        self.pickled = clone == "pickle"

    def initial(self) -> tuple:
        n = self.cfg.max_ops
        return (
            ((IDLE, 0),) * n,
            ((),) * n,
            ((),) * n,
            ((),) * self.cfg.clusters,
            tuple(_dumps(a) for a in self.fresh) if self.pickled else ((),) * self.cfg.clusters,
        )

    def restore(self, saved: Any) -> Any:
        """A private allocator in the state ``saved`` (see the class docstring)."""
        if self.pickled:
            return pickle.loads(saved)
        a = self.new_allocator()
        calls = self.calls
        for x in saved:
            if x >= 0:
                a.acquire(*calls[x])
            else:
                a.release(~x)
        a.take_grants()
        return a

    def save(self, saved: Any, a: Any, code: int) -> Any:
        """Saved form of ``a``, which is ``saved`` after the call ``code``."""
        return _dumps(a) if self.pickled else saved + (code,)

    @staticmethod
    def key(state: tuple) -> tuple:
        """Id-free identity of a state (see the module docstring)."""
        return state[0], state[1], state[3]

    @staticmethod
    def enabled(pcs: tuple) -> list[int]:
        """Ops with a step enabled: every op that is neither waiting nor done."""
        return [k for k, (mode, _) in enumerate(pcs) if mode != WAIT and mode != DONE]

    def step(self, state: tuple, k: int, record: bool = False) -> tuple[tuple, Any, int, int, Step | None]:
        """Move op ``k`` one step.

        Returns the new records ``(pcs, classes, tcbs, pending)``, the changed
        allocator, its cluster, the call code (``k * hops + step`` for an
        acquire, ``~tcb`` for a release) and, with ``record``, the :class:`Step`.
        """
        pcs, classes, tcbs, pending, saved = state
        mode, h = pcs[k]
        route = self.routes[k]
        st = None
        if mode == IDLE or (mode == UP and h < self.hops):
            s = h  # acquire step s on its cluster, at level s + 1
            c = route[s]
            a = self.restore(saved[c])
            code = k * self.hops + s
            _, depth, remote = self.calls[code]
            r = a.acquire(k, depth, remote)
            if r == PENDING:
                pcs = _put(pcs, k, (WAIT, s))
                pending = _put(pending, c, pending[c] + (k,))
            else:
                pcs = _put(pcs, k, (UP, s + 1))
                classes = _put(classes, k, classes[k] + (a.level_of(r),))
                tcbs = _put(tcbs, k, tcbs[k] + (r,))
            if record:
                action = "start" if s == 0 else "acquire"
                st = Step(k, c, action, s + 1, depth=depth, remote=remote, result=r)
        elif mode == UP or mode == DOWN:
            s = h - 1  # the deepest step held finishes (UP) or returns (DOWN)
            c = route[s]
            a = self.restore(saved[c])
            t = tcbs[k][s]
            code = ~t
            a.release(t)
            pcs = _put(pcs, k, (DOWN, s) if s > 0 else (DONE, 0))
            classes = _put(classes, k, classes[k][:s])
            tcbs = _put(tcbs, k, tcbs[k][:s])
            if record:
                st = Step(k, c, "finish" if mode == UP else "release", s + 1, tcb=t)
            for pid, g in a.take_grants():
                # FIG 6A block 610 / FIG 6B block 620: a queued request is served.
                wmode, ws = pcs[pid] if 0 <= pid < len(pcs) else (None, 0)
                if wmode != WAIT or pid not in pending[c] or self.routes[pid][ws] != c:
                    raise AllocatorError(
                        f"cluster {c}: grant of TCB {g} to pid {pid}, which has no request pending there"
                    )
                pcs = _put(pcs, pid, (UP, ws + 1))
                classes = _put(classes, pid, classes[pid] + (a.level_of(g),))
                tcbs = _put(tcbs, pid, tcbs[pid] + (g,))
                pending = _put(pending, c, tuple(p for p in pending[c] if p != pid))
                if st is not None:
                    st.grants.append((pid, g))
        else:
            raise ValueError(f"op{k} has no enabled step (it is {'waiting' if mode == WAIT else 'done'})")
        return (pcs, classes, tcbs, pending), a, c, code, st

    def conserve(self, records: tuple, a: Any, c: int) -> None:
        """Check cluster ``c``'s allocator ``a``; raise :class:`AllocatorError` if broken.

        Conservation: every TCB is free or held by exactly the op the model
        says; the allocator's own invariants (``check()``); its pending counts
        are the model's queue.
        """
        _pcs, _classes, tcbs, pending = records[:4]
        a.check()
        expect: dict[int, int] = {}
        for k, held in enumerate(tcbs):
            route = self.routes[k]
            for s, t in enumerate(held):
                if route[s] != c:
                    continue
                if t in expect:
                    raise AllocatorError(f"cluster {c}: TCB {t} held by op{expect[t]} and op{k}")
                expect[t] = k
        for t in range(a.total):
            got = a.holder(t)
            if got != expect.get(t, -1):
                raise AllocatorError(
                    f"cluster {c}: TCB {t} holder is {got}, the model expects {expect.get(t, -1)}"
                )
        if a.pending() != len(pending[c]):
            raise AllocatorError(
                f"cluster {c}: {a.pending()} requests pending, the model has {len(pending[c])}"
            )
        for k in pending[c]:
            if a.pending(k) != 1:
                raise AllocatorError(f"cluster {c}: op{k} should have 1 request pending, has {a.pending(k)}")


def _default_clone(factory: Callable[..., Any]) -> str:
    # Measured per copy of a 5-TCB allocator: the compiled core builds fresh in
    # ~6 us and replays a call in ~0.2 us, but unpickles in ~50 us (its pickle
    # is validated); the pure-Python reference unpickles in ~25 us but builds
    # fresh in ~20 us and replays a call in ~4 us.
    from pyresv.reference import DepthPoolAllocator as Reference

    return "pickle" if isinstance(factory, type) and issubclass(factory, Reference) else "replay"


def _allocator_name(factory: Any) -> str:
    module = getattr(factory, "__module__", "")
    if module == "pyresv._core.allocator":
        return "compiled"
    if module == "pyresv.reference":
        return "reference"
    return f"{module}.{getattr(factory, '__qualname__', repr(factory))}"


def _dumps(allocator: Any) -> bytes:
    return pickle.dumps(allocator, pickle.HIGHEST_PROTOCOL)


def _put(t: tuple, i: int, v: Any) -> tuple:
    return t[:i] + (v,) + t[i + 1 :]


# ------------------------------------------------------------------- search
@dataclass
class CheckResult:
    """Outcome of :func:`check`; :meth:`to_json` gives the ``--json`` object."""

    policy: str
    states: int  # distinct states reached (the initial one included)
    deadlocks: int  # distinct deadlocked states
    trace: list[str]  # shortest trace to a deadlock (or violation), readable
    steps: list[Step]  # the same trace, structured
    waiting: list[int]  # ops blocked forever at the end of the trace
    transitions: int
    completed_states: int  # states in which every op is done
    bfs_depth: int  # transitions in the longest run (BFS levels - 1)
    complete: bool  # False when max_states stopped the search
    violation: str | None  # a conservation failure, if any
    elapsed_s: float
    config: CheckConfig
    allocator: str  # "compiled", "reference", or the class checked
    ignored_keys: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: no deadlock; 1: deadlock or violation; 3: search incomplete."""
        if self.deadlocks or self.violation:
            return EXIT_FAILED
        return EXIT_OK if self.complete else EXIT_INCOMPLETE

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict: ``policy``, ``states``, ``deadlocks``, ``trace`` and extras."""
        cfg = self.config
        return {
            "policy": self.policy,
            "states": self.states,
            "deadlocks": self.deadlocks,
            "trace": self.trace,
            "steps": [asdict(s) for s in self.steps],
            "waiting": self.waiting,
            "transitions": self.transitions,
            "completed_states": self.completed_states,
            "bfs_depth": self.bfs_depth,
            "complete": self.complete,
            "violation": self.violation,
            "elapsed_s": round(self.elapsed_s, 3),
            "allocator": self.allocator,
            "clusters": cfg.clusters,
            "levels": cfg.levels,
            "depths": [list(d) for d in cfg.depths],
            "unreserved": cfg.unreserved,
            "tcbs_per_cluster": cfg.tcbs_per_cluster,
            "wake": cfg.allocator_args()[2],  # the order the allocators used
            "max_ops": cfg.max_ops,
            "hops": cfg.hops,
            "max_states": cfg.max_states,
            "ignored_keys": self.ignored_keys,
        }


def check(
    cfg: CheckConfig | None = None,
    *,
    allocator: str | Callable[..., Any] = "compiled",
    clone: str | None = None,
    ignored_keys: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> CheckResult:
    """Explore every interleaving of ``cfg`` breadth-first; see the module docstring.

    ``progress(states, transitions)`` is called every 1,024 new states and at the end.

    ``allocator`` is ``"compiled"``, ``"reference"`` or a class/factory with the
    ``DepthPoolAllocator`` constructor. ``clone`` is ``"replay"`` or
    ``"pickle"`` (default: whichever is faster for that allocator; the state
    count does not depend on it). The search stops early only on a
    conservation violation or at ``cfg.max_states`` (then ``complete`` is False).
    """
    cfg = cfg or CheckConfig()
    factory = allocator_class(allocator) if isinstance(allocator, str) else allocator
    t0 = time.perf_counter()
    model = _Model(cfg, factory, clone or _default_clone(factory))
    start = model.initial()
    parent: dict[tuple, tuple[tuple, int] | None] = {model.key(start): None}
    for c, a in enumerate(model.fresh):
        model.conserve(start, a, c)
    frontier: list[tuple] = [start]
    transitions = deadlocks = completed = depth = 0
    first_bad: tuple | None = None
    bad_op = -1
    violation: str | None = None
    complete = True
    while frontier and violation is None and complete:
        nxt: list[tuple] = []
        for state in frontier:
            ops = model.enabled(state[0])
            if not ops:
                if all(mode == DONE for mode, _ in state[0]):
                    completed += 1
                else:
                    deadlocks += 1
                    if first_bad is None:
                        first_bad = model.key(state)
                continue
            key = model.key(state)
            saved = state[4]
            for k in ops:
                transitions += 1
                try:
                    records, a, c, code, _ = model.step(state, k)
                    nk = (records[0], records[1], records[3])
                    if nk in parent:
                        continue
                    parent[nk] = (key, k)
                    if progress is not None and not len(parent) & 1023:
                        progress(len(parent), transitions)
                    model.conserve(records, a, c)
                except AllocatorError as e:
                    violation = f"after op{k} moves: {e}"
                    first_bad, bad_op = key, k
                    break
                if len(parent) > cfg.max_states:
                    complete = False
                    break
                nxt.append(records + (_put(saved, c, model.save(saved[c], a, code)),))
            if violation is not None or not complete:
                break
        if nxt:
            depth += 1
        frontier = nxt
    if progress is not None:
        progress(len(parent), transitions)
    ops_seq: list[int] = []
    node = first_bad
    while node is not None and parent[node] is not None:
        node, k = parent[node]  # type: ignore[misc]
        ops_seq.append(k)
    ops_seq.reverse()
    if bad_op >= 0:
        ops_seq.append(bad_op)
    steps: list[Step] = []
    waiting: list[int] = []
    if first_bad is not None:
        rep = replay(cfg, ops_seq, allocator=factory, strict=violation is None)
        steps, waiting = rep.steps, rep.waiting
    return CheckResult(
        policy=cfg.policy,
        states=len(parent),
        deadlocks=deadlocks,
        trace=[s.text() for s in steps],
        steps=steps,
        waiting=waiting,
        transitions=transitions,
        completed_states=completed,
        bfs_depth=depth,
        complete=complete,
        violation=violation,
        elapsed_s=time.perf_counter() - t0,
        config=cfg,
        allocator=_allocator_name(factory),
        ignored_keys=list(ignored_keys),
    )


@dataclass
class Replay:
    """What :func:`replay` did: the steps and how the ops stand at the end."""

    steps: list[Step]
    enabled: list[int]  # ops with a step enabled at the end
    waiting: list[int]  # ops whose request pends at the end
    done: list[int]  # ops that finished


def replay(
    cfg: CheckConfig,
    ops: Sequence[int],
    *,
    allocator: str | Callable[..., Any] = "compiled",
    clone: str = "replay",
    strict: bool = True,
) -> Replay:
    """Re-run a trace (the op moved at each transition) on fresh allocators.

    Raises ``ValueError`` if a listed op has no enabled step. With
    ``strict=False`` an :class:`AllocatorError` in the last step is swallowed
    (used to show the trace of a conservation violation).
    """
    factory = allocator_class(allocator) if isinstance(allocator, str) else allocator
    model = _Model(cfg, factory, clone)
    state = model.initial()
    steps: list[Step] = []
    for i, k in enumerate(ops):
        if k not in model.enabled(state[0]):
            raise ValueError(f"trace step {i}: op{k} has no enabled step")
        try:
            records, a, c, code, st = model.step(state, k, record=True)
        except AllocatorError:
            if strict or i != len(ops) - 1:
                raise
            break
        state = records + (_put(state[4], c, model.save(state[4][c], a, code)),)
        steps.append(st)  # type: ignore[arg-type]
    pcs = state[0]
    return Replay(
        steps=steps,
        enabled=model.enabled(pcs),
        waiting=[k for k, (m, _) in enumerate(pcs) if m == WAIT],
        done=[k for k, (m, _) in enumerate(pcs) if m == DONE],
    )


# ----------------------------------------------------------------------- CLI
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``check`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "check",
        help="exhaustive model check: every interleaving of a small controller",
        description=(
            "Explore every interleaving of a small multi-cluster controller breadth-first "
            "over the real allocator, checking conservation in every state. Exit 0: no "
            "deadlock; 1: deadlock (or conservation violation) found; 2: bad input; "
            "3: --max-states reached first."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run_cli)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``pyresv check`` to ``p`` (run them with :func:`run_cli`)."""
    p.epilog = (
        "exit status: 0 every interleaving completes; 1 a deadlock (or a conservation "
        "violation) was found; 2 bad input; 3 --max-states reached before the end"
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="TOML config ([controller], [reservation], [check])")
    p.add_argument("--policy", choices=POLICIES, help="override controller.policy")
    p.add_argument("--max-ops", type=int, metavar="N", help=f"concurrent operations (default {DEFAULT_MAX_OPS})")
    p.add_argument("--max-states", type=int, metavar="N", help=f"stop after N states (default {DEFAULT_MAX_STATES})")
    p.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="compiled",
        help="allocator under check: the Cython core (default), the pure-Python reference, "
        "or auto (the core when built, else the reference)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``pyresv check`` for parsed ``args``; print the result; return the exit code."""
    try:
        cfg, ignored = load_config(
            args.config, policy=args.policy, max_ops=args.max_ops, max_states=args.max_states
        )
        factory = allocator_class(args.allocator)
    except ConfigError as e:
        print(f"pyresv check: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with _progress_bar(cfg.max_states) as progress:
        result = check(cfg, allocator=factory, ignored_keys=ignored, progress=progress)
    if not result.complete:
        print(f"pyresv check: stopped at the state cap ({cfg.max_states:,} states, --max-states); "
              "the search is incomplete", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(_report(result))
    return result.exit_code


@contextlib.contextmanager
def _progress_bar(cap: int) -> Iterator[Callable[[int, int], None] | None]:
    """States explored against the cap, on stderr, only when stderr is a terminal
    (like the sweep's bar): tqdm when it is installed, else one rewritten line."""
    if not sys.stderr.isatty():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        def line(states: int, transitions: int) -> None:
            print(f"\rcheck: {states:,} of at most {cap:,} states, {transitions:,} transitions",
                  end="", file=sys.stderr, flush=True)

        try:
            yield line
        finally:
            print(file=sys.stderr)
        return
    bar = tqdm(total=cap, unit="state", desc="check", file=sys.stderr, leave=False)

    def update(states: int, transitions: int) -> None:
        bar.update(states - bar.n)
        bar.set_postfix(transitions=transitions, refresh=False)

    try:
        yield update
    finally:
        bar.close()


def _report(r: CheckResult) -> str:
    cfg = r.config
    lines = [
        f"model: {cfg.clusters} clusters x {cfg.levels} levels, policy {cfg.policy}, "
        f"depths {[list(d) for d in cfg.depths]}, unreserved {cfg.unreserved} "
        f"({cfg.tcbs_per_cluster} TCBs per cluster), {cfg.max_ops} ops of {cfg.hops} steps, "
        f"{r.allocator} allocator",
        f"states: {r.states} distinct (up to renaming identical TCBs), {r.transitions} transitions, "
        f"longest run {r.bfs_depth} steps, "
        f"{r.elapsed_s:.1f} s" + ("" if r.complete else f" (INCOMPLETE: max_states {cfg.max_states} reached)"),
        f"deadlocked states: {r.deadlocks}; completed states: {r.completed_states}",
    ]
    if r.ignored_keys:
        lines.append(f"ignored simulator keys: {', '.join(r.ignored_keys)}")
    if r.violation:
        lines.append(f"CONSERVATION VIOLATED: {r.violation}")
    if r.trace:
        what = "violation" if r.violation else "deadlock"
        lines.append(f"shortest trace to a {what} ({len(r.trace)} steps):")
        lines.extend(f"  {i + 1:3d}. {t}" for i, t in enumerate(r.trace))
        if not r.violation and r.waiting:
            lines.append(f"  then no step is enabled: op{', op'.join(map(str, r.waiting))} wait forever")
    elif r.complete and not r.violation:
        lines.append("no deadlock: every interleaving completes")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyresv.tools.modelcheck [CONFIG] [--policy ...] [--max-ops N] [--json]``."""
    p = argparse.ArgumentParser(prog="pyresv check", description=__doc__.split("\n", 1)[0])
    add_arguments(p)
    args = p.parse_args(argv)
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
