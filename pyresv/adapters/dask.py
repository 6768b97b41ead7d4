"""Nested Dask tasks that wait on tasks, without ``secede``: depth levels as worker resources.

On Dask a task that submits tasks and waits for their results keeps its worker
thread while it waits. Once every thread of the cluster holds such a task, the
subtasks have no thread left and the cluster stalls. Dask's own way out is
``secede``/``rejoin`` (the waiting task gives up its thread and the worker
starts another: an unbounded number of threads). This module maps the patent's
depth reservation ([0019]-[0022]) onto Dask's own worker *resources* instead::

    levels = [2, 2, 2]                               # slots per depth level, per worker
    cluster = LocalCluster(threads_per_worker=sum(levels),
                           resources=worker_resources(levels), ...)
    dc = DepthClient(Client(cluster), levels)

    def child(x):
        return x + 1

    def parent(x):                                   # runs at level 1
        return sum(dc.submit(child, x + i).result() for i in range(3))   # level 2

    dc.submit(parent, 1).result()

* a :meth:`DepthClient.submit` made outside any task runs at level 1; one made
  from inside a task at level d runs at level d + 1 (the level travels with the
  task; a ``DepthClient`` captured in a task's closure or passed as an argument
  unpickles on the worker and uses the worker's client);
* a task at level e holds one unit of the worker resource
  ``pyresv-depth-e`` while it runs, and waits on it otherwise: at most
  ``levels[e - 1]`` tasks of level e run at once on one worker, whatever the
  higher levels do;
* a submit from inside a task at the deepest level D runs the function inline,
  in the caller, and returns a completed future.

Why it cannot stall (the patent's argument, [0021]-[0022] and [0038]): a task
at level d waits only on tasks at levels > d, and level D waits on nothing (its
nested calls run inline), so level D always completes; then every task at level
D - 1 completes, and so on up to level 1, provided every level has at least one
slot somewhere in the cluster and every slot has a thread (a worker's
``nthreads`` is at least the sum of its depth resources: the slots, never more
threads). Tasks of level e only ever wait for the slots of level e, which no
task holds while it waits on anything but deeper work. On one worker, Dask
starts only the highest-priority constrained task; deeper levels get a higher
Dask ``priority`` (the level), so a level-1 task waiting for its slot never
keeps a deeper task of the same worker from starting. Nothing secedes: the
thread count stays the worker's ``nthreads``.

Dask is optional: ``pip install 'pyresv[dask]'`` (``pyresv[sweep]`` includes it).
:func:`worker_resources` works without it; :class:`DepthClient` raises
``pyresv._extras.MissingExtra`` (an ``ImportError``) naming the extra when
``distributed`` is missing.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import types
import uuid
from typing import Any, Callable, Iterable, Sequence

__all__ = ["DepthClient", "InlineFuture", "MAX_LEVELS", "current_level", "resource_name", "worker_resources"]

#: The most depth levels a :class:`DepthClient` or :func:`worker_resources` accepts.
MAX_LEVELS = 64
#: The most slots of one level on one worker (a thread each).
MAX_SLOTS = 4096

_PREFIX = "pyresv-depth-"

#: Dask's own ``Client.submit``/``Client.map`` options that ``DepthClient`` sets
#: itself (or that could put a task where its level has no slot).
_RESERVED = ("resources", "priority", "workers", "allow_other_workers", "actor", "actors", "fifo_timeout")


def _distributed() -> types.ModuleType:
    """``distributed``, or an ``ImportError`` naming the extra that installs it."""
    from pyresv._extras import require

    require("dask", "pyresv.adapters.dask.DepthClient")  # MissingExtra (an ImportError) naming the extra
    import distributed

    return distributed


def resource_name(level: int) -> str:
    """The Dask worker resource that holds level ``level``'s slots: ``"pyresv-depth-<level>"``."""
    return f"{_PREFIX}{level}"


def _check_levels(levels: Sequence[int], what: str) -> list[int]:
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"{what}: levels must be a sequence of slot counts per depth level, got {levels!r}")
    counts = list(levels)  # read once: an iterator is consumed here and only here
    if not 1 <= len(counts) <= MAX_LEVELS:
        raise ValueError(f"{what}: levels must have 1 to {MAX_LEVELS} depth levels, got {len(counts)}")
    out = []
    for i, n in enumerate(counts):
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"{what}: levels[{i}] (level {i + 1}) must be an int, got {n!r}")
        if not 0 <= n <= MAX_SLOTS:
            raise ValueError(f"{what}: levels[{i}] (level {i + 1}) must be in 0..{MAX_SLOTS}, got {n}")
        out.append(n)
    return out


def worker_resources(levels: Sequence[int]) -> dict[str, int]:
    """The ``resources`` to give each Dask worker for ``levels[e - 1]`` slots at level e.

    Use it as ``LocalCluster(resources=worker_resources(levels),
    threads_per_worker=sum(levels))``, or on the command line as
    ``dask worker ADDRESS --nthreads N --resources "pyresv-depth-1=2 pyresv-depth-2=2"``.
    Give each worker ``sum(levels)`` threads: one per slot (more only if the
    same workers also run tasks that bypass :class:`DepthClient`). Levels with
    0 slots on this worker are left out (another worker must have some).

    Raises ``TypeError``/``ValueError`` naming the level for anything but
    1..``MAX_LEVELS`` counts in 0..``MAX_SLOTS``, or when all are 0.
    """
    counts = _check_levels(levels, "worker_resources")
    if not any(counts):
        raise ValueError("worker_resources: every level has 0 slots; a worker needs at least one slot")
    return {resource_name(e): n for e, n in enumerate(counts, start=1) if n}


# ------------------------------------------------------------------ the level
_level: contextvars.ContextVar[int] = contextvars.ContextVar("pyresv_dask_level", default=0)


def current_level() -> int:
    """The depth level of the :class:`DepthClient` task running here, 0 outside any."""
    return _level.get()


class _AtLevel:
    """``fn`` as a task at ``level``: while it runs, nested submits see the level.

    The Dask task's function; pickled with the task, so the level travels with it.
    """

    __slots__ = ("fn", "level")

    def __init__(self, fn: Callable[..., Any], level: int) -> None:
        self.fn = fn
        self.level = level

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _level.set(self.level)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _level.reset(token)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_AtLevel, (self.fn, self.level))


class InlineFuture(concurrent.futures.Future):
    """The completed future of a call run inline, below the deepest level.

    It answers like a Dask future: ``result(timeout)``, ``exception()``,
    ``traceback()``, ``done()``, ``cancelled()``, ``cancel()`` (``False``: the
    call already ran), ``add_done_callback(fn)``, ``status`` and ``key``.
    Passed as an argument to a later :meth:`DepthClient.submit` or ``map``
    that also runs inline, it is replaced by its result (or fails that call
    with its exception), as Dask does for its futures.
    """

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    @property
    def status(self) -> str:
        """``"finished"`` or ``"error"``, as Dask names them."""
        return "error" if self.exception() is not None else "finished"

    def traceback(self, timeout: float | None = None) -> types.TracebackType | None:
        """The traceback of the call's exception, ``None`` when it returned."""
        exc = self.exception(timeout)
        return None if exc is None else exc.__traceback__

    def __repr__(self) -> str:
        return f"<InlineFuture: {self.status}, key: {self.key}>"


# ------------------------------------------------------------------ the client
class DepthClient:
    """Submit nested Dask tasks that wait on tasks, deadlock-free without ``secede``.

    Parameters
    ----------
    client:
        A ``distributed.Client`` whose workers were started with
        :func:`worker_resources` (``levels`` per worker, or any split that
        gives every level at least one slot in the cluster) and at least as
        many threads as depth slots.
    levels:
        Slots per depth level, as given to :func:`worker_resources`; its length
        is the number of levels D. Submits nested deeper than D run inline.

    At construction the cluster's current workers are checked: a level with no
    slot in the whole cluster, or a worker with fewer threads than depth slots,
    raises ``ValueError`` naming it (either could stall). A cluster with no
    workers yet is not checked.

    Why nested waiting cannot stall the cluster: see the module docstring (a
    task at level d waits only on levels > d; level D waits on nothing; by
    induction every level completes, patent [0021]-[0022], [0038]).

    Pickling keeps only ``levels``: a ``DepthClient`` that reaches a worker
    (in a closure or as an argument) submits through the worker's client
    (``distributed.get_client()``).
    """

    def __init__(self, client: Any, levels: Sequence[int]) -> None:
        distributed = _distributed()
        counts = _check_levels(levels, "DepthClient")
        if not isinstance(client, distributed.Client):
            raise TypeError(f"DepthClient: client must be a distributed.Client, got {type(client).__name__}")
        self._client: Any = client
        self._levels = counts
        self._check_cluster(client)

    @classmethod
    def _on_worker(cls, levels: list[int]) -> DepthClient:
        self = cls.__new__(cls)
        self._client = None  # the worker's client, looked up at first use
        self._levels = levels
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (DepthClient._on_worker, (list(self._levels),))

    def __dask_tokenize__(self) -> tuple[str, tuple[int, ...]]:
        # A DepthClient passed to a pure task is its levels: the same call, the same key.
        return ("pyresv.adapters.dask.DepthClient", tuple(self._levels))

    def _check_cluster(self, client: Any) -> None:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        if not workers:
            return
        slots = [0] * len(self._levels)
        for address, info in workers.items():
            resources = info.get("resources") or {}
            mine = 0
            for e in range(1, len(slots) + 1):
                n = int(resources.get(resource_name(e), 0))
                slots[e - 1] += n
                mine += n
            nthreads = int(info.get("nthreads", 0))
            if nthreads < mine:
                raise ValueError(
                    f"DepthClient: worker {address} has {nthreads} threads for {mine} depth slots; "
                    f"a slot without a thread can stall nested tasks: start it with --nthreads {mine}"
                )
        for e, n in enumerate(slots, start=1):
            if n < 1:
                raise ValueError(
                    f"DepthClient: no worker of the cluster has a slot at level {e} (resource "
                    f"{resource_name(e)!r}); start workers with worker_resources(levels)"
                )

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` tasks go through (the worker's, inside a task)."""
        if self._client is None:
            self._client = _distributed().get_client()
        return self._client

    @property
    def levels(self) -> int:
        """Number of depth levels D."""
        return len(self._levels)

    def __repr__(self) -> str:
        where = "worker client" if self._client is None else repr(self._client)
        return f"<DepthClient {self._levels} via {where}>"

    # --------------------------------------------------------------
    def submit(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        key: str | None = None,
        pure: bool = True,
        retries: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` as a task one level below the caller; return its future.

        Outside any task it runs at level 1; from a task at level d at d + 1,
        holding one ``pyresv-depth-(d+1)`` slot of its worker; from a task at
        the deepest level D it runs inline and returns a completed
        :class:`InlineFuture`. The result is a ``distributed.Future``
        otherwise, with Dask's semantics. ``key``, ``pure`` and ``retries`` are
        Dask's; a pure key includes the level (the same call at another level
        is another task: it could otherwise wait for itself). Dask's
        placement options (``resources``, ``priority``, ``workers``, ...) are
        set by the level and refused here with a ``TypeError``.
        """
        _refuse_reserved(kwargs, "submit")
        level = _level.get() + 1
        if level > len(self._levels):
            return _run_inline(self, fn, args, kwargs, level, key)
        if key is None:
            key = self._key(fn, args, kwargs, level, pure)
        return self.client.submit(
            _AtLevel(fn, level),
            *args,
            key=key,
            pure=False,
            retries=retries,
            resources={resource_name(level): 1},
            priority=level,  # deeper first on a worker: see the module docstring
            **kwargs,
        )

    def map(
        self,
        fn: Callable[..., Any],
        /,
        *iterables: Iterable[Any],
        key: str | list[str] | None = None,
        pure: bool = True,
        retries: int | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """``submit(fn, *row, **kwargs)`` for each row of ``zip(*iterables)``, in one message.

        Returns the list of futures. ``key`` is Dask's: a list of keys, or a
        prefix. Levels and inline calls follow :meth:`submit`.
        """
        _refuse_reserved(kwargs, "map")
        if not iterables:
            raise TypeError("DepthClient.map needs at least one iterable")
        rows = list(zip(*iterables))
        if isinstance(key, list) and len(key) != len(rows):
            raise ValueError(f"DepthClient.map: {len(key)} keys for {len(rows)} calls")
        level = _level.get() + 1
        if level > len(self._levels):
            keys = key if isinstance(key, list) else [None] * len(rows)
            return [_run_inline(self, fn, row, kwargs, level, k) for row, k in zip(rows, keys)]
        if not rows:
            return []
        if isinstance(key, list):
            keys = key
        else:
            prefix = key if key is not None else _funcname(fn)
            if pure:
                keys = [f"{prefix}-{_tokenize(fn, row, kwargs, level)}" for row in rows]
            else:
                uid = uuid.uuid4().hex
                keys = [f"{prefix}-{uid}-{i}" for i in range(len(rows))]
        columns = [list(col) for col in zip(*rows)]
        return self.client.map(
            _AtLevel(fn, level),
            *columns,
            key=keys,
            pure=False,
            retries=retries,
            resources={resource_name(level): 1},
            priority=level,
            **kwargs,
        )

    @staticmethod
    def _key(fn: Callable[..., Any], args: tuple, kwargs: dict, level: int, pure: bool) -> str:
        if pure:
            return f"{_funcname(fn)}-{_tokenize(fn, args, kwargs, level)}"
        return f"{_funcname(fn)}-{uuid.uuid4().hex}"


def _refuse_reserved(kwargs: dict, what: str) -> None:
    for name in _RESERVED:
        if name in kwargs:
            raise TypeError(
                f"DepthClient.{what}: {name!r} is set by the task's depth level (it could put the task "
                f"where its level has no slot); leave it out"
            )


def _funcname(fn: Callable[..., Any]) -> str:
    from dask.utils import funcname

    return str(funcname(fn))


def _tokenize(fn: Callable[..., Any], args: tuple, kwargs: dict, level: int) -> str:
    from dask.base import tokenize

    return str(tokenize(fn, kwargs, *args, "pyresv-level", level))


# ------------------------------------------------------------------ inline calls
def _run_inline(
    dc: DepthClient, fn: Callable[..., Any], args: tuple, kwargs: dict, level: int, key: str | None
) -> InlineFuture:
    """Below the deepest level: run in the caller, at ``level``, and return a done future."""
    future = InlineFuture(key if key is not None else f"{_funcname(fn)}-inline-{uuid.uuid4().hex}")
    future.set_running_or_notify_cancel()
    token = _level.set(level)
    try:
        args, kwargs = _resolved(dc, args, kwargs)
        result = fn(*args, **kwargs)
    except BaseException as exc:  # reaches the future, as a Dask task's error would
        future.set_exception(exc)
    else:
        future.set_result(result)
    finally:
        _level.reset(token)
    return future


def _resolved(dc: DepthClient, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args``/``kwargs`` with futures (Dask's or inline ones) replaced by their results."""
    distributed = _distributed()
    found = [False, False]  # [an inline future, a Dask future]

    def scan(x: Any) -> None:
        if isinstance(x, InlineFuture):
            found[0] = True
        elif isinstance(x, distributed.Future):
            found[1] = True
        elif isinstance(x, (list, tuple, set, frozenset)):
            for y in x:
                scan(y)
        elif isinstance(x, dict):
            for y in x.values():
                scan(y)

    scan(args)
    scan(kwargs)
    if not any(found):
        return args, kwargs
    if found[0]:
        args, kwargs = _replace_inline((args, kwargs))
    if found[1]:
        args, kwargs = dc.client.gather((args, kwargs))
    return tuple(args), dict(kwargs)


def _replace_inline(x: Any) -> Any:
    if isinstance(x, InlineFuture):
        return x.result()  # raises the call's exception: the dependent call fails with it
    if isinstance(x, (list, tuple, set, frozenset)):
        return type(x)(_replace_inline(y) for y in x)
    if isinstance(x, dict):
        return {k: _replace_inline(v) for k, v in x.items()}
    return x
