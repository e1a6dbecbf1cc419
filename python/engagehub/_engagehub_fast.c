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
#include <stdint.h>

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
  const char *id = PyUnicode_AsUTF8AndSize(user_id, &id_len);
  if (id == NULL) {
    return NULL; /* a lone surrogate: UnicodeEncodeError, as str.encode() raises */
  }
  int32_t status = try_add(board, (const uint8_t *)id, (size_t)id_len, points_value, ts);
  return PyLong_FromLong(status);
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_O, "bind(address): the address of eh_leaderboard_try_add."},
    {"leaderboard_add", (PyCFunction)(void (*)(void))leaderboard_add, METH_FASTCALL,
     "leaderboard_add(board_address, user_id, points, timestamp) -> status, or None "
     "when the arguments need the general path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "engagehub._engagehub_fast",
    "Leaderboard.update_user without cffi's per-call costs (see the source).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__engagehub_fast(void) { return PyModule_Create(&module_def); }
