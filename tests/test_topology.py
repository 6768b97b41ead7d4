"""Topology: home clusters, the levels a config needs, initialization (FIGs 2A/2B)."""

from __future__ import annotations

import pytest

from pyresv.sim.config import ConfigError, parse
from pyresv.sim.engine import Simulation, run
from pyresv.sim.topology import InitAttempt, carve, home_of, levels_needed


def test_home_of() -> None:
    assert [home_of(v, 2) for v in range(5)] == [0, 1, 0, 1, 0]
    assert [home_of(v, 3) for v in range(5)] == [0, 1, 2, 0, 1]


@pytest.mark.parametrize(
    ("clusters", "rels", "need"),
    [
        (2, [], 1),
        (2, [(0, 2)], 1),  # same cluster: no hop at all
        (2, [(0, 1)], 3),  # [0038]: a non-cascaded copy across clusters needs 3
        (2, [(0, 1), (0, 3), (0, 5)], 3),  # several targets: still 3
        (2, [(0, 1), (1, 2)], 4),  # a cascade across clusters adds a level
        (2, [(0, 1), (1, 2), (2, 3)], 5),
        (3, [(0, 1), (1, 2)], 4),
    ],
)
def test_levels_needed(clusters: int, rels: list, need: int) -> None:
    assert levels_needed(clusters, rels) == need


def test_carve_fits_first_time() -> None:
    result = carve([(4, 9)] * 3, 32, 256)
    assert result.attempts == (InitAttempt(((4, 9),) * 3, True),)
    assert result.depths == ((4, 9),) * 3 and result.reserved == 108


def test_carve_fails_then_retries_with_smaller_pools() -> None:
    # 100 - 32 = 68 TCBs: level 1 (36) fits, level 2 (36) does not; half the
    # pools (3 x 18 = 54) fit.
    result = carve([(4, 9)] * 3, 32, 100)
    assert result.attempts == (
        InitAttempt(((4, 9),) * 3, False, failed_level=2, needed=36, available=32),
        InitAttempt(((2, 9),) * 3, True),
    )
    assert result.depths == ((2, 9),) * 3


def test_carve_keeps_one_pool_per_level_then_gives_up() -> None:
    result = carve([(8, 2), (3, 2)], 0, 4)
    assert [a.depths for a in result.attempts] == [((8, 2), (3, 2)), ((4, 2), (1, 2)), ((2, 2), (1, 2)), ((1, 2), (1, 2))]
    with pytest.raises(ConfigError, match=r"^reservation\.system_tcbs: 3 TCBs minus 0 unreserved cannot hold"):
        carve([(8, 2), (3, 2)], 0, 3)


def _tiny(**reservation) -> dict:
    return {
        "reservation": {"depths": [[4, 9]] * 3, "unreserved": 32, **reservation},
        "volumes": {"count": 2, "tracks": 4},
        "workload": {"rate_ops_per_s": 0.0, "auto_destage": False},
        "ops": [{"at_s": 0.0, "op": "read", "volume": 1, "track": 0}],
    }


def test_init_retry_in_a_run_and_ready_after_peers() -> None:
    config = parse(_tiny(system_tcbs=100))
    sim = Simulation(config)
    # Each cluster's allocator has the carved pools: 3 x 2 x 9 + 32 unreserved.
    assert [a.total for a in sim.allocators] == [86, 86]
    result = sim.run()
    init = result.summary()["init"]
    assert init["attempts"] == [
        {"depths": [[4, 9]] * 3, "ok": False, "failed_level": 2, "needed": 36, "available": 32},
        {"depths": [[2, 9]] * 3, "ok": True},
    ]
    assert init["depths"] == [[2, 9]] * 3
    # Two attempts of init_us = 100 each, then the peer's ready message (50 us).
    assert init["ready_us"] == [250.0, 250.0]
    assert result.summary()["tcbs_per_cluster"] == 86


def test_work_waits_for_the_peers_ready_message() -> None:
    result = run(parse(_tiny()), trace=True)
    assert result.trace == [(150.0, 1, 0, "read", 1, "acquire"), (170.0, 1, 0, "read", 1, "release")]
    # The read arrived at 0 and waited for initialization: 170 us.
    assert result.summary()["latency_ms"] == {"p50": 0.17, "p99": 0.17}


def test_shared_policy_has_the_same_tcbs_all_unreserved() -> None:
    depth = Simulation(parse(_tiny(system_tcbs=100)))
    shared = Simulation(parse({**_tiny(system_tcbs=100), "controller": {"policy": "shared"}}))
    for d, s in zip(depth.allocators, shared.allocators):
        assert d.total == s.total == 86
        assert s.levels == d.levels == 3
        assert all(s.level_of(t) == 0 for t in range(s.total))
    assert sum(depth.allocators[0].level_of(t) == 0 for t in range(86)) == 32
