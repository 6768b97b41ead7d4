"""The patent's own examples as runnable configurations.

Each scenario is a small config: two clusters, a few volumes and
relationships, and scripted host operations (``[[ops]]``). Every cluster has
the same TCBs under every policy: ``depth`` reserves two pools of one TCB
per level plus two unreserved TCBs (8 in all); ``shared`` and
``deepest-first`` have the same 8, all unreserved. The operations arrive together, more of them than a cluster has
TCBs, so whether a run deadlocks follows from the workload and the pools
alone; nothing is forced.

Volume ``i`` lives on cluster ``i % 2``.

* ``cross-cluster`` ([0007]): reads of targets on each cluster whose sources
  are on the other; every read holds a TCB on its cluster and needs one on the
  other.
* ``multi-target`` ([0008]-[0009]): T1, a first copy Source -> Target1; T2,
  the Source is modified in cache; T3, a second copy Source -> Target2 whose
  background copy needs the T2 modifications destaged, which first needs
  Target1 to copy the old tracks. Target2's copy workers hold the last TCBs.
* ``fig7`` (FIG 7, [0036]): one read whose flow goes L1 on cluster0 -> L2 on
  cluster1 -> L3 on cluster0 and releases in reverse order.
* ``fig8`` (FIG 8, [0037], [0039]): partial target tracks are destaged
  (arrow 800): the target needs the full track staged; the stage destages the
  source's cache on the other cluster (arrow 810, L2), whose destage intercept
  first protects Target1's image on the first cluster (arrows 820/830, L3).

``pyresv demo`` also runs ``stress`` (:data:`WORKLOADS`, the config of
``examples/stress.toml``): heavy random host work on which ``shared``
deadlocks and ``deepest-first`` does not, to show each policy's latency.

Fault scenarios (:data:`FAULT_SCENARIOS`, ``pyresv faults``; the rules are in
:mod:`pyresv.sim.faults`):

* ``cluster-failover``: cross-cluster reads, host writes and a background
  copy in flight when cluster 1 fails at 3 ms: what ran on it is aborted and
  restarted on cluster 0, which from then on does all the work, without a
  cross-cluster hop.
* ``owner-death`` (FIG 6A blocks 606/610, [0034]): one pool per level; the
  read holding cluster 1's only level-2 pool dies while a second read waits
  for that pool and a third for the first read's level-1 pool on cluster 0:
  both pools go to their waiters, and the dead read restarts.
* ``message-loss``: the cross-cluster reads with a third of the messages
  lost and a jittered delay: lost requests and replies are resent after the
  timeout, a resent request whose work was done is answered from the table,
  and a call out of retries fails its operation cleanly.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from pyresv.sim.config import Config, parse
from pyresv.sim.engine import RunResult, run
from pyresv.sim.policies import POLICIES as _POLICIES

if TYPE_CHECKING:
    from pyresv._factory import AllocatorFactory

__all__ = [
    "Scenario", "SCENARIOS", "WORKLOADS", "STRESS_TOML", "get", "run_scenario", "POLICIES",
    "FaultScenario", "FAULT_SCENARIOS", "get_fault", "run_fault_scenario",
]

#: Every scenario runs under each policy (:mod:`pyresv.sim.policies`).
POLICIES = _POLICIES

#: TCBs per cluster in every scenario: 3 levels x 2 pools x 1 TCB + 2 unreserved.
TCBS = 8
#: Operations per burst: more than a cluster's TCBs.
BURST = TCBS + 2

_MS = 1e-3


def _base(volumes: int, tracks: int) -> dict[str, Any]:
    return {
        "controller": {"clusters": 2, "seed": 1, "message_latency_ms": 0.05},
        "reservation": {
            "depths": [[2, 1], [2, 1], [2, 1]],
            "unreserved": 2,
            "system_tcbs": 64,
        },
        "volumes": {"count": volumes, "tracks": tracks},
        "workload": {"duration_s": 0.0, "rate_ops_per_s": 0.0, "auto_destage": False},
        "flashcopy": [],
        "ops": [],
    }


def _ops(op: str, volume: int, tracks: range, at_ms: float) -> list[dict[str, Any]]:
    return [{"at_s": at_ms * _MS, "op": op, "volume": volume, "track": t} for t in tracks]


def _cross_cluster() -> dict[str, Any]:
    # [0007]: volume 1 (cluster1) -> volume 0 (cluster0), and volume 2
    # (cluster0) -> volume 3 (cluster1). Reads of both targets at once: each
    # stage intercept holds a TCB on its cluster and calls into the other.
    d = _base(volumes=4, tracks=16)
    d["flashcopy"] = [
        {"source": 1, "target": 0, "at_s": 0.0, "background_copy": False},
        {"source": 2, "target": 3, "at_s": 0.0, "background_copy": False},
    ]
    d["ops"] = _ops("read", 0, range(BURST), 1.0) + _ops("read", 3, range(BURST), 1.0)
    return d


def _multi_target() -> dict[str, Any]:
    # [0008]: Source = volume 1 (cluster1), Target1 = volume 2 and Target2 =
    # volume 0 (both cluster0).
    d = _base(volumes=3, tracks=BURST)
    d["flashcopy"] = [
        {"source": 1, "target": 2, "at_s": 0.0, "background_copy": False},  # T1
        # T3: the second copy; its background copy runs BURST workers.
        {"source": 1, "target": 0, "at_s": 2 * _MS, "background_copy": True, "copy_streams": BURST},
    ]
    d["ops"] = _ops("write", 1, range(BURST), 1.0)  # T2: modified in the Source cache
    return d


def _fig7() -> dict[str, Any]:
    # FIG 7: Target1 = volume 2 (cluster0) copied at 0; the source (volume 1,
    # cluster1) is written; Target2 = volume 0 (cluster0) copied at 2 ms; a
    # read of Target2 at 3 ms stages from the source (cluster1, L2), which
    # destages its cache and so first copies the old track to Target1
    # (cluster0, L3).
    d = _base(volumes=3, tracks=4)
    d["flashcopy"] = [
        {"source": 1, "target": 2, "at_s": 0.0, "background_copy": False},
        {"source": 1, "target": 0, "at_s": 2 * _MS, "background_copy": False},
    ]
    d["ops"] = _ops("write", 1, range(1), 1.0) + _ops("read", 0, range(1), 3.0)
    return d


def _fig8() -> dict[str, Any]:
    # FIG 8 / [0039]: target track 1 (volume 2, cluster0) is the earlier copy,
    # target track 2 (volume 0, cluster0) the later one, of the source
    # (volume 1, cluster1). Partial writes to target 2, then their destages.
    d = _base(volumes=3, tracks=16)
    d["flashcopy"] = [
        {"source": 1, "target": 2, "at_s": 0.0, "background_copy": False},
        {"source": 1, "target": 0, "at_s": 2 * _MS, "background_copy": False},
    ]
    d["ops"] = (
        _ops("write", 1, range(BURST), 1.0)
        + _ops("partial-write", 0, range(BURST), 3.0)
        + _ops("destage", 0, range(BURST), 4.0)
    )
    return d


@dataclass(frozen=True)
class Scenario:
    """A named patent example."""

    name: str
    cites: str
    summary: str
    _build: Callable[[], dict[str, Any]]
    #: Whether the shared pool deadlocks on it (deepest-first does too on the
    #: patent's scenarios; the depth pools never do).
    shared_deadlocks: bool

    def config(self, policy: str = "depth") -> Config:
        """The scenario's config under ``policy``."""
        data = self._build()
        data["controller"]["policy"] = policy
        return parse(data)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("cross-cluster", "[0007]",
                 "stage intercepts from each cluster into the other", _cross_cluster, True),
        Scenario("multi-target", "[0008]-[0009]",
                 "Target2's copy needs Target1's copy first", _multi_target, True),
        Scenario("fig7", "FIG 7, [0036]",
                 "one process L1 c0 -> L2 c1 -> L3 c0", _fig7, False),
        Scenario("fig8", "FIG 8, [0037], [0039]",
                 "partial target destage -> source destage -> older target", _fig8, True),
    )
}


#: ``examples/stress.toml`` (a test keeps the two the same): a heavy random
#: host workload with disk-like stage and destage times on two clusters, where
#: the status quo deadlocks within 50 simulated ms. ``pyresv demo`` runs it
#: after the patent's scenarios, so it ships inside the package.
STRESS_TOML = """\
[controller]
clusters = 2
policy = "depth"
seed = 1
message_latency_ms = 0.05

[reservation]
depths = [[4, 2], [4, 2], [4, 2]]
unreserved = 8
system_tcbs = 256
wake = "fifo"

[volumes]
count = 8
tracks = 2048

[[flashcopy]]
source = 0
target = 1
at_s = 0.0
background_copy = true
copy_streams = 4

[[flashcopy]]
source = 3
target = 2
at_s = 0.0
background_copy = true
copy_streams = 4

[[flashcopy]]
source = 4
target = 5
at_s = 0.0
background_copy = false

[[flashcopy]]
source = 7
target = 6
at_s = 0.0
background_copy = false

[workload]
duration_s = 0.05
rate_ops_per_s = 40000.0
read_fraction = 0.7
partial_write_fraction = 0.2
auto_destage = true

[timing]
read_us = 50.0
write_us = 50.0
stage_us = 2000.0
destage_us = 3000.0
copy_us = 500.0
destage_delay_us = 5000.0
"""


def _stress() -> dict[str, Any]:
    return tomllib.loads(STRESS_TOML)


#: Workloads beyond the patent's examples that ``pyresv demo`` also runs.
WORKLOADS: dict[str, Scenario] = {
    "stress": Scenario("stress", "examples/stress.toml",
                       "heavy random host work, disk-like stage and destage", _stress, True),
}


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r} (known: {', '.join(table)})") from None


def _run_named(
    entry: Any, name: str, policy: str, allocator_cls: AllocatorFactory | None, trace: bool
) -> RunResult:
    result = run(entry.config(policy), allocator_cls=allocator_cls, trace=trace)
    result.scenario = name
    return result


def get(name: str) -> Scenario:
    """The scenario (or demo workload) called ``name``; ``KeyError`` lists the known ones."""
    return _lookup({**SCENARIOS, **WORKLOADS}, name, "scenario")


def run_scenario(
    name: str, policy: str = "depth", *, allocator_cls: AllocatorFactory | None = None, trace: bool = False
) -> RunResult:
    """Run one scenario under one policy; the result's summary has a ``scenario`` key."""
    return _run_named(get(name), name, policy, allocator_cls, trace)


# ------------------------------------------------------------------ faults
def _cluster_failover() -> dict[str, Any]:
    # Volume i lives on cluster i % 2. Targets on both clusters, a
    # background copy into volume 0, Poisson host work on every volume, and a
    # burst of stage intercepts in flight when cluster 1 fails.
    d = _base(volumes=4, tracks=32)
    d["reservation"] = {"depths": [[4, 2], [4, 2], [4, 2]], "unreserved": 4, "system_tcbs": 64}
    d["flashcopy"] = [
        {"source": 1, "target": 0, "at_s": 0.0, "background_copy": True, "copy_streams": 2},
        {"source": 2, "target": 3, "at_s": 0.0, "background_copy": False},
    ]
    d["workload"] = {"duration_s": 6 * _MS, "rate_ops_per_s": 20000.0, "auto_destage": True}
    d["timing"] = {"destage_delay_us": 1000.0}
    d["ops"] = _ops("read", 0, range(24, 32), 2.9) + _ops("read", 3, range(8), 2.9)
    d["faults"] = {"cluster_fail": [{"cluster": 1, "at_s": 3 * _MS}], "op_retries": 1}
    return d


def _owner_death() -> dict[str, Any]:
    # Volume 1 (cluster 1) -> volume 0 (cluster 0). Three reads of uncopied
    # target tracks at 1 ms with one pool of one TCB per level and nothing
    # unreserved: read A (pid 0) holds c0's first L1 pool and c1's only L2
    # pool (its stage intercept, 1.07-1.17 ms), read B holds c0's second L1
    # pool and waits for that L2 pool, read C waits for an L1 pool on c0.
    # A dies at 1.1 ms.
    d = _base(volumes=2, tracks=4)
    d["reservation"] = {"depths": [[2, 1], [1, 1], [1, 1]], "unreserved": 0, "system_tcbs": 64}
    d["flashcopy"] = [{"source": 1, "target": 0, "at_s": 0.0, "background_copy": False}]
    d["ops"] = _ops("read", 0, range(3), 1.0)
    d["faults"] = {"process_death": [{"at_s": 1.1 * _MS, "cluster": 1, "level": 2}], "op_retries": 1}
    return d


def _message_loss() -> dict[str, Any]:
    d = _cross_cluster()
    d["faults"] = {
        "message_loss": 1 / 3,
        "message_delay_ms": [0.0, 0.05],
        "message_timeout_ms": 0.5,
        "message_retries": 2,
    }
    return d


@dataclass(frozen=True)
class FaultScenario:
    """A named fault-injection scenario."""

    name: str
    cites: str
    summary: str
    _build: Callable[[], dict[str, Any]]

    def config(self, policy: str = "depth") -> Config:
        """The scenario's config under ``policy``."""
        data = self._build()
        data["controller"]["policy"] = policy
        return parse(data)


FAULT_SCENARIOS: dict[str, FaultScenario] = {
    s.name: s
    for s in (
        FaultScenario("cluster-failover", "[faults] cluster_fail",
                      "cluster 1 fails at 3 ms; its work moves to cluster 0", _cluster_failover),
        FaultScenario("owner-death", "FIG 6A 606/610, [0034]",
                      "a pool owner dies; its pools go to the waiters", _owner_death),
        FaultScenario("message-loss", "[faults] message_*",
                      "a third of the messages lost; resent, deduplicated, or failed cleanly", _message_loss),
    )
}


def get_fault(name: str) -> FaultScenario:
    """The fault scenario called ``name``; ``KeyError`` lists the known ones."""
    return _lookup(FAULT_SCENARIOS, name, "fault scenario")


def run_fault_scenario(
    name: str, policy: str = "depth", *, allocator_cls: AllocatorFactory | None = None, trace: bool = False
) -> RunResult:
    """Run one fault scenario; the summary has ``scenario`` and ``faults`` keys."""
    return _run_named(get_fault(name), name, policy, allocator_cls, trace)
