/* engagehub._engagehub_fast: the package's per-event calls without cffi's per-call
 * costs (Leaderboard.update_user, EventStreamProcessor.push_event, push_many, batch
 * delivery, top_channels and get_top_channels).
 *
 * One source, public API only:
 *
 * - Built with Py_LIMITED_API=0x030C0000 it is the stable-ABI module
 *   `_engagehub_fast.abi3.so`, which every CPython from 3.12 on loads (the limited
 *   API has vectorcall since 3.12). CPython 3.9-3.11 get the same file compiled
 *   against their own headers (`_engagehub_fast.cpython-3XY-*.so`): the stable ABI
 *   of those versions has no vectorcall, which the method descriptors need.
 * - No interpreter internals: strings are read through PyUnicode_AsUTF8AndSize, ints
 *   through PyLong_AsLongLongAndOverflow, a processor's native address from the C
 *   base class this module gives EventStreamProcessor (ProcessorBase); heap types,
 *   multi-phase initialisation, and all state in the module state (or, for the GIL
 *   hand-off, in each processor).
 * - No hand-copied ABI: the structs and function types come from the generated
 *   header, engagehub.h, which this file includes. The module links nothing: the
 *   functions are bound at import to the addresses of the library cffi loaded
 *   (`bind`, `bind_processor`, `bind_top_channels`), so both paths share one engine,
 *   its handles and its thread-local eh_last_error.
 * - Free-threaded CPython: the module relies on the GIL (the str cache, the
 *   descriptors' answer caches), and says so with Py_mod_gil where the headers
 *   have it (3.13+ builds that are not on the 3.12 stable ABI; an abi3 module is
 *   not loaded by a free-threaded CPython at all, which then uses the cffi paths).
 *   Subinterpreters: not supported (cffi's callbacks take the GIL of the main
 *   interpreter), declared with Py_mod_multiple_interpreters where available.
 *
 * Everything a fast path does not handle (a non-str id, a float timestamp, a
 * payload, keywords, an int beyond 64 bits, a lone surrogate...) calls the general
 * (cffi) Python method with the same arguments, and a failure status is raised by
 * the same Python code as the general path's, so results and exceptions are the
 * same either way (tests/python/test_processor_fast.py replays both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h> /* the PyMemberDef constants' older names */
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engagehub.h"

#if defined(__GNUC__) || defined(__clang__)
#define EH_NOINLINE __attribute__((noinline))
#else
#define EH_NOINLINE
#endif

/* The library's functions, typed by their declarations in the header. */
typedef __typeof__(eh_leaderboard_try_add) *try_add_fn;
typedef __typeof__(eh_processor_push) *push_fn;
typedef __typeof__(eh_processor_push_wait) *push_wait_fn;
typedef __typeof__(eh_processor_push_event) *push_event_fn;
typedef __typeof__(eh_processor_push_event_wait) *push_event_wait_fn;
typedef __typeof__(eh_processor_push_batch) *push_batch_fn;
typedef __typeof__(eh_processor_push_batch_wait) *push_batch_wait_fn;
typedef __typeof__(eh_processor_top_channels) *top_channels_fn;
typedef __typeof__(eh_channel_list_free) *channel_list_free_fn;

/* ---- module state --------------------------------------------------------------- */

/* One slot of the str cache used to build batches (see cached_str). */
typedef struct {
  uint64_t hash;
  uint32_t len;
  uint32_t used;    /* str_cache_clock at the last hit or insertion */
  const char *utf8; /* inside `str` */
  PyObject *str;    /* owned; NULL: an empty slot */
} str_slot;

typedef struct {
  /* Bound once by bind*() before the first call; read only with the GIL held. */
  try_add_fn try_add;
  push_fn push;
  push_wait_fn push_wait;
  push_event_fn push_event;             /* an event with a guild */
  push_event_wait_fn push_event_wait;   /* the same under "block" */
  push_batch_fn push_batch;
  push_batch_wait_fn push_batch_wait;
  top_channels_fn top_channels;
  channel_list_free_fn channel_list_free;
  /* This module's types. */
  PyTypeObject *push_event_type;
  PyTypeObject *processor_base_type;
  PyTypeObject *top_channels_type;
  /* The last class seen to derive from ProcessorBase (a strong reference), so
   * that the usual call checks its `self` with one comparison. */
  PyTypeObject *processor_class;
  PyObject *method_type; /* types.MethodType: binds the descriptors to an instance */
  /* Interned names. */
  PyObject *key_type, *key_user_id, *key_channel_id, *key_timestamp, *key_payload, *key_guild_id;
  PyObject *name_push_failed, *name_top_failed, *kw_k, *kw_window_secs, *kw_now;
  /* The str cache of build_batch: STR_CACHE_SLOTS slots, allocated at first use. */
  str_slot *str_cache;
  uint32_t str_cache_clock; /* wraps: then one set's order is off, no more */
} fast_state;

static fast_state *module_state(PyObject *module) { return (fast_state *)PyModule_GetState(module); }

/* A function pointer from the address Python passes (an int), or NULL with an
 * exception set. */
static void *address_arg(PyObject *address, const char *what) {
  void *ptr = PyLong_AsVoidPtr(address);
  if (ptr == NULL && !PyErr_Occurred()) {
    PyErr_Format(PyExc_ValueError, "needs the address of %s", what);
  }
  return ptr;
}

#define BIND(dest, type, address, what)                                                      \
  do {                                                                                       \
    void *ptr_ = address_arg((address), (what));                                            \
    if (ptr_ == NULL) {                                                                      \
      return NULL;                                                                           \
    }                                                                                        \
    (dest) = (type)ptr_;                                                                     \
  } while (0)

/* A str's UTF-8 bytes (CPython's own: the character data of an ASCII str, its
 * cached UTF-8 otherwise), valid as long as the str; NULL with an exception set
 * when it cannot be encoded (a lone surrogate). */
/* PyVectorcall_NARGS, which the limited API has as a function only. */
static inline Py_ssize_t vectorcall_nargs(size_t nargsf) {
  return (Py_ssize_t)(nargsf & ~PY_VECTORCALL_ARGUMENTS_OFFSET);
}

static inline const char *str_utf8(PyObject *str, Py_ssize_t *len) {
  return PyUnicode_AsUTF8AndSize(str, len);
}

/* An exact int that fits 64 bits into *out (1), or 0 for the general path. Where
 * Py_ssize_t has 64 bits, PyLong_AsSsize_t: the shortest of the limited API's
 * conversions for the two-digit ints timestamps are (an int beyond 64 bits then
 * costs an OverflowError, cleared: the general path names it). */
static inline int exact_int64(PyObject *value, long long *out) {
  if (!PyLong_CheckExact(value)) {
    return 0;
  }
#if SIZEOF_SIZE_T >= 8
  Py_ssize_t v = PyLong_AsSsize_t(value);
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return 0;
  }
  *out = (long long)v;
  return 1;
#else
  int overflow;
  *out = PyLong_AsLongLongAndOverflow(value, &overflow);
  return overflow == 0;
#endif
}

/* ---- Leaderboard.update_user ------------------------------------------------------
 *
 * Through cffi each update pays for encoding the id into a new bytes object, for
 * cffi's argument conversion and for releasing and re-taking the GIL: together more
 * than the update itself on a board of 10k users. leaderboard_add takes the str as
 * it is and calls eh_leaderboard_try_add while holding the GIL. Holding the GIL
 * never means waiting: try_add returns EH_BUSY at once when another thread is using
 * the board, and the Python caller then takes the cffi path, which releases the GIL
 * while it waits. The board address is the handle's shell, valid for the Python
 * wrapper's whole life (a closed board answers EH_SHUT_DOWN). Anything it does not
 * handle (a non-str id, a timestamp that is not an int, points neither float nor
 * int, an int out of range) returns None: the caller takes the general path. */

static PyObject *bind(PyObject *module, PyObject *address) {
  BIND(module_state(module)->try_add, try_add_fn, address, "eh_leaderboard_try_add");
  Py_RETURN_NONE;
}

/* leaderboard_add(board_address, user_id, points, timestamp) -> status or None */
static PyObject *leaderboard_add(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  fast_state *st = module_state(module);
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "leaderboard_add() takes 4 arguments");
    return NULL;
  }
  PyObject *user_id = args[1], *points = args[2], *timestamp = args[3];
  if (st->try_add == NULL || !PyUnicode_CheckExact(user_id) || !PyLong_CheckExact(timestamp)) {
    Py_RETURN_NONE;
  }
  double points_value;
  if (PyFloat_CheckExact(points) || PyLong_CheckExact(points)) {
    points_value = PyFloat_CheckExact(points) ? PyFloat_AsDouble(points) : PyLong_AsDouble(points);
    if (points_value == -1.0 && PyErr_Occurred()) {
      PyErr_Clear(); /* an int too large for a double: the general path names it */
      Py_RETURN_NONE;
    }
  } else {
    Py_RETURN_NONE;
  }
  long long ts = PyLong_AsLongLong(timestamp);
  if (ts == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    Py_RETURN_NONE;
  }
  /* A closed board's shell answers EH_SHUT_DOWN; 0 would get EH_INVALID_ARGUMENT. */
  void *board = PyLong_AsVoidPtr(args[0]);
  if (board == NULL && PyErr_Occurred()) {
    return NULL;
  }
  Py_ssize_t id_len = 0;
  const char *id = str_utf8(user_id, &id_len);
  if (id == NULL) {
    return NULL; /* a lone surrogate: UnicodeEncodeError, as str.encode() raises */
  }
  eh_status status = st->try_add((struct eh_leaderboard *)board, (const uint8_t *)id,
                                 (size_t)id_len, points_value, (int64_t)ts);
  return PyLong_FromLong(status);
}

/* ---- the GIL hand-off, one per processor -----------------------------------------
 *
 * A flush callback needs the GIL, and the pushes below keep it: left to itself,
 * CPython hands it over only after a waiting thread has waited its switch interval
 * (5 ms), i.e. about one batch per 5 ms, so a producer pushing in a loop fills the
 * ring and drops. So the native flush callback is flush_entry below: it counts
 * itself in its processor's `waiting` before calling the cffi trampoline (which
 * takes the GIL); the trampoline's first act, under the GIL, is delivery_started(),
 * which moves the count to `started`. A push that sees a delivery of its own
 * processor waiting releases the GIL until one has started (or 20 ms have passed),
 * then takes it back: the batch is delivered now rather than after 5 ms.
 *
 * The counters live in a `handoff`, shared (reference counted, atomically) by the
 * processor (ProcessorBase) and by every callback registration's `delivery` context,
 * which the library owns as user_data and releases through context_free after the
 * registration's last call. */

#if defined(_MSC_VER)
#include <windows.h>
#define EH_THREAD_LOCAL __declspec(thread)
typedef volatile LONG64 eh_counter;
#define COUNTER_LOAD(c) InterlockedOr64(&(c), 0)
#define COUNTER_ADD(c, v) InterlockedExchangeAdd64(&(c), (v))
#define PAUSE_BRIEFLY() Sleep(0)
#define MONOTONIC_NS() ((int64_t)GetTickCount64() * 1000000)
#else
#include <time.h>
#define EH_THREAD_LOCAL _Thread_local
typedef int64_t eh_counter;
/* Acquire/release: a count read here orders with the other thread's update. */
#define COUNTER_LOAD(c) __atomic_load_n(&(c), __ATOMIC_ACQUIRE)
#define COUNTER_ADD(c, v) __atomic_fetch_add(&(c), (v), __ATOMIC_ACQ_REL)
/* Sleeps ~20 us: leaves the core to the worker being woken (a sched_yield spin
 * kept it busy, and on a loaded 2-core machine the worker then missed its turn). */
#define PAUSE_BRIEFLY()                                                                      \
  do {                                                                                       \
    struct timespec pause_ = {0, 20000};                                                     \
    nanosleep(&pause_, NULL);                                                                \
  } while (0)
static int64_t monotonic_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}
#define MONOTONIC_NS() monotonic_ns()
#endif

typedef struct {
  eh_counter refs;    /* the processor's and each live delivery context's */
  eh_counter waiting; /* deliveries between flush_entry and delivery_started */
  eh_counter started; /* deliveries started so far: a yielding push waits for it to move */
} handoff;

static handoff *handoff_new(void) {
  handoff *h = (handoff *)calloc(1, sizeof(handoff));
  if (h != NULL) {
    h->refs = 1;
  }
  return h;
}

static void handoff_release(handoff *h) {
  if (h != NULL && COUNTER_ADD(h->refs, -1) == 1) {
    free(h);
  }
}

/* One flush-callback registration, as the library sees it (its user_data). */
typedef struct {
  handoff *handoff;      /* one reference */
  void *inner;           /* the cffi handle of the Python registration */
  eh_flush_fn trampoline; /* the cffi callback: takes the GIL, decodes, calls Python */
  eh_free_fn inner_free; /* the cffi finalizer of `inner` */
} delivery;

/* The delivery running on this thread and whether it has been counted as started:
 * set by flush_entry around its call, read by delivery_started. (Nested when a
 * callback runs another processor's synchronous flush on the same thread.) */
typedef struct {
  handoff *handoff;
  int counted;
} delivery_frame;

static EH_THREAD_LOCAL delivery_frame *current_delivery = NULL;

static int32_t flush_entry(void *user_data, const struct eh_event *events, size_t n) {
  delivery *d = (delivery *)user_data;
  delivery_frame frame = {d->handoff, 0};
  delivery_frame *outer = current_delivery;
  current_delivery = &frame;
  COUNTER_ADD(d->handoff->waiting, 1);
  int32_t status = d->trampoline(d->inner, events, n);
  if (!frame.counted) { /* the trampoline failed before it could say so */
    COUNTER_ADD(d->handoff->waiting, -1);
  }
  current_delivery = outer;
  return status;
}

static void context_free(void *user_data) {
  delivery *d = (delivery *)user_data;
  if (d->inner_free != NULL) {
    d->inner_free(d->inner);
  }
  handoff_release(d->handoff);
  free(d);
}

static PyObject *delivery_started(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  delivery_frame *frame = current_delivery;
  if (frame != NULL && !frame->counted) { /* else not called by flush_entry's trampoline */
    frame->counted = 1;
    COUNTER_ADD(frame->handoff->waiting, -1);
    COUNTER_ADD(frame->handoff->started, 1);
  }
  Py_RETURN_NONE;
}

/* discard_context(address): a context the library refused (it never calls
 * context_free for it); the Python registration is released by the caller. */
static PyObject *discard_context(PyObject *module, PyObject *address) {
  (void)module;
  delivery *d = (delivery *)PyLong_AsVoidPtr(address);
  if (d == NULL) {
    return PyErr_Occurred() ? NULL : (Py_INCREF(Py_None), Py_None);
  }
  handoff_release(d->handoff);
  free(d);
  Py_RETURN_NONE;
}

/* Lets a waiting delivery take the GIL (see above); called with the GIL held. The
 * wait is bounded (20 ms) so that a worker that cannot get the GIL (another thread
 * holds it) slows a push down but never stops it. */
static EH_NOINLINE void yield_to_delivery(handoff *h) {
  int64_t started = COUNTER_LOAD(h->started);
  Py_BEGIN_ALLOW_THREADS
  int64_t deadline = MONOTONIC_NS() + 20 * 1000 * 1000;
  while (COUNTER_LOAD(h->started) == started && COUNTER_LOAD(h->waiting) > 0 &&
         MONOTONIC_NS() < deadline) {
    PAUSE_BRIEFLY();
  }
  Py_END_ALLOW_THREADS
}

static inline void maybe_yield_to_delivery(handoff *h) {
  if (COUNTER_LOAD(h->waiting) > 0) {
    yield_to_delivery(h);
  }
}

/* ---- ProcessorBase: what the compiled calls read from a processor ------------------
 *
 * EventStreamProcessor's C base class (its other base is NativeHandle): it holds
 * the processor's shell address, whether a push may wait for room (the "block"
 * overflow) and for how long, and its GIL hand-off, at a fixed place in every
 * instance, so the compiled calls read them with a type check and a few loads.
 * `_bind_target` sets them once the native processor exists; until then (a
 * constructor that failed) the address is NULL and every compiled call takes the
 * general path. The address is valid for the wrapper's whole life (freed only by
 * ffi.gc, and `self` is alive during a call): a call racing close gets
 * EH_SHUT_DOWN. */

typedef struct {
  PyObject_HEAD
  void *address;
  int blocking;
  long long block_timeout_ms;
  handoff *handoff;
} ProcessorBase;

static void processor_base_dealloc(PyObject *self) {
  PyTypeObject *type = Py_TYPE(self); /* a heap type (the Python subclass, or this one) */
  handoff_release(((ProcessorBase *)self)->handoff);
  freefunc release = (freefunc)PyType_GetSlot(type, Py_tp_free);
  release(self);
  Py_DECREF(type);
}

/* _bind_target(address, blocking, block_timeout_ms): once, from __init__. */
static PyObject *processor_base_bind_target(PyObject *self, PyObject *args) {
  ProcessorBase *base = (ProcessorBase *)self;
  PyObject *address_obj;
  int blocking;
  long long block_timeout_ms;
  if (!PyArg_ParseTuple(args, "O!pL:_bind_target", &PyLong_Type, &address_obj, &blocking,
                        &block_timeout_ms)) {
    return NULL;
  }
  if (block_timeout_ms < 0) {
    PyErr_SetString(PyExc_ValueError, "_bind_target(): block_timeout_ms < 0");
    return NULL;
  }
  if (base->address != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "_bind_target(): already bound");
    return NULL;
  }
  void *address = address_arg(address_obj, "a processor");
  if (address == NULL) {
    return NULL;
  }
  handoff *h = handoff_new();
  if (h == NULL) {
    return PyErr_NoMemory();
  }
  base->blocking = blocking;
  base->block_timeout_ms = block_timeout_ms;
  base->handoff = h;
  base->address = address;
  Py_RETURN_NONE;
}

/* _delivery_context(inner_address, trampoline_address, inner_free_address) -> the
 * address of a new delivery context to register as the flush callback's user_data,
 * with FLUSH_ENTRY and CONTEXT_FREE (or to hand to discard_context if refused). */
static PyObject *processor_base_delivery_context(PyObject *self, PyObject *args) {
  handoff *h = ((ProcessorBase *)self)->handoff;
  PyObject *inner_obj, *trampoline_obj, *free_obj;
  if (!PyArg_ParseTuple(args, "OOO:_delivery_context", &inner_obj, &trampoline_obj, &free_obj)) {
    return NULL;
  }
  if (h == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "_delivery_context(): not bound");
    return NULL;
  }
  void *inner = PyLong_AsVoidPtr(inner_obj);
  if (inner == NULL && PyErr_Occurred()) {
    return NULL;
  }
  void *trampoline = address_arg(trampoline_obj, "the flush trampoline");
  void *inner_free = trampoline ? address_arg(free_obj, "the user_data finalizer") : NULL;
  if (inner_free == NULL) {
    return NULL;
  }
  delivery *d = (delivery *)malloc(sizeof(delivery));
  if (d == NULL) {
    return PyErr_NoMemory();
  }
  PyObject *result = PyLong_FromVoidPtr(d);
  if (result == NULL) {
    free(d);
    return NULL;
  }
  COUNTER_ADD(h->refs, 1);
  d->handoff = h;
  d->inner = inner;
  d->trampoline = (eh_flush_fn)trampoline;
  d->inner_free = (eh_free_fn)inner_free;
  return result;
}

/* In a forked child only the forking thread exists: no delivery is waiting. */
static PyObject *processor_base_reset_handoff(PyObject *self, PyObject *unused) {
  (void)unused;
  handoff *h = ((ProcessorBase *)self)->handoff;
  if (h != NULL) {
    h->waiting = 0;
  }
  Py_RETURN_NONE;
}

/* _handoff_counts() -> (waiting, started): this processor's deliveries waiting for
 * the GIL and started so far (for tests). */
static PyObject *processor_base_handoff_counts(PyObject *self, PyObject *unused) {
  (void)unused;
  handoff *h = ((ProcessorBase *)self)->handoff;
  long long waiting = h ? (long long)COUNTER_LOAD(h->waiting) : 0;
  long long started = h ? (long long)COUNTER_LOAD(h->started) : 0;
  return Py_BuildValue("(LL)", waiting, started);
}

static PyMethodDef processor_base_methods[] = {
    {"_bind_target", processor_base_bind_target, METH_VARARGS,
     "_bind_target(address, blocking, block_timeout_ms): the native processor's shell."},
    {"_delivery_context", processor_base_delivery_context, METH_VARARGS,
     "_delivery_context(inner_address, trampoline_address, inner_free_address) -> address."},
    {"_reset_handoff", processor_base_reset_handoff, METH_NOARGS,
     "_reset_handoff(): in a forked child, no delivery is waiting."},
    {"_handoff_counts", processor_base_handoff_counts, METH_NOARGS,
     "_handoff_counts() -> (waiting, started): this processor's deliveries."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot processor_base_slots[] = {
    {Py_tp_dealloc, (void *)processor_base_dealloc},
    {Py_tp_methods, processor_base_methods},
    {Py_tp_doc, (void *)"The C base of EventStreamProcessor: what the compiled calls read."},
    {0, NULL},
};

static PyType_Spec processor_base_spec = {
    .name = "engagehub._engagehub_fast.ProcessorBase",
    .basicsize = sizeof(ProcessorBase),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = processor_base_slots,
};

/* `self` as a bound processor (borrowed: the caller holds `self`), or NULL when it
 * is none: the general path then decides (e.g. a wrapper whose constructor failed,
 * or a `self` that is no processor). */
static inline ProcessorBase *processor_of(fast_state *st, PyObject *self) {
  PyTypeObject *type = Py_TYPE(self);
  if (type != st->processor_class) {
    if (!PyType_IsSubtype(type, st->processor_base_type)) {
      return NULL;
    }
    PyTypeObject *old = st->processor_class;
    Py_INCREF((PyObject *)type);
    st->processor_class = type;
    Py_XDECREF((PyObject *)old);
  }
  ProcessorBase *base = (ProcessorBase *)self;
  return base->address != NULL ? base : NULL;
}

/* ---- method descriptors: push_event, top_channels, get_top_channels -----------------
 *
 * Set in the class body, called as `p.push_event(...)` they run with no Python
 * frame (vectorcall; a method descriptor, so no bound method is built either). Each
 * holds the general Python method it falls back to, and names and documents itself
 * as that method does. */

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *general; /* the general (Python) method of the processor's class */
  PyObject *module;  /* keeps `state` alive */
  fast_state *state;
} PushEvent;

static int descriptor_init(PushEvent *self, PyObject *general, PyTypeObject *type,
                           vectorcallfunc call) {
  PyObject *module = PyType_GetModule(type);
  if (module == NULL) {
    return -1;
  }
  self->vectorcall = call;
  Py_INCREF(general);
  self->general = general;
  Py_INCREF(module);
  self->module = module;
  self->state = module_state(module);
  return 0;
}

/* Raises what the general path raises for a failure status, through the instance's
 * `name` method (eh_last_error is read now, on this thread). */
static PyObject *call_failed(PyObject *self, PyObject *name, eh_status status) {
  PyObject *status_obj = PyLong_FromLong(status);
  if (status_obj == NULL) {
    return NULL;
  }
  PyObject *call_args[2] = {self, status_obj};
  PyObject *result =
      PyObject_VectorcallMethod(name, call_args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
  Py_DECREF(status_obj);
  return result;
}

/* Under "block", a push into a full ring waits in slices of this much (as the
 * Python path's _SLICE_MS), running signal handlers between them. */
#define PUSH_SLICE_NS ((int64_t)100 * 1000000)

/* push_event under "block": a first eh_processor_push_wait takes a free slot
 * without waiting (the GIL held); on a full ring the same call waits in slices of
 * 0.1 s up to block_timeout_ms with the GIL released, running signal handlers
 * between slices. 0 and *status set, or -1 with an exception set (Ctrl-C:
 * KeyboardInterrupt, nothing pushed or counted). Out of line: it keeps the drop
 * mode's path short. */
static EH_NOINLINE int push_event_blocking(fast_state *st, ProcessorBase *target,
                                           const struct eh_event *e, eh_status *status) {
  struct eh_processor *processor = (struct eh_processor *)target->address;
  eh_status rc = st->push_event_wait(processor, e, 0, 0);
  if (rc == EH_TIMEOUT) {
    int64_t deadline = MONOTONIC_NS() + (int64_t)target->block_timeout_ms * 1000000;
    for (;;) {
      int64_t left = deadline - MONOTONIC_NS();
      int give_up = left <= PUSH_SLICE_NS;
      uint64_t wait_ms =
          left <= 0 ? 0 : (uint64_t)((left < PUSH_SLICE_NS ? left : PUSH_SLICE_NS) / 1000000);
      /* The strs stay alive: the caller holds them for the call. */
      Py_BEGIN_ALLOW_THREADS
      rc = st->push_event_wait(processor, e, wait_ms, give_up);
      Py_END_ALLOW_THREADS
      if (rc != EH_TIMEOUT) {
        break;
      }
      if (PyErr_CheckSignals() < 0) {
        return -1;
      }
    }
  }
  *status = rc;
  return 0;
}

/* push_event: takes three exact str and an exact int (or None, or nothing) as they
 * are and makes one native call. Under the "drop" overflow the push never waits, so
 * the GIL stays held. Under "block" it may wait for room, which the workers can only
 * make by running the Python callback: see push_event_blocking (as the blocking
 * class's Python push_event does). A status other than EH_OK and EH_QUEUE_FULL goes
 * to the instance's `_push_failed(status)`. */
/* The answer of a compiled call that leaves the call to the general method. */
#define GENERAL_PATH ((PyObject *)&general_path_marker)
static const char general_path_marker;

/* Room for an int64 in decimal digits and its sign. */
#define GUILD_DIGITS 24

/* A compiled push's guild: none (NULL, 0) for None or "", an exact str's UTF-8,
 * or an exact int fitting 64 bits as its decimal digits (as str(int)) written
 * into `digits`. 1 when taken, 0 for the general path (any other type, a lone
 * surrogate, an int beyond 64 bits: it names the problem). */
static int guild_field(PyObject *guild, char digits[GUILD_DIGITS], const uint8_t **out,
                       size_t *len) {
  *out = NULL;
  *len = 0;
  if (guild == NULL || guild == Py_None) {
    return 1;
  }
  if (PyUnicode_CheckExact(guild)) {
    Py_ssize_t n;
    const char *utf8 = str_utf8(guild, &n);
    if (utf8 == NULL) {
      PyErr_Clear(); /* a lone surrogate (or no memory): the general path says so */
      return 0;
    }
    if (n > 0) {
      *out = (const uint8_t *)utf8;
      *len = (size_t)n;
    }
    return 1;
  }
  long long value;
  if (!exact_int64(guild, &value)) {
    return 0;
  }
  /* The digits from the end of the buffer (as str(int) writes them). */
  unsigned long long magnitude =
      value < 0 ? 0ull - (unsigned long long)value : (unsigned long long)value;
  char *end = digits + GUILD_DIGITS, *p = end;
  do {
    *--p = (char)('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  if (value < 0) {
    *--p = '-';
  }
  *out = (const uint8_t *)p;
  *len = (size_t)(end - p);
  return 1;
}

/* push_event's compiled path for self, event_type, user_id, channel_id[,
 * timestamp[, payload=None]] and `guild` (NULL when not given): the answer, NULL
 * with an exception set, or GENERAL_PATH. Apart from the general call, so that the
 * vectorcall arguments need not stay live across its calls. */
static PyObject *push_event_fast(fast_state *st, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *guild) {
  PyObject *self = args[0];
  if (!PyUnicode_CheckExact(args[1]) || !PyUnicode_CheckExact(args[2]) ||
      !PyUnicode_CheckExact(args[3])) {
    return GENERAL_PATH;
  }
  long long timestamp = 0;
  if (nargs >= 5 && args[4] != Py_None && !exact_int64(args[4], &timestamp)) {
    return GENERAL_PATH; /* not an int, or beyond 64 bits: the general path names it */
  }
  if (nargs == 6 && args[5] != Py_None) {
    return GENERAL_PATH; /* a payload */
  }
  char digits[GUILD_DIGITS];
  const uint8_t *guild_id;
  size_t guild_len;
  if (!guild_field(guild, digits, &guild_id, &guild_len)) {
    return GENERAL_PATH;
  }
  Py_ssize_t kind_len, user_len, channel_len;
  const char *kind = str_utf8(args[1], &kind_len);
  const char *user = kind ? str_utf8(args[2], &user_len) : NULL;
  const char *channel = user ? str_utf8(args[3], &channel_len) : NULL;
  if (channel == NULL) {
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
      return NULL;
    }
    PyErr_Clear(); /* a lone surrogate: the general path raises InvalidArgument */
    return GENERAL_PATH;
  }
  ProcessorBase *target = processor_of(st, self);
  if (target == NULL) {
    return GENERAL_PATH;
  }
  eh_status status;
  if (target->blocking || guild_len > 0) {
    const struct eh_event e = {(const uint8_t *)kind,    (size_t)kind_len,
                               (const uint8_t *)user,    (size_t)user_len,
                               (const uint8_t *)channel, (size_t)channel_len,
                               (int64_t)timestamp,       NULL,
                               0,                        guild_id,
                               guild_len};
    if (!target->blocking) {
      status = st->push_event((struct eh_processor *)target->address, &e);
      maybe_yield_to_delivery(target->handoff);
    } else if (push_event_blocking(st, target, &e, &status) < 0) {
      return NULL;
    }
  } else {
    status = st->push((struct eh_processor *)target->address, (const uint8_t *)kind,
                      (size_t)kind_len, (const uint8_t *)user, (size_t)user_len,
                      (const uint8_t *)channel, (size_t)channel_len, (int64_t)timestamp, NULL, 0);
    maybe_yield_to_delivery(target->handoff);
  }
  if (status == EH_OK) {
    Py_RETURN_TRUE;
  }
  if (status == EH_QUEUE_FULL) {
    Py_RETURN_FALSE;
  }
  return call_failed(self, st->name_push_failed, status);
}

static PyObject *push_event_call(PyObject *callable, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
  PushEvent *method = (PushEvent *)callable;
  fast_state *st = method->state;
  Py_ssize_t nargs = vectorcall_nargs(nargsf);
  if (st->push != NULL) {
    PyObject *answer = GENERAL_PATH;
    if (kwnames == NULL) {
      if (nargs == 4 || nargs == 5) {
        answer = push_event_fast(st, args, nargs, NULL);
      } else if (nargs == 7) { /* guild_id given by position */
        answer = push_event_fast(st, args, 6, args[6]);
      }
    } else if (nargs >= 4 && nargs <= 6 && PyTuple_Size(kwnames) == 1) {
      /* guild_id=... alone among the keywords (interned by the compiler). */
      PyObject *name = PyTuple_GetItem(kwnames, 0);
      if (name == st->key_guild_id ||
          (name != NULL && PyUnicode_Compare(name, st->key_guild_id) == 0)) {
        answer = push_event_fast(st, args, nargs, args[nargs]);
      }
      if (PyErr_Occurred() && answer == GENERAL_PATH) {
        PyErr_Clear(); /* a failed compare: the general path sorts the keywords out */
      }
    }
    if (answer != GENERAL_PATH) {
      return answer;
    }
  }
  return PyObject_Vectorcall(method->general, args, nargsf, kwnames);
}

static PyObject *push_event_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  PyObject *general;
  if (kwargs != NULL && PyDict_Size(kwargs) != 0) {
    PyErr_SetString(PyExc_TypeError, "PushEvent() takes no keyword arguments");
    return NULL;
  }
  if (!PyArg_ParseTuple(args, "O:PushEvent", &general)) {
    return NULL;
  }
  if (!PyCallable_Check(general)) {
    PyErr_SetString(PyExc_TypeError, "PushEvent() needs the general push_event function");
    return NULL;
  }
  PushEvent *self = (PushEvent *)PyType_GenericAlloc(type, 0);
  if (self == NULL) {
    return NULL;
  }
  if (descriptor_init(self, general, type, push_event_call) < 0) {
    Py_DECREF(self);
    return NULL;
  }
  return (PyObject *)self;
}

static int push_event_traverse(PyObject *self, visitproc visit, void *arg) {
  Py_VISIT(Py_TYPE(self));
  Py_VISIT(((PushEvent *)self)->general);
  Py_VISIT(((PushEvent *)self)->module);
  return 0;
}

static int push_event_clear(PyObject *self) {
  Py_CLEAR(((PushEvent *)self)->general);
  Py_CLEAR(((PushEvent *)self)->module);
  return 0;
}

static void push_event_dealloc(PyObject *self) {
  PyTypeObject *type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  push_event_clear(self);
  PyObject_GC_Del(self);
  Py_DECREF(type);
}

/* Bound like a function: `p.push_event` is a method object over this descriptor. */
static PyObject *descriptor_get(PyObject *self, PyObject *obj, PyObject *type) {
  (void)type;
  if (obj == NULL || obj == Py_None) {
    Py_INCREF(self);
    return self;
  }
  PushEvent *method = (PushEvent *)self;
  if (method->state == NULL) {
    PyErr_SetString(PyExc_AttributeError, "the descriptor is cleared");
    return NULL;
  }
  PyObject *call_args[2] = {self, obj};
  return PyObject_Vectorcall(method->state->method_type, call_args, 2, NULL);
}

static PyObject *general_attr(PyObject *self, const char *name) {
  PushEvent *method = (PushEvent *)self;
  if (method->general == NULL) {
    PyErr_SetString(PyExc_AttributeError, "the descriptor is cleared");
    return NULL;
  }
  return PyObject_GetAttrString(method->general, name);
}

static PyObject *descriptor_doc(PyObject *self, void *closure) {
  (void)closure;
  return general_attr(self, "__doc__");
}

static PyObject *descriptor_name(PyObject *self, void *closure) {
  (void)closure;
  return general_attr(self, "__name__");
}

static PyObject *descriptor_qualname(PyObject *self, void *closure) {
  (void)closure;
  return general_attr(self, "__qualname__");
}

static PyObject *descriptor_wrapped(PyObject *self, void *closure) {
  (void)closure;
  PyObject *general = ((PushEvent *)self)->general;
  if (general == NULL) {
    Py_RETURN_NONE;
  }
  Py_INCREF(general);
  return general;
}

static PyGetSetDef descriptor_getset[] = {
    {"__doc__", descriptor_doc, NULL, NULL, NULL},
    {"__name__", descriptor_name, NULL, NULL, NULL},
    {"__qualname__", descriptor_qualname, NULL, NULL, NULL},
    {"__wrapped__", descriptor_wrapped, NULL,
     "The general path (a plain Python function) this fast path falls back to.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef push_event_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(PushEvent, vectorcall), Py_READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define DESCRIPTOR_FLAGS                                                                     \
  (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |                     \
   Py_TPFLAGS_METHOD_DESCRIPTOR)

static PyType_Slot push_event_slots[] = {
    {Py_tp_new, (void *)push_event_new},
    {Py_tp_dealloc, (void *)push_event_dealloc},
    {Py_tp_traverse, (void *)push_event_traverse},
    {Py_tp_clear, (void *)push_event_clear},
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_descr_get, (void *)descriptor_get},
    {Py_tp_getset, descriptor_getset},
    {Py_tp_members, push_event_members},
    {0, NULL},
};

static PyType_Spec push_event_spec = {
    .name = "engagehub._engagehub_fast.PushEvent",
    .basicsize = sizeof(PushEvent),
    .flags = DESCRIPTOR_FLAGS,
    .slots = push_event_slots,
};

/* ---- push_many ----------------------------------------------------------------------
 *
 * push_rows(processor, rows[, wait_ms, give_up]) -> (status, accepted), or None when
 * the rows need the general path: `rows` must be a list of exact tuples of 3 exact
 * str, or 4 with an exact int timestamp (fitting 64 bits), or 5 with a guild (None,
 * an exact str or an exact int fitting 64 bits, as guild_field takes it), all of
 * one width, and no lone surrogate. One eh_processor_push_batch call (which checks every event before
 * it pushes any), the strings given as CPython's UTF-8. A processor under "block"
 * takes `wait_ms` and `give_up` instead, and one eh_processor_push_batch_wait call
 * with the GIL released (the caller loops over slices, running signal handlers
 * between them); a call with or without them where the other is expected returns
 * None. */
/* push_rows's read of the str column FIELD of event `e` from tuple item INDEX of
 * `row`: copied from the previous event `prev` when the item is the very object
 * LAST it was read from (a kind, a channel recurring run after run), else its
 * UTF-8 (the rows hold their strs, and the strs their UTF-8, for the call); a
 * non-str item goes to `general`, a failure to `utf8_failed`. A macro: the
 * objects stay in registers, which the calls in between would otherwise force
 * to memory. */
#define ROW_STR(INDEX, LAST, FIELD)                                                          \
  do {                                                                                       \
    PyObject *item_ = PyTuple_GetItem(row, (INDEX));                                         \
    if (item_ == (LAST)) {                                                                   \
      e->FIELD = prev->FIELD;                                                                \
      e->FIELD##_len = prev->FIELD##_len;                                                    \
    } else {                                                                                 \
      if (!PyUnicode_CheckExact(item_)) {                                                    \
        goto general;                                                                        \
      }                                                                                      \
      const char *utf8_ = str_utf8(item_, (Py_ssize_t *)&e->FIELD##_len);                   \
      if (utf8_ == NULL) {                                                                   \
        goto utf8_failed;                                                                    \
      }                                                                                      \
      e->FIELD = (const uint8_t *)utf8_;                                                     \
      (LAST) = item_;                                                                        \
    }                                                                                        \
  } while (0)

static PyObject *push_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  fast_state *st = module_state(module);
  if (nargs != 2 && nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "push_rows() takes 2 or 4 arguments");
    return NULL;
  }
  unsigned long long wait_ms = 0;
  int give_up = 0, sliced = nargs == 4;
  if (sliced) {
    wait_ms = PyLong_AsUnsignedLongLong(args[2]);
    if (wait_ms == (unsigned long long)-1 && PyErr_Occurred()) {
      return NULL;
    }
    if ((give_up = PyObject_IsTrue(args[3])) < 0) {
      return NULL;
    }
  }
  PyObject *rows = args[1];
  if (st->push_batch == NULL || !PyList_CheckExact(rows)) {
    Py_RETURN_NONE;
  }
  ProcessorBase *target = processor_of(st, args[0]);
  /* A push that may wait must wait in slices: the blocking class passes them. */
  if (target == NULL || target->blocking != sliced) {
    Py_RETURN_NONE;
  }
  /* Under "block" the GIL is released during the call: the rows (and so their
   * strings) are held in a tuple nobody can change meanwhile. Under "drop" the list
   * itself is read and pushed with the GIL held, and nothing in between runs Python
   * code (no object that the GC tracks is allocated). */
  PyObject *held;
  if (sliced) {
    held = PyList_AsTuple(rows);
    if (held == NULL) {
      return NULL;
    }
  } else {
    Py_INCREF(rows);
    held = rows;
  }
  Py_ssize_t n = sliced ? PyTuple_Size(held) : PyList_Size(held);
  PyObject *result = NULL;
  char(*digits)[GUILD_DIGITS] = NULL; /* int guilds' decimal digits, made at the first */
  struct eh_event *events =
      (struct eh_event *)PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(struct eh_event));
  if (events == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  /* The objects the previous event's fields were read from (see row_str). */
  PyObject *last_kind = NULL, *last_user = NULL, *last_channel = NULL, *last_ts = NULL;
  /* The guild objects of recent rows and what they were read as (the rows hold
   * them, and an int's digits stay in `digits`, for the call). */
  enum { GUILD_CACHE = 4 };
  PyObject *guild_objs[GUILD_CACHE] = {NULL, NULL, NULL, NULL};
  const uint8_t *guild_ptrs[GUILD_CACHE] = {NULL, NULL, NULL, NULL};
  size_t guild_lens[GUILD_CACHE] = {0, 0, 0, 0};
  int guild_next = 0;
  Py_ssize_t width = -1;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *row = sliced ? PyTuple_GetItem(held, i) : PyList_GetItem(held, i); /* borrowed */
    if (!PyTuple_CheckExact(row)) {
      goto general;
    }
    Py_ssize_t w = Py_SIZE(row); /* PyVarObject.ob_size: part of the stable ABI */
    if (w != width) {
      if (width >= 0 || w < 3 || w > 5) {
        goto general;
      }
      width = w;
    }
    struct eh_event *e = &events[i];
    const struct eh_event *prev = i > 0 ? e - 1 : e; /* read only when a field recurs */
    e->timestamp = 0;
    e->guild_id = NULL;
    e->guild_id_len = 0;
    if (w >= 4) {
      PyObject *ts = PyTuple_GetItem(row, 3);
      if (ts == last_ts) {
        e->timestamp = prev->timestamp;
      } else {
        long long value;
        if (!exact_int64(ts, &value)) {
          goto general;
        }
        e->timestamp = (int64_t)value;
        last_ts = ts;
      }
    }
    ROW_STR(0, last_kind, kind);
    ROW_STR(1, last_user, user_id);
    ROW_STR(2, last_channel, channel_id);
    e->payload = NULL;
    e->payload_len = 0;
    if (w == 5) {
      PyObject *guild = PyTuple_GetItem(row, 4);
      int seen = -1; /* a guild object of the last few rows (a bot's guilds recur) */
      for (int k = 0; k < GUILD_CACHE; k++) {
        if (guild_objs[k] == guild) {
          seen = k;
          break;
        }
      }
      if (seen >= 0) {
        e->guild_id = guild_ptrs[seen];
        e->guild_id_len = guild_lens[seen];
      } else if (PyLong_CheckExact(guild)) {
        if (digits == NULL &&
            (digits = (char(*)[GUILD_DIGITS])PyMem_Malloc((size_t)n * GUILD_DIGITS)) == NULL) {
          PyErr_NoMemory();
          goto done;
        }
        if (!guild_field(guild, digits[i], &e->guild_id, &e->guild_id_len)) {
          goto general;
        }
      } else {
        char unused[GUILD_DIGITS];
        if (!guild_field(guild, unused, &e->guild_id, &e->guild_id_len)) {
          goto general;
        }
      }
      if (seen < 0) { /* the oldest entry makes room */
        guild_objs[guild_next] = guild;
        guild_ptrs[guild_next] = e->guild_id;
        guild_lens[guild_next] = e->guild_id_len;
        guild_next = (guild_next + 1) % GUILD_CACHE;
      }
    }
  }
  struct eh_processor *processor = (struct eh_processor *)target->address;
  size_t accepted = 0;
  eh_status status;
  if (sliced) {
    Py_BEGIN_ALLOW_THREADS
    status = st->push_batch_wait(processor, events, (size_t)n, &accepted, (uint64_t)wait_ms,
                                 give_up);
    Py_END_ALLOW_THREADS
  } else {
    status = st->push_batch(processor, events, (size_t)n, &accepted);
    maybe_yield_to_delivery(target->handoff);
  }
  result = Py_BuildValue("(in)", (int)status, (Py_ssize_t)accepted);
  goto done;
utf8_failed:
  if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
    goto done;
  }
  PyErr_Clear(); /* a lone surrogate: the general path raises InvalidArgument */
general:
  Py_INCREF(Py_None);
  result = Py_None;
done:
  PyMem_Free(digits);
  PyMem_Free(events);
  Py_DECREF(held);
  return result;
}

#undef ROW_STR

static PyObject *bind_processor(PyObject *module, PyObject *args) {
  fast_state *st = module_state(module);
  PyObject *push, *batch, *batch_wait, *push_wait, *push_event, *push_event_wait;
  if (!PyArg_ParseTuple(args, "OOOOOO:bind_processor", &push, &batch, &batch_wait, &push_wait,
                        &push_event, &push_event_wait)) {
    return NULL;
  }
  BIND(st->push, push_fn, push, "eh_processor_push");
  BIND(st->push_batch, push_batch_fn, batch, "eh_processor_push_batch");
  BIND(st->push_batch_wait, push_batch_wait_fn, batch_wait, "eh_processor_push_batch_wait");
  BIND(st->push_wait, push_wait_fn, push_wait, "eh_processor_push_wait");
  BIND(st->push_event, push_event_fn, push_event, "eh_processor_push_event");
  BIND(st->push_event_wait, push_event_wait_fn, push_event_wait, "eh_processor_push_event_wait");
  Py_RETURN_NONE;
}

/* ---- batches as Python objects ------------------------------------------------------
 *
 * A batch's strings come from a cache of str objects kept across batches, so the
 * ids that recur (active users, channels, kinds) are decoded once, not once per
 * batch, and equal ones share one str within a batch and across batches while it
 * stays cached. Equal consecutive timestamps share one int. Dict keys are interned.
 *
 * The cache (in the module state): STR_CACHE_SLOTS slots in sets of STR_CACHE_WAYS,
 * each slot owning one str of at most STR_CACHE_MAX_LEN UTF-8 bytes (so under 8 MB
 * in all, whatever the traffic), its hash and its UTF-8 bytes (CPython's own, valid
 * while the str lives). A miss decodes and takes an empty way of its set, or else
 * its least recently used one, releasing the str that was there (batches that hold
 * it keep their own reference). Longer strings are decoded for each event. Only used
 * with the GIL held; a forked child keeps it as it is (the strs are the parent's,
 * valid in the child). */

enum { STR_CACHE_SLOTS = 1 << 15, STR_CACHE_WAYS = 8, STR_CACHE_MAX_LEN = 64 };

/* The bytes at `p` (1 <= len < 8) as one word: the first and the last 4 bytes
 * (overlapping), or the first, middle and last byte, never outside [p, p + len).
 * Either way the word holds every byte, so for one length, equal words are equal
 * bytes. */
static inline uint64_t short_word(const uint8_t *p, size_t len) {
  if (len >= 4) {
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(&b, p + len - 4, 4);
    return (uint64_t)a | ((uint64_t)b << 32);
  }
  return (uint64_t)p[0] | ((uint64_t)p[len / 2] << 8) | ((uint64_t)p[len - 1] << 16);
}

static inline uint64_t load_word(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

/* A hash of 1 <= len <= STR_CACHE_MAX_LEN bytes: whole words, the last one
 * overlapping the one before. */
static inline uint64_t bytes_hash(const uint8_t *p, size_t len) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
  if (len < 8) {
    h = (h ^ short_word(p, len)) * 0xff51afd7ed558ccdull;
  } else {
    for (size_t i = 0; i + 8 < len; i += 8) {
      h = (h ^ load_word(p + i)) * 0xff51afd7ed558ccdull;
      h ^= h >> 32;
    }
    h = (h ^ load_word(p + len - 8)) * 0xff51afd7ed558ccdull;
  }
  h ^= h >> 32;
  h *= 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}

/* Whether the `len` (1 <= len <= STR_CACHE_MAX_LEN) bytes at `a` and `b` are equal. */
static inline int bytes_equal(const uint8_t *a, const uint8_t *b, size_t len) {
  if (len < 8) {
    return short_word(a, len) == short_word(b, len); /* the word holds every byte */
  }
  uint64_t diff = 0;
  for (size_t i = 0; i + 8 < len; i += 8) {
    diff |= load_word(a + i) ^ load_word(b + i);
  }
  return (diff | (load_word(a + len - 8) ^ load_word(b + len - 8))) == 0;
}

/* A new reference to the str of `len` UTF-8 bytes at `p`. */
static PyObject *cached_str(fast_state *st, const uint8_t *p, size_t len) {
  if (len == 0) {
    return PyUnicode_FromStringAndSize(NULL, 0); /* the shared empty str */
  }
  if (len > STR_CACHE_MAX_LEN) {
    return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)len, NULL);
  }
  if (st->str_cache == NULL &&
      (st->str_cache = (str_slot *)PyMem_Calloc(STR_CACHE_SLOTS, sizeof(str_slot))) == NULL) {
    return PyErr_NoMemory();
  }
  uint64_t h = bytes_hash(p, len);
  str_slot *set = &st->str_cache[(size_t)h & (STR_CACHE_SLOTS - STR_CACHE_WAYS)];
  for (int w = 0; w < STR_CACHE_WAYS; w++) {
    str_slot *s = &set[w];
    if (s->hash == h && s->len == len && s->str != NULL &&
        bytes_equal((const uint8_t *)s->utf8, p, len)) {
      s->used = ++st->str_cache_clock;
      Py_INCREF(s->str);
      return s->str;
    }
  }
  PyObject *str = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)len, NULL);
  if (str == NULL) {
    return NULL;
  }
  /* The str's own UTF-8 bytes: its data when ASCII; else CPython's cached UTF-8
   * (computed here once, at most STR_CACHE_MAX_LEN bytes). */
  Py_ssize_t utf8_len;
  const char *utf8 = PyUnicode_AsUTF8AndSize(str, &utf8_len);
  if (utf8 == NULL) {
    PyErr_Clear(); /* not cached; the str itself is fine */
    return str;
  }
  str_slot *s = &set[0]; /* an empty way, or else the least recently used */
  for (int w = 1; w < STR_CACHE_WAYS && s->str != NULL; w++) {
    if (set[w].str == NULL || (uint32_t)(set[w].used - s->used) > (uint32_t)INT32_MAX) {
      s = &set[w];
    }
  }
  PyObject *old = s->str;
  Py_INCREF(str);
  *s = (str_slot){h, (uint32_t)len, ++st->str_cache_clock, utf8, str};
  Py_XDECREF(old); /* a str's dealloc runs no Python code */
  return str;
}

static void str_cache_free(fast_state *st) {
  str_slot *cache = st->str_cache;
  st->str_cache = NULL;
  if (cache == NULL) {
    return;
  }
  for (size_t i = 0; i < STR_CACHE_SLOTS; i++) {
    Py_CLEAR(cache[i].str);
  }
  PyMem_Free(cache);
}

enum { FORM_DICTS = 0, FORM_TUPLES = 1, FORM_COLUMNS = 2 };

/* build_batch(events_address, n, form, payloads): the batch as a list of dicts
 * (form 0; "payload" added for non-empty payloads when `payloads`, "guild_id" for
 * events with a guild), a list of 4-tuples (form 1), or the columns tuple (kinds,
 * user_ids, channel_ids, timestamps, payloads or None, guild ids or None each) of
 * lists (form 2). Same values as the Python
 * decoder; only called during the flush callback, while the events are valid. */
static PyObject *build_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  fast_state *st = module_state(module);
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "build_batch() takes 4 arguments");
    return NULL;
  }
  const struct eh_event *events = (const struct eh_event *)PyLong_AsVoidPtr(args[0]);
  if (events == NULL && PyErr_Occurred()) {
    return NULL;
  }
  Py_ssize_t n = PyLong_AsSsize_t(args[1]);
  if (n < 0) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_ValueError, "build_batch(): n < 0");
    }
    return NULL;
  }
  if (n > 0 && events == NULL) {
    PyErr_SetString(PyExc_ValueError, "build_batch(): NULL events");
    return NULL;
  }
  long form = PyLong_AsLong(args[2]);
  if (form == -1 && PyErr_Occurred()) {
    return NULL;
  }
  if (form < FORM_DICTS || form > FORM_COLUMNS) {
    PyErr_SetString(PyExc_ValueError, "build_batch(): unknown form");
    return NULL;
  }
  int payloads = PyObject_IsTrue(args[3]);
  if (payloads < 0) {
    return NULL;
  }
  PyObject *result = NULL, *cols[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
  PyObject *list = NULL;
  PyObject *last_ts = NULL; /* borrowed: the batch being built owns it */
  int64_t last_ts_value = 0;
  if (form == FORM_COLUMNS) {
    for (int c = 0; c < 6; c++) {
      if ((c != 4 || payloads) && (cols[c] = PyList_New(n)) == NULL) {
        goto fail;
      }
    }
  } else if ((list = PyList_New(n)) == NULL) {
    goto fail;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    const struct eh_event *e = &events[i];
    PyObject *kind = cached_str(st, e->kind, e->kind_len);
    PyObject *user = kind ? cached_str(st, e->user_id, e->user_id_len) : NULL;
    PyObject *channel = user ? cached_str(st, e->channel_id, e->channel_id_len) : NULL;
    PyObject *ts = NULL;
    if (channel != NULL) {
      if (last_ts != NULL && last_ts_value == e->timestamp) {
        Py_INCREF(last_ts);
        ts = last_ts;
      } else if ((ts = PyLong_FromLongLong((long long)e->timestamp)) != NULL) {
        last_ts = ts;
        last_ts_value = e->timestamp;
      }
    }
    PyObject *payload = NULL;
    if (ts != NULL && payloads && (form == FORM_COLUMNS || e->payload_len > 0)) {
      payload = PyBytes_FromStringAndSize(e->payload_len ? (const char *)e->payload : "",
                                          (Py_ssize_t)e->payload_len);
      if (payload == NULL) {
        Py_CLEAR(ts);
      }
    }
    PyObject *guild = NULL;
    if (ts != NULL && form != FORM_TUPLES) {
      if (e->guild_id_len > 0) {
        guild = cached_str(st, e->guild_id, e->guild_id_len);
      } else if (form == FORM_COLUMNS) {
        Py_INCREF(Py_None);
        guild = Py_None;
      }
      if (guild == NULL && e->guild_id_len > 0) {
        Py_CLEAR(ts);
        Py_CLEAR(payload);
      }
    }
    if (ts == NULL) {
      Py_XDECREF(kind);
      Py_XDECREF(user);
      Py_XDECREF(channel);
      goto fail;
    }
    if (form == FORM_COLUMNS) { /* the lists take the references */
      PyList_SetItem(cols[0], i, kind);
      PyList_SetItem(cols[1], i, user);
      PyList_SetItem(cols[2], i, channel);
      PyList_SetItem(cols[3], i, ts);
      if (payloads) {
        PyList_SetItem(cols[4], i, payload);
      }
      PyList_SetItem(cols[5], i, guild);
      continue;
    }
    PyObject *item;
    if (form == FORM_TUPLES) {
      item = PyTuple_New(4);
      if (item != NULL) { /* the tuple takes the references */
        PyTuple_SetItem(item, 0, kind);
        PyTuple_SetItem(item, 1, user);
        PyTuple_SetItem(item, 2, channel);
        PyTuple_SetItem(item, 3, ts);
        kind = user = channel = ts = NULL;
      }
    } else {
      item = PyDict_New();
      if (item != NULL &&
          (PyDict_SetItem(item, st->key_type, kind) < 0 ||
           PyDict_SetItem(item, st->key_user_id, user) < 0 ||
           PyDict_SetItem(item, st->key_channel_id, channel) < 0 ||
           PyDict_SetItem(item, st->key_timestamp, ts) < 0 ||
           (payload != NULL && PyDict_SetItem(item, st->key_payload, payload) < 0) ||
           (guild != NULL && PyDict_SetItem(item, st->key_guild_id, guild) < 0))) {
        Py_CLEAR(item);
      }
    }
    Py_XDECREF(guild);
    Py_XDECREF(kind);
    Py_XDECREF(user);
    Py_XDECREF(channel);
    Py_XDECREF(ts);
    Py_XDECREF(payload);
    if (item == NULL) {
      goto fail;
    }
    PyList_SetItem(list, i, item);
  }
  if (form == FORM_COLUMNS) {
    if (!payloads) {
      Py_INCREF(Py_None);
      cols[4] = Py_None;
    }
    result = PyTuple_New(6);
    if (result == NULL) {
      goto fail;
    }
    for (int c = 0; c < 6; c++) {
      PyTuple_SetItem(result, c, cols[c]);
      cols[c] = NULL;
    }
  } else {
    result = list;
    list = NULL;
  }
  return result;
fail:
  /* Lists from PyList_New hold NULLs until filled; their dealloc skips them. */
  for (int c = 0; c < 6; c++) {
    Py_XDECREF(cols[c]);
  }
  Py_XDECREF(list);
  return NULL;
}

/* ---- EventStreamProcessor.top_channels and get_top_channels -------------------------
 *
 * Dashboards poll these. Through cffi each call paid for far more Python work than
 * the native query itself (~15 us against a native ~0.2 us for a cached answer).
 * TopChannels is a method descriptor like PushEvent: it reads the instance's
 * native address (ProcessorBase), takes an exact int `k` (clamped to 2**32 - 1 as the general path
 * does) and `window_secs` and `now` as None or exact ints, makes one
 * eh_processor_top_channels call while holding the GIL (the query never waits for
 * anything that needs the GIL: the locks it takes are held only by native code),
 * and returns a new list of (channel_id, count) tuples.
 *
 * The native answer is a cached merge that stays the same until the workers'
 * summaries are merged again. So each descriptor keeps its last few answers: the
 * native block (rows and ids, compared byte for byte) and the tuple of (str, int)
 * tuples built from it. An answer equal to a kept one returns a fresh list of the
 * kept tuples (all immutable). Bounded: TOP_CACHE_SLOTS answers of at most
 * TOP_CACHE_MAX_BYTES native bytes each per descriptor.
 *
 * Anything else (a negative or non-int k, a float or negative window, a float
 * `now`, unknown or repeated keywords, too many arguments, no native address) calls
 * the general Python method with the same arguments. A non-zero status goes to the
 * instance's `_top_failed(status)`. */

static PyObject *bind_top_channels(PyObject *module, PyObject *args) {
  fast_state *st = module_state(module);
  PyObject *top, *release;
  if (!PyArg_ParseTuple(args, "OO:bind_top_channels", &top, &release)) {
    return NULL;
  }
  BIND(st->top_channels, top_channels_fn, top, "eh_processor_top_channels");
  BIND(st->channel_list_free, channel_list_free_fn, release, "eh_channel_list_free");
  Py_RETURN_NONE;
}

#define TOP_CACHE_SLOTS 4
#define TOP_CACHE_MAX_BYTES 65536

typedef struct {
  unsigned char *block; /* a copy of the native rows and ids, `size` bytes */
  size_t size;
  size_t len;
  PyObject *rows; /* the tuple of (str, int) tuples built from it */
} top_slot;

typedef struct {
  PushEvent base; /* vectorcall, the general method and the module state */
  int all_time;   /* get_top_channels: only `k`, all time */
  int next;       /* the slot the next new answer replaces */
  top_slot cache[TOP_CACHE_SLOTS];
} TopChannels;

/* A new tuple of (channel_id, count) tuples for the native answer `list`. */
static PyObject *top_rows(const struct eh_channel_list *list) {
  Py_ssize_t n = (Py_ssize_t)list->len;
  PyObject *rows = PyTuple_New(n);
  if (rows == NULL) {
    return NULL;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    const struct eh_channel_row *row = &list->rows[i];
    PyObject *id = PyUnicode_DecodeUTF8((const char *)list->ids + row->id_offset,
                                        (Py_ssize_t)row->id_len, NULL);
    PyObject *count = id ? PyLong_FromUnsignedLongLong((unsigned long long)row->count) : NULL;
    PyObject *pair = count ? PyTuple_New(2) : NULL;
    if (pair == NULL) {
      Py_XDECREF(id);
      Py_XDECREF(count);
      Py_DECREF(rows);
      return NULL;
    }
    PyTuple_SetItem(pair, 0, id); /* the tuples take the references */
    PyTuple_SetItem(pair, 1, count);
    PyTuple_SetItem(rows, i, pair);
  }
  return rows;
}

/* Keeps `rows` as the answer for the native block of `list` (replacing the oldest
 * kept one). Without memory for the copy nothing is kept: still correct. */
static void top_cache_put(TopChannels *self, const struct eh_channel_list *list, PyObject *rows) {
  if (list->size > TOP_CACHE_MAX_BYTES) {
    return;
  }
  unsigned char *block = (unsigned char *)PyMem_Malloc(list->size ? list->size : 1);
  if (block == NULL) {
    return;
  }
  memcpy(block, list->rows, list->size);
  top_slot *slot = &self->cache[self->next];
  self->next = (self->next + 1) % TOP_CACHE_SLOTS;
  /* The slot is whole again before anything old is released. */
  unsigned char *old_block = slot->block;
  PyObject *old_rows = slot->rows;
  Py_INCREF(rows);
  slot->block = block;
  slot->size = list->size;
  slot->len = list->len;
  slot->rows = rows;
  PyMem_Free(old_block);
  Py_XDECREF(old_rows); /* tuples of str and int: runs no Python code */
}

/* The Python answer for the native `list`: a new list of (channel_id, count). */
static PyObject *top_answer(TopChannels *self, const struct eh_channel_list *list) {
  if (list->len == 0) {
    return PyList_New(0);
  }
  PyObject *rows = NULL;
  for (int i = 0; i < TOP_CACHE_SLOTS; i++) {
    const top_slot *slot = &self->cache[i];
    if (slot->rows != NULL && slot->len == list->len && slot->size == list->size &&
        memcmp(slot->block, list->rows, list->size) == 0) {
      rows = slot->rows;
      Py_INCREF(rows); /* PySequence_List below may run the GC, and it code that replaces slots */
      break;
    }
  }
  if (rows == NULL) {
    rows = top_rows(list);
    if (rows == NULL) {
      return NULL;
    }
    top_cache_put(self, list, rows);
  }
  PyObject *out = PySequence_List(rows); /* one call: a new list of the same tuples */
  Py_DECREF(rows);
  return out;
}

/* Which parameter a keyword names (0: k, 1: window_secs, 2: now), or -1. */
static int top_keyword(fast_state *st, PyObject *name, int all_time) {
  if (name == st->kw_k) {
    return 0;
  }
  if (!all_time && name == st->kw_window_secs) {
    return 1;
  }
  if (!all_time && name == st->kw_now) {
    return 2;
  }
  /* Keywords from a ** dict need not be the interned strings. */
  if (PyUnicode_Check(name)) {
    if (PyUnicode_CompareWithASCIIString(name, "k") == 0) {
      return 0;
    }
    if (!all_time && PyUnicode_CompareWithASCIIString(name, "window_secs") == 0) {
      return 1;
    }
    if (!all_time && PyUnicode_CompareWithASCIIString(name, "now") == 0) {
      return 2;
    }
  }
  return -1;
}

static PyObject *top_channels_call(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
  TopChannels *method = (TopChannels *)callable;
  fast_state *st = method->base.state;
  Py_ssize_t nargs = vectorcall_nargs(nargsf);
  /* self, then k[, window_secs[, now]] (get_top_channels: k), by position or name. */
  const Py_ssize_t params = method->all_time ? 1 : 3;
  PyObject *given[3] = {NULL, NULL, NULL};
  if (st->top_channels == NULL || nargs < 1 || nargs - 1 > params) {
    goto general;
  }
  for (Py_ssize_t i = 1; i < nargs; i++) {
    given[i - 1] = args[i];
  }
  if (kwnames != NULL) {
    Py_ssize_t nkw = PyTuple_Size(kwnames);
    for (Py_ssize_t j = 0; j < nkw; j++) {
      int slot = top_keyword(st, PyTuple_GetItem(kwnames, j), method->all_time);
      if (slot < 0 || given[slot] != NULL) {
        goto general; /* unknown or repeated: the general path's TypeError */
      }
      given[slot] = args[nargs + j];
    }
  }
  size_t k = 10;
  if (given[0] != NULL) {
    if (!PyLong_CheckExact(given[0])) {
      goto general;
    }
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(given[0], &overflow);
    if (overflow < 0 || (overflow == 0 && value < 0)) {
      goto general; /* negative: the general path's InvalidArgument */
    }
    /* More than any summary holds means "all of them", as the general path says. */
    k = (overflow > 0 || value > 0xFFFFFFFFLL) ? (size_t)0xFFFFFFFFu : (size_t)value;
  }
  long long window_secs = 0, now = 0;
  if (given[1] != NULL && given[1] != Py_None) {
    if (!exact_int64(given[1], &window_secs) || window_secs < 0) {
      goto general;
    }
  }
  if (given[2] != NULL && given[2] != Py_None) {
    if (!exact_int64(given[2], &now)) {
      goto general;
    }
  }
  ProcessorBase *target = processor_of(st, args[0]);
  if (target == NULL) {
    goto general;
  }
  struct eh_channel_list list;
  memset(&list, 0, sizeof list);
  eh_status status = st->top_channels((const struct eh_processor *)target->address, k,
                                      (int64_t)window_secs, (int64_t)now, &list);
  if (status != EH_OK) {
    return call_failed(args[0], st->name_top_failed, status);
  }
  PyObject *result = top_answer(method, &list);
  st->channel_list_free(&list);
  return result;
general:
  return PyObject_Vectorcall(method->base.general, args, nargsf, kwnames);
}

static PyObject *top_channels_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  PyObject *general;
  int all_time;
  if (kwargs != NULL && PyDict_Size(kwargs) != 0) {
    PyErr_SetString(PyExc_TypeError, "TopChannels() takes no keyword arguments");
    return NULL;
  }
  if (!PyArg_ParseTuple(args, "Op:TopChannels", &general, &all_time)) {
    return NULL;
  }
  if (!PyCallable_Check(general)) {
    PyErr_SetString(PyExc_TypeError, "TopChannels() needs the general method");
    return NULL;
  }
  TopChannels *self = (TopChannels *)PyType_GenericAlloc(type, 0); /* zeroed: an empty cache */
  if (self == NULL) {
    return NULL;
  }
  if (descriptor_init(&self->base, general, type, top_channels_call) < 0) {
    Py_DECREF(self);
    return NULL;
  }
  self->all_time = all_time;
  return (PyObject *)self;
}

static int top_channels_traverse(PyObject *self, visitproc visit, void *arg) {
  TopChannels *top = (TopChannels *)self;
  for (int i = 0; i < TOP_CACHE_SLOTS; i++) {
    Py_VISIT(top->cache[i].rows);
  }
  return push_event_traverse(self, visit, arg);
}

static int top_channels_clear(PyObject *self) {
  TopChannels *top = (TopChannels *)self;
  for (int i = 0; i < TOP_CACHE_SLOTS; i++) {
    top_slot *slot = &top->cache[i];
    PyMem_Free(slot->block);
    slot->block = NULL;
    slot->size = slot->len = 0;
    Py_CLEAR(slot->rows);
  }
  return push_event_clear(self);
}

static void top_channels_dealloc(PyObject *self) {
  PyTypeObject *type = Py_TYPE(self);
  PyObject_GC_UnTrack(self);
  top_channels_clear(self);
  PyObject_GC_Del(self);
  Py_DECREF(type);
}

static PyMemberDef top_channels_members[] = {
    {"__vectorcalloffset__", Py_T_PYSSIZET, offsetof(TopChannels, base.vectorcall), Py_READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot top_channels_slots[] = {
    {Py_tp_new, (void *)top_channels_new},
    {Py_tp_dealloc, (void *)top_channels_dealloc},
    {Py_tp_traverse, (void *)top_channels_traverse},
    {Py_tp_clear, (void *)top_channels_clear},
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_descr_get, (void *)descriptor_get},
    {Py_tp_getset, descriptor_getset},
    {Py_tp_members, top_channels_members},
    {0, NULL},
};

static PyType_Spec top_channels_spec = {
    .name = "engagehub._engagehub_fast.TopChannels",
    .basicsize = sizeof(TopChannels),
    .flags = DESCRIPTOR_FLAGS,
    .slots = top_channels_slots,
};

/* ---- the module ------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"bind", bind, METH_O, "bind(address): the address of eh_leaderboard_try_add."},
    {"leaderboard_add", (PyCFunction)(void (*)(void))leaderboard_add, METH_FASTCALL,
     "leaderboard_add(board_address, user_id, points, timestamp) -> status, or None "
     "when the arguments need the general path."},
    {"bind_processor", bind_processor, METH_VARARGS,
     "bind_processor(push_address, push_batch_address, push_batch_wait_address, "
     "push_wait_address)."},
    {"delivery_started", delivery_started, METH_NOARGS,
     "delivery_started(): the flush trampoline's first call, under the GIL."},
    {"discard_context", discard_context, METH_O,
     "discard_context(address): frees a delivery context the library refused."},
    {"push_rows", (PyCFunction)(void (*)(void))push_rows, METH_FASTCALL,
     "push_rows(processor, rows[, wait_ms, give_up]) -> (status, accepted), or None when the "
     "rows need the general path."},
    {"build_batch", (PyCFunction)(void (*)(void))build_batch, METH_FASTCALL,
     "build_batch(events_address, n, form, payloads) -> the batch as Python objects."},
    {"bind_top_channels", bind_top_channels, METH_VARARGS,
     "bind_top_channels(top_channels_address, channel_list_free_address)."},
    {NULL, NULL, 0, NULL},
};

static int add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **out) {
  PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);
  if (type == NULL) {
    return -1;
  }
  *out = (PyTypeObject *)type; /* the state's reference */
  return PyModule_AddType(module, (PyTypeObject *)type);
}

static int add_address(PyObject *module, const char *name, void *address) {
  PyObject *value = PyLong_FromVoidPtr(address);
  if (value == NULL) {
    return -1;
  }
  int rc = PyModule_AddObject(module, name, value);
  if (rc < 0) {
    Py_DECREF(value);
  }
  return rc;
}

static int fast_exec(PyObject *module) {
  fast_state *st = module_state(module);
  if (add_type(module, &push_event_spec, &st->push_event_type) < 0 ||
      add_type(module, &processor_base_spec, &st->processor_base_type) < 0 ||
      add_type(module, &top_channels_spec, &st->top_channels_type) < 0) {
    return -1;
  }
  struct {
    PyObject **slot;
    const char *text;
  } names[] = {
      {&st->key_type, "type"},
      {&st->key_user_id, "user_id"},
      {&st->key_channel_id, "channel_id"},
      {&st->key_timestamp, "timestamp"},
      {&st->key_payload, "payload"},
      {&st->key_guild_id, "guild_id"},
      {&st->name_push_failed, "_push_failed"},
      {&st->name_top_failed, "_top_failed"},
      {&st->kw_k, "k"},
      {&st->kw_window_secs, "window_secs"},
      {&st->kw_now, "now"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
      return -1;
    }
  }
  PyObject *types = PyImport_ImportModule("types");
  if (types == NULL) {
    return -1;
  }
  st->method_type = PyObject_GetAttrString(types, "MethodType");
  Py_DECREF(types);
  if (st->method_type == NULL) {
    return -1;
  }
  /* The native entry points of a flush callback registration (see ProcessorBase's
   * _delivery_context), and the header this module was compiled from. */
  if (add_address(module, "FLUSH_ENTRY", (void *)(uintptr_t)flush_entry) < 0 ||
      add_address(module, "CONTEXT_FREE", (void *)(uintptr_t)context_free) < 0 ||
      PyModule_AddIntConstant(module, "HEADER_VERSION", EH_VERSION_NUMBER) < 0) {
    return -1;
  }
#ifdef Py_LIMITED_API
  if (PyModule_AddIntConstant(module, "LIMITED_API", Py_LIMITED_API) < 0) {
    return -1;
  }
#else
  if (PyModule_AddObject(module, "LIMITED_API", (Py_INCREF(Py_None), Py_None)) < 0) {
    Py_DECREF(Py_None);
    return -1;
  }
#endif
  return 0;
}

static int fast_traverse(PyObject *module, visitproc visit, void *arg) {
  fast_state *st = module_state(module);
  if (st == NULL) {
    return 0;
  }
  Py_VISIT(st->push_event_type);
  Py_VISIT(st->processor_base_type);
  Py_VISIT(st->top_channels_type);
  Py_VISIT(st->processor_class);
  Py_VISIT(st->method_type);
  /* The interned names and the cached strs hold no references: no cycles. */
  return 0;
}

static int fast_clear(PyObject *module) {
  fast_state *st = module_state(module);
  if (st == NULL) {
    return 0;
  }
  Py_CLEAR(st->push_event_type);
  Py_CLEAR(st->processor_base_type);
  Py_CLEAR(st->top_channels_type);
  Py_CLEAR(st->processor_class);
  Py_CLEAR(st->method_type);
  Py_CLEAR(st->key_type);
  Py_CLEAR(st->key_user_id);
  Py_CLEAR(st->key_channel_id);
  Py_CLEAR(st->key_timestamp);
  Py_CLEAR(st->key_payload);
  Py_CLEAR(st->key_guild_id);
  Py_CLEAR(st->name_push_failed);
  Py_CLEAR(st->name_top_failed);
  Py_CLEAR(st->kw_k);
  Py_CLEAR(st->kw_window_secs);
  Py_CLEAR(st->kw_now);
  str_cache_free(st);
  return 0;
}

static void fast_free(void *module) { fast_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)fast_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "engagehub._engagehub_fast",
    .m_doc = "The package's per-event calls without cffi's per-call costs (see the source).",
    .m_size = sizeof(fast_state),
    .m_methods = methods,
    .m_slots = module_slots,
    .m_traverse = fast_traverse,
    .m_clear = fast_clear,
    .m_free = fast_free,
};

PyMODINIT_FUNC PyInit__engagehub_fast(void) { return PyModuleDef_Init(&module_def); }
