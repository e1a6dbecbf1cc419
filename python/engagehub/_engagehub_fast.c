/* engagehub._engagehub_fast: the one call of the package too hot for cffi.
 *
 * Leaderboard.update_user is the drop-in API's per-event call. Through cffi it pays
 * for encoding the id into a new bytes object, for cffi's argument conversion and
 * for releasing and re-taking the GIL: together more than the update itself on a
 * board of 10k users. This module takes the str as it is (CPython keeps a UTF-8 copy
 * of it: free for ASCII ids) and calls eh_leaderboard_try_add while holding the GIL.
 *
 * It links nothing: `bind` receives the address of eh_leaderboard_try_add from the
 * library that cffi loaded, so both paths use the same library (and the same
 * thread-local eh_last_error). Holding the GIL never means waiting: try_add returns
 * EH_BUSY at once when another thread is using the board, and the Python caller
 * then takes the cffi path, which releases the GIL while it waits. An update that
 * is not refused takes well under a microsecond, so other Python threads are held
 * up for no longer than by any builtin call.
 *
 * The board address is safe to use without the GIL's help: it is the handle's
 * shell, which stays valid for the Python wrapper's whole life (ffi.gc frees it
 * only when the wrapper is collected, so never during one of its calls).
 * Leaderboard.close() is eh_leaderboard_close: it drops the board but keeps the
 * shell, and a call after it gets EH_SHUT_DOWN, which the caller raises as Closed
 * (the same exception as the cffi path). (The module declares no free-threading
 * support, so a free-threaded CPython keeps the GIL enabled while it is imported.)
 *
 * Everything this module does not handle (a non-str id, a timestamp that is not an
 * int, points that are neither float nor int, an int out of range) returns None,
 * and the caller takes the general path, which raises or converts exactly as it
 * always did.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if PY_VERSION_HEX < 0x030B0000
#include <longintrepr.h> /* the int layout small_int64 reads (in Python.h from 3.11) */
#endif
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A str's UTF-8 bytes: for a compact ASCII str (nearly every id and kind) its own
 * character data, read in place (what PyUnicode_AsUTF8AndSize returns for it too,
 * without the call); otherwise PyUnicode_AsUTF8AndSize (NULL with an exception set
 * when it cannot be encoded). The bytes live as long as the str. */
static inline const char *str_utf8(PyObject *str, Py_ssize_t *len) {
  if (PyUnicode_IS_COMPACT_ASCII(str)) {
    *len = PyUnicode_GET_LENGTH(str);
    return (const char *)PyUnicode_DATA(str);
  }
  return PyUnicode_AsUTF8AndSize(str, len);
}

/* An exact int's value, read from its digits in place when it has at most two
 * (below 2**60: every unix timestamp): 1 and *out set, or 0 when the caller must
 * ask PyLong_AsLongLongAndOverflow (more digits, or a CPython whose int layout
 * this file does not know). The layouts: CPython 3.9-3.11 keep the signed digit
 * count in ob_size; 3.12 and 3.13 keep it in lv_tag (count << 3 | sign: 0
 * positive, 1 zero, 2 negative). */
static inline int small_int64(PyObject *o, long long *out) {
#if PY_VERSION_HEX >= 0x030E0000 || PyLong_SHIFT != 30
  (void)o;
  (void)out;
  return 0;
#else
#if PY_VERSION_HEX >= 0x030C0000
  uintptr_t tag = ((PyLongObject *)o)->long_value.lv_tag;
  size_t ndigits = (size_t)(tag >> 3);
  long long sign = 1 - (long long)(tag & 3);
  const digit *d = ((PyLongObject *)o)->long_value.ob_digit;
#else
  Py_ssize_t size = Py_SIZE(o);
  size_t ndigits = (size_t)(size < 0 ? -size : size);
  long long sign = size < 0 ? -1 : (size > 0);
  const digit *d = ((PyLongObject *)o)->ob_digit;
#endif
  if (ndigits > 2) {
    return 0;
  }
  long long magnitude = ndigits == 0   ? 0
                        : ndigits == 1 ? (long long)d[0]
                                       : (long long)d[0] | ((long long)d[1] << PyLong_SHIFT);
  *out = sign * magnitude;
  return 1;
#endif
}

typedef int32_t (*try_add_fn)(const void *board, const uint8_t *id, size_t id_len,
                              double points, int64_t timestamp);

/* Set once by bind() before the first call; read only with the GIL held. */
static try_add_fn try_add = NULL;

static PyObject *bind(PyObject *module, PyObject *address) {
  (void)module;
  void *fn = PyLong_AsVoidPtr(address);
  if (fn == NULL) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_ValueError, "bind() needs the address of eh_leaderboard_try_add");
    }
    return NULL;
  }
  try_add = (try_add_fn)fn;
  Py_RETURN_NONE;
}

/* leaderboard_add(board_address, user_id, points, timestamp) -> status or None */
static PyObject *leaderboard_add(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  (void)module;
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "leaderboard_add() takes 4 arguments");
    return NULL;
  }
  PyObject *user_id = args[1], *points = args[2], *timestamp = args[3];
  if (try_add == NULL || !PyUnicode_CheckExact(user_id) || !PyLong_CheckExact(timestamp)) {
    Py_RETURN_NONE;
  }
  double points_value;
  if (PyFloat_CheckExact(points)) {
    points_value = PyFloat_AS_DOUBLE(points);
  } else if (PyLong_CheckExact(points)) {
    points_value = PyLong_AsDouble(points);
    if (points_value == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
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
  int32_t status = try_add(board, (const uint8_t *)id, (size_t)id_len, points_value, ts);
  return PyLong_FromLong(status);
}


/* ---- EventStreamProcessor: push_event, push_many and batch delivery -------------
 *
 * The same idea for the pipeline's per-event calls. `bind_processor` receives the
 * addresses of eh_processor_push and eh_processor_push_batch from the library cffi
 * loaded, and the layout of eh_event as cffi parsed it from the header (checked
 * here against the struct below, so a header change cannot be misread).
 *
 * push_event is a method descriptor (PushEvent) set in the class body: called as
 * `p.push_event(...)` it runs with no Python frame at all. It reads the instance's
 * `_push_target` (address, blocking), takes three exact str and an exact int (or
 * None, or nothing) as they are, and makes one native call. Anything else (bytes,
 * a float timestamp, a payload, keywords, an int beyond 64 bits, a lone
 * surrogate, no `_push_target`) calls the general Python method with the same
 * arguments, so it raises or converts exactly as it always did. A non-zero status
 * other than EH_QUEUE_FULL goes to the class's `_push_failed(status)`, which raises
 * what the general path raises for it.
 *
 * The address is the processor's shell, valid for the wrapper's whole life (freed
 * only by ffi.gc, and `self` is alive during the call): a push racing close gets
 * EH_SHUT_DOWN. After fork the native side re-initialises on this first call.
 * Under the "drop" overflow the push never waits, so the GIL stays held. Under
 * "block" it may wait for room, which the workers can only make by running the
 * Python callback: a first eh_processor_push_wait takes a free slot without
 * waiting (the GIL held); on a full ring the same call waits in slices of 0.1 s up
 * to the processor's block_timeout_ms with the GIL released, running signal
 * handlers between slices (Ctrl-C raises KeyboardInterrupt, nothing pushed or
 * counted), as the blocking class's Python push_event does.
 */

typedef struct {
  const uint8_t *kind;
  size_t kind_len;
  const uint8_t *user_id;
  size_t user_id_len;
  const uint8_t *channel_id;
  size_t channel_id_len;
  int64_t timestamp;
  const uint8_t *payload;
  size_t payload_len;
} eh_event;

typedef int32_t (*push_fn)(void *p, const uint8_t *kind, size_t kind_len, const uint8_t *user_id,
                           size_t user_id_len, const uint8_t *channel_id, size_t channel_id_len,
                           int64_t timestamp, const uint8_t *payload, size_t payload_len);
typedef int32_t (*push_wait_fn)(void *p, const uint8_t *kind, size_t kind_len,
                                const uint8_t *user_id, size_t user_id_len,
                                const uint8_t *channel_id, size_t channel_id_len, int64_t timestamp,
                                const uint8_t *payload, size_t payload_len, uint64_t wait_ms,
                                int32_t give_up);
typedef int32_t (*push_batch_fn)(void *p, const eh_event *events, size_t n, size_t *accepted);
typedef int32_t (*push_batch_wait_fn)(void *p, const eh_event *events, size_t n, size_t *accepted,
                                      uint64_t wait_ms, int32_t give_up);

/* Set once by bind_processor(); read only with the GIL held. */
static push_fn processor_push = NULL;
static push_batch_fn processor_push_batch = NULL;
static push_batch_wait_fn processor_push_batch_wait = NULL;
static push_wait_fn processor_push_wait = NULL;
static int32_t status_queue_full = -1;
static int32_t status_timeout = -1;

/* Interned names, created at import. */
static PyObject *key_type, *key_user_id, *key_channel_id, *key_timestamp, *key_payload;
static PyObject *name_push_failed;

/* Checks that `layout` (a tuple of ints: the sizes and offsets cffi parsed from the
 * header) equals `expected` (the same, as this file's mirror of the structs was
 * compiled), so that a header change cannot be misread. -1 with ValueError if not. */
static int check_layout(const char *who, const char *what, PyObject *layout,
                        const Py_ssize_t *expected, Py_ssize_t fields) {
  if (PyTuple_GET_SIZE(layout) != fields) {
    PyErr_Format(PyExc_ValueError, "%s(): %s layout has the wrong length", who, what);
    return -1;
  }
  for (Py_ssize_t i = 0; i < fields; i++) {
    Py_ssize_t got = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, i));
    if (got == -1 && PyErr_Occurred()) {
      return -1;
    }
    if (got != expected[i]) {
      PyErr_Format(PyExc_ValueError,
                   "%s(): %s layout differs from the header's (field %zd: %zd, expected %zd)",
                   who, what, i, got, expected[i]);
      return -1;
    }
  }
  return 0;
}

static PyObject *bind_processor(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *push_address, *batch_address, *batch_wait_address, *push_wait_address, *layout;
  int queue_full, timeout;
  if (!PyArg_ParseTuple(args, "OOOOiiO!", &push_address, &batch_address, &batch_wait_address,
                        &push_wait_address, &queue_full, &timeout, &PyTuple_Type, &layout)) {
    return NULL;
  }
  const Py_ssize_t expected[] = {
      (Py_ssize_t)sizeof(eh_event),
      (Py_ssize_t)offsetof(eh_event, kind),
      (Py_ssize_t)offsetof(eh_event, kind_len),
      (Py_ssize_t)offsetof(eh_event, user_id),
      (Py_ssize_t)offsetof(eh_event, user_id_len),
      (Py_ssize_t)offsetof(eh_event, channel_id),
      (Py_ssize_t)offsetof(eh_event, channel_id_len),
      (Py_ssize_t)offsetof(eh_event, timestamp),
      (Py_ssize_t)offsetof(eh_event, payload),
      (Py_ssize_t)offsetof(eh_event, payload_len),
  };
  if (check_layout("bind_processor", "eh_event", layout, expected,
                   (Py_ssize_t)(sizeof expected / sizeof expected[0])) < 0) {
    return NULL;
  }
  PyObject *addresses[4] = {push_address, batch_address, batch_wait_address, push_wait_address};
  void *fns[4];
  for (int i = 0; i < 4; i++) {
    if ((fns[i] = PyLong_AsVoidPtr(addresses[i])) == NULL) {
      goto bad_address;
    }
  }
  processor_push = (push_fn)fns[0];
  processor_push_batch = (push_batch_fn)fns[1];
  processor_push_batch_wait = (push_batch_wait_fn)fns[2];
  processor_push_wait = (push_wait_fn)fns[3];
  status_queue_full = queue_full;
  status_timeout = timeout;
  Py_RETURN_NONE;
bad_address:
  if (!PyErr_Occurred()) {
    PyErr_SetString(PyExc_ValueError, "bind_processor() needs the push functions' addresses");
  }
  return NULL;
}

/* EventStreamProcessor and the offset of its `_push_target` slot, from
 * bind_push_target(): reading a slot is a load, where an attribute lookup costs two
 * dictionary probes (a tenth of a push). */
static PyTypeObject *processor_type = NULL;
static Py_ssize_t push_target_offset = 0;

static PyObject *bind_push_target(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *type, *descr;
  if (!PyArg_ParseTuple(args, "O!O", &PyType_Type, &type, &descr)) {
    return NULL;
  }
  if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
    PyErr_SetString(PyExc_TypeError, "bind_push_target() needs the class's `_push_target` slot");
    return NULL;
  }
  PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
  if (member->type != T_OBJECT_EX || PyDescr_TYPE(descr) != (PyTypeObject *)type) {
    PyErr_SetString(PyExc_TypeError, "bind_push_target(): not an object slot of that class");
    return NULL;
  }
  Py_INCREF(type);
  Py_XSETREF(processor_type, (PyTypeObject *)type);
  push_target_offset = member->offset;
  Py_RETURN_NONE;
}

/* A processor's `_push_target`: its shell's address, unboxed once, whether a push
 * may wait for room (the "block" overflow) and for how long (block_timeout_ms).
 * Immutable. */
typedef struct {
  PyObject_HEAD
  void *address;
  int blocking;
  long long block_timeout_ms;
} PushTarget;

static PyObject *push_target_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  PyObject *address_obj;
  int blocking;
  long long block_timeout_ms = 0;
  static char *keywords[] = {"address", "blocking", "block_timeout_ms", NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!p|L:PushTarget", keywords, &PyLong_Type,
                                   &address_obj, &blocking, &block_timeout_ms)) {
    return NULL;
  }
  if (block_timeout_ms < 0) {
    PyErr_SetString(PyExc_ValueError, "PushTarget(): block_timeout_ms < 0");
    return NULL;
  }
  void *address = PyLong_AsVoidPtr(address_obj);
  if (address == NULL) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_ValueError, "PushTarget() needs a processor's address");
    }
    return NULL;
  }
  PushTarget *self = (PushTarget *)type->tp_alloc(type, 0);
  if (self != NULL) {
    self->address = address;
    self->blocking = blocking;
    self->block_timeout_ms = block_timeout_ms;
  }
  return (PyObject *)self;
}

static PyTypeObject PushTargetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engagehub._engagehub_fast.PushTarget",
    .tp_basicsize = sizeof(PushTarget),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PushTarget(address, blocking, block_timeout_ms=0): what the compiled pushes read "
              "from a processor.",
    .tp_new = push_target_new,
};

/* The address and blocking flag of a processor's `_push_target`: 1 when found, 0
 * when it has none (the general path then decides: e.g. a wrapper whose
 * constructor failed, or a `self` that is no processor). */
static int push_target(PyObject *self, void **address, int *blocking,
                       long long *block_timeout_ms) {
  if (processor_type == NULL || !PyObject_TypeCheck(self, processor_type)) {
    return 0;
  }
  PyObject *target = *(PyObject **)((char *)self + push_target_offset); /* borrowed */
  if (target == NULL || !Py_IS_TYPE(target, &PushTargetType)) {
    return 0;
  }
  *address = ((PushTarget *)target)->address;
  *blocking = ((PushTarget *)target)->blocking;
  if (block_timeout_ms != NULL) {
    *block_timeout_ms = ((PushTarget *)target)->block_timeout_ms;
  }
  return 1;
}

/* ---- handing the GIL to a delivery ---------------------------------------------
 *
 * A flush callback needs the GIL, and the pushes above keep it: left to itself,
 * CPython hands it over only after a waiting thread has waited its switch interval
 * (5 ms), i.e. about one batch per 5 ms, so a producer pushing in a loop fills the
 * ring and drops. (The C++ extension releases and re-takes the GIL on every push
 * instead.) So the worker's flush callback is `flush_entry` below: it counts itself
 * in `deliveries_waiting` before calling the cffi trampoline (which takes the GIL);
 * the trampoline's first act, under the GIL, is `delivery_started()`. A push that
 * sees a delivery waiting releases the GIL and waits, without it, until some
 * delivery has started (or 20 ms have passed), then takes it back: the batch is
 * delivered now rather than after 5 ms. A push never waits on the ring itself. */

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

typedef int32_t (*flush_fn)(void *user_data, const eh_event *events, size_t n);

/* Threads between flush_entry and delivery_started: waiting for the GIL. */
static eh_counter deliveries_waiting = 0;
/* Deliveries started so far: a yielding push waits for this to move. */
static eh_counter deliveries_started = 0;
/* Whether this thread's current flush_entry has been counted as started. */
static EH_THREAD_LOCAL int delivery_counted = 0;
/* The cffi trampoline (takes the GIL, decodes, calls the Python callback). */
static flush_fn python_flush = NULL;

static int32_t flush_entry(void *user_data, const eh_event *events, size_t n) {
  flush_fn target = python_flush;
  if (target == NULL) {
    return 1; /* not bound: a failure, retried then dead-lettered, never lost */
  }
  delivery_counted = 0;
  COUNTER_ADD(deliveries_waiting, 1);
  int32_t status = target(user_data, events, n);
  if (!delivery_counted) { /* the trampoline failed before it could say so */
    COUNTER_ADD(deliveries_waiting, -1);
  }
  delivery_counted = 0;
  return status;
}

static PyObject *delivery_started(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  if (!delivery_counted) { /* called from elsewhere than flush_entry's trampoline: no-op */
    if (COUNTER_LOAD(deliveries_waiting) > 0) {
      delivery_counted = 1;
      COUNTER_ADD(deliveries_waiting, -1);
      COUNTER_ADD(deliveries_started, 1);
    }
  }
  Py_RETURN_NONE;
}

static PyObject *bind_delivery(PyObject *module, PyObject *address) {
  (void)module;
  void *fn = PyLong_AsVoidPtr(address);
  if (fn == NULL) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_ValueError, "bind_delivery() needs the flush trampoline's address");
    }
    return NULL;
  }
  python_flush = (flush_fn)fn;
  return PyLong_FromVoidPtr((void *)flush_entry);
}

/* In a forked child only this thread exists: nobody is waiting. */
static PyObject *reset_after_fork(PyObject *module, PyObject *unused) {
  (void)module;
  (void)unused;
  deliveries_waiting = 0;
  delivery_counted = 0;
  Py_RETURN_NONE;
}

/* Lets a waiting delivery take the GIL (see above); called with the GIL held. The
 * wait is bounded (20 ms) so that a worker that cannot get the GIL (another thread
 * holds it) slows a push down but never stops it. */
static void yield_to_delivery(void) {
  int64_t started = COUNTER_LOAD(deliveries_started);
  Py_BEGIN_ALLOW_THREADS
  int64_t deadline = MONOTONIC_NS() + 20 * 1000 * 1000;
  while (COUNTER_LOAD(deliveries_started) == started && COUNTER_LOAD(deliveries_waiting) > 0 &&
         MONOTONIC_NS() < deadline) {
    PAUSE_BRIEFLY();
  }
  Py_END_ALLOW_THREADS
}

#define MAYBE_YIELD_TO_DELIVERY()                                                            \
  do {                                                                                       \
    if (COUNTER_LOAD(deliveries_waiting) > 0) {                                              \
      yield_to_delivery();                                                                   \
    }                                                                                        \
  } while (0)

/* Under "block", a push into a full ring waits in slices of this much (as the
 * Python path's _SLICE_MS), running signal handlers between them. */
#define PUSH_SLICE_NS ((int64_t)100 * 1000000)

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *general; /* the general push_event (Python) of the processor's class */
} PushEvent;


static PyObject *push_event_call(PyObject *callable, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames) {
  PushEvent *method = (PushEvent *)callable;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  /* self, event_type, user_id, channel_id[, timestamp] and no keywords. */
  if (processor_push == NULL || kwnames != NULL || nargs < 4 || nargs > 5) {
    goto general;
  }
  PyObject *self = args[0];
  if (!PyUnicode_CheckExact(args[1]) || !PyUnicode_CheckExact(args[2]) ||
      !PyUnicode_CheckExact(args[3])) {
    goto general;
  }
  long long timestamp = 0;
  if (nargs == 5 && args[4] != Py_None) {
    if (!PyLong_CheckExact(args[4])) {
      goto general;
    }
    if (!small_int64(args[4], &timestamp)) {
      int overflow;
      timestamp = PyLong_AsLongLongAndOverflow(args[4], &overflow);
      if (overflow) {
        goto general; /* beyond 64 bits: the general path names it */
      }
    }
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
    goto general;
  }
  void *processor;
  int blocking;
  long long block_timeout_ms;
  if (!push_target(self, &processor, &blocking, &block_timeout_ms)) {
    goto general;
  }
  int32_t status;
  if (blocking) {
    /* A free slot now, without waiting (the GIL held); if none, wait in slices. */
    status = processor_push_wait(processor, (const uint8_t *)kind, (size_t)kind_len,
                                 (const uint8_t *)user, (size_t)user_len,
                                 (const uint8_t *)channel, (size_t)channel_len,
                                 (int64_t)timestamp, NULL, 0, 0, 0);
    if (status == status_timeout) {
      int64_t deadline = MONOTONIC_NS() + (int64_t)block_timeout_ms * 1000000;
      for (;;) {
        int64_t left = deadline - MONOTONIC_NS();
        int give_up = left <= PUSH_SLICE_NS;
        uint64_t wait_ms = left <= 0 ? 0 : (uint64_t)((left < PUSH_SLICE_NS ? left : PUSH_SLICE_NS) / 1000000);
        /* The str arguments stay alive: the caller holds them for the call. */
        Py_BEGIN_ALLOW_THREADS
        status = processor_push_wait(processor, (const uint8_t *)kind, (size_t)kind_len,
                                     (const uint8_t *)user, (size_t)user_len,
                                     (const uint8_t *)channel, (size_t)channel_len,
                                     (int64_t)timestamp, NULL, 0, wait_ms, give_up);
        Py_END_ALLOW_THREADS
        if (status != status_timeout) {
          break;
        }
        if (PyErr_CheckSignals() < 0) {
          return NULL; /* KeyboardInterrupt: nothing pushed or counted */
        }
      }
    }
  } else {
    status = processor_push(processor, (const uint8_t *)kind, (size_t)kind_len,
                            (const uint8_t *)user, (size_t)user_len, (const uint8_t *)channel,
                            (size_t)channel_len, (int64_t)timestamp, NULL, 0);
    MAYBE_YIELD_TO_DELIVERY();
  }
  if (status == 0) {
    Py_RETURN_TRUE;
  }
  if (status == status_queue_full) {
    Py_RETURN_FALSE;
  }
  /* Raises what the general path raises for this status (read eh_last_error now,
   * on this thread). */
  PyObject *status_obj = PyLong_FromLong(status);
  if (status_obj == NULL) {
    return NULL;
  }
  PyObject *result = PyObject_CallMethodOneArg(self, name_push_failed, status_obj);
  Py_DECREF(status_obj);
  return result;
general:
  return PyObject_Vectorcall(method->general, args, nargsf, kwnames);
}

static PyObject *push_event_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  PyObject *general;
  if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
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
  PushEvent *self = (PushEvent *)type->tp_alloc(type, 0);
  if (self == NULL) {
    return NULL;
  }
  self->vectorcall = push_event_call;
  Py_INCREF(general);
  self->general = general;
  return (PyObject *)self;
}

static int push_event_traverse(PushEvent *self, visitproc visit, void *arg) {
  Py_VISIT(self->general);
  return 0;
}

static int push_event_clear(PushEvent *self) {
  Py_CLEAR(self->general);
  return 0;
}

static void push_event_dealloc(PushEvent *self) {
  PyObject_GC_UnTrack(self);
  push_event_clear(self);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Bound like a function: `p.push_event` is a method object over this descriptor. */
static PyObject *push_event_get(PyObject *self, PyObject *obj, PyObject *type) {
  (void)type;
  if (obj == NULL || obj == Py_None) {
    Py_INCREF(self);
    return self;
  }
  return PyMethod_New(self, obj);
}

static PyObject *push_event_general_attr(PushEvent *self, const char *name) {
  if (self->general == NULL) {
    PyErr_SetString(PyExc_AttributeError, "PushEvent is cleared");
    return NULL;
  }
  return PyObject_GetAttrString(self->general, name);
}

static PyObject *push_event_doc(PushEvent *self, void *closure) {
  (void)closure;
  return push_event_general_attr(self, "__doc__");
}

static PyObject *push_event_name(PushEvent *self, void *closure) {
  (void)closure;
  return push_event_general_attr(self, "__name__");
}

static PyObject *push_event_qualname(PushEvent *self, void *closure) {
  (void)closure;
  return push_event_general_attr(self, "__qualname__");
}

static PyObject *push_event_wrapped(PushEvent *self, void *closure) {
  (void)closure;
  if (self->general == NULL) {
    Py_RETURN_NONE;
  }
  Py_INCREF(self->general);
  return self->general;
}

static PyGetSetDef push_event_getset[] = {
    {"__doc__", (getter)push_event_doc, NULL, NULL, NULL},
    {"__name__", (getter)push_event_name, NULL, NULL, NULL},
    {"__qualname__", (getter)push_event_qualname, NULL, NULL, NULL},
    {"__wrapped__", (getter)push_event_wrapped, NULL,
     "The general path (a plain Python function) this fast path falls back to.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PushEventType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engagehub._engagehub_fast.PushEvent",
    .tp_basicsize = sizeof(PushEvent),
    .tp_dealloc = (destructor)push_event_dealloc,
    .tp_vectorcall_offset = offsetof(PushEvent, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "PushEvent(general): EventStreamProcessor.push_event without a Python frame "
              "(see the module source); falls back to `general` for every other case.",
    .tp_traverse = (traverseproc)push_event_traverse,
    .tp_clear = (inquiry)push_event_clear,
    .tp_descr_get = push_event_get,
    .tp_getset = push_event_getset,
    .tp_new = push_event_new,
};

/* push_rows(processor, rows[, wait_ms, give_up]) -> (status, accepted), or None
 * when the rows need the general path: `rows` must be a list of exact tuples of 3
 * exact str, or 4 with an exact int timestamp (fitting 64 bits), all of one width,
 * and no lone surrogate. One eh_processor_push_batch call, the strings given as
 * CPython's cached UTF-8. A processor under "block" takes `wait_ms` and `give_up`
 * (ints) instead, and one eh_processor_push_batch_wait call with the GIL released
 * (the caller loops over slices, running signal handlers between them); a call
 * with or without them where the other is expected returns None. */
static PyObject *push_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  (void)module;
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
  if (processor_push_batch == NULL || !PyList_CheckExact(rows)) {
    Py_RETURN_NONE;
  }
  void *processor;
  int blocking;
  /* A push that may wait must wait in slices: the blocking class passes them. */
  if (!push_target(args[0], &processor, &blocking, NULL) || blocking != sliced) {
    Py_RETURN_NONE;
  }
  /* Under "block" the GIL is released: hold the rows (and so their strings) in a
   * tuple another thread cannot change meanwhile. */
  PyObject *held = blocking ? PyList_AsTuple(rows) : (Py_INCREF(rows), rows);
  if (held == NULL) {
    return NULL;
  }
  PyObject **items = blocking ? &PyTuple_GET_ITEM(held, 0) : PySequence_Fast_ITEMS(held);
  Py_ssize_t n = blocking ? PyTuple_GET_SIZE(held) : PyList_GET_SIZE(held);
  PyObject *result = NULL;
  eh_event *events = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(eh_event));
  if (events == NULL) {
    PyErr_NoMemory();
    goto done;
  }
  Py_ssize_t width = -1;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *row = items[i];
    if (!PyTuple_CheckExact(row)) {
      goto general;
    }
    Py_ssize_t w = PyTuple_GET_SIZE(row);
    if (width < 0) {
      width = w;
    }
    if (w != width || (w != 3 && w != 4)) {
      goto general;
    }
    PyObject *const *f = &PyTuple_GET_ITEM(row, 0);
    if (!PyUnicode_CheckExact(f[0]) || !PyUnicode_CheckExact(f[1]) ||
        !PyUnicode_CheckExact(f[2])) {
      goto general;
    }
    eh_event *e = &events[i];
    e->timestamp = 0;
    if (w == 4) {
      if (!PyLong_CheckExact(f[3])) {
        goto general;
      }
      long long ts;
      if (!small_int64(f[3], &ts)) {
        int overflow;
        ts = PyLong_AsLongLongAndOverflow(f[3], &overflow);
        if (overflow) {
          goto general;
        }
      }
      e->timestamp = (int64_t)ts;
    }
    Py_ssize_t len[3];
    const char *text[3];
    for (int k = 0; k < 3; k++) {
      text[k] = str_utf8(f[k], &len[k]);
      if (text[k] == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
          goto done;
        }
        PyErr_Clear();
        goto general;
      }
    }
    e->kind = (const uint8_t *)text[0];
    e->kind_len = (size_t)len[0];
    e->user_id = (const uint8_t *)text[1];
    e->user_id_len = (size_t)len[1];
    e->channel_id = (const uint8_t *)text[2];
    e->channel_id_len = (size_t)len[2];
    e->payload = NULL;
    e->payload_len = 0;
  }
  size_t accepted = 0;
  int32_t status;
  if (blocking) {
    Py_BEGIN_ALLOW_THREADS
    status = processor_push_batch_wait(processor, events, (size_t)n, &accepted,
                                       (uint64_t)wait_ms, give_up);
    Py_END_ALLOW_THREADS
  } else {
    status = processor_push_batch(processor, events, (size_t)n, &accepted);
    MAYBE_YIELD_TO_DELIVERY();
  }
  result = Py_BuildValue("(in)", (int)status, (Py_ssize_t)accepted);
  goto done;
general:
  Py_INCREF(Py_None);
  result = Py_None;
done:
  PyMem_Free(events);
  Py_DECREF(held);
  return result;
}

/* ---- batches as Python objects --------------------------------------------------
 *
 * A batch's strings come from a cache of str objects kept across batches, so the
 * ids that recur (active users, channels, kinds) are decoded once, not once per
 * batch, and equal ones share one str within a batch and across batches while it
 * stays cached. Equal consecutive timestamps share one int. Dict keys are
 * interned.
 *
 * The cache: STR_CACHE_SLOTS slots in sets of STR_CACHE_WAYS, each slot owning one
 * str of at most STR_CACHE_MAX_LEN UTF-8 bytes (so under 8 MB in all, whatever the
 * traffic), its hash and its UTF-8 bytes (CPython's own: the str's data when it is
 * ASCII, its cached UTF-8 otherwise). A miss decodes and takes an empty way of its
 * set, or else its least recently used one, releasing the str that was there
 * (batches that hold it keep their own reference). Longer strings are decoded for
 * each event. Only used with the GIL held; a forked child keeps it as it is (the
 * strs are the parent's, valid in the child). */

enum { STR_CACHE_SLOTS = 1 << 15, STR_CACHE_WAYS = 8, STR_CACHE_MAX_LEN = 64 };

typedef struct {
  uint64_t hash;
  uint32_t len;
  uint32_t used;    /* str_cache_clock at the last hit or insertion */
  const char *utf8; /* inside `str` */
  PyObject *str;    /* owned; NULL: an empty slot */
} str_slot;

static str_slot *str_cache = NULL; /* STR_CACHE_SLOTS slots, allocated at first use */
static uint32_t str_cache_clock = 0; /* wraps: then one set's order is off, no more */

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
static PyObject *cached_str(const uint8_t *p, size_t len) {
  if (len == 0) {
    return PyUnicode_FromStringAndSize(NULL, 0); /* the shared empty str */
  }
  if (len > STR_CACHE_MAX_LEN) {
    return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)len, NULL);
  }
  if (str_cache == NULL && (str_cache = PyMem_Calloc(STR_CACHE_SLOTS, sizeof(str_slot))) == NULL) {
    return PyErr_NoMemory();
  }
  uint64_t h = bytes_hash(p, len);
  str_slot *set = &str_cache[(size_t)h & (STR_CACHE_SLOTS - STR_CACHE_WAYS)];
  for (int w = 0; w < STR_CACHE_WAYS; w++) {
    str_slot *s = &set[w];
    if (s->hash == h && s->len == len && s->str != NULL &&
        bytes_equal((const uint8_t *)s->utf8, p, len)) {
      s->used = ++str_cache_clock;
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
  *s = (str_slot){h, (uint32_t)len, ++str_cache_clock, utf8, str};
  Py_XDECREF(old); /* a str's dealloc runs no Python code */
  return str;
}

enum { FORM_DICTS = 0, FORM_TUPLES = 1, FORM_COLUMNS = 2 };

/* build_batch(events_address, n, form, payloads): the batch as a list of dicts
 * (form 0; "payload" added for non-empty payloads when `payloads`), a list of
 * 4-tuples (form 1), or the columns tuple (kinds, user_ids, channel_ids,
 * timestamps, payloads or None) of lists (form 2). Same values as the Python
 * decoder; only called during the flush callback, while the events are valid. */
static PyObject *build_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
  (void)module;
  if (nargs != 4) {
    PyErr_SetString(PyExc_TypeError, "build_batch() takes 4 arguments");
    return NULL;
  }
  const eh_event *events = PyLong_AsVoidPtr(args[0]);
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
  PyObject *result = NULL, *cols[5] = {NULL, NULL, NULL, NULL, NULL};
  PyObject *list = NULL;
  PyObject *last_ts = NULL; /* borrowed: the batch being built owns it */
  int64_t last_ts_value = 0;
  if (form == FORM_COLUMNS) {
    for (int c = 0; c < 4 + payloads; c++) {
      if ((cols[c] = PyList_New(n)) == NULL) {
        goto fail;
      }
    }
  } else if ((list = PyList_New(n)) == NULL) {
    goto fail;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    const eh_event *e = &events[i];
    PyObject *kind = cached_str(e->kind, e->kind_len);
    PyObject *user = kind ? cached_str(e->user_id, e->user_id_len) : NULL;
    PyObject *channel = user ? cached_str(e->channel_id, e->channel_id_len) : NULL;
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
    if (ts == NULL) {
      Py_XDECREF(kind);
      Py_XDECREF(user);
      Py_XDECREF(channel);
      goto fail;
    }
    if (form == FORM_COLUMNS) { /* the lists take the references */
      PyList_SET_ITEM(cols[0], i, kind);
      PyList_SET_ITEM(cols[1], i, user);
      PyList_SET_ITEM(cols[2], i, channel);
      PyList_SET_ITEM(cols[3], i, ts);
      if (payloads) {
        PyList_SET_ITEM(cols[4], i, payload);
      }
      continue;
    }
    PyObject *item;
    if (form == FORM_TUPLES) {
      item = PyTuple_New(4);
      if (item != NULL) { /* the tuple takes the references */
        PyTuple_SET_ITEM(item, 0, kind);
        PyTuple_SET_ITEM(item, 1, user);
        PyTuple_SET_ITEM(item, 2, channel);
        PyTuple_SET_ITEM(item, 3, ts);
        kind = user = channel = ts = NULL;
      }
    } else {
      item = PyDict_New();
      if (item != NULL &&
          (PyDict_SetItem(item, key_type, kind) < 0 || PyDict_SetItem(item, key_user_id, user) < 0 ||
           PyDict_SetItem(item, key_channel_id, channel) < 0 ||
           PyDict_SetItem(item, key_timestamp, ts) < 0 ||
           (payload != NULL && PyDict_SetItem(item, key_payload, payload) < 0))) {
        Py_CLEAR(item);
      }
    }
    Py_XDECREF(kind);
    Py_XDECREF(user);
    Py_XDECREF(channel);
    Py_XDECREF(ts);
    Py_XDECREF(payload);
    if (item == NULL) {
      goto fail;
    }
    PyList_SET_ITEM(list, i, item);
  }
  if (form == FORM_COLUMNS) {
    if (!payloads) {
      Py_INCREF(Py_None);
      cols[4] = Py_None;
    }
    result = PyTuple_New(5);
    if (result == NULL) {
      goto fail;
    }
    for (int c = 0; c < 5; c++) {
      PyTuple_SET_ITEM(result, c, cols[c]);
      cols[c] = NULL;
    }
  } else {
    result = list;
    list = NULL;
  }
  return result;
fail:
  /* Lists from PyList_New hold NULLs until filled; their dealloc skips them. */
  for (int c = 0; c < 5; c++) {
    Py_XDECREF(cols[c]);
  }
  Py_XDECREF(list);
  return NULL;
}

/* ---- EventStreamProcessor.top_channels and get_top_channels --------------------
 *
 * Dashboards poll these. Through cffi each call paid for far more Python work than
 * the native query itself (an eh_channel_list allocated by cffi, struct.unpack of
 * the rows, a bytes copy of the ids and one decode per channel): ~15 us against a
 * native ~0.2 us for a cached answer. TopChannels is a method descriptor set in the
 * class body, like PushEvent: it reads the instance's `_push_target` address, takes
 * an exact int `k` (clamped to 2**32 - 1 as the general path does) and `window_secs`
 * and `now` as None or exact ints, makes one eh_processor_top_channels call while
 * holding the GIL (the query never waits for anything that needs the GIL: the locks
 * it takes are held only by native code), and returns a new list of
 * (channel_id, count) tuples.
 *
 * The native answer is a cached merge that stays the same until the workers'
 * summaries are merged again (every flush_interval_ms while events flow, or after
 * a flush). So each descriptor keeps its last few answers: the native block (rows
 * and ids, compared byte for byte) and the tuple of (str, int) tuples built from
 * it. An answer equal to a kept one returns a fresh list of the kept tuples (all
 * immutable), so repeated polls build no str at all. Bounded: TOP_CACHE_SLOTS
 * answers of at most TOP_CACHE_MAX_BYTES native bytes each per descriptor (larger
 * answers are built every time).
 *
 * Anything else (a negative or non-int k, a float or negative window, a float
 * `now`, unknown or repeated keywords, too many arguments, no `_push_target`) calls
 * the general Python method with the same arguments. A non-zero status goes to the
 * instance's `_top_failed(status)`, which raises what the general path raises for
 * it (Closed for a closed processor; the native message for a window too long). */

typedef struct {
  uint64_t count;
  uint64_t id_offset;
  uint64_t id_len;
} eh_channel_row;

typedef struct {
  size_t len;
  const eh_channel_row *rows;
  const uint8_t *ids;
  size_t size;
  void *owner;
} eh_channel_list;

typedef int32_t (*top_channels_fn)(const void *p, size_t k, int64_t window_secs, int64_t now,
                                   eh_channel_list *out);
typedef void (*channel_list_free_fn)(eh_channel_list *list);

/* Set once by bind_top_channels(); read only with the GIL held. */
static top_channels_fn processor_top_channels = NULL;
static channel_list_free_fn channel_list_free = NULL;

/* Interned names, created at import. */
static PyObject *name_top_failed, *kw_k, *kw_window_secs, *kw_now;

static PyObject *bind_top_channels(PyObject *module, PyObject *args) {
  (void)module;
  PyObject *top_address, *free_address, *layout;
  if (!PyArg_ParseTuple(args, "OOO!", &top_address, &free_address, &PyTuple_Type, &layout)) {
    return NULL;
  }
  const Py_ssize_t expected[] = {
      (Py_ssize_t)sizeof(eh_channel_list),
      (Py_ssize_t)offsetof(eh_channel_list, len),
      (Py_ssize_t)offsetof(eh_channel_list, rows),
      (Py_ssize_t)offsetof(eh_channel_list, ids),
      (Py_ssize_t)offsetof(eh_channel_list, size),
      (Py_ssize_t)offsetof(eh_channel_list, owner),
      (Py_ssize_t)sizeof(eh_channel_row),
      (Py_ssize_t)offsetof(eh_channel_row, count),
      (Py_ssize_t)offsetof(eh_channel_row, id_offset),
      (Py_ssize_t)offsetof(eh_channel_row, id_len),
  };
  if (check_layout("bind_top_channels", "eh_channel_list", layout, expected,
                   (Py_ssize_t)(sizeof expected / sizeof expected[0])) < 0) {
    return NULL;
  }
  void *top = PyLong_AsVoidPtr(top_address);
  void *release = top ? PyLong_AsVoidPtr(free_address) : NULL;
  if (release == NULL) {
    if (!PyErr_Occurred()) {
      PyErr_SetString(PyExc_ValueError,
                      "bind_top_channels() needs the addresses of eh_processor_top_channels "
                      "and eh_channel_list_free");
    }
    return NULL;
  }
  processor_top_channels = (top_channels_fn)top;
  channel_list_free = (channel_list_free_fn)release;
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
  PushEvent base; /* vectorcall and the general method; shares PushEvent's getters */
  int all_time;   /* get_top_channels: only `k`, all time */
  int next;       /* the slot the next new answer replaces */
  top_slot cache[TOP_CACHE_SLOTS];
} TopChannels;

/* A new tuple of (channel_id, count) tuples for the native answer `list`. */
static PyObject *top_rows(const eh_channel_list *list) {
  Py_ssize_t n = (Py_ssize_t)list->len;
  PyObject *rows = PyTuple_New(n);
  if (rows == NULL) {
    return NULL;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    const eh_channel_row *row = &list->rows[i];
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
    PyTuple_SET_ITEM(pair, 0, id); /* the tuples take the references */
    PyTuple_SET_ITEM(pair, 1, count);
    PyTuple_SET_ITEM(rows, i, pair);
  }
  return rows;
}

/* Keeps `rows` as the answer for the native block of `list` (replacing the oldest
 * kept one). Without memory for the copy nothing is kept: still correct. */
static void top_cache_put(TopChannels *self, const eh_channel_list *list, PyObject *rows) {
  if (list->size > TOP_CACHE_MAX_BYTES) {
    return;
  }
  unsigned char *block = PyMem_Malloc(list->size ? list->size : 1);
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
static PyObject *top_answer(TopChannels *self, const eh_channel_list *list) {
  if (list->len == 0) {
    return PyList_New(0);
  }
  PyObject *rows = NULL;
  for (int i = 0; i < TOP_CACHE_SLOTS; i++) {
    const top_slot *slot = &self->cache[i];
    if (slot->rows != NULL && slot->len == list->len && slot->size == list->size &&
        memcmp(slot->block, list->rows, list->size) == 0) {
      rows = slot->rows;
      Py_INCREF(rows); /* PyList_New below may run the GC, and it code that replaces slots */
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
  Py_ssize_t n = PyTuple_GET_SIZE(rows);
  PyObject *out = PyList_New(n);
  if (out != NULL) {
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *pair = PyTuple_GET_ITEM(rows, i);
      Py_INCREF(pair);
      PyList_SET_ITEM(out, i, pair);
    }
  }
  Py_DECREF(rows);
  return out;
}

/* Which parameter a keyword names (0: k, 1: window_secs, 2: now), or -1. */
static int top_keyword(PyObject *name, int all_time) {
  if (name == kw_k) {
    return 0;
  }
  if (!all_time && name == kw_window_secs) {
    return 1;
  }
  if (!all_time && name == kw_now) {
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

/* An exact int that fits 64 bits into *out (1), or 0 for the general path. */
static int exact_int64(PyObject *value, long long *out) {
  if (!PyLong_CheckExact(value)) {
    return 0;
  }
  int overflow;
  *out = PyLong_AsLongLongAndOverflow(value, &overflow);
  return overflow == 0;
}

static PyObject *top_channels_call(PyObject *callable, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
  TopChannels *method = (TopChannels *)callable;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  /* self, then k[, window_secs[, now]] (get_top_channels: k), by position or name. */
  const Py_ssize_t params = method->all_time ? 1 : 3;
  PyObject *given[3] = {NULL, NULL, NULL};
  if (processor_top_channels == NULL || nargs < 1 || nargs - 1 > params) {
    goto general;
  }
  for (Py_ssize_t i = 1; i < nargs; i++) {
    given[i - 1] = args[i];
  }
  if (kwnames != NULL) {
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(kwnames); j++) {
      int slot = top_keyword(PyTuple_GET_ITEM(kwnames, j), method->all_time);
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
  void *processor;
  int blocking;
  if (!push_target(args[0], &processor, &blocking, NULL)) {
    goto general;
  }
  eh_channel_list list;
  memset(&list, 0, sizeof list);
  int32_t status =
      processor_top_channels(processor, k, (int64_t)window_secs, (int64_t)now, &list);
  if (status != 0) {
    /* Raises what the general path raises (eh_last_error is read on this thread). */
    PyObject *status_obj = PyLong_FromLong(status);
    if (status_obj == NULL) {
      return NULL;
    }
    PyObject *result = PyObject_CallMethodOneArg(args[0], name_top_failed, status_obj);
    Py_DECREF(status_obj);
    return result;
  }
  PyObject *result = top_answer(method, &list);
  channel_list_free(&list);
  return result;
general:
  return PyObject_Vectorcall(method->base.general, args, nargsf, kwnames);
}

static PyObject *top_channels_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
  PyObject *general;
  int all_time;
  if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
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
  TopChannels *self = (TopChannels *)type->tp_alloc(type, 0); /* zeroed: an empty cache */
  if (self == NULL) {
    return NULL;
  }
  self->base.vectorcall = top_channels_call;
  Py_INCREF(general);
  self->base.general = general;
  self->all_time = all_time;
  return (PyObject *)self;
}

static int top_channels_traverse(TopChannels *self, visitproc visit, void *arg) {
  Py_VISIT(self->base.general);
  for (int i = 0; i < TOP_CACHE_SLOTS; i++) {
    Py_VISIT(self->cache[i].rows);
  }
  return 0;
}

static int top_channels_clear(TopChannels *self) {
  Py_CLEAR(self->base.general);
  for (int i = 0; i < TOP_CACHE_SLOTS; i++) {
    top_slot *slot = &self->cache[i];
    PyMem_Free(slot->block);
    slot->block = NULL;
    slot->size = slot->len = 0;
    Py_CLEAR(slot->rows);
  }
  return 0;
}

static void top_channels_dealloc(TopChannels *self) {
  PyObject_GC_UnTrack(self);
  top_channels_clear(self);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject TopChannelsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engagehub._engagehub_fast.TopChannels",
    .tp_basicsize = sizeof(TopChannels),
    .tp_dealloc = (destructor)top_channels_dealloc,
    .tp_vectorcall_offset = offsetof(TopChannels, base.vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "TopChannels(general, all_time): EventStreamProcessor.top_channels (or, with "
              "all_time, get_top_channels) without cffi (see the module source); falls back "
              "to `general` for every other case.",
    .tp_traverse = (traverseproc)top_channels_traverse,
    .tp_clear = (inquiry)top_channels_clear,
    .tp_descr_get = push_event_get,
    .tp_getset = push_event_getset,
    .tp_new = top_channels_new,
};

static PyMethodDef methods[] = {
    {"bind", bind, METH_O, "bind(address): the address of eh_leaderboard_try_add."},
    {"leaderboard_add", (PyCFunction)(void (*)(void))leaderboard_add, METH_FASTCALL,
     "leaderboard_add(board_address, user_id, points, timestamp) -> status, or None "
     "when the arguments need the general path."},
    {"bind_processor", bind_processor, METH_VARARGS,
     "bind_processor(push_address, push_batch_address, push_batch_wait_address, "
     "push_wait_address, queue_full_status, timeout_status, eh_event_layout)."},
    {"bind_push_target", bind_push_target, METH_VARARGS,
     "bind_push_target(EventStreamProcessor, EventStreamProcessor.__dict__['_push_target'])."},
    {"bind_delivery", bind_delivery, METH_O,
     "bind_delivery(trampoline_address) -> the address of the flush callback to register."},
    {"delivery_started", delivery_started, METH_NOARGS,
     "delivery_started(): the flush trampoline's first call, under the GIL."},
    {"reset_after_fork", reset_after_fork, METH_NOARGS,
     "reset_after_fork(): in a forked child, no delivery is waiting."},
    {"push_rows", (PyCFunction)(void (*)(void))push_rows, METH_FASTCALL,
     "push_rows(processor, rows) -> (status, accepted), or None when the rows need the "
     "general path."},
    {"build_batch", (PyCFunction)(void (*)(void))build_batch, METH_FASTCALL,
     "build_batch(events_address, n, form, payloads) -> the batch as Python objects."},
    {"bind_top_channels", bind_top_channels, METH_VARARGS,
     "bind_top_channels(top_channels_address, channel_list_free_address, "
     "eh_channel_list_layout)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "engagehub._engagehub_fast",
    "Leaderboard.update_user without cffi's per-call costs (see the source).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__engagehub_fast(void) {
  if (PyType_Ready(&PushEventType) < 0 || PyType_Ready(&PushTargetType) < 0 ||
      PyType_Ready(&TopChannelsType) < 0) {
    return NULL;
  }
  key_type = PyUnicode_InternFromString("type");
  key_user_id = PyUnicode_InternFromString("user_id");
  key_channel_id = PyUnicode_InternFromString("channel_id");
  key_timestamp = PyUnicode_InternFromString("timestamp");
  key_payload = PyUnicode_InternFromString("payload");
  name_push_failed = PyUnicode_InternFromString("_push_failed");
  name_top_failed = PyUnicode_InternFromString("_top_failed");
  kw_k = PyUnicode_InternFromString("k");
  kw_window_secs = PyUnicode_InternFromString("window_secs");
  kw_now = PyUnicode_InternFromString("now");
  if (!key_type || !key_user_id || !key_channel_id || !key_timestamp || !key_payload ||
      !name_push_failed || !name_top_failed || !kw_k || !kw_window_secs || !kw_now) {
    return NULL;
  }
  PyObject *module = PyModule_Create(&module_def);
  if (module == NULL) {
    return NULL;
  }
  Py_INCREF(&PushEventType);
  if (PyModule_AddObject(module, "PushEvent", (PyObject *)&PushEventType) < 0) {
    Py_DECREF(&PushEventType);
    Py_DECREF(module);
    return NULL;
  }
  Py_INCREF(&PushTargetType);
  if (PyModule_AddObject(module, "PushTarget", (PyObject *)&PushTargetType) < 0) {
    Py_DECREF(&PushTargetType);
    Py_DECREF(module);
    return NULL;
  }
  Py_INCREF(&TopChannelsType);
  if (PyModule_AddObject(module, "TopChannels", (PyObject *)&TopChannelsType) < 0) {
    Py_DECREF(&TopChannelsType);
    Py_DECREF(module);
    return NULL;
  }
  return module;
}
