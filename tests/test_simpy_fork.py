"""The simulator's SimPy fork (``pyresv.sim._simpy_private``) behaves as SimPy.

The fork mirrors private SimPy 4.1 code (``Process._resume``, the
``Initialize`` event, ``Environment.schedule`` and ``step``). These tests run
the same flows under plain SimPy and under the fork and compare what happens,
event by event, so that a SimPy release that changes the code the fork
mirrors fails here rather than silently changing simulation results.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable, Generator

import pytest
import simpy
from hypothesis import HealthCheck, given, settings

from pyresv.sim._simpy_private import Environment, Task, Timer, call_after, run_before, scheduler, start_task
from pyresv.sim.config import default_config, load, parse
from pyresv.sim.engine import Simulation
from pyresv.sim.scenarios import FAULT_SCENARIOS, POLICIES, SCENARIOS, get, get_fault
from test_pit_property import configs as random_configs  # random small controllers, ops and relationships

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

Trace = list[tuple[Any, ...]]
Starter = Callable[[simpy.Environment, Generator[Any, Any, Any]], Any]


SIM = Path(__file__).resolve().parent.parent / "pyresv" / "sim"

#: SimPy's private attributes (of Environment, Event, Process) that the fork reads or writes.
SIMPY_PRIVATE = {
    "_queue", "_now", "_eid", "_active_proc", "_resume", "_target", "_generator",
    "_value", "_ok", "_defused", "_delay",
}


def test_only_the_fork_module_reads_simpys_private_state() -> None:
    found = []
    for path in sorted(SIM.glob("*.py")):
        if path.name == "_simpy_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in SIMPY_PRIVATE:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not found, f"SimPy internals read outside pyresv/sim/_simpy_private.py: {found}"
    fork = (SIM / "_simpy_private.py").read_text(encoding="utf-8")
    assert all(f".{attr}" in fork for attr in ("_queue", "_now", "_eid", "_active_proc", "_resume"))


# ----------------------------------------------------------- flow level
def _flows(env: simpy.Environment, start: Starter, trace: Trace) -> None:
    """Processes that wait on timeouts (ties included), shared events that
    succeed or fail, conditions, interrupts and nested generators; each step
    appends ``(now, who, what)`` to ``trace``."""
    gate = env.event()
    broken = env.event()
    procs: dict[str, Any] = {}

    def sub(who: str, n: int) -> Generator[Any, Any, int]:
        for i in range(n):
            yield env.timeout(1)
            trace.append((env.now, who, f"sub{i}"))
        return n * 10

    def worker(who: str, delay: float) -> Generator[Any, Any, None]:
        trace.append((env.now, who, "start", env.active_process is procs.get(who)))
        yield env.timeout(delay)
        trace.append((env.now, who, "slept"))
        value = yield gate
        trace.append((env.now, who, "gate", value))
        got = yield from sub(who, 2)
        trace.append((env.now, who, "sub", got))
        try:
            yield broken
        except ValueError as exc:
            trace.append((env.now, who, "caught", str(exc)))
        t1, t2 = env.timeout(3, "a"), env.timeout(3, "b")
        both = yield t1 & t2
        trace.append((env.now, who, "all", sorted(both.values())))
        either = yield env.timeout(1, "x") | env.timeout(2, "y")
        trace.append((env.now, who, "any", list(either.values())))

    def sleeper(who: str) -> Generator[Any, Any, None]:
        try:
            yield env.timeout(100)
        except simpy.Interrupt as intr:
            trace.append((env.now, who, "interrupted", intr.cause))
        yield env.timeout(0)
        trace.append((env.now, who, "done"))

    def opener() -> Generator[Any, Any, None]:
        yield env.timeout(5)
        gate.succeed("open")
        trace.append((env.now, "opener", "opened"))
        yield env.timeout(3)  # every worker waits on it by then
        broken.fail(ValueError("broken"))
        procs["sleeper"].interrupt("wake")
        trace.append((env.now, "opener", "failed+interrupted"))

    def at_once() -> Generator[Any, Any, None]:
        trace.append((env.now, "at_once", "ran"))
        return
        yield  # a generator

    for who, delay in (("w1", 2), ("w2", 2), ("w3", 0), ("w4", 5)):
        procs[who] = start(env, worker(who, delay))
    procs["sleeper"] = start(env, sleeper("sleeper"))
    start(env, opener())
    start(env, at_once())


def _run_flows(start: Starter) -> Trace:
    env = simpy.Environment()
    trace: Trace = []
    _flows(env, start, trace)
    env.run()
    trace.append(("end", env.now))
    return trace


def test_task_runs_flows_as_a_simpy_process_does() -> None:
    plain = _run_flows(simpy.Process)
    fork = _run_flows(Task)
    assert fork == plain
    # The flows did what they say (a trace of nothing would compare equal).
    whats = {step[2] for step in plain if len(step) > 2}
    assert {"gate", "caught", "all", "any", "interrupted", "sub"} <= whats


def test_task_raises_a_flow_error_out_of_the_run() -> None:
    def bad(env: simpy.Environment) -> Generator[Any, Any, None]:
        yield env.timeout(1)
        raise KeyError("flow bug")

    for start in (simpy.Process, Task):
        env = simpy.Environment()
        start(env, bad(env))
        with pytest.raises(KeyError, match="flow bug"):
            env.run()


def test_task_end_is_not_an_event_and_calls_on_exit() -> None:
    env = simpy.Environment()
    ended: list[Any] = []

    def flow() -> Generator[Any, Any, int]:
        yield env.timeout(1)
        return 7

    task = Task(env, flow())
    task.on_exit = ended.append
    env.step()  # Initialize
    env.step()  # the timeout: the generator returns
    assert ended == [task] and task.value == 7 and not task.is_alive
    assert env.peek() == float("inf")  # simpy.Process would have scheduled its end


def _callback_starts(start_now: bool) -> Trace:
    """Processes started from a timeout's callback: with ``env.process``
    (an Initialize event) or with :func:`start_task` (at once)."""
    env = simpy.Environment()
    trace: Trace = []
    exits: list[Task] = []

    def flow(who: str) -> Generator[Any, Any, None]:
        trace.append((env.now, who, "first step"))
        yield env.timeout(0)
        trace.append((env.now, who, "after timeout(0)"))

    def other(who: str) -> Generator[Any, Any, None]:
        yield env.timeout(2)
        trace.append((env.now, who, "same instant"))

    def arrive(_event: Any) -> None:
        for who in ("a", "b"):
            if start_now:
                start_task(env, flow(who), exits.append)
            else:
                env.process(flow(who))

    env.process(other("early"))  # a normal event at t=2 scheduled before the arrival
    env.timeout(2).callbacks.append(arrive)
    env.process(other("late"))
    env.run()
    assert len(exits) == (2 if start_now else 0)
    return trace


def test_start_task_from_a_callback_keeps_the_order_of_an_initialize_event() -> None:
    assert _callback_starts(True) == _callback_starts(False)


def _timers(fork: bool, until: float = 1.5, bound: bool = False) -> Trace:
    # bound: the timers of scheduler(env) (plain tuples) rather than call_after's.
    env = simpy.Environment()
    trace: Trace = []
    after = scheduler(env)

    def note(*what: Any) -> None:
        trace.append((env.now, *what))

    def later(delay: float, *what: Any) -> None:
        if fork and bound:
            after(delay, note, *what)
        elif fork:
            call_after(env, delay, note, *what)
        else:
            env.timeout(delay).callbacks.append(lambda _: note(*what))

    def flow() -> Generator[Any, Any, None]:
        for i in range(3):
            later(1, "timer from flow", i)
            yield env.timeout(1)
            note("flow", i)

    env.process(flow())
    env.timeout(1).callbacks.append(lambda _: note("a timeout before the timers"))
    for i in range(4):  # ties with the flow's own timeouts, in creation order
        later(i % 3, "timer", i)
    env.timeout(2).callbacks.append(lambda _: note("a timeout after the timers"))
    urgent = env.event()
    urgent.callbacks.append(lambda _: note("succeeded at 0"))
    urgent.succeed()
    if fork:
        while run_before(env, until):
            note("sample")
            run_before(env, float("inf"))
    else:
        while env.peek() < until:
            env.step()
        if env.peek() < float("inf"):
            note("sample")
            env.run()
    return trace


def test_timers_and_run_before_keep_simpys_order() -> None:
    assert _timers(True) == _timers(False)


@pytest.mark.parametrize("until", [0.0, 1.0, 1.5, 2.0, 9.0])
@pytest.mark.parametrize("bound", [False, True])
def test_run_before_stops_before_the_events_of_its_time(until: float, bound: bool) -> None:
    # run_before's mark goes before every event of its time (ties at 0, 1
    # and 2), with call_after's timers and with scheduler()'s.
    plain = _timers(False, until)
    assert _timers(True, until, bound) == plain
    assert ("sample" in [what for _, what, *_ in plain]) == (until <= 2.0)


def test_run_before_takes_its_mark_out_when_a_callback_raises() -> None:
    env = Environment()
    seen: list[float] = []

    def boom() -> None:
        raise RuntimeError("boom")

    after = scheduler(env)
    after(1, boom)
    after(5, lambda: seen.append(env.now))
    with pytest.raises(RuntimeError, match="boom"):
        run_before(env, 3)
    assert env.now == 1 and env.peek() == 5 and len(env._queue) == 1  # no mark left behind
    assert not run_before(env, float("inf"))
    assert seen == [5] and env.now == 5 == env._now


def test_the_forks_environment_reads_now_from_its_slot() -> None:
    env = Environment()
    env.timeout(3).callbacks.append(lambda _: seen.append(env.now))
    seen: list[float] = []
    env.run()
    assert seen == [3] and env.now == env._now == 3
    assert "now" not in vars(env) and "_now" not in vars(env)  # the slot, not the instance dict


def test_a_timer_is_also_an_event_to_simpy_step() -> None:
    env = simpy.Environment()
    seen: list[float] = []
    call_after(env, 3, lambda: seen.append(env.now))
    env.run()
    assert seen == [3]
    with pytest.raises(ValueError, match="Negative delay"):
        call_after(env, -1, seen.append)
    assert isinstance(Timer((print, ())), tuple)


# ------------------------------------------------------- simulator level
def _ties(policy: str) -> dict[str, Any]:
    """Every duration 10 us and operations every 10 us, more than the TCBs:
    many events fall on the same instant, so their order decides the run."""
    ops = [
        {"at_s": (i // 3) * 1e-5, "op": ("read", "write", "partial-write")[i % 3], "volume": i % 3, "track": i % 2}
        for i in range(90)
    ]
    return {
        "controller": {"policy": policy, "message_latency_ms": 0.01},
        "reservation": {"depths": [[1, 1]] * 4, "unreserved": 1, "system_tcbs": 64},
        "volumes": {"count": 3, "tracks": 2},
        "flashcopy": [{"source": 0, "target": 1, "at_s": 0.0, "background_copy": True},
                      {"source": 1, "target": 2, "at_s": 1e-4, "background_copy": False}],
        "workload": {"rate_ops_per_s": 0.0, "auto_destage": True},
        "timing": {key: 10.0 for key in ("read_us", "write_us", "stage_us", "destage_us", "copy_us",
                                          "establish_us", "init_us", "destage_delay_us")},
        "ops": ops,
    }


def _configs() -> list[tuple[str, Any]]:
    base = default_config().with_overrides({"workload.duration_s": 0.3})
    out: list[tuple[str, Any]] = []
    for policy in POLICIES:
        cfg = base.with_overrides({"controller.policy": policy})
        out.append((f"default-{policy}", cfg))
        out.append((f"contended-{policy}", cfg.with_overrides({
            "workload.rate_ops_per_s": 40000.0, "workload.duration_s": 0.05,
            "reservation.depths": [[1, 2]] * 4, "reservation.unreserved": 2,
        })))
        out.append((f"zero-delays-{policy}", cfg.with_overrides({
            "controller.message_latency_ms": 0.0, "timing.read_us": 0.0, "timing.destage_delay_us": 0.0,
        })))
        out.append((f"three-clusters-{policy}", cfg.with_overrides({
            "controller.clusters": 3, "timing.destage_delay_us": 20.0,
        })))
        out.append((f"ties-{policy}", parse(_ties(policy))))
        out += [(f"{name}-{policy}", get(name).config(policy)) for name in SCENARIOS]
        out += [(f"{name}-{policy}", get_fault(name).config(policy)) for name in FAULT_SCENARIOS]
    out.append(("faults.toml", load(EXAMPLES / "faults.toml")))
    out.append(("stress.toml", load(EXAMPLES / "stress.toml")))
    return out


@pytest.mark.parametrize(("name", "config"), _configs(), ids=lambda x: x if isinstance(x, str) else "")
def test_the_simulator_runs_the_same_under_the_fork_and_under_plain_simpy(name: str, config: Any) -> None:
    plain = Simulation(config, trace=True, simpy_fork=False).run()
    fork = Simulation(config, trace=True).run()
    assert fork.trace == plain.trace
    assert json.dumps(fork.summary(), default=str) == json.dumps(plain.summary(), default=str)
    assert fork.metrics.timeline().op_latency_ms.tolist() == plain.metrics.timeline().op_latency_ms.tolist()


def test_the_fork_schedules_fewer_events() -> None:
    config = default_config().with_overrides({"workload.duration_s": 0.2})
    per_op = []
    for fork in (False, True):
        sim = Simulation(config, simpy_fork=fork)
        result = sim.run()
        per_op.append(next(sim.env._eid) / result.completed_ops)  # SimPy numbers every scheduled event
    plain, fork_ = per_op
    assert fork_ < 0.75 * plain  # the fast start's point: no Initialize, no process end


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_configs())
def test_random_configs_run_the_same_under_the_fork_and_under_plain_simpy(data: dict[str, Any]) -> None:
    config = parse(data)
    plain = Simulation(config, trace=True, simpy_fork=False).run()
    fork = Simulation(config, trace=True).run()
    assert fork.trace == plain.trace
    assert json.dumps(fork.summary(), default=str) == json.dumps(plain.summary(), default=str)
