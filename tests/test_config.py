"""Config parsing and validation: every error names its key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyresv.sim import config as pc
from pyresv.sim.config import ConfigError, default_config, load, loads, parse, to_toml


def test_empty_config_takes_design_defaults() -> None:
    c = parse({})
    assert c.controller.clusters == 2
    assert c.controller.policy == "depth"
    assert c.controller.seed == 1
    assert c.controller.message_latency_ms == 0.05
    assert c.reservation.depths == ((4, 9), (4, 9), (4, 9))
    assert (c.reservation.unreserved, c.reservation.system_tcbs, c.reservation.wake) == (32, 256, "deepest")
    assert (c.volumes.count, c.volumes.tracks) == (8, 256)
    assert (c.workload.duration_s, c.workload.rate_ops_per_s, c.workload.read_fraction) == (2.0, 5000.0, 0.5)
    assert c.flashcopy == () and c.levels == 3


def test_default_config_has_targets_and_a_cascade() -> None:
    c = default_config()
    sources = [fc.source for fc in c.flashcopy]
    targets = {fc.target for fc in c.flashcopy}
    assert sources.count(0) >= 2  # several targets of one source
    assert any(s in targets for s in sources)  # a cascade
    assert c.levels == 4  # FIG 3 plus the level the cascade needs
    assert all(d == (4, 9) for d in c.reservation.depths)


def test_toml_round_trip() -> None:
    c = default_config()
    assert loads(to_toml(c)) == c
    assert parse(c.to_dict()) == c


def test_flashcopy_defaults() -> None:
    c = parse({"flashcopy": [{"source": 0, "target": 1}]})
    fc = c.flashcopy[0]
    assert (fc.at_s, fc.background_copy, fc.copy_streams, fc.withdraw_s) == (0.0, True, 1, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bogus": {}}, r"^bogus: unknown table"),
        ({"controller": {"clusterz": 2}}, r"^controller\.clusterz: unknown key"),
        ({"controller": {"clusters": 1}}, r"^controller\.clusters: must be >= 2"),
        ({"controller": {"clusters": True}}, r"^controller\.clusters: must be an integer"),
        ({"controller": {"policy": "fifo"}}, r"^controller\.policy: must be one of"),
        ({"controller": {"message_latency_ms": -1}}, r"^controller\.message_latency_ms: must be >= 0"),
        ({"controller": {"max_sim_time_s": 0}}, r"^controller\.max_sim_time_s: must be > 0"),
        ({"reservation": {"depths": [[4, 9], [4, 0]]}}, r"^reservation\.depths\[1\]: pool_size \(level 2\) must be >= 1"),
        ({"reservation": {"depths": [[4, 9], [-1, 2]]}}, r"^reservation\.depths\[1\]: pools \(level 2\) must be >= 0"),
        ({"reservation": {"depths": [4, 9]}}, r"^reservation\.depths\[0\]: must be a \(pools, pool_size\) pair"),
        ({"reservation": {"depths": []}}, r"^reservation\.depths: must be a non-empty list"),
        ({"reservation": {"wake": "oldest"}}, r"^reservation\.wake: must be one of"),
        ({"reservation": {"unreserved": 300}}, r"^reservation\.unreserved: 300 exceeds"),
        ({"reservation": {"system_tcbs": 40}}, r"^reservation\.system_tcbs: 40 TCBs"),
        ({"volumes": {"tracks": 0}}, r"^volumes\.tracks: must be >= 1"),
        ({"workload": {"read_fraction": 1.5}}, r"^workload\.read_fraction: must be <= 1"),
        ({"workload": {"duration_s": "2"}}, r"^workload\.duration_s: must be a number"),
        ({"flashcopy": {"source": 0}}, r"^flashcopy: must be an array of tables"),
        ({"flashcopy": [{"source": 0, "target": 9}]}, r"^flashcopy\[0\]\.target: volume 9 does not exist"),
        ({"flashcopy": [{"source": 9, "target": 1}]}, r"^flashcopy\[0\]\.source: volume 9 does not exist"),
        ({"flashcopy": [{"source": 2, "target": 2}]}, r"^flashcopy\[0\]\.target: a volume cannot be its own"),
        ({"flashcopy": [{"source": 0, "target": 1}, {"source": 2, "target": 1}]},
         r"^flashcopy\[1\]\.target: volume 1 is already the target of flashcopy\[0\]"),
        ({"flashcopy": [{"source": 1, "target": 2, "at_s": 0.0}, {"source": 0, "target": 1, "at_s": 1.0}]},
         r"^flashcopy\[0\]\.at_s: volume 1 is a source here before"),
        ({"flashcopy": [{"source": 0, "target": 1, "withdraw_s": 1.0}, {"source": 1, "target": 2, "at_s": 0.5}]},
         r"^flashcopy\[0\]\.withdraw_s: volume 1 is the source"),
        ({"flashcopy": [{"source": 0, "target": 1, "at_s": 2.0, "withdraw_s": 1.0}]},
         r"^flashcopy\[0\]\.withdraw_s: 1\.0 is before"),
        ({"flashcopy": [{"source": 0, "target": 1, "extra": 1}]}, r"^flashcopy\[0\]\.extra: unknown key"),
        ({"ops": [{"op": "scan"}]}, r"^ops\[0\]\.op: must be one of"),
        ({"ops": [{"volume": 0, "track": 256}]}, r"^ops\[0\]\.track: track 256 does not exist"),
    ],
)
def test_errors_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(data)


def test_too_few_levels_says_how_many_are_needed() -> None:
    # A cascade across clusters: 0 (c0) -> 1 (c1) -> 2 (c0) needs a 4th level.
    rels = [{"source": 0, "target": 1}, {"source": 1, "target": 2, "at_s": 1.0}]
    with pytest.raises(ConfigError, match=r"^reservation\.depths: .* need 4 depth levels .* only 3"):
        parse({"flashcopy": rels})
    assert parse({"flashcopy": rels, "reservation": {"depths": [[4, 9]] * 4}}).levels == 4


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_with_overrides() -> None:
    base = default_config()
    c = base.with_overrides({"reservation.unreserved": 2, "controller.policy": "shared", "flashcopy[1].at_s": 0.75})
    assert c.reservation.unreserved == 2 and c.controller.policy == "shared"
    assert c.flashcopy[1].at_s == 0.75
    assert base.reservation.unreserved == 32 and base.flashcopy[1].at_s == 0.5  # unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.controller.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reservation.unreserved": -1}, r"^reservation\.unreserved: must be >= 0"),
        ({"reservation.nope": 1}, r"^reservation\.nope: unknown key"),
        ({"nope.x": 1}, r"^nope\.x: unknown table"),
        ({"flashcopy[9].at_s": 1.0}, r"^flashcopy\[9\]\.at_s: there are only 4"),
        ({"controller": 1}, r"^controller: unknown key"),
    ],
)
def test_with_overrides_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        default_config().with_overrides(overrides)


def test_load_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[controller\nclusters = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(bad)
    good = tmp_path / "good.toml"
    good.write_text('[controller]\npolicy = "shared"\n')
    assert load(good).controller.policy == "shared"


def test_default_toml_is_the_module_constant() -> None:
    assert default_config() == loads(pc.DEFAULT_TOML)


def test_example_file_is_the_default() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "default.toml"
    assert load(example) == default_config()
