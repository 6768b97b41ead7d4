"""Simulator configuration: TOML in, a validated frozen :class:`Config` out.

The keys are DESIGN section 3's stable minimum plus a few extras (marked
below). Validation is table driven: every table is a frozen dataclass whose
fields carry a validator in their metadata, so adding a key (or a table such
as ``[faults]``) is one field with one validator; an array of tables inside a
table (``[[faults.cluster_fail]]``) is a field whose validator parses each
entry as a nested dataclass. Every error is a
:class:`ConfigError` whose message starts with the dotted key it is about,
e.g. ``reservation.depths[1]: pool_size must be >= 1``.

Times in the file are in the units their names say (``_s``, ``_ms``, ``_us``);
the simulation itself runs in microseconds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pyresv import _validate
from pyresv.errors import ConfigError
from pyresv.sim.policies import POLICIES
from pyresv.sim.topology import carve, levels_needed

__all__ = [
    "ConfigError",
    "Config",
    "ControllerConfig",
    "ReservationConfig",
    "VolumesConfig",
    "FlashCopyConfig",
    "WorkloadConfig",
    "TimingConfig",
    "MetricsConfig",
    "OpConfig",
    "FaultsConfig",
    "ClusterFailConfig",
    "ProcessDeathConfig",
    "OP_KINDS",
    "LIMITS",
    "MAX_INPUT_BYTES",
    "MAX_CLUSTERS",
    "MAX_LEVELS",
    "MAX_CLUSTER_LEVELS",
    "MAX_TCBS",
    "MAX_TRACKS",
    "MAX_ARRIVALS",
    "MAX_TIME_S",
    "MIN_SAMPLE_INTERVAL_MS",
    "MAX_TIMELINE_CELLS",
    "DEFAULT_TOML",
    "read_input",
    "parse_toml",
    "show",
    "default_config",
    "load",
    "loads",
    "parse",
    "to_toml",
]


# ------------------------------------------------------------------- limits
# Every size-like input has a bound checked before a run starts (DESIGN
# section 4), chosen from what one run can hold on a workstation; the README's
# "Limits" table states them. Measured: 4M tracks cost 2.4 s and 220 MB; one
# arrival about 280 bytes while the workload is built; the core about
# 3.6 MB + 0.8 MB per level for each cluster (its tables are
# max_processes x levels).

#: Largest input file (config TOML, sweep CSV): a bigger one, or one that
#: never ends (/dev/zero), is refused after reading this many bytes.
MAX_INPUT_BYTES = 16 * 1024 * 1024
#: Clusters of a controller.
MAX_CLUSTERS = 64
#: Depth levels of a run, and clusters x levels (the core's per-cluster tables).
MAX_LEVELS = 64
MAX_CLUSTER_LEVELS = 256
#: TCBs in the whole controller: clusters x (reserved + unreserved) per cluster.
MAX_TCBS = 1 << 24
#: Tracks in all volumes: volumes.count x volumes.tracks.
MAX_TRACKS = 1 << 22
#: Host operations a run issues: rate_ops_per_s x duration_s (the expected
#: Poisson count) plus the scripted [[ops]].
MAX_ARRIVALS = 1_000_000
#: Any time or duration, in seconds (1e9 ms, 1e12 us): about 11.6 days.
MAX_TIME_S = 1e6
#: Timeline sampling: the period's floor, and samples x values per sample over
#: the scheduled window (arrivals, establishes, withdraws, faults); past that
#: window a run that keeps going halves its sampling rate instead of growing.
MIN_SAMPLE_INTERVAL_MS = 0.001
MAX_TIMELINE_CELLS = 10_000_000

#: The limits by name, as the README states them.
LIMITS: dict[str, int | float] = {
    "MAX_INPUT_BYTES": MAX_INPUT_BYTES,
    "MAX_CLUSTERS": MAX_CLUSTERS,
    "MAX_LEVELS": MAX_LEVELS,
    "MAX_CLUSTER_LEVELS": MAX_CLUSTER_LEVELS,
    "MAX_TCBS": MAX_TCBS,
    "MAX_TRACKS": MAX_TRACKS,
    "MAX_ARRIVALS": MAX_ARRIVALS,
    "MAX_TIME_S": MAX_TIME_S,
    "MIN_SAMPLE_INTERVAL_MS": MIN_SAMPLE_INTERVAL_MS,
    "MAX_TIMELINE_CELLS": MAX_TIMELINE_CELLS,
}

_SHOW = reprlib.Repr()
_SHOW.maxlevel = 3
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = 6
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlong = 40


def show(value: Any) -> str:
    """A bounded ``repr`` for error messages: a hostile value (a list of a
    million items, nesting a thousand deep) still gives one short line."""
    return _SHOW.repr(value)


# ------------------------------------------------------------------- input
def read_input(path: str | Path) -> str:
    """The text of an input file (a config, a sweep CSV), read once and bounded.

    Raises :class:`ConfigError` naming the file when it cannot be read, is
    larger than :data:`MAX_INPUT_BYTES` (``/dev/zero`` included: at most that
    many bytes are read), or is not UTF-8.
    """
    p = Path(path)
    try:
        # Non-blocking open: a named pipe nobody writes to reads as empty instead
        # of blocking forever in open(); reads then block as usual (a writer's data).
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        os.set_blocking(fd, True)
        with open(fd, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_INPUT_BYTES:,} bytes, the input limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None


def parse_toml(text: str, source: str = "config") -> dict[str, Any]:
    """TOML text as plain data; :class:`ConfigError` naming ``source`` when it
    is not TOML, or nests arrays or tables deeper than the parser's recursion
    allows (``tomllib`` recurses once per level)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply") from None


# --------------------------------------------------------------- validators
# A validator takes (key, raw value) and returns the converted value or raises
# ConfigError naming the key.
Validator = Callable[[str, Any], Any]


def _bounds(key: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum:,}, got {show(value)}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}: must be <= {maximum:,}, got {show(value)}")


def _int(minimum: int | None = None, maximum: int | None = None) -> Validator:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {show(value)}")
        _bounds(key, value, minimum, maximum)
        return value

    return check


def _float(
    minimum: float | None = None, maximum: float | None = None, *, positive: bool = False
) -> Validator:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value}")
        if positive and value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {show(value)}")
        _bounds(key, value, minimum, maximum)
        return value

    return check


_UNIT = {"s": 1.0, "ms": 1e3, "us": 1e6}


def _time(unit: str, *, positive: bool = False) -> Validator:
    # A time or duration in ``unit``, at most MAX_TIME_S: a run's clock is in
    # microseconds, and a larger value would overflow or lose the microseconds.
    return _float(0.0, MAX_TIME_S * _UNIT[unit], positive=positive)


def _optional(inner: Validator) -> Validator:
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {show(value)}")
    return value


def _choice(*options: str) -> Validator:
    def check(key: str, value: Any) -> str:
        if value not in options:
            shown = " | ".join(repr(o) for o in options)
            raise ConfigError(f"{key}: must be one of {shown}, got {show(value)}")
        return value

    return check


def depths_value(key: str, value: Any) -> tuple[tuple[int, int], ...]:
    # FIG 3A-3C: one [pools, pool_size] pair per depth level; the allocators' own check,
    # after the run's own bound on levels (a list of a million levels is refused unread).
    if isinstance(value, (list, tuple)) and len(value) > MAX_LEVELS:
        raise ConfigError(f"{key}: {len(value):,} depth levels; a run has at most {MAX_LEVELS}")
    try:
        return _validate.check_depths(value, key)
    except ValueError as exc:
        message = str(exc)  # one line, however large the value it shows
        raise ConfigError(message if len(message) <= 300 else message[:297] + "...") from None


def _range_ms(key: str, value: Any) -> tuple[float, float]:
    # A [min, max] pair of non-negative times.
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{key}: must be a [min, max] pair, got {show(value)}")
    lo, hi = (_time("ms")(f"{key}[{i}]", v) for i, v in enumerate(value))
    if hi < lo:
        raise ConfigError(f"{key}: max {hi} is below min {lo}")
    return (lo, hi)


def _tables(cls: type) -> Validator:
    # An array of tables, each parsed as the dataclass ``cls``.
    def check(key: str, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be an array of tables ([[{key}]]), got {show(value)}")
        return tuple(_parse_section(cls, item, f"{key}[{i}]") for i, item in enumerate(value))

    return check


def _key(check: Validator, doc: str) -> dict[str, Any]:
    return {"check": check, "doc": doc}


#: Host and scripted operation kinds (``[[ops]] op = ...``).
OP_KINDS = ("read", "write", "partial-write", "destage")

#: pids per run (and the allocators' ``max_processes``); more concurrent
#: processes wait for a pid before they start.
MAX_PROCESSES = 65536


# ------------------------------------------------------------------- tables
@dataclass(frozen=True)
class ControllerConfig:
    """``[controller]``: the storage controller as a whole (FIG 1)."""

    clusters: int = field(default=2, metadata=_key(_int(2, MAX_CLUSTERS), "number of clusters C"))
    policy: str = field(default="depth", metadata=_key(_choice(*POLICIES), "TCB policy (pyresv.sim.policies)"))
    seed: int = field(default=1, metadata=_key(_int(0), "seed of the workload generator"))
    message_latency_ms: float = field(
        default=0.05, metadata=_key(_time("ms"), "one-way inter-cluster message latency")
    )
    # extra: the livelock guard; a run that reaches it stops and is flagged.
    max_sim_time_s: float = field(
        default=3600.0, metadata=_key(_time("s", positive=True), "simulated-time limit")
    )


@dataclass(frozen=True)
class ReservationConfig:
    """``[reservation]``: the TCBs of each cluster (FIGs 2A/2B, 3A-3C)."""

    depths: tuple[tuple[int, int], ...] = field(
        default=((4, 9), (4, 9), (4, 9)), metadata=_key(depths_value, "[pools, pool_size] per level")
    )
    unreserved: int = field(default=32, metadata=_key(_int(0, MAX_TCBS), "unreserved TCBs (122a/122b)"))
    system_tcbs: int = field(
        default=256, metadata=_key(_int(1, MAX_TCBS), "TCB budget the pools are carved from")
    )
    wake: str = field(
        default="deepest", metadata=_key(_choice("deepest", "fifo"), "who gets a freed unreserved TCB")
    )


@dataclass(frozen=True)
class VolumesConfig:
    """``[volumes]``: volume i lives on cluster ``i % clusters``."""

    count: int = field(default=8, metadata=_key(_int(1, 1 << 20), "number of volumes"))
    tracks: int = field(default=256, metadata=_key(_int(1, 1 << 24), "tracks per volume"))


@dataclass(frozen=True)
class FlashCopyConfig:
    """One ``[[flashcopy]]`` relationship ([0004])."""

    source: int = field(default=0, metadata=_key(_int(0), "source volume"))
    target: int = field(default=1, metadata=_key(_int(0), "target volume"))
    at_s: float = field(default=0.0, metadata=_key(_time("s"), "establish time"))
    background_copy: bool = field(default=True, metadata=_key(_bool, "copy every track in the background"))
    # extras
    copy_streams: int = field(default=1, metadata=_key(_int(1, 4096), "parallel background-copy workers"))
    withdraw_s: float | None = field(
        default=None, metadata=_key(_optional(_time("s")), "withdraw time (absent: never)")
    )


@dataclass(frozen=True)
class WorkloadConfig:
    """``[workload]``: random host operations arriving during ``duration_s``."""

    duration_s: float = field(default=2.0, metadata=_key(_time("s"), "arrival window"))
    rate_ops_per_s: float = field(default=5000.0, metadata=_key(_float(0.0), "Poisson arrival rate"))
    read_fraction: float = field(default=0.5, metadata=_key(_float(0.0, 1.0), "share of reads"))
    # extras
    partial_write_fraction: float = field(
        default=0.2, metadata=_key(_float(0.0, 1.0), "share of writes that are partial-track")
    )
    auto_destage: bool = field(
        default=True, metadata=_key(_bool, "destage every written track timing.destage_delay_us later")
    )


@dataclass(frozen=True)
class TimingConfig:
    """``[timing]`` (extra): service time of each step, in microseconds."""

    read_us: float = field(default=20.0, metadata=_key(_time("us"), "host read from cache"))
    write_us: float = field(default=20.0, metadata=_key(_time("us"), "host write into cache"))
    stage_us: float = field(default=100.0, metadata=_key(_time("us"), "read a track from disk"))
    destage_us: float = field(default=150.0, metadata=_key(_time("us"), "write a track to disk"))
    copy_us: float = field(default=30.0, metadata=_key(_time("us"), "write a copied track on a target"))
    establish_us: float = field(default=50.0, metadata=_key(_time("us"), "one relationship-table update"))
    init_us: float = field(default=100.0, metadata=_key(_time("us"), "one initialization attempt"))
    destage_delay_us: float = field(
        default=2000.0, metadata=_key(_time("us"), "write-back delay before a dirty track is destaged")
    )


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]`` (extra): the timeline recorder."""

    sample_interval_ms: float = field(
        default=10.0,
        metadata=_key(_float(MIN_SAMPLE_INTERVAL_MS, MAX_TIME_S * 1e3), "timeline sampling period"),
    )


@dataclass(frozen=True)
class OpConfig:
    """One scripted ``[[ops]]`` host operation (extra; the scenarios use them)."""

    at_s: float = field(default=0.0, metadata=_key(_time("s"), "arrival time"))
    op: str = field(default="read", metadata=_key(_choice(*OP_KINDS), "operation kind"))
    volume: int = field(default=0, metadata=_key(_int(0), "volume"))
    track: int = field(default=0, metadata=_key(_int(0), "track"))


@dataclass(frozen=True)
class ClusterFailConfig:
    """One ``[[faults.cluster_fail]]``: a cluster fails at ``at_s``."""

    cluster: int = field(default=0, metadata=_key(_int(0), "the cluster that fails"))
    at_s: float = field(default=0.0, metadata=_key(_time("s"), "failure time"))


@dataclass(frozen=True)
class ProcessDeathConfig:
    """One ``[[faults.process_death]]``: a process dies at ``at_s``.

    The victim is the live process ``pid``, or else the process holding a TCB
    at ``level`` on ``cluster`` (the lowest pid when several do). Exactly one
    of the two addressings is given.
    """

    at_s: float = field(default=0.0, metadata=_key(_time("s"), "time of death"))
    pid: int | None = field(default=None, metadata=_key(_optional(_int(0)), "the live process with this pid"))
    cluster: int | None = field(
        default=None, metadata=_key(_optional(_int(0)), "with level: the holder of a TCB there")
    )
    level: int | None = field(default=None, metadata=_key(_optional(_int(1)), "with cluster: that TCB's level"))


@dataclass(frozen=True)
class FaultsConfig:
    """``[faults]`` (extra): faults injected into a run; none by default.

    Messages between clusters (a call's request and its reply) are lost with
    probability ``message_loss`` and delayed by ``message_delay_ms`` (uniform
    in [min, max]) on top of ``controller.message_latency_ms``. A sender
    notices a lost message ``message_timeout_ms`` after sending it and sends
    the request again, at most ``message_retries`` times; then the operation
    fails and releases what it holds. An operation aborted by a cluster
    failure or a process death is started again after ``retry_delay_ms``, at
    most ``op_retries`` times.
    """

    message_loss: float = field(default=0.0, metadata=_key(_float(0.0, 1.0), "probability a message is lost"))
    message_delay_ms: tuple[float, float] = field(
        default=(0.0, 0.0), metadata=_key(_range_ms, "extra [min, max] delay of a message")
    )
    message_timeout_ms: float = field(
        default=1.0, metadata=_key(_time("ms", positive=True), "a lost message is noticed this long after it was sent")
    )
    message_retries: int = field(default=3, metadata=_key(_int(0, 1000), "resends of a request before the call fails"))
    op_retries: int = field(default=1, metadata=_key(_int(0, 1000), "restarts of an aborted operation"))
    retry_delay_ms: float = field(default=0.1, metadata=_key(_time("ms"), "delay before an aborted operation restarts"))
    cluster_fail: tuple[ClusterFailConfig, ...] = field(
        default=(), metadata=_key(_tables(ClusterFailConfig), "[[faults.cluster_fail]] entries")
    )
    process_death: tuple[ProcessDeathConfig, ...] = field(
        default=(), metadata=_key(_tables(ProcessDeathConfig), "[[faults.process_death]] entries")
    )

    @property
    def active(self) -> bool:
        """Whether any fault is injected."""
        return bool(
            self.message_loss > 0 or self.message_delay_ms[1] > 0 or self.cluster_fail or self.process_death
        )


_TABLES: dict[str, type] = {
    "controller": ControllerConfig,
    "reservation": ReservationConfig,
    "volumes": VolumesConfig,
    "workload": WorkloadConfig,
    "timing": TimingConfig,
    "metrics": MetricsConfig,
    "faults": FaultsConfig,
}
_ARRAYS: dict[str, type] = {"flashcopy": FlashCopyConfig, "ops": OpConfig}


@dataclass(frozen=True)
class Config:
    """A validated simulator configuration. Build it with :func:`parse`, :func:`load`
    or :func:`default_config`; derive variants with :meth:`with_overrides`."""

    controller: ControllerConfig = ControllerConfig()
    reservation: ReservationConfig = ReservationConfig()
    volumes: VolumesConfig = VolumesConfig()
    workload: WorkloadConfig = WorkloadConfig()
    timing: TimingConfig = TimingConfig()
    metrics: MetricsConfig = MetricsConfig()
    faults: FaultsConfig = FaultsConfig()
    flashcopy: tuple[FlashCopyConfig, ...] = ()
    ops: tuple[OpConfig, ...] = ()

    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return len(self.reservation.depths)

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML-compatible data (``None`` values left out); ``parse`` round-trips it."""
        out: dict[str, Any] = {}
        for name in _TABLES:
            out[name] = _section_dict(getattr(self, name))
        for name in _ARRAYS:
            out[name] = [_section_dict(item) for item in getattr(self, name)]
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A new validated config with dotted keys replaced.

        Keys look like ``"reservation.unreserved"`` or ``"flashcopy[0].at_s"``;
        a whole array may be replaced with ``"flashcopy"``. Raises
        :class:`ConfigError` naming the key when it is unknown or its value bad.
        """
        data = self.to_dict()
        for dotted, value in overrides.items():
            _set_dotted(data, dotted, value)
        return parse(data)


def _section_dict(section: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if value is None:
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    # Tuples (depths, [min, max] pairs, arrays of tables) as TOML-ready lists.
    if dataclasses.is_dataclass(value):
        return _section_dict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) == 1:
        if dotted not in _ARRAYS:
            raise ConfigError(f"{dotted}: unknown key (use table.key)")
        data[dotted] = value
        return
    if len(parts) != 2:
        raise ConfigError(f"{dotted}: unknown key (use table.key)")
    table, key = parts
    if "[" in table and table.endswith("]"):
        name, _, idx = table[:-1].partition("[")
        if name not in _ARRAYS or not idx.isdigit():
            raise ConfigError(f"{dotted}: unknown key")
        items = data.get(name, [])
        i = int(idx)
        if i >= len(items):
            raise ConfigError(f"{dotted}: there are only {len(items)} [[{name}]] entries")
        items[i][key] = value
        return
    if table not in _TABLES:
        raise ConfigError(f"{dotted}: unknown table {table!r}")
    data.setdefault(table, {})[key] = value


# ------------------------------------------------------------------ parsing
def _parse_section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table, got {show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{where}.{key}: unknown key (known: {known})")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = f.metadata["check"](f"{where}.{name}", raw[name])
    return cls(**values)


def parse(data: Mapping[str, Any]) -> Config:
    """Validate plain data (as from ``tomllib``) into a :class:`Config`.

    Missing keys take their defaults. Raises :class:`ConfigError` naming the
    first bad key: unknown tables and keys, bad values, and inconsistent
    combinations (volumes out of range, too few depth levels for the
    relationships, pools that cannot be carved from ``system_tcbs``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be a table, got {type(data).__name__}")
    for name in data:
        if name not in _TABLES and name not in _ARRAYS:
            known = ", ".join([*_TABLES, *_ARRAYS])
            raise ConfigError(f"{name}: unknown table (known: {known})")
    sections: dict[str, Any] = {}
    for name, cls in _TABLES.items():
        sections[name] = _parse_section(cls, data.get(name, {}), name)
    for name, cls in _ARRAYS.items():
        raw = data.get(name, [])
        if not isinstance(raw, list):
            raise ConfigError(f"{name}: must be an array of tables ([[{name}]]), got {show(raw)}")
        sections[name] = tuple(_parse_section(cls, item, f"{name}[{i}]") for i, item in enumerate(raw))
    config = Config(**sections)
    for check in _CROSS_CHECKS:
        check(config)
    return config


def loads(text: str, *, source: str = "config") -> Config:
    """Parse TOML text; syntax errors become :class:`ConfigError`."""
    return parse(parse_toml(text, source))


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file (see :func:`read_input` for the file's limits)."""
    return loads(read_input(path), source=str(path))


# ------------------------------------------------------------- cross checks
def _check_reservation(config: Config) -> None:
    r = config.reservation
    if r.unreserved > r.system_tcbs:
        raise ConfigError(
            f"reservation.unreserved: {r.unreserved} exceeds reservation.system_tcbs = {r.system_tcbs}"
        )
    carved = carve(r.depths, r.unreserved, r.system_tcbs)  # ConfigError when even the smallest pools fail
    clusters = config.controller.clusters
    per_cluster = carved.reserved + r.unreserved
    if clusters * per_cluster > MAX_TCBS:
        raise ConfigError(
            f"reservation: {clusters} clusters x {per_cluster:,} TCBs is {clusters * per_cluster:,} TCBs; "
            f"a run holds at most {MAX_TCBS:,}"
        )
    if clusters * config.levels > MAX_CLUSTER_LEVELS:
        raise ConfigError(
            f"reservation.depths: {clusters} clusters x {config.levels} levels is more than the "
            f"{MAX_CLUSTER_LEVELS} a run holds (each cluster's allocator has tables per level)"
        )


def _check_volumes(config: Config) -> None:
    v = config.volumes
    if v.count * v.tracks > MAX_TRACKS:
        raise ConfigError(
            f"volumes.tracks: {v.count:,} volumes x {v.tracks:,} tracks is {v.count * v.tracks:,} tracks; "
            f"a run holds at most {MAX_TRACKS:,}"
        )


def _check_workload(config: Config) -> None:
    w = config.workload
    expected = w.rate_ops_per_s * w.duration_s
    if expected + len(config.ops) > MAX_ARRIVALS:
        raise ConfigError(
            f"workload.rate_ops_per_s: {w.rate_ops_per_s:g} ops/s over duration_s = {w.duration_s:g} is "
            f"{expected + len(config.ops):,.0f} host operations; a run issues at most {MAX_ARRIVALS:,}"
        )


def _check_timeline(config: Config) -> None:
    # Samples in the window where work is scheduled; past it a run halves its
    # sampling rate whenever the timeline is full (Simulation.run).
    times = [config.workload.duration_s]
    times += [fc.at_s for fc in config.flashcopy]
    times += [fc.withdraw_s for fc in config.flashcopy if fc.withdraw_s is not None]
    times += [op.at_s for op in config.ops]
    times += [cf.at_s for cf in config.faults.cluster_fail]
    times += [pd.at_s for pd in config.faults.process_death]
    window_ms = max(times) * 1e3
    interval = config.metrics.sample_interval_ms
    cells = timeline_cells(config)
    samples = window_ms / interval + 1
    if samples * cells > MAX_TIMELINE_CELLS:
        raise ConfigError(
            f"metrics.sample_interval_ms: {interval:g} ms over the {window_ms:g} ms of scheduled work is "
            f"{samples:,.0f} samples of {cells} values; a run holds at most {MAX_TIMELINE_CELLS:,} values "
            f"(a sample interval of at least {window_ms * cells / MAX_TIMELINE_CELLS:.3g} ms)"
        )


def timeline_cells(config: Config) -> int:
    """Values in one timeline sample: held and queued per (cluster, level), completed per cluster."""
    c = config.controller.clusters
    return 2 * c * config.levels + c


def _cascade_lengths(rels: tuple[FlashCopyConfig, ...]) -> list[int]:
    # Relationships in the chain ending at each one (1: not cascaded), walked
    # without recursion: a long chain must not exhaust the stack before it is refused.
    incoming = {fc.target: i for i, fc in enumerate(rels)}
    length: dict[int, int] = {}
    for i in range(len(rels)):
        chain: list[int] = []
        on_chain: set[int] = set()
        k: int | None = i
        while k is not None and k not in length and k not in on_chain:
            chain.append(k)
            on_chain.add(k)
            k = incoming.get(rels[k].source)
        n = length.get(k, 0) if k is not None else 0  # 0 at a chain's start (or a cycle, refused elsewhere)
        for k in reversed(chain):
            n += 1
            length[k] = n
    return [length[i] for i in range(len(rels))]


def _check_flashcopy(config: Config) -> None:
    n = config.volumes.count
    rels = config.flashcopy
    targets: dict[int, int] = {}
    for i, fc in enumerate(rels):
        key = f"flashcopy[{i}]"
        if fc.source >= n:
            raise ConfigError(f"{key}.source: volume {fc.source} does not exist (volumes.count = {n})")
        if fc.target >= n:
            raise ConfigError(f"{key}.target: volume {fc.target} does not exist (volumes.count = {n})")
        if fc.source == fc.target:
            raise ConfigError(f"{key}.target: a volume cannot be its own target ({fc.target})")
        if fc.target in targets:
            raise ConfigError(
                f"{key}.target: volume {fc.target} is already the target of flashcopy[{targets[fc.target]}]"
            )
        targets[fc.target] = i
        if fc.withdraw_s is not None and fc.withdraw_s < fc.at_s:
            raise ConfigError(f"{key}.withdraw_s: {fc.withdraw_s} is before at_s = {fc.at_s}")
    for i, fc in enumerate(rels):
        # Cascades: a volume becomes a target before it is a source, so its
        # content is fixed when a later relationship snapshots it.
        j = targets.get(fc.source)
        if j is not None:
            inc = rels[j]
            if (inc.at_s, j) > (fc.at_s, i):
                raise ConfigError(
                    f"flashcopy[{i}].at_s: volume {fc.source} is a source here before it becomes "
                    f"the target of flashcopy[{j}] (at_s {inc.at_s}); establish the cascade in order"
                )
            if inc.withdraw_s is not None:
                raise ConfigError(
                    f"flashcopy[{j}].withdraw_s: volume {inc.target} is the source of flashcopy[{i}]; "
                    "a cascaded relationship cannot be withdrawn"
                )
    lengths = _cascade_lengths(rels)
    longest = max(lengths, default=0)
    if longest > MAX_LEVELS:
        i = lengths.index(longest)
        raise ConfigError(
            f"flashcopy[{i}]: ends a cascade of {longest} relationships, which needs more than the "
            f"{MAX_LEVELS} depth levels a run may have"
        )
    need = levels_needed(config.controller.clusters, [(fc.source, fc.target) for fc in rels])
    if need > config.levels:
        raise ConfigError(
            f"reservation.depths: the flashcopy relationships need {need} depth levels "
            f"(their longest chain of cross-cluster hops, [0038]), but only {config.levels} are configured"
        )


def _check_ops(config: Config) -> None:
    n, tracks = config.volumes.count, config.volumes.tracks
    for i, op in enumerate(config.ops):
        if op.volume >= n:
            raise ConfigError(f"ops[{i}].volume: volume {op.volume} does not exist (volumes.count = {n})")
        if op.track >= tracks:
            raise ConfigError(f"ops[{i}].track: track {op.track} does not exist (volumes.tracks = {tracks})")


def _check_faults(config: Config) -> None:
    clusters = config.controller.clusters
    seen: dict[int, int] = {}
    for i, cf in enumerate(config.faults.cluster_fail):
        key = f"faults.cluster_fail[{i}].cluster"
        if cf.cluster >= clusters:
            raise ConfigError(f"{key}: cluster {cf.cluster} does not exist (controller.clusters = {clusters})")
        if cf.cluster in seen:
            raise ConfigError(f"{key}: cluster {cf.cluster} already fails in faults.cluster_fail[{seen[cf.cluster]}]")
        seen[cf.cluster] = i
        if len(seen) == clusters:
            raise ConfigError(f"{key}: every cluster would fail; at least one must survive")
    for i, pd in enumerate(config.faults.process_death):
        key = f"faults.process_death[{i}]"
        by_place = pd.cluster is not None or pd.level is not None
        if (pd.pid is None) == (not by_place):
            raise ConfigError(f"{key}: give either pid, or cluster and level (the holder of a TCB there)")
        if pd.pid is not None and pd.pid >= MAX_PROCESSES:
            raise ConfigError(f"{key}.pid: must be < {MAX_PROCESSES}, got {pd.pid}")
        if by_place:
            if pd.cluster is None or pd.level is None:
                missing = "cluster" if pd.cluster is None else "level"
                raise ConfigError(f"{key}.{missing}: cluster and level go together")
            if pd.cluster >= clusters:
                raise ConfigError(f"{key}.cluster: cluster {pd.cluster} does not exist (controller.clusters = {clusters})")
            if pd.level > config.levels:
                raise ConfigError(f"{key}.level: level {pd.level} does not exist ({config.levels} depth levels)")


_CROSS_CHECKS: list[Callable[[Config], None]] = [
    _check_volumes,
    _check_workload,
    _check_timeline,
    _check_reservation,
    _check_flashcopy,
    _check_ops,
    _check_faults,
]


# ------------------------------------------------------------------ default
#: The built-in default configuration of ``pyresv simulate``: 2 clusters, FIG 3
#: pools (plus the fourth level the cascade needs), one source with three
#: targets established at different times ([0008]), a cascade, and a mixed
#: host workload.
DEFAULT_TOML = """\
# pyresv simulate: the built-in default configuration.
[controller]
clusters = 2
policy = "depth"
seed = 1
message_latency_ms = 0.05
max_sim_time_s = 3600.0

[reservation]
# FIG 3: four pools of nine TCBs per level; the cascade below needs a 4th level.
depths = [[4, 9], [4, 9], [4, 9], [4, 9]]
unreserved = 32
system_tcbs = 256
wake = "deepest"

[volumes]
count = 8
tracks = 256

# Volume 0 (cluster 0) has three targets at three points in time ([0008]).
[[flashcopy]]
source = 0
target = 1
at_s = 0.0
background_copy = false

[[flashcopy]]
source = 0
target = 3
at_s = 0.5
background_copy = true

[[flashcopy]]
source = 0
target = 5
at_s = 1.0
background_copy = false

# A cascade: volume 1, itself a target, is the source of volume 2.
[[flashcopy]]
source = 1
target = 2
at_s = 0.25
background_copy = true

[workload]
duration_s = 2.0
rate_ops_per_s = 5000.0
read_fraction = 0.5
partial_write_fraction = 0.2
auto_destage = true

[timing]
read_us = 20.0
write_us = 20.0
stage_us = 100.0
destage_us = 150.0
copy_us = 30.0
establish_us = 50.0
init_us = 100.0
destage_delay_us = 2000.0

[metrics]
sample_interval_ms = 10.0
"""


def default_config() -> Config:
    """The built-in default configuration (:data:`DEFAULT_TOML`)."""
    return loads(DEFAULT_TOML, source="default config")


# ------------------------------------------------------------------- output
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Config) -> str:
    """The config as TOML text that :func:`loads` reads back to an equal config."""
    data = config.to_dict()
    lines: list[str] = []
    for name in _TABLES:
        lines.append(f"[{name}]")
        nested = []
        for k, v in data[name].items():
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                nested.append((k, v))  # [[table.key]] after the table's own keys
            else:
                lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
        for k, items in nested:
            for item in items:
                lines.append(f"[[{name}.{k}]]")
                lines.extend(f"{ik} = {_toml_value(iv)}" for ik, iv in item.items())
                lines.append("")
    for name in _ARRAYS:
        for item in data[name]:
            lines.append(f"[[{name}]]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
            lines.append("")
    return "\n".join(lines)
