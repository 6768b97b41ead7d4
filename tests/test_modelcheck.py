"""``pyresv check``: the exhaustive model check of a small controller.

The state counts are checked three ways: by hand for models without
contention, against an independent explorer written here (depth-first, its
state key read from the allocator's public queries), and between the compiled
core and the pure-Python reference. Deadlock traces are replayed on fresh
allocators, call by call, without the checker's code.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyresv import PENDING
from pyresv._core.allocator import DepthPoolAllocator as Core
from pyresv.tools.modelcheck import (
    CheckConfig,
    ConfigError,
    check,
    load_config,
    main,
    replay,
)
from pyresv.reference import DepthPoolAllocator as Reference

JSON_FIELDS = {"policy", "states", "deadlocks", "trace"}


# ------------------------------------------------------ independent explorer
def _explore(cfg: CheckConfig, cls: type) -> dict[str, int]:
    """Every reachable state of ``cfg``'s model, depth-first, written independently.

    A state's key: each op's progress, each cluster's held TCBs as a multiset
    of ``(holder, level_of)`` read from the allocator, and each cluster's wait
    queue in arrival order. Returns the number of states, of deadlocked
    states, and the fewest allocator calls that reach a deadlock (every path
    to a state makes the same number of calls).
    """
    depths, unreserved, wake = cfg.allocator_args()
    hops, nops, nclu = cfg.hops, cfg.max_ops, cfg.clusters
    allocs = [
        cls(depths, unreserved, max_processes=nops, max_waiters=nops, wake=wake) for _ in range(nclu)
    ]
    # op: [held tcb ids, going down?, waiting?, done?]
    ops = [[[], False, False, False] for _ in range(nops)]
    queues: list[list[int]] = [[] for _ in range(nclu)]
    seen: set = set()
    out = {"states": 0, "deadlocks": 0, "shortest": 10**9}

    def key(allocs: list, ops: list, queues: list) -> tuple:
        progress = tuple((len(h), down, wait, done) for h, down, wait, done in ops)
        held = tuple(
            tuple(sorted((a.holder(t), a.level_of(t)) for t in range(a.total) if a.holder(t) >= 0))
            for a in allocs
        )
        return progress, held, tuple(tuple(q) for q in queues)

    def visit(world: tuple, calls: int) -> None:
        allocs, ops, queues = world
        k = key(allocs, ops, queues)
        if k in seen:
            return
        seen.add(k)
        out["states"] += 1
        movable = [i for i, (_, _, wait, done) in enumerate(ops) if not wait and not done]
        if not movable:
            if not all(done for *_, done in ops):
                out["deadlocks"] += 1
                out["shortest"] = min(out["shortest"], calls)
            return
        for i in movable:
            allocs2, ops2, queues2 = pickle.loads(pickle.dumps(world))
            held, down = ops2[i][0], ops2[i][1]
            if not down and len(held) < hops:
                s = len(held)
                c = (i + s) % nclu
                r = allocs2[c].acquire(i, 1 if s == 0 else s, s > 0)
                if r == PENDING:
                    ops2[i][2] = True
                    queues2[c].append(i)
                else:
                    held.append(r)
            else:
                ops2[i][1] = True
                c = (i + len(held) - 1) % nclu
                allocs2[c].release(held.pop())
                ops2[i][3] = not held
                for pid, tcb in allocs2[c].take_grants():
                    ops2[pid][0].append(tcb)
                    ops2[pid][2] = False
                    queues2[c].remove(pid)
            visit((allocs2, ops2, queues2), calls + 1)

    visit((allocs, ops, queues), 0)
    return out


# ------------------------------------------------ trace replay, CLI runner
def _replay_json(result: dict[str, Any], cfg: CheckConfig) -> tuple[list, dict[int, str]]:
    """Re-apply the JSON trace's calls on fresh compiled allocators, checking
    every return value and grant; return the allocators and each op's status."""
    depths, unreserved, wake = cfg.allocator_args()
    allocs = [Core(depths, unreserved, max_processes=cfg.max_ops, wake=wake) for _ in range(cfg.clusters)]
    held: dict[int, list[int]] = {k: [] for k in range(cfg.max_ops)}
    status = {k: "idle" for k in range(cfg.max_ops)}
    for st in result["steps"]:
        a = allocs[st["cluster"]]
        if st["action"] in ("start", "acquire"):
            assert st["cluster"] == (st["op"] + len(held[st["op"]])) % cfg.clusters
            r = a.acquire(st["op"], st["depth"], st["remote"])
            assert r == st["result"]
            if r == PENDING:
                status[st["op"]] = "waiting"
            else:
                held[st["op"]].append(r)
                status[st["op"]] = "running"
        else:
            assert st["tcb"] == held[st["op"]].pop()
            a.release(st["tcb"])
            status[st["op"]] = "running" if held[st["op"]] else "done"
        grants = a.take_grants()
        assert [tuple(g) for g in st["grants"]] == grants
        for pid, tcb in grants:
            held[pid].append(tcb)
            status[pid] = "running"
    for a in allocs:
        a.check()
    return allocs, status


def _check_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # ``pyresv check``, from a neutral folder so ``-m`` imports the installed package.
    return subprocess.run(
        [sys.executable, "-m", "pyresv", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


# ------------------------------------------------------------ state counts
@pytest.mark.parametrize("policy", ["depth", "shared"])
def test_one_op_walks_seven_states(policy: str) -> None:
    # idle, 3 acquires up, finish, 2 releases down: 7 states, 6 transitions.
    r = check(CheckConfig(policy=policy, max_ops=1))
    assert (r.states, r.transitions, r.deadlocks, r.completed_states, r.bfs_depth) == (7, 6, 0, 1, 6)
    assert r.complete and r.exit_code == 0 and r.trace == []


@pytest.mark.parametrize("policy", ["depth", "shared"])
def test_two_ops_without_contention_are_a_product(policy: str) -> None:
    # op0 uses c0 L1, c1 L2, c0 L3; op1 the mirror image: they never compete for
    # a pool, and under shared 3 TCBs per cluster cover both, so every pair of
    # program counters is one state: 7 * 7.
    cfg = CheckConfig(policy=policy, depths=((1, 1),) * 3, unreserved=0, max_ops=2)
    r = check(cfg)
    assert (r.states, r.deadlocks) == (49, 0)


SMALL_CONFIGS = [
    CheckConfig(depths=((1, 1),) * 3, unreserved=1, max_ops=3),
    CheckConfig(depths=((1, 1),) * 3, unreserved=1, max_ops=3, policy="shared"),
    CheckConfig(depths=((1, 1),) * 3, unreserved=0, max_ops=4, policy="shared"),
    CheckConfig(depths=((2, 1), (1, 1), (1, 1)), unreserved=0, max_ops=4),
    CheckConfig(depths=((1, 2), (1, 1), (1, 2)), unreserved=1, max_ops=3, wake="fifo"),
    CheckConfig(clusters=3, depths=((1, 1),) * 3, unreserved=1, max_ops=3),
    CheckConfig(clusters=3, depths=((1, 1),) * 3, unreserved=0, max_ops=4, policy="shared"),
    CheckConfig(depths=((1, 1),) * 3, unreserved=0, max_ops=3, hops=2),
    CheckConfig(depths=((1, 1),) * 2, unreserved=0, max_ops=4, policy="shared", wake="fifo"),
    CheckConfig(depths=((1, 1),) * 3, unreserved=0, max_ops=4, policy="deepest-first", wake="fifo"),
]


def _cfg_id(c: CheckConfig) -> str:
    depths = "_".join(f"{p}x{n}" for p, n in c.depths)
    return f"{c.policy}-c{c.clusters}-{depths}-u{c.unreserved}-ops{c.max_ops}-hops{c.hops}-{c.wake}"


@pytest.mark.parametrize("cfg", SMALL_CONFIGS, ids=_cfg_id)
def test_state_count_matches_an_independent_explorer(cfg: CheckConfig) -> None:
    r = check(cfg)
    expected = _explore(cfg, Reference)
    assert r.complete
    assert (r.states, r.deadlocks) == (expected["states"], expected["deadlocks"])
    assert r.states > 50
    if r.deadlocks:
        assert len(r.trace) == expected["shortest"]  # BFS: the shortest trace
    else:
        assert r.trace == [] and r.completed_states == 1


@pytest.mark.parametrize(
    "cfg",
    [
        CheckConfig(depths=((1, 1), (1, 1)), unreserved=1, max_ops=4),
        CheckConfig(depths=((1, 1),) * 3, unreserved=0, max_ops=4, policy="shared"),
    ],
    ids=_cfg_id,
)
def test_compiled_and_reference_agree_and_clone_method_does_not_matter(cfg: CheckConfig) -> None:
    runs = [
        check(cfg, allocator="compiled", clone="replay"),
        check(cfg, allocator="compiled", clone="pickle"),
        check(cfg, allocator="reference", clone="pickle"),
        check(cfg, allocator="reference", clone="replay"),
    ]
    figures = {(r.states, r.transitions, r.deadlocks, r.bfs_depth, tuple(r.trace)) for r in runs}
    assert len(figures) == 1, figures
    assert runs[0].states > 1000
    assert [r.allocator for r in runs] == ["compiled", "compiled", "reference", "reference"]


# --------------------------------------------------------------- deadlocks
def test_shared_deadlock_trace_replays_to_a_dead_end() -> None:
    cfg = CheckConfig(policy="shared", depths=((1, 1),) * 3, unreserved=0, max_ops=4)
    r = check(cfg)
    assert r.deadlocks > 0 and r.exit_code == 1
    data = json.loads(json.dumps(r.to_json()))
    allocs, status = _replay_json(data, cfg)
    # No step is enabled: every unfinished op waits, and its request really pends.
    assert "idle" not in status.values() and "running" not in status.values()
    waiting = [k for k, s in status.items() if s == "waiting"]
    assert waiting == r.waiting and waiting
    assert sum(a.pending() for a in allocs) == len(waiting)
    # The checker's own replay agrees.
    rep = replay(cfg, [s.op for s in r.steps])
    assert rep.enabled == [] and rep.waiting == waiting
    assert [s.text() for s in rep.steps] == r.trace


def test_depth_policy_deadlocks_when_a_level_has_nothing_to_give() -> None:
    # DESIGN: deadlock freedom needs each level to hold what one process needs.
    cfg = CheckConfig(depths=((1, 1), (1, 1), (0, 1)), unreserved=0, max_ops=1)
    r = check(cfg)
    assert (r.deadlocks, r.exit_code) == (1, 1)
    assert r.trace == [
        "op0 c0 start L1 -> tcb 0",
        "op0 c1 acquire L2 -> tcb 1",
        "op0 c0 acquire L3 -> PENDING",
    ]
    assert r.waiting == [0]


def test_trace_lines_name_grants() -> None:
    # Two ops on one cluster's single unreserved TCB: one waits, then is granted.
    cfg = CheckConfig(policy="shared", depths=((0, 1),), unreserved=1, max_ops=3, hops=1)
    rep = replay(cfg, [0, 2, 0])
    assert [s.text() for s in rep.steps] == [
        "op0 c0 start L1 -> tcb 0",
        "op2 c0 start L1 -> PENDING",
        "op0 c0 finish L1, release tcb 0 -> grant tcb 0 to op2",
    ]
    assert rep.enabled == [1, 2] and rep.done == [0]
    with pytest.raises(ValueError, match="op0 has no enabled step"):
        replay(cfg, [0, 0, 0])


# --------------------------------------------------- conservation violations
class _Leaky:
    """A broken allocator: every release of TCB 1 is silently dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._a = Core(*args, **kwargs)

    def release(self, tcb: int) -> None:
        if tcb != 1:
            self._a.release(tcb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._a, name)


class _GrantsTwice:
    """A broken allocator: a grant is reported twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._a = Core(*args, **kwargs)

    def take_grants(self) -> list[tuple[int, int]]:
        return self._a.take_grants() * 2

    def __getattr__(self, name: str) -> Any:
        return getattr(self._a, name)


@pytest.mark.parametrize(
    ("cls", "message"),
    [(_Leaky, "TCB 1 holder is"), (_GrantsTwice, "which has no request pending there")],
)
def test_a_broken_allocator_is_caught(cls: type, message: str) -> None:
    cfg = CheckConfig(policy="shared", depths=((1, 1),) * 3, unreserved=0, max_ops=3)
    r = check(cfg, allocator=cls)
    assert r.violation is not None and message in r.violation
    assert r.exit_code == 1 and r.trace


def test_max_states_stops_the_search_and_says_so() -> None:
    r = check(CheckConfig(max_ops=3, max_states=100))
    assert not r.complete and r.exit_code == 3
    assert r.states == 101


# ------------------------------------------------------------------ config
def test_config_file_keys_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "check.toml"
    path.write_text(
        "[controller]\nclusters = 3\npolicy = 'shared'\nseed = 7\n"
        "[reservation]\ndepths = [[2, 1], [1, 1]]\nunreserved = 1\nwake = 'fifo'\nsystem_tcbs = 64\n"
        "[check]\nmax_ops = 2\nhops = 2\n"
        "[workload]\nduration_s = 1.0\n"
        "[[flashcopy]]\nsource = 0\ntarget = 1\n"
    )
    cfg, ignored = load_config(path, policy="depth", max_ops=None)
    assert cfg == CheckConfig(
        clusters=3, policy="depth", depths=((2, 1), (1, 1)), unreserved=1, wake="fifo", max_ops=2, hops=2
    )
    assert ignored == ["controller.seed", "reservation.system_tcbs", "workload", "flashcopy"]
    assert cfg.allocator_args() == ([(2, 1), (1, 1)], 1, "fifo")
    assert dataclasses.replace(cfg, policy="shared").allocator_args() == ([(0, 1), (0, 1)], 4, "fifo")
    assert dataclasses.replace(cfg, policy="deepest-first").allocator_args() == ([(0, 1), (0, 1)], 4, "deepest")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[check]\nmax_opz = 3\n", r"check\.max_opz: unknown key"),
        ("[controller]\nclusterz = 3\n", r"controller\.clusterz: unknown key"),
        ("[chek]\nmax_ops = 3\n", r"chek: unknown table"),
        ("[check]\nmax_ops = 0\n", r"check\.max_ops must be >= 1"),
        ("[check]\nmax_ops = 2.5\n", r"check\.max_ops must be an integer"),
        ("[check]\nhops = 4\n", r"check\.hops = 4 needs 4 depth levels"),
        ("[controller]\npolicy = 'fair'\n", r"controller\.policy must be"),
        ("[controller]\nclusters = 1\n", r"controller\.clusters must be >= 2"),
        ("[reservation]\ndepths = [[1]]\n", r"reservation\.depths\[0\]: must be a \(pools, pool_size\) pair"),
        ("[reservation]\ndepths = [[1, 0]]\n", r"reservation\.depths\[0\]: pool_size \(level 1\) must be >= 1"),
        ("[reservation]\nunreserved = -1\n", r"reservation\.unreserved must be >= 0"),
        ("[reservation]\nwake = 'lifo'\n", r"reservation\.wake must be"),
        ("check = 3\n", r"check must be a table"),
        ("[check\n", r"invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, message: str, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    assert main([str(path)]) == 2
    assert "error:" in capsys.readouterr().err


def test_missing_config_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: cannot read" in capsys.readouterr().err
    assert main(["--max-ops", "0"]) == 2


# --------------------------------------------------------------------- CLI
def test_main_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--max-ops", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert JSON_FIELDS <= set(out)
    assert (out["policy"], out["deadlocks"], out["trace"], out["allocator"]) == ("depth", 0, [], "compiled")
    assert isinstance(out["states"], int) and out["states"] > 7
    path = tmp_path / "small.toml"
    path.write_text("[controller]\npolicy = 'shared'\n[reservation]\ndepths = [[1, 1], [1, 1], [1, 1]]\nunreserved = 0\n")
    assert main([str(path), "--max-ops", "4", "--allocator", "reference"]) == 1
    text = capsys.readouterr().out
    assert "policy shared" in text and "reference allocator" in text
    assert "shortest trace to a deadlock (10 steps)" in text and "wait forever" in text
    assert main([str(path), "--max-ops", "4", "--policy", "depth"]) == 0
    assert "no deadlock: every interleaving completes" in capsys.readouterr().out


def test_pyresv_check_bad_input_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[check]\nmax_ops = 2\nspeed = 3\n")
    proc = _check_cli(tmp_path, "bad.toml")
    assert proc.returncode == 2
    assert "check.speed: unknown key" in proc.stderr and proc.stdout == ""
    proc = _check_cli(tmp_path, "--max-ops", "many")
    assert proc.returncode == 2 and "--max-ops" in proc.stderr


def test_module_entry_point_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyresv.tools.modelcheck", "--max-ops", "1"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "states: 7 distinct" in proc.stdout and "no deadlock" in proc.stdout


def test_default_size_depth_explores_1e5_states_without_deadlock(tmp_path: Path) -> None:
    proc = _check_cli(tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["policy"], out["deadlocks"], out["complete"], out["violation"]) == ("depth", 0, True, None)
    assert (out["clusters"], out["levels"]) == (2, 3)
    assert out["states"] >= 100_000
    assert out["trace"] == [] and out["completed_states"] == 1


def test_default_size_shared_finds_the_deadlock(tmp_path: Path) -> None:
    proc = _check_cli(tmp_path, "--policy", "shared", "--json")
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["policy"] == "shared" and out["deadlocks"] > 0 and out["trace"]
    cfg, _ = load_config(None, policy="shared")
    _allocs, status = _replay_json(out, cfg)
    assert set(status.values()) <= {"waiting", "done"} and "waiting" in status.values()
    assert any("-> PENDING" in line for line in out["trace"])
