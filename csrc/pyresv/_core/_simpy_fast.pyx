# cython: language_level=3
"""The drop-in ``DepthResource(env, capacity=N)`` of ``pyresv.adapters.simpy``, compiled (private).

A resource of one level of unreserved units with no monitor (``_fast``) over
the compiled allocator, whose class keeps ``release()`` and whose environment's
class keeps SimPy's ``schedule()`` (``_inline_exit``: the events are pushed onto
the queue here, as ``schedule`` would), gets a :class:`FlatCore`: its ``request()``, the
``__exit__`` of its requests and the processing of its trigger event run here,
calling the allocator's C functions directly. They do what the pure-Python
fast path of ``pyresv.adapters.simpy`` does, step by step and in the same
order (the same events, scheduled at the same points: the traces are
SimPy's), and that path stays the reference: every other resource, and any
request this module did not create, goes through it.

SimPy is not imported here: ``pyresv.adapters.simpy`` hands over its classes
and SimPy's constants in :func:`setup`. The SimPy internals used
(``Environment._now``, ``_active_proc``, ``_queue``, ``_eid``) are those the
adapter fences with ``TESTED_SIMPY``. The events' attributes are written
through their slots (the offsets the classes' own member descriptors give,
checked in :func:`setup`), as CPython's own specialized attribute access does.
"""

cimport cython
from cpython.dict cimport PyDict_DelItem, PyDict_GetItem, PyDict_SetItem
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.object cimport Py_EQ, Py_LT, PyObject, PyObject_RichCompareBool, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.math cimport signbit

from pyresv._core.allocator cimport (
    DPA_PENDING,
    DepthPoolAllocator,
    dpa_last_ticket,
    dpa_t,
    dpa_take_grant_ticket,
    dpa_try_acquire,
    dpa_try_release,
    proc_t,
    seq_t,
    tcb_t,
)


cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject** ob_item
    PyTypeObject PyFloat_Type
    PyTypeObject PyLong_Type
    long long PyLong_AsLongLongAndOverflow(PyObject*, int*) except? -1
    PyTypeObject* Py_TYPE(PyObject*)


cdef extern from *:
    """
    #ifndef Py_T_OBJECT_EX  /* before CPython 3.12 */
    #include "structmember.h"
    #define Py_T_OBJECT_EX T_OBJECT_EX
    #define Py_READONLY READONLY
    #endif
    """
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    int Py_T_OBJECT_EX
    int Py_READONLY


# What setup() hands over.
cdef type _Request = None  # DepthRequest
cdef object _PENDING = None  # simpy.events.PENDING
cdef object _NORMAL = None  # simpy.events.NORMAL
cdef object _exit_py = None  # DepthRequest's pure-Python __exit__
cdef tuple _no_args = ()

# Slot offsets of DepthRequest.
cdef Py_ssize_t R_ENV, R_CALLBACKS, R_VALUE, R_OK, R_RESOURCE, R_PROC, R_CORE, R_TCB, R_TICKET, R_USAGE

cdef object _MINUS_ONE = -1


cdef Py_ssize_t _slot(type cls, str name) except -1:
    """The offset of the object slot ``name`` of ``cls`` (its own ``__slots__`` or a base's)."""
    for klass in cls.__mro__:
        descr = klass.__dict__.get(name)
        if descr is not None:
            break
    else:
        raise TypeError(f"{cls.__name__} has no slot {name!r}")
    if type(descr).__name__ != "member_descriptor":
        raise TypeError(f"{cls.__name__}.{name} is not a slot: {descr!r}")
    cdef PyMemberDef* m = (<PyMemberDescrObject*>descr).d_member
    if m.type != Py_T_OBJECT_EX or m.flags & Py_READONLY:
        raise TypeError(f"{cls.__name__}.{name} is not a writable object slot")
    if not 0 < m.offset <= (<PyTypeObject*>cls).tp_basicsize - <Py_ssize_t>sizeof(PyObject*):
        raise TypeError(f"{cls.__name__}.{name}: offset {m.offset} out of the object")
    return m.offset


def setup(request_cls, pending, normal, exit_py):
    """Hand over the adapter's classes and SimPy's constants (once, at import)."""
    global _Request, _PENDING, _NORMAL, _exit_py
    global R_ENV, R_CALLBACKS, R_VALUE, R_OK, R_RESOURCE, R_PROC, R_CORE, R_TCB, R_TICKET, R_USAGE
    R_ENV = _slot(request_cls, "env")
    R_CALLBACKS = _slot(request_cls, "callbacks")
    R_VALUE = _slot(request_cls, "_value")
    R_OK = _slot(request_cls, "_ok")
    R_RESOURCE = _slot(request_cls, "resource")
    R_PROC = _slot(request_cls, "proc")
    R_CORE = _slot(request_cls, "_core")
    R_TCB = _slot(request_cls, "_tcb")
    R_TICKET = _slot(request_cls, "_ticket")
    R_USAGE = _slot(request_cls, "usage_since")
    _Request = request_cls
    _PENDING = pending
    _NORMAL = normal
    _exit_py = exit_py


# SimPy's event queue: heapq.heappush, with the tuple order of its entries
# (time, priority, eid, event) compared item by item as tuplerichcompare does
# (identity first, then ==, then <), exact floats and ints as C numbers. Any other entry
# is compared as a whole by Python. The same comparisons as heapq's, in the
# same order, so the heap ends the same.
cdef inline int _item_lt(PyObject* x, PyObject* y, int* equal) except -1:
    # 1 if x < y, 0 if not; *equal is set when x == y (then the next item decides).
    cdef double a, b
    cdef long long i, j
    cdef int r, ox = 0, oy = 0
    if x == y:
        equal[0] = 1
        return 0
    if Py_TYPE(x) == &PyFloat_Type and Py_TYPE(y) == &PyFloat_Type:
        a = PyFloat_AS_DOUBLE(<object>x)
        b = PyFloat_AS_DOUBLE(<object>y)
        equal[0] = a == b
        return a < b
    if Py_TYPE(x) == &PyLong_Type and Py_TYPE(y) == &PyLong_Type:
        i = PyLong_AsLongLongAndOverflow(x, &ox)
        j = PyLong_AsLongLongAndOverflow(y, &oy)
        if ox == 0 and oy == 0:
            equal[0] = i == j
            return i < j
    r = PyObject_RichCompareBool(<object>x, <object>y, Py_EQ)
    if r < 0:
        return -1
    equal[0] = r
    if r:
        return 0
    return PyObject_RichCompareBool(<object>x, <object>y, Py_LT)


cdef inline int _entry_lt(object x, object y) except -1:
    cdef Py_ssize_t i
    cdef int equal = 0, r
    if type(x) is not tuple or type(y) is not tuple or PyTuple_GET_SIZE(x) != 4 or PyTuple_GET_SIZE(y) != 4:
        return PyObject_RichCompareBool(x, y, Py_LT)
    for i in range(4):
        equal = 0
        r = _item_lt(PyTuple_GET_ITEM(x, i), PyTuple_GET_ITEM(y, i), &equal)
        if not equal:
            return r
    return 0  # equal tuples


cdef int _heappush(list heap, object item) except -1:
    # heapq.heappush: append, then move the new item up while it is smaller than its parent.
    cdef Py_ssize_t pos, parentpos, size
    cdef PyObject** arr
    cdef PyObject* swap
    cdef int lt
    heap.append(item)
    size = len(heap)
    pos = size - 1
    while pos > 0:
        parentpos = (pos - 1) >> 1
        arr = (<PyListObject*>heap).ob_item
        parent = <object>arr[parentpos]
        newitem = <object>arr[pos]
        lt = _entry_lt(newitem, parent)
        if size != len(heap):
            raise RuntimeError("list changed size during iteration")
        if not lt:
            break
        arr = (<PyListObject*>heap).ob_item
        swap = arr[parentpos]
        arr[parentpos] = arr[pos]
        arr[pos] = swap
        pos = parentpos
    return 0


def heappush(list heap, item):
    """The push of the fast path, for tests: ``heapq.heappush`` to the letter."""
    _heappush(heap, item)


# Slot access: only on instances of the classes the offsets were taken from
# (or their subclasses, which keep a base's slots where they are).
cdef inline object _get(object obj, Py_ssize_t off):
    cdef PyObject* v = (<PyObject**>((<char*><PyObject*>obj) + off))[0]
    if v == NULL:
        raise AttributeError("slot not set")
    return <object>v


cdef inline void _put(object obj, Py_ssize_t off, object value):
    cdef PyObject** p = <PyObject**>((<char*><PyObject*>obj) + off)
    cdef PyObject* old = p[0]
    Py_INCREF(value)
    p[0] = <PyObject*>value
    Py_XDECREF(old)


cdef inline object _new_request():
    return (<PyTypeObject*>_Request).tp_new(_Request, <PyObject*>_no_args, NULL)


def request_enter(self):
    """``DepthRequest.__enter__``: the request itself."""
    return self


def request_exit(self, exc_type, exc, tb):
    """``DepthRequest.__exit__``: compiled for the requests of a :class:`FlatCore`."""
    # A module function, not a method: nothing else checks self's type before its
    # slots are read by offset (a method descriptor's TypeError, as CPython words it).
    if type(self) is not _Request and not isinstance(self, _Request):
        raise TypeError(
            f"descriptor '__exit__' for '{_Request.__name__}' objects doesn't apply to a '{type(self).__name__}' object"
        )
    # _core is a writable slot: anything but a FlatCore (unset, None, or assigned
    # from Python) goes through the pure-Python __exit__, which does not read it.
    cdef PyObject* core = (<PyObject**>((<char*><PyObject*>self) + R_CORE))[0]
    if core != NULL and Py_TYPE(core) == <PyTypeObject*>FlatCore:
        (<FlatCore>core).exit(self, exc_type)
        return None
    return _exit_py(self, exc_type, exc, tb)


cdef inline object _plus0(object now):
    # The time SimPy's Environment.schedule(event) pushes: now + 0 (delay 0), which
    # turns -0.0 into 0.0 and a bool into an int. An exact int, or an exact float
    # other than -0.0 and NaN, is its own now + 0 (and == tells it from any
    # other entry's time as a new object would): no new object.
    cdef double d
    if Py_TYPE(<PyObject*>now) == &PyFloat_Type:
        d = PyFloat_AS_DOUBLE(now)
        if d == d and not (d == 0.0 and signbit(d)):
            return now
    elif Py_TYPE(<PyObject*>now) == &PyLong_Type:
        return now
    return now + 0


cdef class FlatCore:
    """The compiled fast path of one ``DepthResource`` (one level of unreserved units, no monitor).

    It shares the resource's ``_held``, ``_waiting`` and ``_ready`` and owns
    the count of release/trigger events not yet processed (``n``, the
    resource's ``_rel.n``).
    """

    cdef public Py_ssize_t n
    cdef object res, env, eid, trigger, trigger_cbs
    cdef list queue
    cdef object ready, ready_append, ready_popleft
    cdef dict held, waiting
    cdef DepthPoolAllocator alloc

    def __init__(self, res, env, DepthPoolAllocator alloc not None, dict held not None, dict waiting not None,
                 ready, trigger):
        self.n = 0
        self.res = res
        self.env = env
        self.queue = env._queue
        self.eid = env._eid
        self.alloc = alloc
        self.held = held
        self.waiting = waiting
        self.ready = ready
        self.ready_append = ready.append
        self.ready_popleft = ready.popleft
        self.trigger = trigger
        self.trigger_cbs = [self.trigger_processed]

    @property
    def trigger_callbacks(self):
        """The trigger event's callbacks (one list, re-armed at each processing)."""
        return self.trigger_cbs

    cdef inline object _now(self):
        return self.env._now

    cdef inline int _schedule(self, object now, object event) except -1:
        # Environment.schedule(event): made only for an environment that does not override it.
        _heappush(self.queue, (_plus0(now), _NORMAL, next(self.eid), event))
        return 0

    cdef inline int _serve_one(self) except -1:
        # DepthResource._serve_one: the oldest ready request becomes a user.
        req = self.ready_popleft()
        _put(req, R_OK, True)
        _put(req, R_VALUE, None)
        now = self._now()
        _put(req, R_USAGE, now)
        PyDict_SetItem(self.held, _get(req, R_TCB), req)
        self._schedule(now, req)
        return 0

    # request and trigger_processed are built-in methods (binding=False): the
    # eval loop and Environment.step call them without a bound-method hop. The
    # docstring's first lines, up to "--", are the __text_signature__.
    @cython.binding(False)
    @cython.embedsignature(False)
    def request(self, pid=None, depth=None, remote=False):
        """request($self, pid=None, depth=None, remote=False)
--

        Request a unit: ``DepthResource.request`` (SimPy's ``request()``), an
        event triggered once the unit is granted. ``request()`` runs compiled;
        a named pid or depth runs ``DepthResource.request`` in Python.
        """
        if pid is not None or depth is not None:
            return type(self.res).request(self.res, pid, depth, remote)
        cdef DepthPoolAllocator alloc = self.alloc
        cdef tcb_t tcb
        env = self.env
        req = _new_request()
        _put(req, R_ENV, env)
        _put(req, R_CALLBACKS, [])
        _put(req, R_RESOURCE, self.res)
        _put(req, R_PROC, env._active_proc)
        _put(req, R_CORE, self)
        _put(req, R_USAGE, None)
        if alloc._busy:
            tcb = alloc.acquire(0)  # raises AllocatorError (busy)
        else:
            tcb = dpa_try_acquire(&alloc.core, 0, 1)
            if tcb < DPA_PENDING:
                tcb = alloc.acquire(0)  # raises QueueFull (or the request limit); nothing changed
        ready = self.ready
        if tcb >= 0 and not ready:
            _put(req, R_OK, True)
            _put(req, R_VALUE, None)
            _put(req, R_TCB, tcb)
            _put(req, R_TICKET, _MINUS_ONE)
            now = self._now()
            _put(req, R_USAGE, now)
            PyDict_SetItem(self.held, tcb, req)
            self._schedule(now, req)
            return req
        _put(req, R_VALUE, _PENDING)
        if tcb >= 0:  # behind the granted waiters (DepthResource._queue_behind)
            _put(req, R_TCB, tcb)
            _put(req, R_TICKET, _MINUS_ONE)
            self.ready_append(req)
        else:
            ticket_obj = dpa_last_ticket(&alloc.core)
            _put(req, R_TCB, _MINUS_ONE)
            _put(req, R_TICKET, ticket_obj)
            PyDict_SetItem(self.waiting, ticket_obj, req)
        if ready:  # a trigger point: the oldest granted waiter goes first
            self._serve_one()
            if ready and not self.n:
                self.res._serve(False)
        return req

    cdef exit(self, req, exc_type):
        # DepthRequest.__exit__ on a fast resource: cancel if waiting, then release.
        cdef DepthPoolAllocator alloc = self.alloc
        cdef dpa_t* d = &alloc.core
        cdef proc_t gpid
        cdef tcb_t got
        cdef seq_t ticket
        cdef long tcb
        cdef PyObject* user
        if _get(req, R_VALUE) is _PENDING:
            self.res._cancel(req)
        if exc_type is GeneratorExit:
            return
        tcb_obj = _get(req, R_TCB)
        tcb = tcb_obj
        if tcb >= 0:
            held = self.held
            user = PyDict_GetItem(held, tcb_obj)
            if user != NULL and user == <PyObject*>req:
                PyDict_DelItem(held, tcb_obj)
                _put(req, R_TCB, _MINUS_ONE)
                if alloc._busy or dpa_try_release(d, <tcb_t>tcb) != 0:
                    alloc.release(tcb)  # raises: busy, or the grants buffer cannot grow
                waiting = self.waiting
                if waiting:
                    while dpa_take_grant_ticket(d, &gpid, &got, &ticket):
                        w = waiting.pop(ticket)
                        _put(w, R_TICKET, _MINUS_ONE)
                        _put(w, R_TCB, got)
                        self.ready_append(w)
        self.n += 1
        self._schedule(self._now(), self.trigger)

    @cython.binding(False)
    @cython.embedsignature(False)
    def trigger_processed(self, event):
        """trigger_processed($self, event)
--

        The trigger event is processed: re-arm it, then a trigger point (one waiter served).
        """
        self.trigger.callbacks = self.trigger_cbs
        self.n -= 1
        ready = self.ready
        if ready:
            self._serve_one()
            if ready and not self.n:
                self.res._serve(False)
