/* Compiled twins of the hottest steps of track(): the common call's checks, its record and EventQueue.put.
 *
 * Each function here does exactly what the Python code it stands for does (sqreen_mw/_schema.py check_properties'
 * first loop, _queue.py EventQueue.put, _client.py Client._track's inline path) and hands every other case to that
 * Python code, which stays the reference: the tests run both and compare. Built when a C compiler is present
 * (setup.py marks it optional); SQREEN_MW_PURE_PYTHON=1 turns it off at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include <limits.h>
#include <pythread.h>

#define MAX_PROPERTIES 16
#define MAX_STRING_LENGTH 4096
#define RECORD_LENGTH 10
#define RECORD_SIZE 8 /* _queue.SIZE: the record's byte estimate */
#define EXTRA_SIZE 200 /* what _client adds to the properties' estimate */

static PyObject *str__lock, *str__items, *str__bytes, *str_tracked, *str_max_events, *str_max_bytes, *str_wake_count,
    *str_wake_bytes, *str__shed, *str_acquire, *str_release, *str_append, *str__capture, *str_capture, *str_user,
    *str_blocked, *str__accepting, *str__started_pid, *str__enqueue_slow, *str__start, *str_flusher, *str_wake,
    *str_enforcer, *str_actions, *str_hot_events, *str_hot;

/* The common case of check_properties: a dict of at most 16 entries whose keys were checked before (their size
 * estimates in `known`) and whose values are plain scalars in range. A new reference to the copy, with *size set;
 * NULL without an exception for every other case (the Python checks then say what is wrong, or copy it their way);
 * NULL with an exception only on a fault (memory). */
#define MAX_KEY_LENGTH 255 /* _schema.MAX_KEY_LENGTH */

/* check_user_identifiers' common case: a dict of 1 to 16 entries, ASCII str keys of 1 to 255 characters, values ASCII
 * str without NUL of at most 4096 characters or ints in 64 bits. A new reference to the copy; NULL without an
 * exception for every other case (the Python checks decide); NULL with one on a fault (memory). */
static PyObject *
check_common_user(PyObject *module, PyObject *value)
{
    PyObject *key, *item;
    Py_ssize_t pos = 0, size;
    if (!PyDict_CheckExact(value) || PyDict_GET_SIZE(value) == 0 || PyDict_GET_SIZE(value) > MAX_PROPERTIES) {
        Py_RETURN_NONE;
    }
    while (PyDict_Next(value, &pos, &key, &item)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_IS_ASCII(key) || PyUnicode_GET_LENGTH(key) == 0
            || PyUnicode_GET_LENGTH(key) > MAX_KEY_LENGTH) {
            Py_RETURN_NONE;
        }
        if (PyUnicode_CheckExact(item)) {
            size = PyUnicode_GET_LENGTH(item);
            if (!PyUnicode_IS_ASCII(item) || size > MAX_STRING_LENGTH
                || memchr(PyUnicode_1BYTE_DATA(item), 0, (size_t)size) != NULL) {
                Py_RETURN_NONE;
            }
        }
        else {
            int overflow;
            if (!PyLong_CheckExact(item)) {
                Py_RETURN_NONE;
            }
            (void)PyLong_AsLongLongAndOverflow(item, &overflow);
            if (overflow) {
                Py_RETURN_NONE;
            }
        }
    }
    return PyDict_Copy(value);
}

/* The keys of the last properties a Tracker checked, in order (held), and the sum of their estimates: the same key
 * objects again (a dict literal's constants) need no lookup in `known` (a key's estimate never changes). */
typedef struct {
    PyObject *keys[MAX_PROPERTIES];
    Py_ssize_t len;
    long long estimate;
    PyObject *keys_tuple; /* the same keys as a tuple, which the compact properties of a record share */
} KeyCache;

static void
key_cache_clear(KeyCache *cache)
{
    Py_ssize_t i;
    for (i = 0; i < cache->len; i++) {
        Py_CLEAR(cache->keys[i]);
    }
    Py_CLEAR(cache->keys_tuple);
    cache->len = 0;
}

static int
is_compact_properties(PyObject *props)
{
    Py_ssize_t n;
    if (!PyTuple_CheckExact(props) || (n = PyTuple_GET_SIZE(props)) < 2) {
        return 0;
    }
    return PyTuple_CheckExact(PyTuple_GET_ITEM(props, 0)) && PyTuple_GET_SIZE(PyTuple_GET_ITEM(props, 0)) == n - 1;
}

/* A record's properties, compact: (keys, value, value, ...), the keys a tuple that the records of equal keys share
 * (_client.expand_properties makes the dict again). A dict of 1 to 5 items takes 184 bytes; this, 40 + 8 per value. */
static PyObject *
compact_properties(PyObject *keys, PyObject *const *values, Py_ssize_t n)
{
    PyObject *out = PyTuple_New(n + 1);
    Py_ssize_t i;
    if (out == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, Py_NewRef(keys));
    for (i = 0; i < n; i++) {
        PyTuple_SET_ITEM(out, i + 1, Py_NewRef(values[i]));
    }
    PyObject_GC_UnTrack(out); /* text, numbers and a tuple of text: no cycle can pass through it */
    return out;
}

static PyObject *
common_properties(PyObject *properties, PyObject *known, long long *size, KeyCache *cache)
{
    PyObject *key, *value, *keys[MAX_PROPERTIES], *values[MAX_PROPERTIES];
    Py_ssize_t pos = 0, i = 0, n;
    long long total = 0, key_total = 0;
    int same = cache != NULL;

    if (!PyDict_CheckExact(properties) || (n = PyDict_GET_SIZE(properties)) > MAX_PROPERTIES) {
        return NULL;
    }
    same = same && cache->len == n;
    while (PyDict_Next(properties, &pos, &key, &value)) {
        PyTypeObject *type;

        if (!PyUnicode_CheckExact(key)) {
            return NULL;
        }
        if (i < MAX_PROPERTIES) {
            keys[i] = key;
            values[i] = value; /* borrowed, until held below: this loop runs no Python code */
        }
        same = same && i < cache->len && cache->keys[i] == key;
        i++;
        if (!same) {
            PyObject *estimate = PyDict_GetItemWithError(known, key); /* exact str keys: no Python code runs */
            long long part;
            if (estimate == NULL || !PyLong_CheckExact(estimate)) {
                return NULL;
            }
            part = PyLong_AsLongLong(estimate);
            if (part == -1 && PyErr_Occurred()) {
                PyErr_Clear(); /* not the common case: the Python loop adds it */
                return NULL;
            }
            key_total += part;
        }
        type = Py_TYPE(value);
        if (type == &PyUnicode_Type) {
            if (PyUnicode_GET_LENGTH(value) > MAX_STRING_LENGTH) {
                return NULL;
            }
            total += PyUnicode_GET_LENGTH(value);
        }
        else if (type == &PyLong_Type) {
            int overflow;
            (void)PyLong_AsLongLongAndOverflow(value, &overflow); /* the 64-bit range: MIN_INT to MAX_INT */
            if (overflow) {
                return NULL;
            }
        }
        else if (type == &PyFloat_Type) {
            if (!isfinite(PyFloat_AS_DOUBLE(value))) {
                return NULL;
            }
        }
        else if (type != &PyBool_Type && value != Py_None) {
            return NULL;
        }
    }
    if (PyErr_Occurred() || i != n) {
        return NULL;
    }
    for (i = 0; i < n; i++) { /* held: the allocations below may run the garbage collector, and a finalizer (or
                               * another thread, or a nested track()) the dict and this KeyCache */
        Py_INCREF(keys[i]);
        Py_INCREF(values[i]);
    }
    if (same) {
        key_total = cache->estimate;
    }
    else if (cache != NULL) { /* every key was looked up: remember them */
        PyObject *fresh = PyTuple_New(n);
        if (fresh == NULL) {
            goto fail;
        }
        for (i = 0; i < n; i++) {
            PyTuple_SET_ITEM(fresh, i, Py_NewRef(keys[i]));
        }
        PyObject_GC_UnTrack(fresh);
        key_cache_clear(cache);
        for (i = 0; i < n; i++) {
            cache->keys[i] = Py_NewRef(keys[i]);
        }
        cache->keys_tuple = fresh;
        cache->len = n;
        cache->estimate = key_total;
    }
    *size = total + key_total;
    {
        PyObject *out, *shared = cache != NULL ? cache->keys_tuple : NULL;
        if (n > 0 && shared != NULL) {
            Py_INCREF(shared);
            out = compact_properties(shared, values, n);
            Py_DECREF(shared);
        }
        else {
            out = PyDict_Copy(properties);
        }
        for (i = 0; i < n; i++) {
            Py_DECREF(keys[i]);
            Py_DECREF(values[i]);
        }
        return out;
    }
fail:
    for (i = 0; i < n; i++) {
        Py_DECREF(keys[i]);
        Py_DECREF(values[i]);
    }
    return NULL;
}

static PyObject *
check_common_properties(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long long size = 0;
    PyObject *copy, *result;

    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "check_common_properties(properties, known_keys: dict)");
        return NULL;
    }
    copy = common_properties(args[0], args[1], &size, NULL);
    if (copy == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    result = Py_BuildValue("(NL)", copy, size);
    return result;
}

/* --- RLock: EventQueue's re-entrant lock, taken by put_record() without a method call ------------------------ */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    unsigned long owner; /* the holding thread's ident, when count > 0 */
    unsigned long count;
    Py_ssize_t tracked, bytes; /* EventQueue's counters that put() changes under the lock (see _queue.py) */
} RLock;

static PyTypeObject RLockType;

/* Take it (re-entering when this thread holds it): 0, or -1 with an exception. The GIL is let go while waiting. */
static int
rlock_take(RLock *self)
{
    unsigned long me = PyThread_get_thread_ident();
    if (self->count > 0 && self->owner == me) {
        if (self->count == ULONG_MAX) {
            PyErr_SetString(PyExc_OverflowError, "internal lock count overflowed");
            return -1;
        }
        self->count++;
        return 0;
    }
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        PyLockStatus status;
        do { /* as threading's locks: a signal's handler runs while waiting (Ctrl-C raises KeyboardInterrupt) */
            Py_BEGIN_ALLOW_THREADS
            status = PyThread_acquire_lock_timed(self->lock, -1, 1);
            Py_END_ALLOW_THREADS
            if (status == PY_LOCK_INTR && Py_MakePendingCalls() < 0) {
                return -1;
            }
        } while (status != PY_LOCK_ACQUIRED);
    }
    self->owner = me;
    self->count = 1;
    return 0;
}

/* Let it go once: 0, or -1 with RuntimeError when this thread does not hold it (as threading.RLock). */
static int
rlock_give(RLock *self)
{
    if (self->count == 0 || self->owner != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return -1;
    }
    if (--self->count == 0) {
        self->owner = 0;
        PyThread_release_lock(self->lock);
    }
    return 0;
}

static PyObject *
rlock_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    RLock *self;
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RLock() takes no arguments");
        return NULL;
    }
    self = (RLock *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    return (PyObject *)self;
}

static void
rlock_dealloc(RLock *self)
{
    if (self->lock != NULL) {
        if (self->count > 0) { /* held by a thread that is gone (or a forked-away parent's): release it */
            PyThread_release_lock(self->lock);
        }
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
rlock_enter(RLock *self, PyObject *unused)
{
    if (rlock_take(self) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

/* acquire(blocking=True, timeout=-1), as threading.RLock's: True when taken. */
static PyObject *
rlock_acquire(RLock *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    PY_TIMEOUT_T wait;
    PyLockStatus status;
    unsigned long me = PyThread_get_thread_ident();

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", keywords, &blocking, &timeout)) {
        return NULL;
    }
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (blocking && timeout == -1) {
        return rlock_enter(self, NULL);
    }
    if (self->count > 0 && self->owner == me) {
        return rlock_enter(self, NULL); /* re-entered: never waits */
    }
    wait = !blocking ? 0 : timeout * 1e6 >= (double)PY_TIMEOUT_MAX ? PY_TIMEOUT_MAX : (PY_TIMEOUT_T)(timeout * 1e6);
    status = PyThread_acquire_lock_timed(self->lock, 0, 0);
    if (status != PY_LOCK_ACQUIRED && wait > 0) { /* a signal's handler may run, then the wait goes on (shorter
                                                  * by nothing: an interrupted timed wait is rare and brief) */
        do {
            Py_BEGIN_ALLOW_THREADS
            status = PyThread_acquire_lock_timed(self->lock, wait, 1);
            Py_END_ALLOW_THREADS
            if (status == PY_LOCK_INTR && Py_MakePendingCalls() < 0) {
                return NULL;
            }
        } while (status == PY_LOCK_INTR);
    }
    if (status != PY_LOCK_ACQUIRED) {
        Py_RETURN_FALSE;
    }
    self->owner = me;
    self->count = 1;
    Py_RETURN_TRUE;
}

static PyObject *
rlock_release(RLock *self, PyObject *unused)
{
    if (rlock_give(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
rlock_exit(RLock *self, PyObject *const *args, Py_ssize_t nargs)
{
    return rlock_release(self, NULL);
}

static PyObject *
rlock_is_owned(RLock *self, PyObject *unused)
{
    return PyBool_FromLong(self->count > 0 && self->owner == PyThread_get_thread_ident());
}

static PyMethodDef rlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))rlock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1): take the lock (re-entrant in its thread); True when taken."},
    {"release", (PyCFunction)rlock_release, METH_NOARGS, "Let the lock go once."},
    {"__enter__", (PyCFunction)rlock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))rlock_exit, METH_FASTCALL, NULL},
    {"_is_owned", (PyCFunction)rlock_is_owned, METH_NOARGS, "Whether this thread holds it."},
    {NULL},
};

static PyMemberDef rlock_members[] = {
    {"tracked", T_PYSSIZET, offsetof(RLock, tracked), 0, "EventQueue.tracked, kept here"},
    {"bytes", T_PYSSIZET, offsetof(RLock, bytes), 0, "EventQueue._bytes, kept here"},
    {NULL},
};

static PyTypeObject RLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.RLock",
    .tp_doc = "A re-entrant lock (threading.RLock's acquire/release/with) that compiled code takes without a call, "
              "and the two counters EventQueue.put() changes under it (tracked, bytes).",
    .tp_basicsize = sizeof(RLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = rlock_new,
    .tp_dealloc = (destructor)rlock_dealloc,
    .tp_methods = rlock_methods,
    .tp_members = rlock_members,
};

/* An EventQueue seen from C: the slots put() uses (_lock, _items, _bytes, tracked, read and written at their
 * offsets; a queue whose type has other ones is read through its instance dict) and its bounds, read once:
 * EventQueue's bounds are fixed when it is made (see _queue.py). */
enum { Q_LOCK, Q_ITEMS, Q_BYTES, Q_TRACKED, Q_FIELDS };

typedef struct {
    PyObject *dict; /* the instance dict, only when some field is not a slot; else NULL */
    PyTypeObject *type;
    Py_ssize_t slots[Q_FIELDS];
    Py_ssize_t max_events, max_bytes, wake_count, wake_bytes;
} QueueView;

static PyObject *queue_names[Q_FIELDS];

/* A Py_ssize_t attribute of `obj`; -1 with an exception on failure. */
static int
get_size(PyObject *obj, PyObject *name, Py_ssize_t *out)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    long long number;
    int overflow;
    if (value == NULL) {
        return -1;
    }
    number = PyLong_AsLongLongAndOverflow(value, &overflow);
    Py_DECREF(value);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    /* a bound beyond what a queue can hold: clamped (n and the byte total never reach it) */
    *out = overflow > 0 ? PY_SSIZE_T_MAX : overflow < 0 ? PY_SSIZE_T_MIN : (Py_ssize_t)number;
    return 0;
}

static Py_ssize_t slot_offset(PyObject *type, PyObject *name);

static int
queue_view(PyObject *queue, QueueView *view)
{
    int i, all_slots = 1;
    view->dict = NULL;
    view->type = (PyTypeObject *)Py_NewRef(Py_TYPE(queue));
    for (i = 0; i < Q_FIELDS; i++) { /* the counters may be properties (kept on the lock): read as attributes */
        view->slots[i] = slot_offset((PyObject *)view->type, queue_names[i]);
        all_slots = all_slots && (view->slots[i] >= 0 || i == Q_BYTES || i == Q_TRACKED);
    }
    if (!all_slots) {
        view->dict = PyObject_GenericGetDict(queue, NULL);
        if (view->dict == NULL || !PyDict_CheckExact(view->dict)) {
            if (view->dict != NULL) {
                PyErr_SetString(PyExc_TypeError, "the queue's __dict__ is not a dict");
            }
            Py_CLEAR(view->dict);
            Py_CLEAR(view->type);
            return -1;
        }
    }
    if (get_size(queue, str_max_events, &view->max_events) < 0 || get_size(queue, str_max_bytes, &view->max_bytes) < 0
        || get_size(queue, str_wake_count, &view->wake_count) < 0
        || get_size(queue, str_wake_bytes, &view->wake_bytes) < 0) {
        Py_CLEAR(view->dict);
        Py_CLEAR(view->type);
        return -1;
    }
    return 0;
}

/* The queue's field: a new reference, or NULL with AttributeError when it is missing (or an unset slot). */
static PyObject *
queue_field(const QueueView *view, PyObject *queue, int field)
{
    PyObject *value;
    if (view->slots[field] >= 0 && Py_TYPE(queue) == view->type) {
        value = *(PyObject **)((char *)queue + view->slots[field]);
    }
    else {
        if (view->dict == NULL) { /* not the type the view was made for */
            return PyObject_GetAttr(queue, queue_names[field]);
        }
        value = PyDict_GetItemWithError(view->dict, queue_names[field]);
        if (value == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, queue_names[field]);
        return NULL;
    }
    return Py_NewRef(value);
}

/* queue.<field> += delta for an int field; the new value in *out. -1 with an exception. */
static int
add_to_field(const QueueView *view, PyObject *queue, int field, Py_ssize_t delta, Py_ssize_t *out)
{
    PyObject *value = queue_field(view, queue, field), *number;
    Py_ssize_t total;
    int rc = 0;
    if (value == NULL) {
        return -1;
    }
    total = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    if (total == -1 && PyErr_Occurred()) {
        return -1;
    }
    total += delta;
    number = PyLong_FromSsize_t(total);
    if (number == NULL) {
        return -1;
    }
    if (view->slots[field] >= 0 && Py_TYPE(queue) == view->type) {
        Py_XSETREF(*(PyObject **)((char *)queue + view->slots[field]), number); /* an int goes: no code runs */
    }
    else if (view->dict != NULL) {
        rc = PyDict_SetItem(view->dict, queue_names[field], number);
        Py_DECREF(number);
    }
    else {
        rc = PyObject_SetAttr(queue, queue_names[field], number);
        Py_DECREF(number);
    }
    *out = total;
    return rc;
}

/* Give the pending exception (type, value, tb) as its __context__, as Python does for an exception raised in an
 * except or finally block; steals the three references. Public API only (_PyErr_ChainExceptions is gone in 3.13). */
static void
chain_context(PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *type2, *value2, *tb2;
    if (type == NULL) {
        return;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyErr_Fetch(&type2, &value2, &tb2);
    PyErr_NormalizeException(&type2, &value2, &tb2);
    if (value2 != value) {
        PyException_SetContext(value2, value); /* steals value */
    }
    else {
        Py_DECREF(value);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    PyErr_Restore(type2, value2, tb2);
}

/* lock.release(), without a call for an RLock of this module. */
static PyObject *
lock_release(PyObject *lock)
{
    if (Py_IS_TYPE(lock, &RLockType)) {
        return rlock_give((RLock *)lock) < 0 ? NULL : Py_NewRef(Py_None);
    }
    return PyObject_CallMethodNoArgs(lock, str_release);
}

/* collections.deque and its append (METH_O), called without a method lookup. */
static PyTypeObject *deque_type;
static PyCFunction deque_append_fn;

/* EventQueue.put(record): 1 or 0 (wake the flusher or not), -1 with an exception. */
static int
put_record(const QueueView *view, PyObject *queue, PyObject *record)
{
    PyObject *lock, *items, *ignored;
    Py_ssize_t record_size, size = 0, tracked, n = 0;
    int failed = 1;

    if (!PyTuple_CheckExact(record) || PyTuple_GET_SIZE(record) != RECORD_LENGTH) {
        PyErr_SetString(PyExc_TypeError, "a queue record is a tuple of 10");
        return -1;
    }
    record_size = PyLong_AsSsize_t(PyTuple_GET_ITEM(record, RECORD_SIZE));
    if (record_size == -1 && PyErr_Occurred()) {
        return -1;
    }
    lock = queue_field(view, queue, Q_LOCK); /* read each time: a forked child's clear() makes new ones */
    if (lock == NULL) {
        return -1;
    }
    ignored = Py_IS_TYPE(lock, &RLockType) ? (rlock_take((RLock *)lock) < 0 ? NULL : Py_NewRef(Py_True))
                                           : PyObject_CallMethodNoArgs(lock, str_acquire);
    if (ignored == NULL) {
        Py_DECREF(lock);
        return -1;
    }
    Py_DECREF(ignored);
    /* try: */
    items = queue_field(view, queue, Q_ITEMS);
    if (items == NULL) {
        goto release;
    }
    ignored = deque_type != NULL && Py_IS_TYPE(items, deque_type)
                  ? deque_append_fn(items, record)
                  : PyObject_CallMethodOneArg(items, str_append, record);
    if (ignored == NULL) {
        Py_DECREF(items);
        goto release;
    }
    Py_DECREF(ignored);
    n = PyObject_Length(items);
    Py_DECREF(items);
    if (n < 0) {
        goto release;
    }
    if (Py_IS_TYPE(lock, &RLockType)) { /* the counters kept on the lock: no int made */
        RLock *held = (RLock *)lock;
        held->bytes += record_size;
        held->tracked += 1;
        size = held->bytes;
    }
    else if (add_to_field(view, queue, Q_BYTES, record_size, &size) < 0
             || add_to_field(view, queue, Q_TRACKED, 1, &tracked) < 0) {
        goto release;
    }
    if (n > view->max_events || size > view->max_bytes) {
        ignored = PyObject_CallMethodNoArgs(queue, str__shed);
        if (ignored == NULL) {
            goto release;
        }
        Py_DECREF(ignored);
    }
    failed = 0;
release: /* finally: */
    if (failed) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        ignored = lock_release(lock);
        Py_XDECREF(ignored);
        Py_DECREF(lock);
        if (ignored == NULL) { /* the release's own exception wins, the first as its __context__, as in Python */
            chain_context(type, value, traceback);
        }
        else {
            PyErr_Restore(type, value, traceback);
        }
        return -1;
    }
    ignored = lock_release(lock);
    Py_DECREF(lock);
    if (ignored == NULL) {
        return -1;
    }
    Py_DECREF(ignored);
    return n == view->wake_count || (size - record_size < view->wake_bytes && view->wake_bytes <= size);
}

static PyObject *
queue_put(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    QueueView view;
    int wake;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "queue_put(queue, record)");
        return NULL;
    }
    if (queue_view(args[0], &view) < 0) {
        return NULL;
    }
    wake = put_record(&view, args[0], args[1]);
    Py_XDECREF(view.dict);
    Py_DECREF(view.type);
    if (wake < 0) {
        return NULL;
    }
    return PyBool_FromLong(wake);
}

/* --- Tracker: Client._track for the common call -------------------------------------------------------------- */

enum { CTX_CAPTURE, CTX_USER, CTX_BLOCKED, CTX_KIND, CTX_RAW, CTX_TEE, CTX_FIELDS };
enum { CLIENT_CAPTURE, CLIENT_ACCEPTING, CLIENT_STARTED, CLIENT_ENFORCER, CLIENT_FIELDS };

#define WANTED_MAX 8 /* the ASGI header names a capture keeps, compared by length and bytes */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *client;      /* read as attributes: taking its __dict__ would slow every Python read of the client
                            * (the middleware's, ~530 instructions a request), not only these */
    PyObject *fallback;    /* the Python Client._track_py, bound: every call this does not handle */
    PyObject *names;       /* Client._names: the event names already checked */
    PyObject *known;       /* _schema._KNOWN_KEYS */
    PyObject *seq;         /* Client._seq */
    PyObject *queue;       /* Client.queue */
    QueueView view;        /* its dict and bounds */
    PyObject *context;     /* _context.current_context */
    PyObject *ctx_type;    /* _context.RequestContext: its slots are read at their offsets */
    Py_ssize_t offsets[CTX_FIELDS]; /* of _capture, user, blocked in a RequestContext; -1: read as attributes */
    PyObject *ip_key;      /* Client._ip_key */
    PyObject *wanted;      /* Client._asgi_wanted: the ASGI header names a capture keeps */
    const char *wanted_names[WANTED_MAX]; /* their bytes (held by the frozenset), compared without a set lookup */
    PyObject *wanted_objs[WANTED_MAX];    /* the names themselves (borrowed: the frozenset holds them), which a capture
                                           * keeps in place of each request's own copy */
    Py_ssize_t wanted_lens[WANTED_MAX];
    int wanted_count;      /* -1: more than WANTED_MAX, or not all bytes (looked up in the frozenset) */
    PyObject *unreadable;  /* callable(exception): logs a request that could not be read */
    PyTypeObject *client_type; /* the client's type when created, whose slots these are: */
    Py_ssize_t client_slots[CLIENT_FIELDS]; /* Client._capture, _accepting, _started_pid, enforcer; -1: attributes */
    PyObject *enforcer_type; /* the client's Enforcer type, and its actions slot */
    PyObject *actions_type;  /* the type of its actions (_blocking.Actions), and its hot_events slot */
    Py_ssize_t actions_slot, hot_slot;
    KeyCache key_cache;
} Tracker;

static int
tracker_traverse(Tracker *self, visitproc visit, void *arg)
{
    Py_VISIT(self->client);
    Py_VISIT(self->fallback);
    Py_VISIT(self->names);
    Py_VISIT(self->known);
    Py_VISIT(self->seq);
    Py_VISIT(self->queue);
    Py_VISIT(self->view.dict);
    Py_VISIT(self->view.type);
    Py_VISIT(self->context);
    Py_VISIT(self->ctx_type);
    Py_VISIT(self->ip_key);
    Py_VISIT(self->wanted);
    Py_VISIT(self->unreadable);
    Py_VISIT(self->client_type);
    Py_VISIT(self->enforcer_type);
    Py_VISIT(self->actions_type);
    return 0;
}

static int
tracker_clear(Tracker *self)
{
    Py_CLEAR(self->client);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->names);
    Py_CLEAR(self->known);
    Py_CLEAR(self->seq);
    Py_CLEAR(self->queue);
    Py_CLEAR(self->view.dict);
    Py_CLEAR(self->view.type);
    Py_CLEAR(self->context);
    Py_CLEAR(self->ctx_type);
    Py_CLEAR(self->ip_key);
    Py_CLEAR(self->wanted);
    Py_CLEAR(self->unreadable);
    Py_CLEAR(self->client_type);
    Py_CLEAR(self->enforcer_type);
    Py_CLEAR(self->actions_type);
    key_cache_clear(&self->key_cache);
    return 0;
}

static void
tracker_dealloc(Tracker *self)
{
    PyObject_GC_UnTrack(self);
    tracker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A RequestContext field: the slot itself for an exact RequestContext, else the attribute. A new reference. */
static PyObject *
ctx_field(Tracker *self, PyObject *ctx, int field, PyObject *name)
{
    if ((PyObject *)Py_TYPE(ctx) == self->ctx_type && self->offsets[field] >= 0) {
        PyObject *value = *(PyObject **)((char *)ctx + self->offsets[field]);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(ctx, name); /* an unset slot raises its AttributeError here */
}

/* The set slot of an exact RequestContext (borrowed), or NULL (not that type, not a slot, or unset). */
static PyObject *
ctx_slot(Tracker *self, PyObject *ctx, int field)
{
    if ((PyObject *)Py_TYPE(ctx) != self->ctx_type || self->offsets[field] < 0) {
        return NULL;
    }
    return *(PyObject **)((char *)ctx + self->offsets[field]);
}

/* A client attribute: its slot for the client's type at creation, else the attribute. A new reference. */
static PyObject *
client_field(Tracker *self, int field, PyObject *name)
{
    PyObject *client = self->client;
    if (Py_TYPE(client) == self->client_type && self->client_slots[field] >= 0) {
        PyObject *value = *(PyObject **)((char *)client + self->client_slots[field]);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(client, name); /* an unset slot raises its AttributeError here */
}

static PyObject *str_client, *str_headers, *str_path, *str_method, *str_type, *str_query_string, *str_path_params,
    *str_kind, *str_raw, *str_body_tee, *str_ended, *str_read_any, *str_overflow, *empty_str, *empty_bytes,
    *empty_tuple;

/* tee.ended and tee.read_any and not tee.overflow: 1, 0, or -1 with an exception. */
static int
tee_complete(PyObject *tee)
{
    PyObject *const names[3] = {str_ended, str_read_any, str_overflow};
    int i;
    for (i = 0; i < 3; i++) {
        PyObject *value = PyObject_GetAttr(tee, names[i]);
        int truth;
        if (value == NULL) {
            return -1;
        }
        truth = PyObject_IsTrue(value);
        Py_DECREF(value);
        if (truth < 0) {
            return -1;
        }
        if (truth == (i == 2)) { /* not ended, not read, or overflowed */
            return 0;
        }
    }
    return 1;
}

/* Whether the garbage collector can find no tracked object through `value`, so that it cannot be part of a
 * reference cycle: an object of no GC type, an untracked one (an untracked dict holds only such objects), or a
 * tuple of those, `depth` tuples deep (a capture's tuple of header pairs: 3). */
static int
reaches_nothing_tracked(PyObject *value, int depth)
{
    PyTypeObject *type = Py_TYPE(value);
    Py_ssize_t i;
    if (!PyType_IS_GC(type)) { /* text, bytes, numbers, None: read off the type's flags */
        return 1;
    }
    if (type == &PyTuple_Type && depth > 0) {
        for (i = PyTuple_GET_SIZE(value) - 1; i >= 0; i--) { /* from the end: a capture's tee, path parameters */
            PyObject *item = PyTuple_GET_ITEM(value, i);
            if (!PyType_IS_GC(Py_TYPE(item))) {
                continue;
            }
            if (Py_IS_TYPE(item, &PyTuple_Type) && PyTuple_GET_SIZE(item) == 2 /* a header pair, inline */
                && !PyType_IS_GC(Py_TYPE(PyTuple_GET_ITEM(item, 0))) && !PyType_IS_GC(Py_TYPE(PyTuple_GET_ITEM(item, 1)))) {
                continue;
            }
            if (!reaches_nothing_tracked(item, depth - 1)) {
                return 0;
            }
        }
        return 1;
    }
    return !PyObject_GC_IsTracked(value);
}

/* A request's capture is kept by its events until they are sent: when it holds nothing tracked (its dicts are
 * this code's own copies, never changed), the collector need not walk it (nor count it towards a full collection).
 * A capture holding a body tee, or path parameters that are objects, stays tracked. */
static void
untrack_plain_capture(PyObject *captured)
{
    if (reaches_nothing_tracked(captured, 3)) {
        PyObject_GC_UnTrack(captured);
    }
}

/* Whether a header name (exact bytes) is one the capture keeps: 1 (*kept: the name to keep, borrowed: this Tracker's
 * own object of that name, else the name itself), 0, or -1 with an exception. */
static int
name_wanted(Tracker *self, PyObject *name, PyObject **kept)
{
    const char *text = PyBytes_AS_STRING(name);
    Py_ssize_t length = PyBytes_GET_SIZE(name);
    int i;
    *kept = name;
    if (self->wanted_count < 0) {
        return PySet_Contains(self->wanted, name);
    }
    for (i = 0; i < self->wanted_count; i++) {
        if (self->wanted_lens[i] == length && memcmp(self->wanted_names[i], text, (size_t)length) == 0) {
            *kept = self->wanted_objs[i];
            return 1;
        }
    }
    return 0;
}

#define WANTED_KEPT 16 /* headers kept in one pass; a request with more wanted headers is captured by Python */

/* _context._wanted_headers() of a scope's headers (an exact list or tuple) whose every item is a pair of an exact
 * bytes name and a value: the wanted names and their values, flat and in order, each name this Tracker's own object
 * of it. A new reference; NULL without an exception for any other shape (the Python method captures it). */
static PyObject *
kept_headers(Tracker *self, PyObject *headers)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(headers), i, kept = 0;
    PyObject **items = PySequence_Fast_ITEMS(headers), *out, *flat[2 * WANTED_KEPT];
    int in = 0;
    for (i = 0; i < n && in >= 0; i++) { /* comparing bytes runs no Python code: the list stays as it is */
        PyObject *pair = items[i], *name;
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0))) {
            in = -1; /* another shape: the Python method's */
        }
        else if ((in = name_wanted(self, PyTuple_GET_ITEM(pair, 0), &name)) > 0) {
            if (kept == 2 * WANTED_KEPT) {
                in = -1;
            }
            else { /* held: making the tuple may run a finalizer that changes a list */
                flat[kept++] = Py_NewRef(name);
                flat[kept++] = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
            }
        }
    }
    out = NULL;
    if (in >= 0 && (out = PyTuple_New(kept)) != NULL) {
        for (i = 0; i < kept; i++) {
            PyTuple_SET_ITEM(out, i, flat[i]);
        }
        return out;
    }
    for (i = 0; i < kept; i++) {
        Py_DECREF(flat[i]);
    }
    return out; /* NULL: with an exception, a fault; without, the Python method captures the request */
}

/* _context._text_size(): the length of exact text or bytes, else 0. */
static Py_ssize_t
text_size(PyObject *value)
{
    if (PyUnicode_CheckExact(value)) {
        return PyUnicode_GET_LENGTH(value);
    }
    return PyBytes_CheckExact(value) ? PyBytes_GET_SIZE(value) : 0;
}

/* _context.capture_size(): the text a request's capture keeps (path, query, the kept headers; a WSGI environ's
 * entries), which its first event adds to the queue's estimate. Reads only exact types: no Python code runs. */
static long long
capture_size(PyObject *captured)
{
    PyObject *item;
    Py_ssize_t i, pos = 0;
    long long size = 0;
    if (!PyTuple_CheckExact(captured) || PyTuple_GET_SIZE(captured) < 8 || !PyLong_CheckExact(PyTuple_GET_ITEM(captured, 0))) {
        return 0;
    }
    i = PyLong_AsLong(PyTuple_GET_ITEM(captured, 0));
    if (i == -1 && PyErr_Occurred()) { /* (no kind of ours) */
        PyErr_Clear();
    }
    if (i == 0 && PyTuple_GET_SIZE(captured) == 9) { /* ASGI */
        size = text_size(PyTuple_GET_ITEM(captured, 3)) + text_size(PyTuple_GET_ITEM(captured, 6));
        item = PyTuple_GET_ITEM(captured, 2);
        if (PyTuple_CheckExact(item)) { /* names and values, flat */
            for (i = 0; i < PyTuple_GET_SIZE(item); i++) {
                size += text_size(PyTuple_GET_ITEM(item, i));
            }
        }
        else if (PyList_CheckExact(item)) { /* headers that were not all pairs, every one kept as it was */
            for (i = 0; i < PyList_GET_SIZE(item); i++) { /* text_size runs no Python code: the list stays */
                PyObject *pair = PyList_GET_ITEM(item, i);
                if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
                    size += text_size(PyTuple_GET_ITEM(pair, 0)) + text_size(PyTuple_GET_ITEM(pair, 1));
                }
            }
        }
        return size;
    }
    if (PyTuple_GET_SIZE(captured) != 8) {
        return 0;
    }
    size = text_size(PyTuple_GET_ITEM(captured, 2)); /* WSGI, Django: the path, the environ's entries */
    item = PyTuple_GET_ITEM(captured, 1);
    if (PyDict_CheckExact(item)) {
        PyObject *key, *value;
        while (PyDict_Next(item, &pos, &key, &value)) {
            size += text_size(value);
        }
    }
    return size;
}

/* RequestContext.capture() of an ASGI request whose scope is a plain dict:
 * the same tuple, stored in ctx._capture. A new reference; NULL without an exception for every other request (the
 * Python method captures it); NULL with one on a fault. */
static PyObject *
asgi_capture(Tracker *self, PyObject *ctx)
{
    PyObject *kind = ctx_slot(self, ctx, CTX_KIND), *raw = ctx_slot(self, ctx, CTX_RAW);
    PyObject *tee = ctx_slot(self, ctx, CTX_TEE), *names[6], *defaults[6], *values[6], *headers = NULL;
    PyObject *params = NULL, *captured = NULL;
    PyObject **slot;
    int i, held = 0;

    if (kind == NULL || raw == NULL || tee == NULL || self->offsets[CTX_CAPTURE] < 0 || !PyLong_CheckExact(kind)
        || PyLong_AsLong(kind) != 0 /* ASGI */ || !PyDict_CheckExact(raw)) {
        return NULL;
    }
    Py_INCREF(kind); /* held: reading the tee's fields may run Python code */
    Py_INCREF(raw);
    Py_INCREF(tee);
    if (tee != Py_None) { /* the tee of a body the application read in full, else None (_complete_body) */
        int complete = tee_complete(tee);
        if (complete < 0) {
            goto done;
        }
        if (!complete) {
            Py_SETREF(tee, Py_NewRef(Py_None));
        }
    }
    names[0] = str_client, names[1] = str_headers, names[2] = str_path, names[3] = str_method, names[4] = str_type;
    names[5] = str_query_string;
    defaults[0] = defaults[1] = defaults[3] = defaults[4] = Py_None, defaults[2] = empty_str;
    defaults[5] = empty_bytes;
    for (i = 0; i < 6; i++) { /* raw[key], or the ASGI default of a scope made by hand */
        values[i] = PyDict_GetItemWithError(raw, names[i]);
        if (values[i] == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            values[i] = defaults[i];
        }
    }
    for (i = 0; i < 6; i++) { /* held: the allocations below may run the garbage collector, and a finalizer the
                               * scope's entries */
        Py_INCREF(values[i]);
    }
    held = 1;
    headers = values[1];
    if (headers == Py_None) {
        headers = Py_NewRef(empty_tuple);
    }
    else if (PyTuple_CheckExact(headers) || PyList_CheckExact(headers)) {
        headers = kept_headers(self, headers);
    }
    else {
        headers = NULL;
    }
    if (headers == NULL) {
        goto done; /* with an exception, a fault; without, not handled: the Python method */
    }
    params = PyDict_GetItemWithError(raw, str_path_params);
    if (params == NULL || params == Py_None || (PyDict_CheckExact(params) && PyDict_GET_SIZE(params) == 0)) {
        if (PyErr_Occurred()) {
            params = NULL;
            goto done;
        }
        params = Py_NewRef(Py_None);
    }
    else if (PyDict_CheckExact(params)) {
        PyObject *own = Py_NewRef(params); /* held while copied */
        params = PyDict_Copy(own); /* the application may change its own */
        Py_DECREF(own);
        if (params == NULL) {
            goto done;
        }
    }
    else {
        params = NULL;
        goto done; /* not handled: the Python method */
    }
    captured = PyTuple_Pack(9, kind, values[0], headers, values[2], values[3], values[4], values[5], params, tee);
    if (captured != NULL) {
        untrack_plain_capture(captured);
        slot = (PyObject **)((char *)ctx + self->offsets[CTX_CAPTURE]); /* self._capture = captured */
        Py_XSETREF(*slot, Py_NewRef(captured));
    }
done:
    if (held) {
        for (i = 0; i < 6; i++) {
            Py_DECREF(values[i]);
        }
    }
    Py_XDECREF(headers);
    Py_XDECREF(params);
    Py_DECREF(kind);
    Py_DECREF(raw);
    Py_DECREF(tee);
    return captured;
}

/* --- the WSGI capture: _context._wsgi_capture for a plain-dict environ --------------------------------------- */

static PyObject *str_werkzeug_request, *str_view_args, *str___dict__, *str_form, *str__cached_json, *str_script_name,
    *str_path_info, *str_request_method, *str_get, *environ_keys[7];

/* getattr(obj, name, None): a new reference, NULL with an exception for anything but a missing attribute. */
static PyObject *
attr_or_none(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        value = Py_NewRef(Py_None);
    }
    return value;
}

/* Whether a str holds a lone surrogate (not UTF-8 encodable: _schema.representable replaces it). */
static int
has_surrogate(PyObject *text)
{
    Py_ssize_t i, n;
    int kind;
    const void *data;
    if (PyUnicode_IS_ASCII(text) || PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND) {
        return 0;
    }
    kind = PyUnicode_KIND(text);
    data = PyUnicode_DATA(text);
    n = PyUnicode_GET_LENGTH(text);
    for (i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF) {
            return 1;
        }
    }
    return 0;
}

#define JSONABLE_MAX_DEPTH 20 /* _body.jsonable's max_depth */

/* _body.jsonable(value) for plain JSON values (dicts with str keys, lists, tuples, str without lone surrogates, int,
 * bool, None, finite floats, less than 20 levels deep): a new reference; NULL without an exception for anything
 * else (the Python function copies it), NULL with one on a fault. */
static PyObject *
plain_jsonable(PyObject *value, int depth)
{
    if (value == Py_None || PyBool_Check(value) || PyLong_CheckExact(value)) {
        return Py_NewRef(value);
    }
    if (PyUnicode_CheckExact(value)) {
        return has_surrogate(value) ? NULL : Py_NewRef(value); /* representable() replaces a lone surrogate */
    }
    if (PyFloat_CheckExact(value)) {
        return isfinite(PyFloat_AS_DOUBLE(value)) ? Py_NewRef(value) : NULL;
    }
    if (depth >= JSONABLE_MAX_DEPTH) {
        return NULL;
    }
    if (PyDict_CheckExact(value)) {
        PyObject *copy = PyDict_New(), *key, *item;
        Py_ssize_t pos = 0;
        if (copy == NULL) {
            return NULL;
        }
        Py_INCREF(value); /* held while copied */
        while (PyDict_Next(value, &pos, &key, &item)) {
            PyObject *made;
            int failed;
            if (!PyUnicode_CheckExact(key) || has_surrogate(key)) {
                Py_CLEAR(copy);
                break;
            }
            Py_INCREF(key);
            Py_INCREF(item);
            made = plain_jsonable(item, depth + 1);
            failed = made == NULL || PyDict_SetItem(copy, key, made) < 0;
            Py_DECREF(key);
            Py_DECREF(item);
            Py_XDECREF(made);
            if (failed) {
                Py_CLEAR(copy);
                break;
            }
        }
        Py_DECREF(value);
        return copy;
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        PyObject *items = PySequence_Fast(value, ""), *copy;
        Py_ssize_t i, n;
        if (items == NULL) {
            return NULL;
        }
        n = PySequence_Fast_GET_SIZE(items);
        copy = PyList_New(n);
        for (i = 0; copy != NULL && i < n; i++) {
            PyObject *item, *made;
            if (i >= PySequence_Fast_GET_SIZE(items)) { /* a list the copy of an item shortened */
                Py_CLEAR(copy);
                break;
            }
            item = Py_NewRef(PySequence_Fast_GET_ITEM(items, i)); /* held: a finalizer may empty the list meanwhile */
            made = plain_jsonable(item, depth + 1);
            Py_DECREF(item);
            if (made == NULL) {
                Py_CLEAR(copy);
                break;
            }
            PyList_SET_ITEM(copy, i, made);
        }
        Py_DECREF(items);
        return copy;
    }
    return NULL;
}

/* What a Werkzeug request (environ["werkzeug.request"]) adds to the capture: its path parameters, when the
 * application parsed neither a form nor JSON. 1 with *params set (a new reference), 0 for a request the Python code
 * captures (a form or JSON to copy, an unusual value), -1 with an exception. */
static int
werkzeug_params(PyObject *wz, PyObject **params, PyObject **json)
{
    PyObject *view_args, *dict, *cached;
    int has_form;

    view_args = attr_or_none(wz, str_view_args);
    if (view_args == NULL) {
        return -1;
    }
    if (view_args == Py_None || (PyDict_CheckExact(view_args) && PyDict_GET_SIZE(view_args) == 0)) {
        Py_SETREF(view_args, Py_NewRef(Py_None));
    }
    else if (PyDict_CheckExact(view_args)) {
        Py_SETREF(view_args, PyDict_Copy(view_args)); /* the application may change its own */
        if (view_args == NULL) {
            return -1;
        }
    }
    else {
        Py_DECREF(view_args);
        return 0;
    }
    dict = PyObject_GetAttr(wz, str___dict__); /* "form" in wz.__dict__: the application parsed a form */
    if (dict == NULL || !PyDict_Check(dict)) {
        Py_XDECREF(dict);
        Py_DECREF(view_args);
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    has_form = PyDict_Contains(dict, str_form);
    Py_DECREF(dict);
    if (has_form != 0) {
        Py_DECREF(view_args);
        return has_form < 0 ? -1 : 0;
    }
    cached = PyObject_GetAttr(wz, str__cached_json); /* (Ellipsis, Ellipsis) until the application parsed JSON */
    if (cached == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(view_args);
            return -1;
        }
        PyErr_Clear();
        *json = Py_NewRef(Py_None);
    }
    else if (PyTuple_CheckExact(cached) && PyTuple_GET_SIZE(cached) >= 1) {
        PyObject *value = PyTuple_GET_ITEM(cached, 0);
        *json = value == Py_Ellipsis ? Py_NewRef(Py_None) : plain_jsonable(value, 0); /* a copy: the app may change */
        Py_DECREF(cached);
        if (*json == NULL) {
            Py_DECREF(view_args);
            return PyErr_Occurred() ? -1 : 0;
        }
    }
    else {
        Py_DECREF(cached);
        Py_DECREF(view_args);
        return 0;
    }
    *params = view_args;
    return 1;
}

/* RequestContext.capture() of a WSGI request whose environ is a plain dict and whose body was not teed (the
 * middleware tees only a request with a body): the same tuple, stored in ctx._capture. A new reference; NULL without
 * an exception for every other request (the Python method captures it); NULL with one on a fault. */
static PyObject *
wsgi_capture(Tracker *self, PyObject *ctx)
{
    PyObject *kind = ctx_slot(self, ctx, CTX_KIND), *raw = ctx_slot(self, ctx, CTX_RAW);
    PyObject *tee = ctx_slot(self, ctx, CTX_TEE), *params = NULL, *json = NULL, *parts = NULL, *path = NULL, *verb;
    PyObject *value, *script, *info, *captured = NULL, **slot;
    int i;

    if (kind == NULL || raw == NULL || tee == NULL || self->offsets[CTX_CAPTURE] < 0 || !PyLong_CheckExact(kind)
        || PyLong_AsLong(kind) != 1 /* WSGI */ || !PyDict_CheckExact(raw)) {
        return NULL;
    }
    Py_INCREF(kind); /* held: a Werkzeug request's attributes may run Python code */
    Py_INCREF(raw);
    Py_INCREF(tee);
    value = PyDict_GetItemWithError(raw, str_werkzeug_request);
    if (value == NULL || value == Py_None) {
        if (PyErr_Occurred()) {
            goto done;
        }
        params = Py_NewRef(Py_None);
        json = Py_NewRef(Py_None);
    }
    else {
        int handled;
        Py_INCREF(value);
        handled = werkzeug_params(value, &params, &json);
        Py_DECREF(value);
        if (handled <= 0) {
            params = json = NULL;
            goto done;
        }
    }
    if (tee != Py_None) { /* the body the application read in full, unless its JSON was taken (_complete_body) */
        int complete = json != Py_None ? 0 : tee_complete(tee);
        if (complete < 0) {
            goto done;
        }
        if (!complete) {
            Py_SETREF(tee, Py_NewRef(Py_None));
        }
    }
    parts = PyDict_New(); /* _environ_parts: the entries as they are now */
    if (parts == NULL) {
        goto done;
    }
    for (i = 0; i < 8; i++) {
        PyObject *key = i < 7 ? environ_keys[i] : self->ip_key;
        if (key == Py_None) {
            continue;
        }
        value = PyDict_GetItemWithError(raw, key);
        if (value == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            continue;
        }
        if (PyDict_SetItem(parts, key, value) < 0) {
            goto done;
        }
    }
    script = PyDict_GetItemWithError(raw, str_script_name); /* _wsgi_path, for ASCII text (the common case) */
    if (script == NULL && PyErr_Occurred()) {
        goto done;
    }
    info = PyDict_GetItemWithError(raw, str_path_info);
    if (info == NULL && PyErr_Occurred()) {
        goto done;
    }
    script = script == NULL ? empty_str : script;
    info = info == NULL ? empty_str : info;
    if (!PyUnicode_CheckExact(script) || !PyUnicode_CheckExact(info)) {
        goto done;
    }
    path = PyUnicode_Concat(script, info);
    if (path == NULL || !PyUnicode_IS_ASCII(path)) {
        goto done;
    }
    verb = PyDict_GetItemWithError(raw, str_request_method);
    if (verb == NULL) {
        if (PyErr_Occurred()) {
            goto done;
        }
        verb = str_get;
    }
    Py_INCREF(verb); /* held: making the tuple may run the garbage collector, and a finalizer may change the environ */
    captured = PyTuple_Pack(8, kind, parts, path, verb, params, Py_None, json, tee);
    Py_DECREF(verb);
    if (captured != NULL) {
        untrack_plain_capture(captured);
        slot = (PyObject **)((char *)ctx + self->offsets[CTX_CAPTURE]); /* self._capture = captured */
        Py_XSETREF(*slot, Py_NewRef(captured));
    }
done:
    Py_XDECREF(params);
    Py_XDECREF(json);
    Py_XDECREF(parts);
    Py_XDECREF(path);
    Py_DECREF(kind);
    Py_DECREF(raw);
    Py_DECREF(tee);
    return captured;
}

static PyObject *
wake_flusher(PyObject *client, int hot)
{
    PyObject *flusher = PyObject_GetAttr(client, str_flusher), *result;
    if (flusher == NULL) {
        return NULL;
    }
    if (hot) {
        PyObject *args[2] = {flusher, Py_True};
        PyObject *kwnames = PyTuple_Pack(1, str_hot);
        if (kwnames == NULL) {
            Py_DECREF(flusher);
            return NULL;
        }
        result = PyObject_VectorcallMethod(str_wake, args, 1, kwnames);
        Py_DECREF(kwnames);
    }
    else {
        result = PyObject_CallMethodNoArgs(flusher, str_wake);
    }
    Py_DECREF(flusher);
    return result;
}

/* The event name's hot_events membership: client.enforcer.actions.hot_events (slots, read at their offsets). */
static int
is_hot(Tracker *self, PyObject *name)
{
    PyObject *enforcer, *actions, *hot;
    int found;
    enforcer = client_field(self, CLIENT_ENFORCER, str_enforcer);
    if (enforcer == NULL) {
        return -1;
    }
    if ((PyObject *)Py_TYPE(enforcer) == self->enforcer_type && self->actions_slot >= 0
        && (actions = *(PyObject **)((char *)enforcer + self->actions_slot)) != NULL) {
        Py_INCREF(actions);
    }
    else {
        actions = PyObject_GetAttr(enforcer, str_actions);
    }
    Py_DECREF(enforcer);
    if (actions == NULL) {
        return -1;
    }
    if ((PyObject *)Py_TYPE(actions) == self->actions_type && self->hot_slot >= 0
        && (hot = *(PyObject **)((char *)actions + self->hot_slot)) != NULL) {
        Py_INCREF(hot);
    }
    else {
        hot = PyObject_GetAttr(actions, str_hot_events);
    }
    Py_DECREF(actions);
    if (hot == NULL) {
        return -1;
    }
    found = PySequence_Contains(hot, name);
    Py_DECREF(hot);
    return found;
}

/* _client.Client._track_py's inline path: (event_name, options, properties, user_identifiers, timestamp,
 * collect_body, request), all positional; anything but a known name with common properties goes to the Python
 * code. */
static PyObject *
tracker_call(Tracker *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *name, *properties, *props = NULL, *ctx = NULL, *captured = NULL, *user = NULL, *record = NULL;
    PyObject *seq = NULL, *attr, *result = NULL;
    long long size = 0;
    int same_request = 0, blocked = 0, known, wake;
    struct timespec now;

    if (nargs != 7 || kwnames != NULL || args[1] != Py_None || args[3] != Py_None || args[4] != Py_None
        || args[5] != Py_False || args[6] != Py_None || !PyUnicode_CheckExact(args[0])) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    name = args[0];
    properties = args[2];
    known = PySet_Contains(self->names, name);
    if (known < 0) {
        return NULL;
    }
    if (!known) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    if (properties != Py_None && !(PyDict_CheckExact(properties) && PyDict_GET_SIZE(properties) == 0)) {
        props = common_properties(properties, self->known, &size, &self->key_cache);
        if (props == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
    }
    if (PyContextVar_Get(self->context, NULL, &ctx) < 0) {
        goto done;
    }
    if (ctx != NULL && ctx != Py_None) {
        captured = ctx_field(self, ctx, CTX_CAPTURE, str__capture);
        if (captured == NULL) {
            goto done;
        }
        same_request = captured != Py_None;
        if (!same_request) {
            Py_DECREF(captured);
            captured = asgi_capture(self, ctx);
            if (captured == NULL && !PyErr_Occurred()) {
                captured = wsgi_capture(self, ctx);
            }
            if (captured == NULL && !PyErr_Occurred()) {
                captured = PyObject_CallMethodObjArgs(ctx, str_capture, self->ip_key, self->wanted, NULL);
            }
            if (captured == NULL) { /* a request that cannot be read is no app error: logged, the event kept */
                PyObject *type, *value, *traceback, *logged;
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    goto done;
                }
                PyErr_Fetch(&type, &value, &traceback);
                PyErr_NormalizeException(&type, &value, &traceback);
                if (traceback != NULL) {
                    PyException_SetTraceback(value, traceback);
                }
                logged = PyObject_CallOneArg(self->unreadable, value);
                if (logged == NULL) {
                    chain_context(type, value, traceback); /* __context__, as an except block sets */
                    goto done;
                }
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(traceback);
                Py_DECREF(logged);
                captured = Py_NewRef(Py_None);
            }
            size += capture_size(captured); /* counted once, with the request's first event */
        }
        user = ctx_field(self, ctx, CTX_USER, str_user);
        if (user == NULL) {
            goto done;
        }
        attr = ctx_field(self, ctx, CTX_BLOCKED, str_blocked);
        if (attr == NULL) {
            goto done;
        }
        blocked = attr != Py_None;
        Py_DECREF(attr);
    }
    clock_gettime(CLOCK_REALTIME, &now); /* time.time_ns()'s clock */
    seq = PyIter_Next(self->seq);
    if (seq == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the event sequence ended");
        }
        goto done;
    }
    record = PyTuple_New(RECORD_LENGTH);
    if (record == NULL) {
        goto done;
    }
    {
        PyObject *ns = PyLong_FromLongLong((long long)now.tv_sec * 1000000000LL + now.tv_nsec);
        PyObject *estimate = PyLong_FromLongLong(size + EXTRA_SIZE);
        if (ns == NULL || estimate == NULL) {
            Py_XDECREF(ns);
            Py_XDECREF(estimate);
            goto done;
        }
        PyTuple_SET_ITEM(record, 0, ns);
        PyTuple_SET_ITEM(record, 1, seq);
        seq = NULL;
        PyTuple_SET_ITEM(record, 2, Py_NewRef(name));
        PyTuple_SET_ITEM(record, 3, props != NULL ? Py_NewRef(props) : Py_NewRef(Py_None));
        PyTuple_SET_ITEM(record, 4, user != NULL ? Py_NewRef(user) : Py_NewRef(Py_None));
        PyTuple_SET_ITEM(record, 5, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(record, 6, captured != NULL ? Py_NewRef(captured) : Py_NewRef(Py_None));
        PyTuple_SET_ITEM(record, 7, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(record, 8, estimate);
        PyTuple_SET_ITEM(record, 9, PyBool_FromLong(blocked));
        /* Only the queue (then the flusher) ever holds a record, so no cycle can pass through it: untracked, the
         * queued events are not walked by every collection, nor counted towards a full one. */
        PyObject_GC_UnTrack(record);
    }
    /* if self._capture is not None or not self._accepting: return self._enqueue_slow(record) */
    attr = client_field(self, CLIENT_CAPTURE, str__capture);
    if (attr == NULL) {
        goto done;
    }
    if (attr == Py_None) {
        int accepting;
        Py_DECREF(attr);
        attr = client_field(self, CLIENT_ACCEPTING, str__accepting);
        if (attr == NULL) {
            goto done;
        }
        accepting = PyObject_IsTrue(attr);
        Py_DECREF(attr);
        if (accepting < 0) {
            goto done;
        }
        if (!accepting) {
            result = PyObject_CallMethodOneArg(self->client, str__enqueue_slow, record);
            goto done;
        }
    }
    else {
        Py_DECREF(attr);
        result = PyObject_CallMethodOneArg(self->client, str__enqueue_slow, record);
        goto done;
    }
    /* if self._started_pid is None or (not same_request and self._started_pid != os.getpid()): self._start() */
    attr = client_field(self, CLIENT_STARTED, str__started_pid);
    if (attr == NULL) {
        goto done;
    }
    {
        int start = attr == Py_None;
        if (!start && !same_request) {
            long started = PyLong_AsLong(attr);
            if (started == -1 && PyErr_Occurred()) {
                Py_DECREF(attr);
                goto done;
            }
            start = started != (long)getpid();
        }
        Py_DECREF(attr);
        if (start) {
            attr = PyObject_CallMethodNoArgs(self->client, str__start);
            if (attr == NULL) {
                goto done;
            }
            Py_DECREF(attr);
        }
    }
    wake = put_record(&self->view, self->queue, record);
    if (wake < 0) {
        goto done;
    }
    if (!wake) { /* an event that feeds a playbook is sent now, not at the heartbeat */
        wake = is_hot(self, name);
        if (wake < 0) {
            goto done;
        }
        if (wake) {
            wake = 2;
        }
    }
    if (wake) {
        attr = wake_flusher(self->client, wake == 2);
        if (attr == NULL) {
            goto done;
        }
        Py_DECREF(attr);
    }
    result = Py_NewRef(Py_True);
done:
    Py_XDECREF(props);
    Py_XDECREF(ctx);
    Py_XDECREF(captured);
    Py_XDECREF(user);
    Py_XDECREF(seq);
    Py_XDECREF(record);
    return result;
}

/* The offset of an object slot (a `__slots__` member) of `type`, or -1 when `name` is something else. */
static Py_ssize_t
slot_offset(PyObject *type, PyObject *name)
{
    PyObject *descr = PyObject_GetAttr(type, name);
    Py_ssize_t offset = -1;
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY)) {
            offset = member->offset;
        }
    }
    Py_DECREF(descr);
    return offset;
}

/* The slots the common call reads: the client's switches, client.enforcer.actions.hot_events. */
static int
tracker_slots(Tracker *self)
{
    PyObject *const names[CLIENT_FIELDS] = {str__capture, str__accepting, str__started_pid, str_enforcer};
    PyObject *enforcer, *actions;
    int i;
    self->client_type = (PyTypeObject *)Py_NewRef(Py_TYPE(self->client));
    for (i = 0; i < CLIENT_FIELDS; i++) {
        self->client_slots[i] = slot_offset((PyObject *)self->client_type, names[i]);
    }
    self->actions_slot = self->hot_slot = -1;
    enforcer = PyObject_GetAttr(self->client, str_enforcer);
    if (enforcer == NULL) {
        return -1;
    }
    self->enforcer_type = Py_NewRef(Py_TYPE(enforcer));
    self->actions_slot = slot_offset(self->enforcer_type, str_actions);
    actions = PyObject_GetAttr(enforcer, str_actions);
    Py_DECREF(enforcer);
    if (actions == NULL) {
        return -1;
    }
    self->actions_type = Py_NewRef(Py_TYPE(actions));
    self->hot_slot = slot_offset(self->actions_type, str_hot_events);
    Py_DECREF(actions);
    return 0;
}

static PyObject *
tracker_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"client", "fallback", "names", "known_keys", "seq", "queue", "context",
                               "context_type", "ip_key", "wanted", "unreadable", NULL};
    PyObject *client, *fallback, *names, *known, *seq, *queue, *context, *ctx_type, *ip_key, *wanted, *unreadable;
    Tracker *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!O!OOO!O!OO!O:Tracker", keywords, &client, &fallback,
                                     &PySet_Type, &names, &PyDict_Type, &known, &seq, &queue, &PyContextVar_Type,
                                     &context, &PyType_Type, &ctx_type, &ip_key, &PyFrozenSet_Type, &wanted,
                                     &unreadable)) {
        return NULL;
    }
    self = (Tracker *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)tracker_call;
    if (queue_view(queue, &self->view) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->client = Py_NewRef(client);
    self->fallback = Py_NewRef(fallback);
    self->names = Py_NewRef(names);
    self->known = Py_NewRef(known);
    self->seq = Py_NewRef(seq);
    self->queue = Py_NewRef(queue);
    self->context = Py_NewRef(context);
    self->ctx_type = Py_NewRef(ctx_type);
    self->offsets[CTX_CAPTURE] = slot_offset(ctx_type, str__capture);
    self->offsets[CTX_USER] = slot_offset(ctx_type, str_user);
    self->offsets[CTX_BLOCKED] = slot_offset(ctx_type, str_blocked);
    self->offsets[CTX_KIND] = slot_offset(ctx_type, str_kind);
    self->offsets[CTX_RAW] = slot_offset(ctx_type, str_raw);
    self->offsets[CTX_TEE] = slot_offset(ctx_type, str_body_tee);
    self->ip_key = Py_NewRef(ip_key);
    self->wanted = Py_NewRef(wanted);
    self->wanted_count = 0;
    {
        PyObject *names_iter = PyObject_GetIter(wanted), *name;
        if (names_iter == NULL) {
            Py_DECREF(self);
            return NULL;
        }
        while ((name = PyIter_Next(names_iter)) != NULL) { /* borrowed buffers: the frozenset holds them */
            if (!PyBytes_CheckExact(name) || self->wanted_count == WANTED_MAX) {
                self->wanted_count = -1;
            }
            else if (self->wanted_count >= 0) {
                self->wanted_names[self->wanted_count] = PyBytes_AS_STRING(name);
                self->wanted_objs[self->wanted_count] = name;
                self->wanted_lens[self->wanted_count++] = PyBytes_GET_SIZE(name);
            }
            Py_DECREF(name);
        }
        Py_DECREF(names_iter);
        if (PyErr_Occurred()) {
            Py_DECREF(self);
            return NULL;
        }
    }
    self->unreadable = Py_NewRef(unreadable);
    if (tracker_slots(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.Tracker",
    .tp_doc = "Client._track_py with the common call compiled; every other call goes to the Python fallback.",
    .tp_basicsize = sizeof(Tracker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = tracker_new,
    .tp_dealloc = (destructor)tracker_dealloc,
    .tp_traverse = (traverseproc)tracker_traverse,
    .tp_clear = (inquiry)tracker_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Tracker, vectorcall),
};

/* --- Front: sqreen_mw.track's argument handling ------------------------------------------------------------- */

/* sqreen_mw.track(event_name, options=None, /, *, properties=None, user_identifiers=None, timestamp=None,
 * collect_body=False, request=None): the arguments put in Client._track's order and handed to the current client's
 * _track, without the Python frame. A call it does not recognise (wrong arity, an unknown or repeated keyword), or no
 * client yet, goes to the Python function, which says what is wrong or makes the client. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback;  /* the Python sqreen_mw.track */
    PyObject *globals;   /* _lifecycle's module dict: _current */
    PyObject *dict;      /* __wrapped__, __doc__, __name__ ... (functools.update_wrapper) */
    PyObject *client_type; /* the type of the last client seen, and the offset of its _track slot (-1: none) */
    Py_ssize_t track_slot;
} Front;

static PyObject *str__current, *str__track, *keyword_names[5];

static PyObject *
front_call(Front *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf), nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames), i;
    PyObject *call[7], *client, *track, *result;
    int seen = 0;

    if (nargs < 1 || nargs > 2) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    call[0] = args[0];
    call[1] = nargs == 2 ? args[1] : Py_None;
    call[2] = call[3] = call[4] = call[6] = Py_None;
    call[5] = Py_False;
    for (i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int k;
        for (k = 0; k < 5 && key != keyword_names[k]; k++) {
        }
        if (k == 5) { /* not interned the same way: compare the text */
            for (k = 0; k < 5 && PyUnicode_Compare(key, keyword_names[k]) != 0; k++) {
            }
            if (PyErr_Occurred()) {
                return NULL;
            }
        }
        if (k == 5 || seen & (1 << k)) {
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
        seen |= 1 << k;
        call[2 + k] = args[nargs + i];
    }
    client = PyDict_GetItemWithError(self->globals, str__current);
    if (client == NULL || client == Py_None) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    Py_INCREF(client);
    if ((PyObject *)Py_TYPE(client) != self->client_type) { /* Client._track is a slot: read at its offset */
        Py_XSETREF(self->client_type, Py_NewRef(Py_TYPE(client)));
        self->track_slot = slot_offset(self->client_type, str__track);
    }
    track = self->track_slot >= 0 ? *(PyObject **)((char *)client + self->track_slot) : NULL;
    if (track != NULL) {
        Py_INCREF(track);
    }
    else {
        track = PyObject_GetAttr(client, str__track); /* not a slot, or unset (its AttributeError) */
    }
    Py_DECREF(client);
    if (track == NULL) {
        return NULL;
    }
    result = PyObject_Vectorcall(track, call, 7, NULL);
    Py_DECREF(track);
    return result;
}

static PyObject *
front_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fallback", "globals", NULL};
    PyObject *fallback, *globals;
    Front *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!:Front", keywords, &fallback, &PyDict_Type, &globals)) {
        return NULL;
    }
    self = (Front *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)front_call;
    self->track_slot = -1;
    self->fallback = Py_NewRef(fallback);
    self->globals = Py_NewRef(globals);
    return (PyObject *)self;
}

static int
front_traverse(Front *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->globals);
    Py_VISIT(self->dict);
    Py_VISIT(self->client_type);
    return 0;
}

static int
front_clear(Front *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->globals);
    Py_CLEAR(self->dict);
    Py_CLEAR(self->client_type);
    return 0;
}

static void
front_dealloc(Front *self)
{
    PyObject_GC_UnTrack(self);
    front_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A descriptor that binds to nothing, as a builtin function: help() and inspect then show it as a routine. */
static PyObject *
front_get(PyObject *self, PyObject *obj, PyObject *type)
{
    return Py_NewRef(self);
}

static PyGetSetDef front_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyTypeObject FrontType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.Front",
    .tp_doc = "A module-level track() function without its Python frame; __wrapped__ is the Python function.",
    .tp_basicsize = sizeof(Front),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = front_new,
    .tp_dealloc = (destructor)front_dealloc,
    .tp_traverse = (traverseproc)front_traverse,
    .tp_clear = (inquiry)front_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Front, vectorcall),
    .tp_dictoffset = offsetof(Front, dict),
    .tp_descr_get = front_get,
    .tp_getset = front_getset,
};

/* --- WSGI: SqreenMiddleware.__call__ for the common request, and the response it binds ------------------------ */

/* wsgi._BoundResponse: the app's response iterable, the request bound again while it is iterated and closed. */
typedef struct {
    PyObject_HEAD
    PyObject *result;   /* the app's response */
    PyObject *ctx;      /* its RequestContext */
    PyObject *context;  /* _context.current_context */
    PyObject *iterator; /* iter(result), once asked for */
    PyObject *steps;    /* the contextvars.Context its steps run in: the app call's, copied as it returned (the
                         * request bound in it); entering it costs a pointer swap, where a ContextVar set and reset
                         * cost ~1,100 instructions. NULL: the variable is set and reset instead */
    int plain;          /* a list's or tuple's own iterator: no code of the app runs as it is iterated */
    int entered;        /* a step is running in `steps` */
} Bound;

static int
bound_traverse(Bound *self, visitproc visit, void *arg)
{
    Py_VISIT(self->result);
    Py_VISIT(self->ctx);
    Py_VISIT(self->context);
    Py_VISIT(self->iterator);
    Py_VISIT(self->steps);
    return 0;
}

static int
bound_clear(Bound *self)
{
    Py_CLEAR(self->result);
    Py_CLEAR(self->ctx);
    Py_CLEAR(self->context);
    Py_CLEAR(self->iterator);
    Py_CLEAR(self->steps);
    return 0;
}

static void
bound_dealloc(Bound *self)
{
    PyObject_GC_UnTrack(self);
    if (self->steps != NULL && !self->entered && (self->result != NULL || self->iterator != NULL)) {
        /* A response dropped unclosed: the app's iterator is finalized in its steps' context too (a generator's
         * finally block resets there what it set there) */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyContext_Enter(self->steps) == 0) {
            Py_CLEAR(self->iterator);
            Py_CLEAR(self->result);
            if (PyContext_Exit(self->steps) < 0) {
                PyErr_WriteUnraisable((PyObject *)self);
            }
        }
        else {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, traceback);
    }
    bound_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Unbind `token`, keeping the exception being raised (if any) as it was. -1 when the reset itself failed. */
static int
unbind(PyObject *context, PyObject *token)
{
    PyObject *type, *value, *traceback;
    int failed;
    PyErr_Fetch(&type, &value, &traceback);
    failed = PyContextVar_Reset(context, token) < 0;
    Py_DECREF(token);
    if (failed) {
        if (type != NULL) { /* the reset's error, the one being raised as its __context__ (as a finally clause's) */
            PyObject *new_type, *new_value, *new_traceback;
            PyErr_NormalizeException(&type, &value, &traceback);
            if (traceback != NULL) {
                PyException_SetTraceback(value, traceback);
            }
            PyErr_Fetch(&new_type, &new_value, &new_traceback);
            PyErr_NormalizeException(&new_type, &new_value, &new_traceback);
            PyException_SetContext(new_value, Py_NewRef(value));
            PyErr_Restore(new_type, new_value, new_traceback);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return -1;
    }
    PyErr_Restore(type, value, traceback);
    return 0;
}

/* Bind the request for one step of the response: enter its steps' context, or (none, or a step within a step) set
 * the variable; *token is NULL when the context was entered. 0, or -1 with an exception. */
static int
step_bind(Bound *self, PyObject **token)
{
    *token = NULL;
    if (self->steps != NULL && !self->entered) {
        if (PyContext_Enter(self->steps) == 0) {
            self->entered = 1;
            return 0;
        }
        PyErr_Clear(); /* entered elsewhere (another thread iterating the same response): set the variable */
    }
    *token = PyContextVar_Set(self->context, self->ctx);
    return *token == NULL ? -1 : 0;
}

/* The end of a step: the exception being raised (if any) kept. -1 when leaving the context failed. */
static int
step_unbind(Bound *self, PyObject *token)
{
    PyObject *type, *value, *traceback;
    int failed;
    if (token != NULL) {
        return unbind(self->context, token);
    }
    PyErr_Fetch(&type, &value, &traceback);
    self->entered = 0;
    failed = PyContext_Exit(self->steps) < 0; /* the app's step left another context entered */
    if (failed) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return -1;
    }
    PyErr_Restore(type, value, traceback);
    return 0;
}

/* iter(result), with the request bound (the app's __iter__ may be its code), once. */
static int
bound_start(Bound *self)
{
    PyObject *iterator, *token;
    if (self->iterator != NULL) {
        return 0;
    }
    if (step_bind(self, &token) < 0) {
        return -1;
    }
    iterator = PyObject_GetIter(self->result);
    if (step_unbind(self, token) < 0) {
        Py_XDECREF(iterator);
        return -1;
    }
    if (iterator == NULL) {
        return -1;
    }
    if (self->iterator != NULL) { /* the app's __iter__ iterated this response: keep the first */
        Py_DECREF(iterator);
        return 0;
    }
    self->plain = Py_IS_TYPE(iterator, &PyListIter_Type) || Py_IS_TYPE(iterator, &PyTupleIter_Type);
    self->iterator = iterator;
    return 0;
}

static PyObject *
bound_iter(Bound *self)
{
    if (bound_start(self) < 0) {
        return NULL;
    }
    return Py_NewRef((PyObject *)self);
}

static PyObject *
bound_next(Bound *self)
{
    PyObject *iterator, *token, *chunk;
    if (bound_start(self) < 0) {
        return NULL;
    }
    iterator = self->iterator;
    if (self->plain) {
        return Py_TYPE(iterator)->tp_iternext(iterator);
    }
    Py_INCREF(iterator); /* held: the app's code runs */
    if (step_bind(self, &token) < 0) {
        Py_DECREF(iterator);
        return NULL;
    }
    chunk = Py_TYPE(iterator)->tp_iternext(iterator);
    Py_DECREF(iterator);
    if (step_unbind(self, token) < 0) {
        Py_XDECREF(chunk);
        return NULL;
    }
    return chunk;
}

static PyObject *str_close;

static PyObject *
bound_close(Bound *self, PyObject *unused)
{
    PyObject *close = attr_or_none(self->result, str_close), *done;
    if (close == NULL) {
        return NULL;
    }
    if (close == Py_None) {
        Py_DECREF(close);
        Py_RETURN_NONE;
    }
    {
        PyObject *token;
        if (step_bind(self, &token) < 0) {
            Py_DECREF(close);
            return NULL;
        }
        done = PyObject_CallNoArgs(close);
        if (step_unbind(self, token) < 0) {
            Py_CLEAR(done);
        }
    }
    Py_DECREF(close);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    Py_RETURN_NONE;
}

static PyMethodDef bound_methods[] = {
    {"close", (PyCFunction)bound_close, METH_NOARGS, "Close the app's response, the request bound."},
    {NULL},
};

static PyMemberDef bound_members[] = {
    {"_result", T_OBJECT, offsetof(Bound, result), READONLY, "the app's response"},
    {"_ctx", T_OBJECT, offsetof(Bound, ctx), READONLY, "its request's context"},
    {NULL},
};

static PyTypeObject BoundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.BoundResponse",
    .tp_doc = "wsgi._BoundResponse without a guard: the request is bound again while the response is iterated and "
              "closed.",
    .tp_basicsize = sizeof(Bound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)bound_dealloc,
    .tp_traverse = (traverseproc)bound_traverse,
    .tp_clear = (inquiry)bound_clear,
    .tp_iter = (getiterfunc)bound_iter,
    .tp_iternext = (iternextfunc)bound_next,
    .tp_methods = bound_methods,
    .tp_members = bound_members,
};

/* SqreenMiddleware.__call__(self, environ, start_response), a method descriptor: the request of a started client,
 * with no block to check and no body to tee, is served here; every other one by the Python method (the fallback). */
enum { SLOT_CAPTURE, SLOT_BLOCKED, SLOT_TEE, SLOT_KIND, SLOT_RAW, SLOT_TRAITS, SLOT_USER, SLOTS };

enum { TEE_LIMIT, TEE_CHUNKS, TEE_SIZE, TEE_ENDED, TEE_OVERFLOW, TEE_READ_ANY, TEE_PREFETCHED, TEE_REWOUND, TEE_PARSED,
       TEE_STREAM, TEE_REMAINING, TEE_BUFFER, TEE_SLOTS };

/* Where the last type read had an attribute: its slot's offset, or -1 (read as an attribute). The type is held. */
typedef struct {
    PyObject *type;
    Py_ssize_t offset;
} SlotCache;

enum { READ_STARTED, READ_ENFORCER, READ_ACTIONS, READ_IP_BLOCKS, READ_USER_BLOCKS, READS };

/* obj.<name>, from its slot when obj's type has one there (the offset found once per type). A new reference. */
static PyObject *
slot_read(SlotCache *cache, PyObject *obj, PyObject *name)
{
    if ((PyObject *)Py_TYPE(obj) != cache->type) {
        Py_XSETREF(cache->type, Py_NewRef((PyObject *)Py_TYPE(obj)));
        cache->offset = slot_offset(cache->type, name);
    }
    if (cache->offset >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + cache->offset);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(obj, name); /* an unset slot raises its AttributeError here */
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback;   /* the Python SqreenMiddleware.__call__ */
    PyObject *globals;    /* _lifecycle's module dict: _current */
    PyObject *context;    /* _context.current_context */
    PyObject *ctx_type;   /* _context.RequestContext, made with every slot set (as the Python code does) */
    PyObject *tee_type;   /* _body.WSGIInput, the same */
    Py_ssize_t slots[SLOTS];
    Py_ssize_t tee_slots[TEE_SLOTS];
    PyObject *dict;       /* functools.update_wrapper's attributes */
    SlotCache reads[READS]; /* client._started_pid, client.enforcer, enforcer.actions, actions.has_*_blocks */
} WSGICall;

static PyObject *str_app, *str__client, *str_has_ip_blocks, *str_has_user_blocks,
    *str_content_length, *str_transfer_encoding, *str_file_wrapper, *str_head, *str_options, *no_body, *wsgi_kind,
    *zero;

/* Whether the request has a body to tee, as the Python method decides: 0 no, 1 yes (*length: its CONTENT_LENGTH as
 * an int, or None), -1 with an exception. */
static int
body_length(PyObject *environ, PyObject **length)
{
    PyObject *method = PyDict_GetItemWithError(environ, str_request_method), *text, *chunked;
    Py_ssize_t n = 0, i;
    int digits = 0, chunked_truth, bodiless;

    if (method == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (method != NULL) { /* method in _NO_BODY: a frozenset's equality (text of any type), TypeError if unhashable */
        Py_INCREF(method); /* held: the hash or equality of a str subclass may be Python code */
        bodiless = PySet_Contains(no_body, method);
        Py_DECREF(method);
        if (bodiless != 0) {
            return bodiless < 0 ? -1 : 0;
        }
    }
    /* length = int(text) if text and text.isascii() and text.isdigit() else None */
    text = PyDict_GetItemWithError(environ, str_content_length);
    if (text == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (text != NULL && PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text)) {
        const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
        n = PyUnicode_GET_LENGTH(text);
        for (i = 0, digits = n > 0; i < n && digits; i++) {
            digits = chars[i] >= '0' && chars[i] <= '9';
        }
        digits = digits && n <= 18; /* a longer one is no length (int() of thousands of digits raises) */
    }
    if (digits) {
        const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(text);
        long long value = 0;
        for (i = 0; i < n; i++) {
            value = value * 10 + (chars[i] - '0');
        }
        if (value > 0) {
            *length = PyLong_FromLongLong(value);
            return *length == NULL ? -1 : 1;
        }
    }
    chunked = PyDict_GetItemWithError(environ, str_transfer_encoding);
    if (chunked == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(chunked);
    chunked_truth = PyObject_IsTrue(chunked);
    Py_DECREF(chunked);
    if (chunked_truth <= 0) {
        return chunked_truth;
    }
    *length = digits ? PyLong_FromLong(0) : Py_NewRef(Py_None);
    return *length == NULL ? -1 : 1;
}

/* 1 when some block of client.enforcer.actions must be checked (the Python code does), 0, or -1. */
static int
blocks_to_check(SlotCache *reads, PyObject *client)
{
    PyObject *enforcer = slot_read(&reads[READ_ENFORCER], client, str_enforcer), *actions, *flag;
    int i, truth = 0;
    if (enforcer == NULL) {
        return -1;
    }
    actions = slot_read(&reads[READ_ACTIONS], enforcer, str_actions);
    Py_DECREF(enforcer);
    if (actions == NULL) {
        return -1;
    }
    for (i = 0; i < 2 && truth == 0; i++) {
        flag = i == 0 ? slot_read(&reads[READ_IP_BLOCKS], actions, str_has_ip_blocks)
                      : slot_read(&reads[READ_USER_BLOCKS], actions, str_has_user_blocks);
        truth = flag == NULL ? -1 : PyObject_IsTrue(flag);
        Py_XDECREF(flag);
    }
    Py_DECREF(actions);
    return truth;
}

/* The middleware's client, as `self._client or _lifecycle._current`: a new reference, NULL without an exception
 * when there is none yet (the Python code makes it), NULL with one on a fault. */
static PyObject *
middleware_client(WSGICall *self, PyObject *middleware)
{
    PyObject *client = PyObject_GetAttr(middleware, str__client);
    int truth;
    if (client == NULL) {
        return NULL;
    }
    truth = PyObject_IsTrue(client);
    if (truth != 0) {
        if (truth < 0) {
            Py_CLEAR(client);
        }
        return client;
    }
    Py_DECREF(client);
    client = PyDict_GetItemWithError(self->globals, str__current);
    if (client == NULL || client == Py_None) {
        return NULL;
    }
    return Py_NewRef(client);
}

/* A new object of `type` with every slot in `offsets` set to the matching value (object.__new__ and assignments). */
static PyObject *
made_with(PyObject *type, const Py_ssize_t *offsets, PyObject *const *values, int count)
{
    PyObject *made = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0);
    int i;
    if (made != NULL) {
        for (i = 0; i < count; i++) {
            *(PyObject **)((char *)made + offsets[i]) = Py_NewRef(values[i]);
        }
    }
    return made;
}

static PyObject *str_wsgi_input, *str_max_body_bytes;

/* The WSGIInput teeing environ["wsgi.input"] (= WSGIInput(stream, length, client.max_body_bytes)), put in its place. */
static PyObject *
wsgi_tee(WSGICall *self, PyObject *client, PyObject *environ, PyObject *length)
{
    PyObject *values[TEE_SLOTS], *stream, *limit, *chunks, *tee = NULL;
    int i;
    stream = PyDict_GetItemWithError(environ, str_wsgi_input);
    if (stream == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, str_wsgi_input); /* as environ["wsgi.input"] */
        }
        return NULL;
    }
    Py_INCREF(stream);
    limit = PyObject_GetAttr(client, str_max_body_bytes);
    chunks = PyList_New(0);
    if (limit != NULL && chunks != NULL) {
        for (i = 0; i < TEE_SLOTS; i++) {
            values[i] = Py_False;
        }
        values[TEE_LIMIT] = limit;
        values[TEE_CHUNKS] = chunks;
        values[TEE_SIZE] = zero;
        values[TEE_PARSED] = Py_None;
        values[TEE_STREAM] = stream;
        values[TEE_REMAINING] = length;
        values[TEE_BUFFER] = empty_bytes;
        tee = made_with(self->tee_type, self->tee_slots, values, TEE_SLOTS);
        if (tee != NULL && PyDict_SetItem(environ, str_wsgi_input, tee) < 0) {
            Py_CLEAR(tee);
        }
    }
    Py_DECREF(stream);
    Py_XDECREF(limit);
    Py_XDECREF(chunks);
    return tee;
}

static PyObject *
wsgi_call(WSGICall *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *middleware, *environ, *client, *started, *app = NULL, *ctx = NULL, *token, *result = NULL, *wrapper;
    PyObject *call[2], *values[SLOTS], *length = NULL, *tee = Py_None, *steps = NULL;
    Bound *bound;
    int i, check, body = 0;

    if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL || !PyDict_CheckExact(args[1])) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    middleware = args[0];
    environ = args[1];
    client = middleware_client(self, middleware);
    if (client == NULL) {
        return PyErr_Occurred() ? NULL : PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    started = slot_read(&self->reads[READ_STARTED], client, str__started_pid); /* None: a first request */
    check = started == NULL ? -1 : started == Py_None;
    Py_XDECREF(started);
    if (check == 0) {
        check = blocks_to_check(self->reads, client);
    }
    if (check == 0) {
        body = body_length(environ, &length);
        check = body < 0 ? -1 : 0;
    }
    if (check != 0) {
        Py_DECREF(client);
        Py_XDECREF(length);
        return check < 0 ? NULL : PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    app = PyObject_GetAttr(middleware, str_app);
    if (app != NULL && body) {
        tee = wsgi_tee(self, client, environ, length);
    }
    Py_DECREF(client);
    Py_XDECREF(length);
    if (app == NULL || tee == NULL) {
        goto done;
    }
    for (i = 0; i < SLOTS; i++) { /* RequestContext(WSGI, environ, tee), every slot set here (no __init__ call) */
        values[i] = Py_None;
    }
    values[SLOT_KIND] = wsgi_kind;
    values[SLOT_RAW] = environ;
    values[SLOT_TEE] = tee;
    ctx = made_with(self->ctx_type, self->slots, values, SLOTS);
    if (ctx == NULL) {
        goto done;
    }
    token = PyContextVar_Set(self->context, ctx);
    if (token == NULL) {
        goto done;
    }
    call[0] = environ;
    call[1] = args[2];
    result = PyObject_Vectorcall(app, call, 2, NULL);
    if (result != NULL && !PyList_CheckExact(result)) { /* the context its response's steps will run in */
        steps = PyContext_CopyCurrent();
        if (steps == NULL) {
            Py_CLEAR(result);
        }
    }
    if (unbind(self->context, token) < 0) {
        Py_CLEAR(result);
    }
    if (result == NULL || PyList_CheckExact(result)) { /* a list: nothing of the app runs later */
        goto done;
    }
    wrapper = PyDict_GetItemWithError(environ, str_file_wrapper);
    if (wrapper == NULL && PyErr_Occurred()) {
        Py_CLEAR(result);
        goto done;
    }
    if (wrapper != NULL && PyType_Check(wrapper)) { /* the server sends it as is (sendfile) */
        int is_file = PyObject_IsInstance(result, wrapper);
        if (is_file != 0) {
            if (is_file < 0) {
                Py_CLEAR(result);
            }
            goto done;
        }
    }
    bound = PyObject_GC_New(Bound, &BoundType);
    if (bound == NULL) {
        Py_CLEAR(result);
        goto done;
    }
    bound->result = result;
    bound->ctx = Py_NewRef(ctx);
    bound->context = Py_NewRef(self->context);
    bound->iterator = NULL;
    bound->steps = steps;
    steps = NULL;
    bound->plain = bound->entered = 0;
    PyObject_GC_Track(bound);
    result = (PyObject *)bound;
done:
    Py_XDECREF(app);
    Py_XDECREF(ctx);
    Py_XDECREF(steps);
    if (tee != Py_None) {
        Py_XDECREF(tee);
    }
    return result;
}

/* The offsets of `count` writable object slots of `type`; -1 with TypeError naming the one missing. */
static int
slot_offsets(PyObject *type, const char *const *names, Py_ssize_t *offsets, int count)
{
    int i;
    for (i = 0; i < count; i++) {
        PyObject *name = PyUnicode_InternFromString(names[i]);
        if (name == NULL) {
            return -1;
        }
        offsets[i] = slot_offset(type, name);
        Py_DECREF(name);
        if (offsets[i] < 0) {
            PyErr_Format(PyExc_TypeError, "%s has no writable slot %s", ((PyTypeObject *)type)->tp_name, names[i]);
            return -1;
        }
    }
    return 0;
}

/* A WSGICall or ASGICall (`call` its vectorcall): the arguments held, the slots' offsets of the context type and of
 * the body tee's type (`tee_names`, `tee_count`) found once. */
static PyObject *
method_call_new(PyTypeObject *type, PyObject *args, PyObject *kwargs, const char *format, char **keywords,
                vectorcallfunc call, const char *const *tee_names, int tee_count)
{
    static const char *const slot_names[SLOTS] = {"_capture", "blocked", "body_tee", "kind", "raw", "traits", "user"};
    PyObject *fallback, *globals, *context, *ctx_type, *tee_type;
    WSGICall *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, keywords, &fallback, &PyDict_Type, &globals,
                                     &PyContextVar_Type, &context, &PyType_Type, &ctx_type, &PyType_Type, &tee_type)) {
        return NULL;
    }
    self = (WSGICall *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = call;
    self->fallback = Py_NewRef(fallback);
    self->globals = Py_NewRef(globals);
    self->context = Py_NewRef(context);
    self->ctx_type = Py_NewRef(ctx_type);
    self->tee_type = Py_NewRef(tee_type);
    if (slot_offsets(ctx_type, slot_names, self->slots, SLOTS) < 0
        || slot_offsets(tee_type, tee_names, self->tee_slots, tee_count) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
wsgi_call_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fallback", "globals", "context", "context_type", "input_type", NULL};
    static const char *const tee_names[TEE_SLOTS] = {"limit", "_chunks", "_size", "ended", "overflow", "read_any",
                                                     "_prefetched", "_rewound", "_parsed", "_stream", "_remaining",
                                                     "_buffer"};
    return method_call_new(type, args, kwargs, "OO!O!O!O!:WSGICall", keywords, (vectorcallfunc)wsgi_call, tee_names,
                           TEE_SLOTS);
}

static int
wsgi_call_traverse(WSGICall *self, visitproc visit, void *arg)
{
    int i;
    Py_VISIT(self->fallback);
    Py_VISIT(self->globals);
    Py_VISIT(self->context);
    Py_VISIT(self->ctx_type);
    Py_VISIT(self->tee_type);
    Py_VISIT(self->dict);
    for (i = 0; i < READS; i++) {
        Py_VISIT(self->reads[i].type);
    }
    return 0;
}

static int
wsgi_call_clear(WSGICall *self)
{
    int i;
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->globals);
    Py_CLEAR(self->context);
    Py_CLEAR(self->ctx_type);
    Py_CLEAR(self->tee_type);
    Py_CLEAR(self->dict);
    for (i = 0; i < READS; i++) {
        Py_CLEAR(self->reads[i].type);
    }
    return 0;
}

static void
wsgi_call_dealloc(WSGICall *self)
{
    PyObject_GC_UnTrack(self);
    wsgi_call_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* As a function in a class: bound to an instance it is a method (the interpreter calls it unbound, with the
 * instance first, thanks to Py_TPFLAGS_METHOD_DESCRIPTOR). */
static PyObject *
wsgi_call_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static PyTypeObject WSGICallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.WSGICall",
    .tp_doc = "SqreenMiddleware.__call__ with the common request compiled; __wrapped__ is the Python method.",
    .tp_basicsize = sizeof(WSGICall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = wsgi_call_new,
    .tp_dealloc = (destructor)wsgi_call_dealloc,
    .tp_traverse = (traverseproc)wsgi_call_traverse,
    .tp_clear = (inquiry)wsgi_call_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(WSGICall, vectorcall),
    .tp_dictoffset = offsetof(WSGICall, dict),
    .tp_descr_get = wsgi_call_get,
    .tp_getset = front_getset,
};

/* --------------------------------------------------------------------------------------------------------------
 * asgi.SqreenMiddleware.__call__ for the common HTTP request (a started client, no block to check): the request's
 * context and body tee made here, and one awaitable (Forward) that binds the request, runs the app and unbinds it,
 * in place of the Python coroutine; the body tee's receive() is a Forward too. Every other call is the Python
 * method's. A Forward forwards send(), throw() and close() to what it awaits, as `await` in a coroutine does.
 */

enum { ATEE_LIMIT, ATEE_CHUNKS, ATEE_SIZE, ATEE_ENDED, ATEE_OVERFLOW, ATEE_READ_ANY, ATEE_PARSED, ATEE_RECEIVE,
       ATEE_SLOTS };
enum { FORWARD_RUN, FORWARD_TEE };
enum { FORWARD_NEW, FORWARD_RUNNING, FORWARD_DONE };

typedef struct {
    PyObject_HEAD
    PyObject *inner;      /* what is awaited: the app's awaitable's iterator (NULL before the first step of a RUN) */
    PyObject *owner;      /* the ASGICall: its context variable, its tee's slot offsets */
    PyObject *tee;        /* the ASGIBodyTee (TEE) */
    PyObject *middleware; /* RUN: self.app is read once the request is bound, as the Python method does */
    PyObject *scope, *receive, *send, *ctx, *token;
    int kind, state;
    int executing;        /* in a step (send, throw or close): a call back into it raises, as a running coroutine's */
} Forward;

/* The receive() handed to the app when the body is teed: each call a Forward over the server's receive(). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *owner, *tee;
} TeeReceive;

static PyTypeObject ForwardType, TeeReceiveType;
static PyObject *str_http, *str_http_request, *str_body, *str_more_body, *str_record, *str_throw, *str__receive, *asgi_kind;

/* The iterator `await awaitable` drives (a coroutine itself, or what its __await__ returns). A new reference. */
static PyObject *
awaited_iterator(PyObject *awaitable)
{
    PyTypeObject *type = Py_TYPE(awaitable);
    PyObject *iterator, *code;
    int flags;
    if (PyCoro_CheckExact(awaitable)) {
        return Py_NewRef(awaitable);
    }
    if (PyGen_CheckExact(awaitable)) { /* a generator-based coroutine (types.coroutine) is awaited as it is */
        code = PyObject_GetAttrString(awaitable, "gi_code");
        if (code == NULL) {
            return NULL;
        }
        flags = PyCode_Check(code) ? ((PyCodeObject *)code)->co_flags : 0;
        Py_DECREF(code);
        if (flags & CO_ITERABLE_COROUTINE) {
            return Py_NewRef(awaitable);
        }
    }
    if (type->tp_as_async == NULL || type->tp_as_async->am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression", type->tp_name);
        return NULL;
    }
    iterator = type->tp_as_async->am_await(awaitable);
    if (iterator != NULL && (PyCoro_CheckExact(iterator) || !PyIter_Check(iterator))) {
        if (PyCoro_CheckExact(iterator)) {
            PyErr_SetString(PyExc_TypeError, "__await__() returned a coroutine");
        }
        else {
            PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%.100s'",
                         Py_TYPE(iterator)->tp_name);
        }
        Py_CLEAR(iterator);
    }
    return iterator;
}

/* ASGIBodyTee.record(message) for the usual message (an exact dict, its type text, its body bytes, the tee's fields
 * of their own types); the Python method for anything else. 0, or -1 with an exception. */
static int
tee_record(Forward *self, PyObject *message)
{
    const Py_ssize_t *offsets = ((WSGICall *)self->owner)->tee_slots;
    PyObject **slot[ATEE_SLOTS], *kind, *body, *more, *result, *size;
    Py_ssize_t i, limit, have, more_truth;
    for (i = 0; i < ATEE_SLOTS; i++) {
        slot[i] = (PyObject **)((char *)self->tee + offsets[i]);
    }
    if (!PyDict_CheckExact(message) || *slot[ATEE_LIMIT] == NULL || !PyLong_CheckExact(*slot[ATEE_LIMIT])
        || *slot[ATEE_SIZE] == NULL || !PyLong_CheckExact(*slot[ATEE_SIZE]) || *slot[ATEE_CHUNKS] == NULL
        || !PyList_CheckExact(*slot[ATEE_CHUNKS]) || *slot[ATEE_OVERFLOW] != Py_False) {
        goto python;
    }
    kind = PyDict_GetItemWithError(message, str_type);
    if (kind == NULL || !PyUnicode_CheckExact(kind)) {
        if (PyErr_Occurred()) {
            return -1;
        }
        goto python; /* the Python method raises KeyError for a message without a type, as before */
    }
    if (PyUnicode_Compare(kind, str_http_request) != 0) {
        return 0;
    }
    body = PyDict_GetItemWithError(message, str_body);
    if ((body == NULL && PyErr_Occurred()) || (body != NULL && body != Py_None && !PyBytes_CheckExact(body))) {
        if (PyErr_Occurred()) {
            return -1;
        }
        goto python;
    }
    more = PyDict_GetItemWithError(message, str_more_body);
    if (more == NULL && PyErr_Occurred()) {
        return -1;
    }
    if (more != NULL && more != Py_True && more != Py_False && more != Py_None && !PyLong_CheckExact(more)) {
        goto python; /* more_body's truth might be Python code */
    }
    limit = PyLong_AsSsize_t(*slot[ATEE_LIMIT]);
    have = PyLong_AsSsize_t(*slot[ATEE_SIZE]);
    if ((limit == -1 || have == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        goto python;
    }
    more_truth = more == NULL ? 0 : PyObject_IsTrue(more);
    Py_XSETREF(*slot[ATEE_READ_ANY], Py_NewRef(Py_True));
    if (body != NULL && body != Py_None && PyBytes_GET_SIZE(body) > 0) {
        if (PyBytes_GET_SIZE(body) <= PY_SSIZE_T_MAX - have && have + PyBytes_GET_SIZE(body) <= limit) {
            size = PyLong_FromSsize_t(have + PyBytes_GET_SIZE(body));
            if (size == NULL || PyList_Append(*slot[ATEE_CHUNKS], body) < 0) {
                Py_XDECREF(size);
                return -1;
            }
            Py_SETREF(*slot[ATEE_SIZE], size);
        }
        else { /* past the limit: self.feed(body, False), the Python method's */
            result = PyObject_CallMethod(self->tee, "feed", "OO", body, Py_False);
            if (result == NULL) {
                return -1;
            }
            Py_DECREF(result);
        }
    }
    if (!more_truth) {
        Py_XSETREF(*slot[ATEE_ENDED], Py_NewRef(Py_True));
    }
    return 0;
python:
    result = PyObject_CallMethodOneArg(self->tee, str_record, message);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* raise StopIteration(value), a tuple or an exception as the value itself */
static void
stop_with(PyObject *value)
{
    PyObject *stop;
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return;
    }
    stop = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
}

/* A RUN's request served: its context's raw and body_tee set to None, as the Python method's `finally` does (copies
 * of its contextvars context may outlive the request, uvicorn's keep-alive timer's: they keep the context, not the
 * scope; see RequestContext). */
static void
forward_release(Forward *self)
{
    const Py_ssize_t *offsets = ((WSGICall *)self->owner)->slots;
    PyObject **raw, **tee;
    if (self->ctx == NULL) {
        return;
    }
    raw = (PyObject **)((char *)self->ctx + offsets[SLOT_RAW]);
    tee = (PyObject **)((char *)self->ctx + offsets[SLOT_TEE]);
    Py_XSETREF(*raw, Py_NewRef(Py_None)); /* (the scope may go here: its entries' finalizers run, none of ours) */
    Py_XSETREF(*tee, Py_NewRef(Py_None));
}

/* The awaited iterator ended: a RUN unbinds the request, a TEE records the message. *result is what await gives. */
static PySendResult
forward_finish(Forward *self, PySendResult status, PyObject **result)
{
    PyObject *token = self->token;
    self->state = FORWARD_DONE;
    Py_CLEAR(self->inner);
    if (self->kind == FORWARD_TEE) {
        if (status == PYGEN_RETURN && tee_record(self, *result) < 0) {
            Py_CLEAR(*result);
            return PYGEN_ERROR;
        }
        return status;
    }
    self->token = NULL;
    if (status == PYGEN_RETURN) { /* the Python method returns None, whatever the app returned */
        Py_SETREF(*result, Py_NewRef(Py_None));
    }
    if (token != NULL && unbind(((WSGICall *)self->owner)->context, token) < 0) {
        if (status == PYGEN_RETURN) {
            Py_CLEAR(*result);
        }
        status = PYGEN_ERROR; /* (the reset's error, as a finally clause's would be) */
    }
    forward_release(self);
    return status;
}

/* The first step: a RUN binds the request and calls self.app(scope, receive, send), a TEE calls the server's
 * receive() (tee._receive, read as the Python method does). 0, or -1 (unbound) with an exception. */
static int
forward_start(Forward *self)
{
    PyObject *app, *awaitable, *args[3] = {self->scope, self->receive, self->send};
    if (self->kind == FORWARD_TEE) {
        PyObject *receive = *(PyObject **)((char *)self->tee + ((WSGICall *)self->owner)->tee_slots[ATEE_RECEIVE]);
        /* held: the call may replace it; an unset slot raises its AttributeError */
        receive = receive == NULL ? PyObject_GetAttr(self->tee, str__receive) : Py_NewRef(receive);
        awaitable = receive == NULL ? NULL : PyObject_CallNoArgs(receive);
        Py_XDECREF(receive);
    }
    else {
        self->token = PyContextVar_Set(((WSGICall *)self->owner)->context, self->ctx);
        if (self->token == NULL) {
            return -1;
        }
        app = PyObject_GetAttr(self->middleware, str_app);
        awaitable = app == NULL ? NULL : PyObject_Vectorcall(app, args, 3, NULL);
        Py_XDECREF(app);
    }
    self->inner = awaitable == NULL ? NULL : awaited_iterator(awaitable);
    Py_XDECREF(awaitable);
    return self->inner == NULL ? -1 : 0;
}

/* A call into the Forward from within its own step (the app or the server's awaitable sending, throwing or closing
 * it): refused as a running coroutine refuses it; going on would free what is awaited while it runs. */
static int
forward_executing(Forward *self)
{
    if (self->executing) {
        PyErr_SetString(PyExc_ValueError, "coroutine already executing");
        return 1;
    }
    return 0;
}

static PySendResult
forward_send(Forward *self, PyObject *arg, PyObject **result)
{
    PySendResult status;
    *result = NULL;
    if (forward_executing(self)) {
        return PYGEN_ERROR;
    }
    if (self->state == FORWARD_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (self->state == FORWARD_NEW) {
        if (arg != Py_None) {
            PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
            return PYGEN_ERROR;
        }
        self->state = FORWARD_RUNNING;
        self->executing = 1;
        status = forward_start(self) < 0 ? PYGEN_ERROR : PYGEN_NEXT;
        self->executing = 0;
        if (status == PYGEN_ERROR) {
            return forward_finish(self, PYGEN_ERROR, result);
        }
    }
    self->executing = 1;
    status = PyIter_Send(self->inner, arg, result);
    self->executing = 0;
    return status == PYGEN_NEXT ? PYGEN_NEXT : forward_finish(self, status, result);
}

static PyObject *
forward_iternext(Forward *self)
{
    PyObject *result;
    PySendResult status = forward_send(self, Py_None, &result);
    if (status == PYGEN_RETURN) {
        stop_with(result);
        Py_DECREF(result);
        return NULL;
    }
    return status == PYGEN_NEXT ? result : NULL;
}

static PyObject *
forward_send_method(Forward *self, PyObject *arg)
{
    PyObject *result;
    PySendResult status = forward_send(self, arg, &result);
    if (status == PYGEN_RETURN) {
        stop_with(result);
        Py_DECREF(result);
        return NULL;
    }
    return status == PYGEN_NEXT ? result : NULL;
}

/* Raise what throw(exception[, value[, traceback]]) was given, as a coroutine raises it in its own frame: an instance
 * (without a separate value) or a class and its value, with the traceback given, 0; -1 with a TypeError for anything
 * else (the coroutine left as it was). */
static int
throw_here(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *value = nargs > 1 ? args[1] : Py_None, *traceback = nargs > 2 ? args[2] : Py_None, *type, *tb;
    if (traceback != Py_None && !PyTraceBack_Check(traceback)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return -1;
    }
    if (PyExceptionInstance_Check(args[0])) {
        if (value != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return -1;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
    }
    else if (PyExceptionClass_Check(args[0])) {
        PyErr_SetObject(args[0], value);
    }
    else {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                     Py_TYPE(args[0])->tp_name);
        return -1;
    }
    if (traceback != Py_None) {
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL) {
            PyException_SetTraceback(value, traceback);
        }
        Py_XDECREF(tb);
        PyErr_Restore(type, value, Py_NewRef(traceback));
    }
    return 0;
}

/* throw(...) into what is awaited, as `await` forwards it; before the first step or after the last, raised here, and
 * raised here too (what is awaited left as it is) when what is awaited has no throw(), as `await` does. */
static PyObject *
forward_throw(Forward *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *result = NULL, *type, *value, *traceback, *throw;
    PySendResult status;
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError, "throw expected 1 to 3 arguments, got %zd", nargs);
        return NULL;
    }
    if (forward_executing(self)) {
        return NULL;
    }
    if (self->state != FORWARD_RUNNING) { /* raised as a coroutine raises it before its first step or after its end */
        if (throw_here(args, nargs) == 0) {
            self->state = FORWARD_DONE;
        }
        return NULL;
    }
    self->executing = 1;
    throw = PyObject_GetAttr(self->inner, str_throw);
    if (throw == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        self->executing = 0;
        PyErr_Clear();
        if (throw_here(args, nargs) == 0) {
            (void)forward_finish(self, PYGEN_ERROR, &result);
        }
        return NULL;
    }
    result = throw == NULL ? NULL : PyObject_Vectorcall(throw, args, nargs, NULL);
    Py_XDECREF(throw);
    self->executing = 0;
    if (result != NULL) {
        return result; /* what it yields next */
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) { /* it returned: its value is what await gives */
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        result = value == NULL ? Py_NewRef(Py_None) : PyObject_GetAttrString(value, "value");
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        if (result == NULL) {
            return NULL;
        }
        status = forward_finish(self, PYGEN_RETURN, &result);
        if (status == PYGEN_RETURN) {
            stop_with(result);
            Py_DECREF(result);
        }
        return NULL;
    }
    (void)forward_finish(self, PYGEN_ERROR, &result);
    return NULL;
}

static PyObject *
forward_close(Forward *self, PyObject *unused)
{
    PyObject *close, *done, *token;
    int failed = 0;
    if (forward_executing(self)) {
        return NULL;
    }
    if (self->state != FORWARD_RUNNING) {
        self->state = FORWARD_DONE;
        Py_RETURN_NONE;
    }
    self->state = FORWARD_DONE;
    self->executing = 1;
    close = PyObject_GetAttrString(self->inner, "close"); /* as `await` closes what it awaits, when it has close() */
    if (close == NULL) {
        failed = !PyErr_ExceptionMatches(PyExc_AttributeError);
        if (!failed) {
            PyErr_Clear();
        }
    }
    else {
        done = PyObject_CallNoArgs(close);
        Py_DECREF(close);
        failed = done == NULL;
        Py_XDECREF(done);
    }
    self->executing = 0;
    Py_CLEAR(self->inner);
    token = self->token;
    self->token = NULL;
    if (token != NULL && unbind(((WSGICall *)self->owner)->context, token) < 0) {
        failed = 1;
    }
    if (self->kind == FORWARD_RUN) {
        forward_release(self);
    }
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
forward_traverse(Forward *self, visitproc visit, void *arg)
{
    Py_VISIT(self->inner);
    Py_VISIT(self->owner);
    Py_VISIT(self->tee);
    Py_VISIT(self->middleware);
    Py_VISIT(self->scope);
    Py_VISIT(self->receive);
    Py_VISIT(self->send);
    Py_VISIT(self->ctx);
    Py_VISIT(self->token);
    return 0;
}

static int
forward_clear(Forward *self)
{
    self->state = FORWARD_DONE; /* (cleared by the collector: nothing left to forward to) */
    Py_CLEAR(self->inner);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->tee);
    Py_CLEAR(self->middleware);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->receive);
    Py_CLEAR(self->send);
    Py_CLEAR(self->ctx);
    Py_CLEAR(self->token); /* dropped unfinished: the request stays bound in the context it ran in, as it was */
    return 0;
}

static void
forward_dealloc(Forward *self)
{
    PyObject_GC_UnTrack(self);
    forward_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
forward_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyAsyncMethods forward_async = {
    .am_await = forward_await,
    .am_send = (sendfunc)forward_send,
};

static PyMethodDef forward_methods[] = {
    {"send", (PyCFunction)forward_send_method, METH_O, "send(value): as a coroutine's, forwarded to what it awaits"},
    {"throw", (PyCFunction)(void (*)(void))forward_throw, METH_FASTCALL, "throw(exception): as a coroutine's"},
    {"close", (PyCFunction)forward_close, METH_NOARGS, "close(): as a coroutine's"},
    {NULL},
};

static PyTypeObject ForwardType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.Forward",
    .tp_doc = "What the ASGI middleware (or its body tee's receive()) gives to await: forwards to the app's (or the "
              "server's) awaitable.",
    .tp_basicsize = sizeof(Forward),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)forward_dealloc,
    .tp_traverse = (traverseproc)forward_traverse,
    .tp_clear = (inquiry)forward_clear,
    .tp_as_async = &forward_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)forward_iternext,
    .tp_methods = forward_methods,
};

/* A new Forward of `kind`, not started; its references are taken (new ones made). */
static Forward *
forward_new(int kind, PyObject *owner, PyObject *tee)
{
    Forward *self = PyObject_GC_New(Forward, &ForwardType);
    if (self == NULL) {
        return NULL;
    }
    self->inner = self->middleware = self->scope = self->receive = self->send = self->ctx = self->token = NULL;
    self->owner = Py_NewRef(owner);
    self->tee = Py_XNewRef(tee);
    self->kind = kind;
    self->state = FORWARD_NEW;
    self->executing = 0;
    PyObject_GC_Track(self);
    return self;
}

static PyObject *
tee_receive_call(TeeReceive *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "receive() takes no arguments");
        return NULL;
    }
    return (PyObject *)forward_new(FORWARD_TEE, self->owner, self->tee);
}

static int
tee_receive_traverse(TeeReceive *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->tee);
    return 0;
}

static int
tee_receive_clear(TeeReceive *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->tee);
    return 0;
}

static void
tee_receive_dealloc(TeeReceive *self)
{
    PyObject_GC_UnTrack(self);
    tee_receive_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
tee_receive_self(TeeReceive *self, void *closure)
{
    return Py_NewRef(self->tee);
}

static PyGetSetDef tee_receive_getset[] = {
    {"__self__", (getter)tee_receive_self, NULL, "the ASGIBodyTee recording what this receive() returns", NULL},
    {NULL},
};

static PyTypeObject TeeReceiveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.TeeReceive",
    .tp_doc = "ASGIBodyTee.receive, compiled: the server's receive(), each message recorded by the tee.",
    .tp_basicsize = sizeof(TeeReceive),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_dealloc = (destructor)tee_receive_dealloc,
    .tp_traverse = (traverseproc)tee_receive_traverse,
    .tp_clear = (inquiry)tee_receive_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(TeeReceive, vectorcall),
    .tp_getset = tee_receive_getset,
};

/* The Python method's call (its coroutine), after a fault the compiled checks met: an Exception is cleared, the
 * Python method meets it again and raises it when awaited, as it always did; anything else is raised here. */
static PyObject *
asgi_fallback(WSGICall *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *
asgi_call(WSGICall *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *scope, *client, *started, *kind, *method, *limit, *chunks, *values[SLOTS], *tee_values[ATEE_SLOTS];
    PyObject *tee = NULL, *receive = NULL, *ctx = NULL;
    Forward *run = NULL;
    int i, check, bodiless;

    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || !PyDict_CheckExact(args[1])) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    scope = args[1];
    kind = PyDict_GetItemWithError(scope, str_type); /* (exact str keys of an exact dict: no Python code runs) */
    method = kind == NULL ? NULL : PyDict_GetItemWithError(scope, str_method);
    if (method == NULL || !PyUnicode_CheckExact(kind) || !PyUnicode_CheckExact(method)
        || PyUnicode_Compare(kind, str_http) != 0) {
        return asgi_fallback(self, args, nargsf, kwnames); /* a lifespan, a websocket, an odd scope */
    }
    Py_INCREF(method); /* held: what runs next may be Python code, which may change the scope */
    client = middleware_client(self, args[0]);
    if (client == NULL) {
        Py_DECREF(method);
        return asgi_fallback(self, args, nargsf, kwnames);
    }
    started = slot_read(&self->reads[READ_STARTED], client, str__started_pid); /* None: a first request */
    check = started == NULL ? -1 : started == Py_None;
    Py_XDECREF(started);
    if (check == 0) {
        check = blocks_to_check(self->reads, client);
    }
    bodiless = check == 0 ? PySet_Contains(no_body, method) : 0; /* (an exact str: no Python code runs) */
    Py_DECREF(method);
    if (check != 0 || bodiless < 0) {
        Py_DECREF(client);
        return asgi_fallback(self, args, nargsf, kwnames);
    }
    if (!bodiless) { /* tee = ASGIBodyTee(receive, client.max_body_bytes); receive = tee.receive */
        limit = PyObject_GetAttr(client, str_max_body_bytes);
        chunks = limit == NULL ? NULL : PyList_New(0);
        if (chunks != NULL) {
            for (i = 0; i < ATEE_SLOTS; i++) {
                tee_values[i] = Py_False;
            }
            tee_values[ATEE_LIMIT] = limit;
            tee_values[ATEE_CHUNKS] = chunks;
            tee_values[ATEE_SIZE] = zero;
            tee_values[ATEE_PARSED] = Py_None;
            tee_values[ATEE_RECEIVE] = args[2];
            tee = made_with(self->tee_type, self->tee_slots, tee_values, ATEE_SLOTS);
        }
        Py_XDECREF(limit);
        Py_XDECREF(chunks);
        if (tee == NULL) {
            Py_DECREF(client);
            return asgi_fallback(self, args, nargsf, kwnames);
        }
        receive = PyObject_GC_New(PyObject, &TeeReceiveType);
        if (receive == NULL) {
            goto done;
        }
        ((TeeReceive *)receive)->vectorcall = (vectorcallfunc)tee_receive_call;
        ((TeeReceive *)receive)->owner = Py_NewRef((PyObject *)self);
        ((TeeReceive *)receive)->tee = Py_NewRef(tee);
        PyObject_GC_Track(receive);
    }
    for (i = 0; i < SLOTS; i++) { /* RequestContext(ASGI, scope), every slot set here (no __init__ call) */
        values[i] = Py_None;
    }
    values[SLOT_KIND] = asgi_kind;
    values[SLOT_RAW] = scope;
    values[SLOT_TEE] = tee == NULL ? Py_None : tee;
    ctx = made_with(self->ctx_type, self->slots, values, SLOTS);
    if (ctx == NULL) {
        goto done;
    }
    run = forward_new(FORWARD_RUN, (PyObject *)self, NULL);
    if (run != NULL) {
        run->middleware = Py_NewRef(args[0]);
        run->scope = Py_NewRef(scope);
        run->receive = Py_NewRef(receive == NULL ? args[2] : receive);
        run->send = Py_NewRef(args[3]);
        run->ctx = Py_NewRef(ctx);
    }
done:
    Py_DECREF(client);
    Py_XDECREF(tee);
    Py_XDECREF(receive);
    Py_XDECREF(ctx);
    return (PyObject *)run;
}

static PyObject *
asgi_call_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fallback", "globals", "context", "context_type", "tee_type", NULL};
    static const char *const tee_names[ATEE_SLOTS] = {"limit", "_chunks", "_size", "ended", "overflow", "read_any",
                                                      "_parsed", "_receive"};
    return method_call_new(type, args, kwargs, "OO!O!O!O!:ASGICall", keywords, (vectorcallfunc)asgi_call, tee_names,
                           ATEE_SLOTS);
}

static PyTypeObject ASGICallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sqreen_mw._speedups.ASGICall",
    .tp_doc = "asgi.SqreenMiddleware.__call__ with the common HTTP request compiled; __wrapped__ is the Python method.",
    .tp_basicsize = sizeof(WSGICall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = asgi_call_new,
    .tp_dealloc = (destructor)wsgi_call_dealloc,
    .tp_traverse = (traverseproc)wsgi_call_traverse,
    .tp_clear = (inquiry)wsgi_call_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(WSGICall, vectorcall),
    .tp_dictoffset = offsetof(WSGICall, dict),
    .tp_descr_get = wsgi_call_get,
    .tp_getset = front_getset,
};

/* --------------------------------------------------------------------------------------------------------------
 * The flusher's events: _client.Client._wire for the common record, and _context.request_key for the common capture.
 * A record with anything else (an explicit timestamp, a body, properties or texts the scrubber has not seen yet, an
 * unusual capture) is made by the Python method, which fills the caches this code reads.
 */

#define WIRE_MIN_KV_TEXT 5            /* _scrub._MIN_KV_TEXT */
#define WIRE_CACHED_TEXT 256          /* _scrub._CACHED_TEXT */
#define WIRE_CARD_INT_MIN 1000000000000LL /* _scrub._CARD_INT_MIN */
#define WIRE_MAX_KEYED_TEXT 1024      /* _context.MAX_KEYED_TEXT */
#define WIRE_INFO_CACHE_SIZE 1024     /* _client._INFO_CACHE_SIZE */
#define SCRUB_MAX_DEPTH 20            /* _scrub.MAX_DEPTH */

static PyObject *str_w_id, *str_w_name, *str_w_timestamp, *str_w_properties, *str_w_user_identifiers, *str_w_request,
    *str_w_body, *str_w_blocked, *str_plus, *str_space, *str_amp, *str_w_query, *str_w_json, *str_w_client_ip,
    *str_w_user_agent, *str_w_verb, *str_w_params, *str_w_user_agent_header, *str_w_content_type;

static const char *const wanted_headers[] = {"user-agent", "content-type", "x-forwarded-for", "forwarded", "x-real-ip"};
static const Py_ssize_t wanted_sizes[] = {10, 12, 15, 9, 9};

/* _context._WANTED (plus the ip_header's bytes, `extra`, or None): whether exact bytes `name` is one of them. */
static int
header_wanted(PyObject *name, PyObject *extra)
{
    const char *text = PyBytes_AS_STRING(name);
    Py_ssize_t size = PyBytes_GET_SIZE(name), i;
    for (i = 0; i < (Py_ssize_t)(sizeof(wanted_sizes) / sizeof(wanted_sizes[0])); i++) {
        if (size == wanted_sizes[i] && memcmp(text, wanted_headers[i], (size_t)size) == 0) {
            return 1;
        }
    }
    return extra != Py_None && PyBytes_GET_SIZE(extra) == size && memcmp(PyBytes_AS_STRING(extra), text, (size_t)size) == 0;
}

/* The names and values of a capture's headers (the flat tuple of _context._wanted_headers) that
 * _context._captured_headers(kept, ip_header) reads, flat and in their order: equal tuples give equal headers. A new
 * reference; NULL without an exception for headers of another shape or a value that is not bytes; NULL with one on a
 * fault. */
static PyObject *
wanted_header_items(PyObject *kept, PyObject *extra)
{
    PyObject *items[32], *out;
    Py_ssize_t i, n, count = 0;
    if (!PyTuple_CheckExact(kept) || PyTuple_GET_SIZE(kept) % 2) {
        return NULL;
    }
    n = PyTuple_GET_SIZE(kept);
    for (i = 0; i < n; i += 2) {
        PyObject *name = PyTuple_GET_ITEM(kept, i), *value = PyTuple_GET_ITEM(kept, i + 1);
        if (!PyBytes_CheckExact(name)) {
            return NULL;
        }
        if (header_wanted(name, extra)) {
            if (count == 32 || !PyBytes_CheckExact(value)) {
                return NULL; /* a value the Python code decodes its way, or many repeats */
            }
            items[count++] = name; /* borrowed: the capture's tuple holds them and cannot change */
            items[count++] = value;
        }
    }
    if (count == n) {
        return Py_NewRef(kept);
    }
    out = PyTuple_New(count);
    if (out != NULL) {
        for (i = 0; i < count; i++) {
            PyTuple_SET_ITEM(out, i, Py_NewRef(items[i]));
        }
    }
    return out;
}

/* _context._path_key for None or a dict of str to str: Py_None, or a tuple of pairs (a new reference); NULL without an
 * exception for anything else; NULL with one on a fault. */
static PyObject *
path_key(PyObject *params)
{
    PyObject *items, *key, *value;
    Py_ssize_t pos = 0, i = 0;
    if (params == Py_None || (PyDict_CheckExact(params) && PyDict_GET_SIZE(params) == 0)) {
        return Py_NewRef(Py_None);
    }
    if (!PyDict_CheckExact(params)) {
        return NULL;
    }
    items = PyTuple_New(PyDict_GET_SIZE(params));
    if (items == NULL) {
        return NULL;
    }
    while (PyDict_Next(params, &pos, &key, &value)) {
        PyObject *item;
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value) || i >= PyTuple_GET_SIZE(items)) {
            Py_DECREF(items);
            return NULL;
        }
        item = PyTuple_Pack(2, key, value);
        if (item == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyTuple_SET_ITEM(items, i++, item);
    }
    return items;
}

static int
is_small_int(PyObject *value, long expected)
{
    int overflow;
    return PyLong_CheckExact(value) && PyLong_AsLongAndOverflow(value, &overflow) == expected && !overflow;
}

/* A key that equal captures share, as _context.request_key's, for the common captures (`extra`: the ip_header's latin-1
 * bytes, or None): equal keys give equal request_info. An ASGI capture's headers are the raw pairs request_info reads
 * (no decoding), so these keys are not request_key's and have a cache of their own. A new reference; Py_None where
 * request_key gives None or for an unusual capture (the Python code then decides); NULL with an exception on a
 * fault. */
static PyObject *
request_key_c(PyObject *captured, PyObject *extra)
{
    PyObject *parts[8], *key;
    Py_ssize_t n, i;
    if (!PyTuple_CheckExact(captured) || PyTuple_GET_SIZE(captured) < 8) {
        return Py_NewRef(Py_None);
    }
    n = PyTuple_GET_SIZE(captured);
    if (n == 9 && is_small_int(PyTuple_GET_ITEM(captured, 0), 0)) { /* ASGI */
        PyObject *client = PyTuple_GET_ITEM(captured, 1), *path = PyTuple_GET_ITEM(captured, 3);
        PyObject *query = PyTuple_GET_ITEM(captured, 6);
        if (PyTuple_GET_ITEM(captured, 8) != Py_None || !PyUnicode_CheckExact(path) || !PyBytes_CheckExact(query)
            || PyUnicode_GET_LENGTH(path) + PyBytes_GET_SIZE(query) > WIRE_MAX_KEYED_TEXT) {
            return Py_NewRef(Py_None);
        }
        if (client == Py_None) {
            parts[1] = Py_None;
        }
        else if ((PyTuple_CheckExact(client) || PyList_CheckExact(client))) {
            parts[1] = PySequence_Fast_GET_SIZE(client) ? PySequence_Fast_GET_ITEM(client, 0) : Py_None;
        }
        else {
            return Py_NewRef(Py_None);
        }
        parts[2] = wanted_header_items(PyTuple_GET_ITEM(captured, 2), extra);
        if (parts[2] == NULL) {
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        }
        parts[7] = path_key(PyTuple_GET_ITEM(captured, 7));
        if (parts[7] == NULL) {
            Py_DECREF(parts[2]);
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        }
        parts[0] = PyTuple_GET_ITEM(captured, 0);
        parts[3] = path;
        parts[4] = PyTuple_GET_ITEM(captured, 4);
        parts[5] = PyTuple_GET_ITEM(captured, 5);
        parts[6] = query;
        key = PyTuple_New(8);
        if (key != NULL) {
            for (i = 0; i < 8; i++) {
                PyTuple_SET_ITEM(key, i, (i == 2 || i == 7) ? parts[i] : Py_NewRef(parts[i]));
            }
            return key;
        }
        Py_DECREF(parts[2]);
        Py_DECREF(parts[7]);
        return NULL;
    }
    if (n == 8 && (is_small_int(PyTuple_GET_ITEM(captured, 0), 1) || is_small_int(PyTuple_GET_ITEM(captured, 0), 2))) {
        PyObject *meta = PyTuple_GET_ITEM(captured, 1), *path = PyTuple_GET_ITEM(captured, 2), *query, *items, *k, *v;
        Py_ssize_t pos = 0;
        if (PyTuple_GET_ITEM(captured, 5) != Py_None || PyTuple_GET_ITEM(captured, 6) != Py_None
            || PyTuple_GET_ITEM(captured, 7) != Py_None || !PyDict_CheckExact(meta) || !PyUnicode_CheckExact(path)) {
            return Py_NewRef(Py_None);
        }
        query = PyDict_GetItemWithError(meta, environ_keys[2]); /* QUERY_STRING; _environ_parts' keys are str */
        if (query == NULL && PyErr_Occurred()) {
            return NULL;
        }
        if (query != NULL && !PyUnicode_CheckExact(query)) {
            return Py_NewRef(Py_None);
        }
        if (PyUnicode_GET_LENGTH(path) + (query == NULL ? 0 : PyUnicode_GET_LENGTH(query)) > WIRE_MAX_KEYED_TEXT) {
            return Py_NewRef(Py_None);
        }
        parts[4] = path_key(PyTuple_GET_ITEM(captured, 4));
        if (parts[4] == NULL) {
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        }
        items = PyTuple_New(PyDict_GET_SIZE(meta));
        if (items == NULL) {
            Py_DECREF(parts[4]);
            return NULL;
        }
        i = 0;
        while (PyDict_Next(meta, &pos, &k, &v)) {
            PyObject *item = i < PyTuple_GET_SIZE(items) ? PyTuple_Pack(2, k, v) : NULL;
            if (item == NULL) {
                Py_DECREF(items);
                Py_DECREF(parts[4]);
                return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
            }
            PyTuple_SET_ITEM(items, i++, item);
        }
        key = PyTuple_Pack(5, PyTuple_GET_ITEM(captured, 0), items, path, PyTuple_GET_ITEM(captured, 3), parts[4]);
        Py_DECREF(items);
        Py_DECREF(parts[4]);
        return key;
    }
    return Py_NewRef(Py_None);
}

static PyObject *
request_key_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || (args[1] != Py_None && !PyBytes_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "request_key(captured, ip_header_bytes_or_None)");
        return NULL;
    }
    return request_key_c(args[0], args[1]);
}

/* The Scrubber's parts its compiled twin reads (Scrubber.compiled_parts()). */
typedef struct {
    PyObject *key_cache, *text_cache, *redacted, *scrub_str, *is_sensitive_key, *scrub, *card_int;
} ScrubParts;

static int
scrub_parts(PyObject *tuple, ScrubParts *out)
{
    if (!PyTuple_CheckExact(tuple) || PyTuple_GET_SIZE(tuple) != 7 || !PyDict_CheckExact(PyTuple_GET_ITEM(tuple, 0))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(tuple, 1)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(tuple, 2))) {
        PyErr_SetString(PyExc_TypeError, "scrubber parts: (key_cache, text_cache, marker, _scrub_str, "
                                         "is_sensitive_key, _scrub, _card_int)");
        return -1;
    }
    out->key_cache = PyTuple_GET_ITEM(tuple, 0);
    out->text_cache = PyTuple_GET_ITEM(tuple, 1);
    out->redacted = PyTuple_GET_ITEM(tuple, 2);
    out->scrub_str = PyTuple_GET_ITEM(tuple, 3);
    out->is_sensitive_key = PyTuple_GET_ITEM(tuple, 4);
    out->scrub = PyTuple_GET_ITEM(tuple, 5);
    out->card_int = PyTuple_GET_ITEM(tuple, 6);
    return 0;
}

static PyObject *
call_with_depth(PyObject *fn, PyObject *value, Py_ssize_t depth)
{
    PyObject *level = PyLong_FromSsize_t(depth), *out;
    if (level == NULL) {
        return NULL;
    }
    out = PyObject_CallFunctionObjArgs(fn, value, level, NULL);
    Py_DECREF(level);
    return out;
}

/* Scrubber._scrub's str case: _scrub_str(text, depth) for a text of 5 characters or more, from the text cache when
 * it holds the answer. */
static PyObject *
scrub_text_c(ScrubParts *p, PyObject *text, Py_ssize_t depth)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    if (len < WIRE_MIN_KV_TEXT) {
        return Py_NewRef(text);
    }
    if (len <= WIRE_CACHED_TEXT) {
        PyObject *level = PyLong_FromSsize_t(depth), *probe, *hit;
        if (level == NULL) {
            return NULL;
        }
        probe = PyTuple_Pack(2, text, level);
        Py_DECREF(level);
        if (probe == NULL) {
            return NULL;
        }
        hit = PyDict_GetItemWithError(p->text_cache, probe); /* (str, int): no Python code runs */
        Py_DECREF(probe);
        if (hit != NULL) {
            return Py_NewRef(hit);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return call_with_depth(p->scrub_str, text, depth);
}

/* Whether `key` (exact str) is sensitive: the key cache's answer, else Scrubber.is_sensitive_key's. 1, 0, or -1. */
static int
key_hidden(ScrubParts *p, PyObject *key)
{
    PyObject *hit = PyDict_GetItemWithError(p->key_cache, key), *answer;
    int truth;
    if (hit == Py_True || hit == Py_False) {
        return hit == Py_True;
    }
    if (hit == NULL && PyErr_Occurred()) {
        return -1;
    }
    answer = hit != NULL ? Py_NewRef(hit) : PyObject_CallOneArg(p->is_sensitive_key, key);
    if (answer == NULL) {
        return -1;
    }
    truth = PyObject_IsTrue(answer);
    Py_DECREF(answer);
    return truth;
}

/* An exact int below _CARD_INT_MIN (too short for a card number): 1; else 0. */
static int
short_int(PyObject *value)
{
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    return overflow < 0 || (overflow == 0 && number < WIRE_CARD_INT_MIN);
}

/* Scrubber._scrub(value, depth), compiled: the same walk over dicts, lists and tuples, with the caches' answers for
 * keys and texts; a text, key or int the caches cannot answer, and any other type, is asked of the Python methods.
 * A new reference; NULL with an exception on a fault (and whatever the Python methods raise). */
static PyObject *scrub_c(ScrubParts *p, PyObject *value, Py_ssize_t depth);

/* out[key] = the scrubbed item, as the Python Scrubber's dict case does for one entry of a dict at `depth`:
 * 0, or -1 with an exception. */
static int
scrub_entry(ScrubParts *p, PyObject *out, PyObject *key, PyObject *item, Py_ssize_t depth)
{
    PyObject *kept;
    int hidden, failed;
    Py_INCREF(key); /* held: the Python methods below may run any code */
    Py_INCREF(item);
    hidden = PyUnicode_CheckExact(key) ? key_hidden(p, key) : -2;
    if (hidden == 1) {
        kept = Py_NewRef(p->redacted);
    }
    else if (hidden == 0) {
        if (PyUnicode_CheckExact(item)) {
            kept = scrub_text_c(p, item, depth); /* a dict's texts are scrubbed at its own depth */
        }
        else if (item == Py_None || item == Py_True || item == Py_False) {
            kept = Py_NewRef(item);
        }
        else if (PyLong_CheckExact(item) && !short_int(item)) {
            PyObject *card = PyObject_CallOneArg(p->card_int, item);
            int truth = card == NULL ? -1 : PyObject_IsTrue(card);
            Py_XDECREF(card);
            kept = truth < 0 ? NULL : Py_NewRef(truth ? p->redacted : item);
        }
        else {
            kept = scrub_c(p, item, depth + 1);
        }
    }
    else {
        if (hidden == -2) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary keys changed during scrubbing");
        }
        kept = NULL;
    }
    failed = kept == NULL || PyDict_SetItem(out, key, kept) < 0;
    Py_DECREF(key);
    Py_DECREF(item);
    Py_XDECREF(kept);
    return failed ? -1 : 0;
}

/* scrub_c() of the dict a record's compact properties stand for (_client.expand_properties), without making it. */
static PyObject *
scrub_compact(ScrubParts *p, PyObject *props)
{
    PyObject *keys = PyTuple_GET_ITEM(props, 0), *out;
    Py_ssize_t i, n = PyTuple_GET_SIZE(keys);
    out = _PyDict_NewPresized(n);
    for (i = 0; out != NULL && i < n; i++) { /* the tuples cannot change, whatever code runs */
        if (scrub_entry(p, out, PyTuple_GET_ITEM(keys, i), PyTuple_GET_ITEM(props, i + 1), 0) < 0) {
            Py_CLEAR(out);
        }
    }
    return out;
}

static PyObject *
scrub_c(ScrubParts *p, PyObject *value, Py_ssize_t depth)
{
    if (PyUnicode_CheckExact(value)) {
        return scrub_text_c(p, value, depth);
    }
    if (value == Py_None || value == Py_True || value == Py_False || PyFloat_CheckExact(value)) {
        return Py_NewRef(value);
    }
    if (PyLong_CheckExact(value)) {
        return short_int(value) ? Py_NewRef(value) : call_with_depth(p->scrub, value, depth);
    }
    if (PyDict_CheckExact(value)) {
        PyObject *out, *key, *item;
        Py_ssize_t pos = 0;
        if (depth >= SCRUB_MAX_DEPTH) {
            return Py_NewRef(p->redacted);
        }
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (!PyUnicode_CheckExact(key)) { /* the Python code's own way for the whole dict */
                return call_with_depth(p->scrub, value, depth);
            }
        }
        out = _PyDict_NewPresized(PyDict_GET_SIZE(value));
        if (out == NULL) {
            return NULL;
        }
        pos = 0;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (scrub_entry(p, out, key, item, depth) < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        PyObject *out;
        Py_ssize_t i;
        if (depth >= SCRUB_MAX_DEPTH) {
            return Py_NewRef(p->redacted);
        }
        out = PyList_New(0);
        if (out == NULL) {
            return NULL;
        }
        for (i = 0; i < PySequence_Fast_GET_SIZE(value); i++) { /* the size again each time: code may run */
            PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(value, i)), *kept = scrub_c(p, item, depth + 1);
            int failed = kept == NULL || PyList_Append(out, kept) < 0;
            Py_DECREF(item);
            Py_XDECREF(kept);
            if (failed) {
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
    return call_with_depth(p->scrub, value, depth);
}

static PyObject *
scrub_fn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    ScrubParts parts;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "scrub(value, scrubber_parts)");
        return NULL;
    }
    if (scrub_parts(args[1], &parts) < 0) {
        return NULL;
    }
    return scrub_c(&parts, args[0], 0);
}

typedef struct {
    ScrubParts scrub;
    PyObject *scrubbed, *extra, *wire, *request_info, *make_request_info, *resolver, *info_cache, *second_text,
        *tracked_timestamp, *format_timestamp, *parse_query, *resolve_cached, *environ_headers, *body_params;
    unsigned long long base_lo, base_hi; /* the client's _id_base: its low 64 bits, and the 10 above them */
} WireState;

static const char hex_digits[] = "0123456789abcdef";

/* _client._uuid7(ns // 1_000_000, (id_base + seq) & _MASK_74) */
static PyObject *
uuid7_text(WireState *st, unsigned long long ns, unsigned long long seq)
{
    unsigned long long lo = st->base_lo + seq, hi = (st->base_hi + (lo < seq)) & 0x3FF, halves[2];
    PyObject *out = PyUnicode_New(36, 127);
    Py_UCS1 *text;
    int i, at = 0;
    if (out == NULL) {
        return NULL;
    }
    text = PyUnicode_1BYTE_DATA(out);
    halves[0] = ((ns / 1000000ULL) & 0xFFFFFFFFFFFFULL) << 16 | 0x7ULL << 12 | ((hi << 2 | lo >> 62) & 0xFFF);
    halves[1] = 2ULL << 62 | (lo & 0x3FFFFFFFFFFFFFFFULL);
    for (i = 0; i < 32; i++) { /* 8-4-4-4-12 hex digits */
        text[at++] = (Py_UCS1)hex_digits[(halves[i >> 4] >> (4 * (15 - (i & 15)))) & 0xF];
        if (i == 7 || i == 11 || i == 15 || i == 19) {
            text[at++] = '-';
        }
    }
    return out;
}

/* _client._tracked_timestamp(ns) from its second's cached text (the Python function on a miss). */
static PyObject *
tracked_timestamp(WireState *st, PyObject *ns_obj, unsigned long long ns)
{
    PyObject *second = PyLong_FromUnsignedLongLong(ns / 1000000000ULL), *text, *out;
    unsigned long micros = (unsigned long)(ns % 1000000000ULL / 1000ULL);
    Py_UCS1 *data;
    int i;
    if (second == NULL) {
        return NULL;
    }
    text = PyDict_GetItemWithError(st->second_text, second); /* int keys: no Python code runs */
    Py_DECREF(second);
    if (text == NULL || !PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text) || PyUnicode_GET_LENGTH(text) != 19) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        return PyObject_CallOneArg(st->tracked_timestamp, ns_obj);
    }
    Py_INCREF(text); /* held across the allocation (a finalizer may run there) */
    out = PyUnicode_New(27, 127);
    if (out == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    data = PyUnicode_1BYTE_DATA(out);
    memcpy(data, PyUnicode_1BYTE_DATA(text), 19);
    Py_DECREF(text);
    data[19] = '.';
    for (i = 25; i >= 20; i--) {
        data[i] = (Py_UCS1)('0' + micros % 10);
        micros /= 10;
    }
    data[26] = 'Z';
    return out;
}

/* _context.parse_query(query) for exact str `query`: its split of a query without "%" (the Python function for the
 * others). A new reference; NULL with an exception on a fault. */
static PyObject *
parse_query_c(WireState *st, PyObject *query)
{
    PyObject *text, *parts, *out;
    Py_ssize_t i, n;
    if (PyUnicode_FindChar(query, '%', 0, PyUnicode_GET_LENGTH(query), 1) != -1) {
        return PyObject_CallOneArg(st->parse_query, query);
    }
    text = PyUnicode_FindChar(query, '+', 0, PyUnicode_GET_LENGTH(query), 1) != -1
               ? PyUnicode_Replace(query, str_plus, str_space, -1)
               : Py_NewRef(query);
    if (text == NULL) {
        return NULL;
    }
    parts = PyUnicode_Split(text, str_amp, -1);
    Py_DECREF(text);
    if (parts == NULL) {
        return NULL;
    }
    out = PyDict_New();
    n = PyList_GET_SIZE(parts);
    for (i = 0; out != NULL && i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i), *key, *value, *prev;
        Py_ssize_t len = PyUnicode_GET_LENGTH(part), at;
        int failed;
        if (len == 0) {
            continue;
        }
        at = PyUnicode_FindChar(part, '=', 0, len, 1);
        key = at < 0 ? Py_NewRef(part) : PyUnicode_Substring(part, 0, at);
        value = at < 0 ? Py_NewRef(empty_str) : PyUnicode_Substring(part, at + 1, len);
        failed = key == NULL || value == NULL;
        if (!failed) {
            prev = PyDict_GetItemWithError(out, key); /* exact str keys: no Python code runs */
            if (prev != NULL) { /* repeated: a list of the values in order */
                PyObject *list = PyList_CheckExact(prev) ? PyList_GetSlice(prev, 0, PyList_GET_SIZE(prev))
                                                         : PyList_New(0);
                failed = list == NULL || (!PyList_CheckExact(prev) && PyList_Append(list, prev) < 0)
                         || PyList_Append(list, value) < 0 || PyDict_SetItem(out, key, list) < 0;
                Py_XDECREF(list);
            }
            else {
                failed = PyErr_Occurred() != NULL || PyDict_SetItem(out, key, value) < 0;
            }
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (failed) {
            Py_CLEAR(out);
        }
    }
    Py_DECREF(parts);
    return out;
}

/* _context._params(query, path_params, form, json_body), or NULL without an exception for path parameters that are
 * not a plain dict of str keys to str or int values (the Python code then makes the whole request_info). */
static PyObject *
params_c(WireState *st, PyObject *query, PyObject *path_params, PyObject *form, PyObject *json_body)
{
    PyObject *params = PyDict_New(), *value;
    int truth;
    if (params == NULL) {
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(query) > 0) {
        value = parse_query_c(st, query);
        if (value == NULL || PyDict_SetItem(params, str_w_query, value) < 0) {
            goto fault;
        }
        Py_DECREF(value);
    }
    if (path_params != Py_None) {
        PyObject *key, *item;
        Py_ssize_t pos = 0;
        if (!PyDict_CheckExact(path_params)) {
            goto unhandled;
        }
        if (PyDict_GET_SIZE(path_params) > 0) {
            value = PyDict_New();
            if (value == NULL) {
                goto unhandled;
            }
            while (PyDict_Next(path_params, &pos, &key, &item)) {
                PyObject *text;
                if (!PyUnicode_CheckExact(key) || (!PyUnicode_CheckExact(item) && !PyLong_CheckExact(item))) {
                    Py_DECREF(value);
                    goto unhandled;
                }
                text = PyUnicode_CheckExact(item) ? Py_NewRef(item) : PyObject_Str(item); /* always text */
                if (text == NULL || PyDict_SetItem(value, key, text) < 0) {
                    Py_XDECREF(text);
                    Py_DECREF(value);
                    goto fault;
                }
                Py_DECREF(text);
            }
            if (PyDict_SetItem(params, str_path, value) < 0) {
                goto fault;
            }
            Py_DECREF(value);
        }
    }
    truth = PyObject_IsTrue(form);
    if (truth < 0 || (truth && PyDict_SetItem(params, str_form, form) < 0)
        || (json_body != Py_None && PyDict_SetItem(params, str_w_json, json_body) < 0)) {
        goto unhandled;
    }
    return params;
fault:
    Py_XDECREF(value);
unhandled:
    Py_DECREF(params);
    return NULL;
}

/* _context._body_params(content_type, tee): the (form, json) pair, as two new references; -1 with an exception when
 * the Python function raised or gave something else. */
static int
body_params_c(WireState *st, PyObject *content_type, PyObject *tee, PyObject **form, PyObject **json)
{
    PyObject *pair = PyObject_CallFunctionObjArgs(st->body_params, content_type, tee, NULL);
    if (pair == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_TypeError, "_body_params gave no (form, json) pair");
        return -1;
    }
    *form = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
    *json = Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    Py_DECREF(pair);
    return 0;
}

/* _context.request_info(captured, resolver) for the common captures: a new reference; NULL without an exception for
 * the others (the Python function makes them); NULL with one on a fault. A body the tee recorded is parsed by the
 * Python code (_body_params). */
static PyObject *
request_info_c(WireState *st, PyObject *captured)
{
    PyObject *values[5] = {NULL}, *headers = NULL, *peer, *info = NULL, *form = NULL, *json = NULL;
    PyObject *const keys[5] = {str_w_client_ip, str_w_user_agent, str_path, str_w_verb, str_w_params};
    int i;
    if (!PyTuple_CheckExact(captured)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(captured) == 9 && is_small_int(PyTuple_GET_ITEM(captured, 0), 0)) { /* ASGI */
        PyObject *client = PyTuple_GET_ITEM(captured, 1), *kept = PyTuple_GET_ITEM(captured, 2);
        PyObject *method = PyTuple_GET_ITEM(captured, 4), *scope_type = PyTuple_GET_ITEM(captured, 5);
        PyObject *query = PyTuple_GET_ITEM(captured, 6), *text, *key, *raw, *name;
        Py_ssize_t j;
        if (!PyBytes_CheckExact(query) || !PyTuple_CheckExact(kept) || PyTuple_GET_SIZE(kept) % 2
            || (method == Py_None && !PyUnicode_CheckExact(scope_type))) {
            return NULL;
        }
        if (client == Py_None) {
            peer = Py_None;
        }
        else if (PyTuple_CheckExact(client) || PyList_CheckExact(client)) {
            peer = PySequence_Fast_GET_SIZE(client) ? PySequence_Fast_GET_ITEM(client, 0) : Py_None;
        }
        else {
            return NULL;
        }
        headers = PyDict_New(); /* _captured_headers(kept, ip_header) */
        if (headers == NULL) {
            return NULL;
        }
        for (j = 0; j < PyTuple_GET_SIZE(kept); j += 2) { /* the capture's tuple: it cannot change */
            PyObject *prev;
            int failed;
            name = PyTuple_GET_ITEM(kept, j);
            if (!PyBytes_CheckExact(name)) {
                goto unhandled;
            }
            if (!header_wanted(name, st->extra)) {
                continue;
            }
            raw = PyTuple_GET_ITEM(kept, j + 1);
            if (!PyBytes_CheckExact(raw)) {
                goto unhandled;
            }
            key = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), NULL);
            text = key == NULL ? NULL : PyUnicode_DecodeLatin1(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL);
            prev = text == NULL ? NULL : PyDict_GetItemWithError(headers, key);
            if (prev != NULL) { /* repeated: joined in order */
                Py_SETREF(text, PyUnicode_FromFormat("%U, %U", prev, text));
            }
            failed = text == NULL || PyDict_SetItem(headers, key, text) < 0;
            Py_XDECREF(key);
            Py_XDECREF(text);
            if (failed) {
                goto fault;
            }
        }
        values[1] = PyDict_GetItemWithError(headers, str_w_user_agent_header);
        values[1] = Py_NewRef(values[1] != NULL ? values[1] : Py_None);
        values[2] = Py_NewRef(PyTuple_GET_ITEM(captured, 3));
        if (method != Py_None) {
            values[3] = Py_NewRef(method);
        }
        else {
            int http = PyUnicode_CompareWithASCIIString(scope_type, "http") == 0;
            values[3] = PyUnicode_FromString(http ? "GET" : "WEBSOCKET");
            if (values[3] == NULL) {
                goto fault;
            }
        }
        if (PyTuple_GET_ITEM(captured, 8) == Py_None) {
            form = Py_NewRef(Py_None);
            json = Py_NewRef(Py_None);
        }
        else {
            PyObject *ctype = PyDict_GetItemWithError(headers, str_w_content_type); /* exact str keys */
            if (body_params_c(st, ctype != NULL ? ctype : empty_str, PyTuple_GET_ITEM(captured, 8), &form, &json)) {
                goto fault;
            }
        }
        text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(query), PyBytes_GET_SIZE(query), NULL);
        if (text == NULL) {
            goto fault;
        }
        values[4] = params_c(st, text, PyTuple_GET_ITEM(captured, 7), form, json);
        Py_DECREF(text);
        if (values[4] == NULL) {
            goto unhandled;
        }
        Py_INCREF(peer);
        values[0] = PyObject_CallFunctionObjArgs(st->resolve_cached, peer, headers, NULL);
        Py_DECREF(peer);
    }
    else if (PyTuple_GET_SIZE(captured) == 8
             && (is_small_int(PyTuple_GET_ITEM(captured, 0), 1) || is_small_int(PyTuple_GET_ITEM(captured, 0), 2))) {
        PyObject *meta = PyTuple_GET_ITEM(captured, 1), *query;
        if (!PyDict_CheckExact(meta)) {
            return NULL;
        }
        query = PyDict_GetItemWithError(meta, environ_keys[2]); /* QUERY_STRING */
        if ((query == NULL && PyErr_Occurred()) || (query != NULL && !PyUnicode_CheckExact(query))) {
            return NULL;
        }
        if (PyTuple_GET_ITEM(captured, 7) == Py_None) {
            form = Py_NewRef(PyTuple_GET_ITEM(captured, 5));
            json = Py_NewRef(PyTuple_GET_ITEM(captured, 6));
        }
        else { /* a body read through the tee (not by Werkzeug) */
            PyObject *ctype = PyDict_GetItemWithError(meta, environ_keys[3]); /* CONTENT_TYPE */
            if (body_params_c(st, ctype != NULL ? ctype : empty_str, PyTuple_GET_ITEM(captured, 7), &form, &json)) {
                goto fault;
            }
        }
        values[4] = params_c(st, query == NULL ? empty_str : query, PyTuple_GET_ITEM(captured, 4), form, json);
        if (values[4] == NULL) {
            goto unhandled;
        }
        values[1] = PyDict_GetItemWithError(meta, environ_keys[1]); /* HTTP_USER_AGENT */
        values[1] = Py_NewRef(values[1] != NULL ? values[1] : Py_None);
        values[2] = Py_NewRef(PyTuple_GET_ITEM(captured, 2));
        values[3] = Py_NewRef(PyTuple_GET_ITEM(captured, 3));
        headers = PyObject_CallOneArg(st->environ_headers, meta);
        if (headers == NULL) {
            goto fault;
        }
        peer = PyDict_GetItemWithError(meta, environ_keys[0]); /* REMOTE_ADDR */
        peer = Py_NewRef(peer != NULL ? peer : Py_None);
        values[0] = PyObject_CallFunctionObjArgs(st->resolve_cached, peer, headers, NULL);
        Py_DECREF(peer);
    }
    else {
        return NULL;
    }
    if (values[0] == NULL) {
        goto fault;
    }
    info = _PyDict_NewPresized(5);
    for (i = 0; info != NULL && i < 5; i++) {
        if (PyDict_SetItem(info, keys[i], values[i]) < 0) {
            Py_CLEAR(info);
        }
    }
fault:
unhandled:
    Py_XDECREF(headers);
    Py_XDECREF(form);
    Py_XDECREF(json);
    for (i = 0; i < 5; i++) {
        Py_XDECREF(values[i]);
    }
    return info;
}

/* The scrubbed default properties of a captured request (Client._request_info): from this batch's events of the same
 * request, else from the cache under this code's key, else made (request_info, then scrubbed) and cached. Whatever
 * goes wrong making them is left to Client._request_info, which logs it and sends the event without them. */
static PyObject *
wire_request(WireState *st, PyObject *captured)
{
    PyObject *id = PyLong_FromVoidPtr(captured), *known, *key, *info = NULL;
    int keyed;
    if (id == NULL) {
        return NULL;
    }
    known = PyDict_GetItemWithError(st->scrubbed, id); /* int keys: no Python code runs */
    if (known != NULL && known != Py_None) {
        Py_DECREF(id);
        return Py_NewRef(known);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(id);
        return NULL;
    }
    key = request_key_c(captured, st->extra);
    if (key == NULL) {
        Py_DECREF(id);
        return NULL;
    }
    keyed = key != Py_None;
    if (keyed) {
        known = PyDict_GetItemWithError(st->info_cache, key); /* a method or type may hash oddly */
        if (known != NULL) {
            info = Py_NewRef(known);
        }
        else if (PyErr_Occurred()) {
            keyed = 0; /* as _request_info: that capture is not cached */
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                goto done;
            }
            PyErr_Clear();
        }
    }
    if (info == NULL) {
        PyObject *raw = request_info_c(st, captured);
        if (raw == NULL && !PyErr_Occurred()) {
            raw = PyObject_CallFunctionObjArgs(st->make_request_info, captured, st->resolver, NULL);
        }
        if (raw != NULL) {
            info = scrub_c(&st->scrub, raw, 0);
            Py_DECREF(raw);
        }
        if (info == NULL) { /* an unreadable request: the Python method says so in the log */
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                goto done;
            }
            PyErr_Clear();
            keyed = 0;
            info = PyObject_CallFunctionObjArgs(st->request_info, captured, Py_False, NULL);
        }
        if (info != NULL && info != Py_None && keyed) { /* bounded: requests come from clients */
            if (PyDict_GET_SIZE(st->info_cache) >= WIRE_INFO_CACHE_SIZE) {
                PyDict_Clear(st->info_cache);
            }
            if (PyDict_SetItem(st->info_cache, key, info) < 0) {
                Py_CLEAR(info);
            }
        }
    }
    if (info != NULL && PyDict_SetItem(st->scrubbed, id, info) < 0) {
        Py_CLEAR(info);
    }
done:
    Py_DECREF(key);
    Py_DECREF(id);
    return info;
}

/* The wire event of a record (Client._wire): a new reference; NULL without an exception for a record of another
 * shape (Client._wire makes it); NULL with one on a fault. */
static PyObject *
wire_common(WireState *st, PyObject *record)
{
    PyObject *ns_obj, *props, *captured, *blocked, *when, *body, *event = NULL, *values[7] = {NULL};
    PyObject *const keys[7] = {str_w_id, str_w_name, str_w_timestamp, str_w_properties, str_w_user_identifiers,
                               str_w_request, str_w_body};
    unsigned long long ns, seq;
    int i, truth;
    if (!PyTuple_CheckExact(record) || PyTuple_GET_SIZE(record) != RECORD_LENGTH) {
        return NULL;
    }
    ns_obj = PyTuple_GET_ITEM(record, 0);
    props = PyTuple_GET_ITEM(record, 3);
    when = PyTuple_GET_ITEM(record, 5);
    captured = PyTuple_GET_ITEM(record, 6);
    body = PyTuple_GET_ITEM(record, 7);
    blocked = PyTuple_GET_ITEM(record, 9);
    if (!PyLong_CheckExact(ns_obj) || !PyLong_CheckExact(PyTuple_GET_ITEM(record, 1))
        || (blocked != Py_True && blocked != Py_False && blocked != Py_None)
        || (props != Py_None && !PyDict_CheckExact(props) && !is_compact_properties(props))) {
        return NULL;
    }
    {
        int over_ns, over_seq;
        long long ns_value = PyLong_AsLongLongAndOverflow(ns_obj, &over_ns);
        long long seq_value = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(record, 1), &over_seq);
        if (over_ns || over_seq || ns_value < 0 || seq_value < 0) {
            return NULL; /* exact ints: no exception */
        }
        ns = (unsigned long long)ns_value;
        seq = (unsigned long long)seq_value;
    }
    values[0] = uuid7_text(st, ns, seq);
    values[1] = Py_NewRef(PyTuple_GET_ITEM(record, 2));
    values[2] = when == Py_None ? tracked_timestamp(st, ns_obj, ns) : PyObject_CallOneArg(st->format_timestamp, when);
    if (values[0] == NULL || values[2] == NULL) {
        goto done;
    }
    if (PyTuple_CheckExact(props)) { /* compact: never empty */
        values[3] = scrub_compact(&st->scrub, props);
    }
    else {
        truth = props != Py_None && PyDict_GET_SIZE(props) > 0; /* "properties": scrub(props) if props else {} */
        values[3] = truth ? scrub_c(&st->scrub, props, 0) : PyDict_New();
    }
    if (values[3] == NULL) {
        goto done;
    }
    values[4] = Py_NewRef(PyTuple_GET_ITEM(record, 4));
    values[5] = captured == Py_None ? Py_NewRef(Py_None) : wire_request(st, captured);
    if (values[5] == NULL) {
        goto done;
    }
    values[6] = body == Py_None ? Py_NewRef(Py_None) : scrub_c(&st->scrub, body, 0);
    if (values[6] == NULL) {
        goto done;
    }
    event = _PyDict_NewPresized(8);
    if (event == NULL) {
        goto done;
    }
    for (i = 0; i < 7; i++) {
        if (PyDict_SetItem(event, keys[i], values[i]) < 0) {
            Py_CLEAR(event);
            goto done;
        }
    }
    if (blocked == Py_True && PyDict_SetItem(event, str_w_blocked, Py_True) < 0) {
        Py_CLEAR(event);
    }
done:
    for (i = 0; i < 7; i++) {
        Py_XDECREF(values[i]);
    }
    return event;
}

/* wire_batch(batch, scrubbed, id_base, ip_header_bytes, client_parts, scrubber_parts):
 * [client._wire(record, scrubbed, True) for record in batch], compiled. client_parts: (client._wire,
 * client._request_info, _context.request_info, client.resolver, a dict of this code's request keys to scrubbed
 * request_info (bounded here), _client._SECOND_TEXT, _client._tracked_timestamp, format_timestamp,
 * _context.parse_query, client.resolver.resolve_cached, _context._EnvironHeaders, _context._body_params). */
static PyObject *
wire_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    WireState st;
    PyObject *records, *events, *high, *shift, *parts;
    Py_ssize_t i, n;
    if (nargs != 6 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyLong_CheckExact(args[2])
        || (args[3] != Py_None && !PyBytes_CheckExact(args[3])) || !PyTuple_CheckExact(args[4])
        || PyTuple_GET_SIZE(args[4]) != 12 || !PyDict_CheckExact(PyTuple_GET_ITEM(args[4], 4))
        || !PyDict_CheckExact(PyTuple_GET_ITEM(args[4], 5))) {
        PyErr_SetString(PyExc_TypeError,
                        "wire_batch(batch, scrubbed, id_base, ip_header, client_parts, scrubber_parts)");
        return NULL;
    }
    if (scrub_parts(args[5], &st.scrub) < 0) {
        return NULL;
    }
    parts = args[4];
    st.scrubbed = args[1];
    st.extra = args[3];
    st.wire = PyTuple_GET_ITEM(parts, 0);
    st.request_info = PyTuple_GET_ITEM(parts, 1);
    st.make_request_info = PyTuple_GET_ITEM(parts, 2);
    st.resolver = PyTuple_GET_ITEM(parts, 3);
    st.info_cache = PyTuple_GET_ITEM(parts, 4);
    st.second_text = PyTuple_GET_ITEM(parts, 5);
    st.tracked_timestamp = PyTuple_GET_ITEM(parts, 6);
    st.format_timestamp = PyTuple_GET_ITEM(parts, 7);
    st.parse_query = PyTuple_GET_ITEM(parts, 8);
    st.resolve_cached = PyTuple_GET_ITEM(parts, 9);
    st.environ_headers = PyTuple_GET_ITEM(parts, 10);
    st.body_params = PyTuple_GET_ITEM(parts, 11);
    st.base_lo = PyLong_AsUnsignedLongLongMask(args[2]);
    if (st.base_lo == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    shift = PyLong_FromLong(64);
    if (shift == NULL) {
        return NULL;
    }
    high = PyNumber_Rshift(args[2], shift);
    Py_DECREF(shift);
    if (high == NULL) {
        return NULL;
    }
    st.base_hi = PyLong_AsUnsignedLongLongMask(high) & 0x3FF;
    Py_DECREF(high);
    if (PyErr_Occurred()) {
        return NULL;
    }
    records = PyList_AsTuple(args[0]); /* Python code runs below: the list is not read while it does */
    if (records == NULL) {
        return NULL;
    }
    n = PyTuple_GET_SIZE(records);
    events = PyList_New(n);
    if (events == NULL) {
        Py_DECREF(records);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *record = PyTuple_GET_ITEM(records, i), *event = wire_common(&st, record);
        if (event == NULL && !PyErr_Occurred()) {
            event = PyObject_CallFunctionObjArgs(st.wire, record, st.scrubbed, Py_True, NULL);
        }
        if (event == NULL) {
            Py_DECREF(records);
            Py_DECREF(events);
            return NULL;
        }
        PyList_SET_ITEM(events, i, event);
    }
    Py_DECREF(records);
    return events;
}

/* ---- the collector's quick path ---------------------------------------------------------------------------------
 * quick_records(events, app, received_at, parts): [_wire._quick_record(event, app, received_at) for event in events],
 * compiled. parts: (EventRecord, datetime.fromisoformat, _wire._fine, MAX_NAME_LENGTH, MAX_PROPERTIES,
 * MAX_KEY_LENGTH, MAX_STRING_LENGTH, MAX_CLIENT_IP_LENGTH, _MIN_TS, _MAX_TS, MAX_FUTURE_SKEW). Each item is the record
 * the Python function makes, or None where it gives None (the exact checks then decide and word the error). */

typedef struct {
    PyObject *record_type, *fromisoformat, *fine;
    Py_ssize_t max_name, max_properties, max_key, max_string, max_client_ip;
    double min_ts, max_ts, future_skew;
} QuickParts;

static PyObject *qk_id, *qk_name, *qk_timestamp, *qk_properties, *qk_user_identifiers, *qk_request, *qk_client_ip,
    *qk_user_agent, *qk_verb, *qk_params, *qk_body, *qk_timestamp_method;

/* str.isascii() and "\x00" not in text */
static int
qk_plain(PyObject *text)
{
    return PyUnicode_IS_ASCII(text) && memchr(PyUnicode_DATA(text), 0, (size_t)PyUnicode_GET_LENGTH(text)) == NULL;
}

/* 0 < len(key) <= max_key, for a str key (any other key: not the quick path's) */
static int
qk_key(QuickParts *q, PyObject *key)
{
    Py_ssize_t n;
    if (!PyUnicode_Check(key)) {
        return 0;
    }
    n = PyUnicode_GET_LENGTH(key);
    return n > 0 && n <= q->max_key;
}

/* MIN_INT <= value <= MAX_INT for an exact int */
static int
qk_int64(PyObject *value)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return overflow == 0;
}

/* The canonical 8-4-4-4-12 hex form; *lower receives event_id.lower() (a new reference) */
static int
qk_uuid(PyObject *event_id, PyObject **lower)
{
    const Py_UCS1 *data;
    Py_ssize_t i;
    int upper = 0;
    if (!PyUnicode_CheckExact(event_id) || PyUnicode_GET_LENGTH(event_id) != 36 || !PyUnicode_IS_ASCII(event_id)) {
        return 0;
    }
    data = PyUnicode_1BYTE_DATA(event_id);
    for (i = 0; i < 36; i++) {
        Py_UCS1 c = data[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }
        }
        else if (c >= 'A' && c <= 'F') {
            upper = 1;
        }
        else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    if (!upper) {
        Py_INCREF(event_id);
        *lower = event_id;
        return 1;
    }
    *lower = PyUnicode_New(36, 127);
    if (*lower == NULL) {
        return -1;
    }
    for (i = 0; i < 36; i++) {
        Py_UCS1 c = data[i];
        PyUnicode_1BYTE_DATA(*lower)[i] = (Py_UCS1)(c >= 'A' && c <= 'F' ? c + ('a' - 'A') : c);
    }
    return 1;
}

/* _quick_timestamp(stamp): 1 and *ts set, 0 for None, -1 on an error to raise */
static int
qk_timestamp_of(QuickParts *q, PyObject *stamp, PyObject **ts)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(stamp), first;
    PyObject *parsed;
    if (n == 0 || PyUnicode_READ_CHAR(stamp, n - 1) != 'Z') {
        return 0;
    }
    first = PyUnicode_FindChar(stamp, 'Z', 0, n, 1);
    if (first == -2) {
        return -1;
    }
    if (first != n - 1) { /* stamp.count("Z") != 1 */
        return 0;
    }
    parsed = PyObject_CallOneArg(q->fromisoformat, stamp);
    if (parsed != NULL) {
        *ts = PyObject_CallMethodNoArgs(parsed, qk_timestamp_method);
        Py_DECREF(parsed);
    }
    else {
        *ts = NULL;
    }
    if (*ts == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) || PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    if (!PyFloat_Check(*ts)) { /* a datetime of another kind: not the quick path's */
        Py_CLEAR(*ts);
        return 0;
    }
    return 1;
}

/* fine(value, depth) as a truth value: 1, 0, or -1 on an error to raise */
static int
qk_fine(QuickParts *q, PyObject *value, int depth)
{
    PyObject *d = PyLong_FromLong(depth), *verdict;
    int ok;
    if (d == NULL) {
        return -1;
    }
    verdict = PyObject_CallFunctionObjArgs(q->fine, value, d, NULL);
    Py_DECREF(d);
    if (verdict == NULL) {
        return -1;
    }
    ok = PyObject_IsTrue(verdict);
    Py_DECREF(verdict);
    return ok;
}

static int
qk_leaf(PyObject *value)
{
    return PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || PyBool_Check(value) || value == Py_None;
}

/* One event: a new reference to its record, Py_None (new reference) for the exact checks, NULL on an error. */
static PyObject *
quick_record(QuickParts *q, PyObject *event, PyObject *app, PyObject *received_at, double received)
{
    PyObject *event_id, *name, *stamp, *properties, *identifiers, *request, *body, *blocked_value;
    PyObject *client_ip = Py_None, *lower = NULL, *ts = NULL, *props = NULL, *ids = NULL, *users = NULL;
    PyObject *request_out = NULL, *items = NULL, *args = NULL, *record = NULL;
    Py_ssize_t n, pos;
    PyObject *key, *value;
    int r, blocked;
    double t;

    if (!PyDict_CheckExact(event)) {
        Py_RETURN_NONE;
    }
    event_id = PyDict_GetItemWithError(event, qk_id);
    name = event_id == NULL ? NULL : PyDict_GetItemWithError(event, qk_name);
    stamp = name == NULL ? NULL : PyDict_GetItemWithError(event, qk_timestamp);
    if (stamp == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (!PyUnicode_CheckExact(name) || !PyUnicode_CheckExact(stamp)) {
        Py_RETURN_NONE;
    }
    n = PyUnicode_GET_LENGTH(name);
    if (n <= 0 || n > q->max_name || !qk_plain(name)) {
        Py_RETURN_NONE;
    }
    r = qk_uuid(event_id, &lower);
    if (r <= 0) {
        if (r < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    r = qk_timestamp_of(q, stamp, &ts);
    if (r <= 0) {
        goto fail_or_none;
    }
    t = PyFloat_AS_DOUBLE(ts);
    if (!(q->min_ts <= t && t <= q->max_ts) || t > received + q->future_skew) {
        r = 0;
        goto fail_or_none;
    }

    properties = PyDict_GetItemWithError(event, qk_properties);
    if (properties == NULL) {
        if (PyErr_Occurred()) {
            r = -1;
            goto fail_or_none;
        }
        props = PyDict_New();
    }
    else {
        r = 0;
        if (!PyDict_CheckExact(properties) || PyDict_GET_SIZE(properties) > q->max_properties) {
            goto fail_or_none;
        }
        pos = 0;
        while (PyDict_Next(properties, &pos, &key, &value)) {
            if (!qk_key(q, key)) {
                goto fail_or_none;
            }
            if (PyUnicode_CheckExact(value)) {
                if (PyUnicode_GET_LENGTH(value) > q->max_string) {
                    goto fail_or_none;
                }
            }
            else if (PyLong_CheckExact(value)) {
                if (!qk_int64(value)) {
                    goto fail_or_none;
                }
            }
            else if (PyFloat_CheckExact(value)) {
                if (!isfinite(PyFloat_AS_DOUBLE(value))) {
                    goto fail_or_none;
                }
            }
            else if (!PyBool_Check(value) && value != Py_None) {
                goto fail_or_none;
            }
        }
        props = PyDict_Copy(properties);
    }
    if (props == NULL) {
        r = -1;
        goto fail_or_none;
    }

    identifiers = PyDict_GetItemWithError(event, qk_user_identifiers);
    if (identifiers == NULL && PyErr_Occurred()) {
        r = -1;
        goto fail_or_none;
    }
    if (identifiers == NULL || identifiers == Py_None) {
        users = PyTuple_New(0);
        if (users == NULL) {
            r = -1;
            goto fail_or_none;
        }
    }
    else {
        Py_ssize_t i = 0;
        r = 0;
        n = PyDict_CheckExact(identifiers) ? PyDict_GET_SIZE(identifiers) : 0;
        if (n <= 0 || n > q->max_properties) {
            goto fail_or_none;
        }
        users = PyTuple_New(n);
        if (users == NULL) {
            r = -1;
            goto fail_or_none;
        }
        pos = 0;
        while (PyDict_Next(identifiers, &pos, &key, &value)) {
            PyObject *text;
            if (!qk_key(q, key)) {
                goto fail_or_none;
            }
            if (PyUnicode_CheckExact(value)) {
                if (PyUnicode_GET_LENGTH(value) > q->max_string || !qk_plain(value)) {
                    goto fail_or_none;
                }
                Py_INCREF(value);
                text = value;
            }
            else if (PyLong_CheckExact(value) && qk_int64(value)) {
                text = PyObject_Str(value);
                if (text == NULL) {
                    r = -1;
                    goto fail_or_none;
                }
            }
            else {
                goto fail_or_none;
            }
            PyTuple_SET_ITEM(users, i, text);
            i++;
        }
        ids = PyDict_Copy(identifiers);
        if (ids == NULL) {
            r = -1;
            goto fail_or_none;
        }
    }

    request = PyDict_GetItemWithError(event, qk_request);
    if (request == NULL && PyErr_Occurred()) {
        r = -1;
        goto fail_or_none;
    }
    if (request == Py_None) {
        request = NULL;
    }
    if (request != NULL) {
        PyObject *agent, *path, *verb, *params;
        r = 0;
        if (!PyDict_CheckExact(request) || PyDict_GET_SIZE(request) != 5) {
            goto fail_or_none;
        }
        client_ip = PyDict_GetItemWithError(request, qk_client_ip);
        agent = client_ip == NULL ? NULL : PyDict_GetItemWithError(request, qk_user_agent);
        path = agent == NULL ? NULL : PyDict_GetItemWithError(request, str_path);
        verb = path == NULL ? NULL : PyDict_GetItemWithError(request, qk_verb);
        params = verb == NULL ? NULL : PyDict_GetItemWithError(request, qk_params);
        if (params == NULL) {
            r = PyErr_Occurred() ? -1 : 0;
            client_ip = Py_None;
            goto fail_or_none;
        }
        if ((client_ip != Py_None
             && (!PyUnicode_CheckExact(client_ip) || PyUnicode_GET_LENGTH(client_ip) > q->max_client_ip
                 || !qk_plain(client_ip)))
            || (agent != Py_None && !PyUnicode_CheckExact(agent)) || !PyUnicode_CheckExact(path)
            || !PyUnicode_CheckExact(verb) || !PyDict_CheckExact(params)) {
            client_ip = Py_None;
            goto fail_or_none;
        }
        pos = 0;
        while (PyDict_Next(params, &pos, &key, &value)) {
            if (!qk_leaf(value)) {
                Py_INCREF(value);
                r = qk_fine(q, value, 3);
                Py_DECREF(value);
                if (r <= 0) {
                    client_ip = Py_None;
                    goto fail_or_none;
                }
                r = 0;
            }
        }
    }

    body = PyDict_GetItemWithError(event, qk_body);
    if (body == NULL) {
        if (PyErr_Occurred()) {
            r = -1;
            goto fail_or_none;
        }
        body = Py_None;
    }
    Py_INCREF(body); /* held across the call below, which runs Python code */
    if (body != Py_None) {
        r = qk_fine(q, body, 1);
        if (r <= 0) {
            Py_DECREF(body);
            client_ip = Py_None;
            goto fail_or_none;
        }
    }
    blocked_value = PyDict_GetItemWithError(event, str_blocked);
    if (blocked_value == NULL && PyErr_Occurred()) {
        Py_DECREF(body);
        r = -1;
        goto fail_or_none;
    }
    blocked = blocked_value == Py_True;
    if (request != NULL && blocked) {
        request_out = PyDict_Copy(request);
        if (request_out == NULL || PyDict_SetItem(request_out, str_blocked, Py_True) < 0) {
            Py_DECREF(body);
            r = -1;
            goto fail_or_none;
        }
    }
    else {
        request_out = request == NULL ? Py_None : request;
        Py_INCREF(request_out);
    }
    items = PyTuple_New(13);
    if (items == NULL) {
        Py_DECREF(body);
        r = -1;
        goto fail_or_none;
    }
    PyTuple_SET_ITEM(items, 0, lower);
    PyTuple_SET_ITEM(items, 1, Py_NewRef(name));
    PyTuple_SET_ITEM(items, 2, ts);
    PyTuple_SET_ITEM(items, 3, Py_NewRef(received_at));
    PyTuple_SET_ITEM(items, 4, Py_NewRef(app));
    PyTuple_SET_ITEM(items, 5, Py_NewRef(client_ip == NULL ? Py_None : client_ip));
    PyTuple_SET_ITEM(items, 6, props);
    PyTuple_SET_ITEM(items, 7, ids == NULL ? Py_NewRef(Py_None) : ids);
    PyTuple_SET_ITEM(items, 8, request_out);
    PyTuple_SET_ITEM(items, 9, body);
    PyTuple_SET_ITEM(items, 10, users);
    PyTuple_SET_ITEM(items, 11, PyLong_FromLong(0));
    PyTuple_SET_ITEM(items, 12, Py_NewRef(blocked ? Py_True : Py_False));
    if (PyTuple_GET_ITEM(items, 11) == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL) {
        return NULL;
    }
    record = PyTuple_Type.tp_new((PyTypeObject *)q->record_type, args, NULL); /* tuple.__new__(EventRecord, items) */
    Py_DECREF(args);
    return record;

fail_or_none:
    Py_XDECREF(lower);
    Py_XDECREF(ts);
    Py_XDECREF(props);
    Py_XDECREF(ids);
    Py_XDECREF(users);
    Py_XDECREF(request_out);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
qk_size(PyObject *parts, Py_ssize_t index, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(PyTuple_GET_ITEM(parts, index));
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
qk_double(PyObject *parts, Py_ssize_t index, double *out)
{
    *out = PyFloat_AsDouble(PyTuple_GET_ITEM(parts, index));
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
quick_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    QuickParts q;
    PyObject *events, *out, *parts;
    Py_ssize_t i, n;
    double received;
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyUnicode_Check(args[1]) || !PyFloat_Check(args[2])
        || !PyTuple_CheckExact(args[3]) || PyTuple_GET_SIZE(args[3]) != 11
        || !PyType_Check(PyTuple_GET_ITEM(args[3], 0))
        || !PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(args[3], 0), &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "quick_records(events: list, app: str, received_at: float, parts)");
        return NULL;
    }
    parts = args[3];
    q.record_type = PyTuple_GET_ITEM(parts, 0);
    q.fromisoformat = PyTuple_GET_ITEM(parts, 1);
    q.fine = PyTuple_GET_ITEM(parts, 2);
    if (qk_size(parts, 3, &q.max_name) < 0 || qk_size(parts, 4, &q.max_properties) < 0
        || qk_size(parts, 5, &q.max_key) < 0 || qk_size(parts, 6, &q.max_string) < 0
        || qk_size(parts, 7, &q.max_client_ip) < 0 || qk_double(parts, 8, &q.min_ts) < 0
        || qk_double(parts, 9, &q.max_ts) < 0 || qk_double(parts, 10, &q.future_skew) < 0) {
        return NULL;
    }
    received = PyFloat_AS_DOUBLE(args[2]);
    events = PyList_AsTuple(args[0]); /* Python code runs below (fromisoformat, _fine): the list is not read then */
    if (events == NULL) {
        return NULL;
    }
    n = PyTuple_GET_SIZE(events);
    out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(events);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *record = quick_record(&q, PyTuple_GET_ITEM(events, i), args[1], args[2], received);
        if (record == NULL) {
            Py_DECREF(events);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, record);
    }
    Py_DECREF(events);
    return out;
}

static PyMethodDef methods[] = {
    {"check_common_properties", (PyCFunction)(void (*)(void))check_common_properties, METH_FASTCALL,
     "check_properties' common case: (copy, size), or None for every other case."},
    {"queue_put", (PyCFunction)(void (*)(void))queue_put, METH_FASTCALL, "EventQueue.put(queue, record)."},
    {"check_common_user", (PyCFunction)check_common_user, METH_O,
     "check_user_identifiers' common case: the copy, or None for every other case."},
    {"wire_batch", (PyCFunction)(void (*)(void))wire_batch, METH_FASTCALL,
     "[client._wire(record, scrubbed, True) for record in batch], the common records compiled."},
    {"scrub", (PyCFunction)(void (*)(void))scrub_fn, METH_FASTCALL,
     "Scrubber.scrub(value) for an enabled scrubber, from its compiled_parts()."},
    {"request_key", (PyCFunction)(void (*)(void))request_key_fn, METH_FASTCALL,
     "_context.request_key(captured, ip_header) for the common captures; None for the others."},
    {"quick_records", (PyCFunction)(void (*)(void))quick_records, METH_FASTCALL,
     "The collector's [_wire._quick_record(event, app, received_at) for event in events]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sqreen_mw._speedups", "Compiled twins of the hottest steps of track() and of the collector's ingest.", -1, methods,
};

#define INTERN(var, text)                                                                                              \
    do {                                                                                                               \
        var = PyUnicode_InternFromString(text);                                                                        \
        if (var == NULL) {                                                                                             \
            return NULL;                                                                                               \
        }                                                                                                              \
    } while (0)

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module, *wire_constants;

    INTERN(str__lock, "_lock");
    INTERN(str__items, "_items");
    INTERN(str__bytes, "_bytes");
    INTERN(str_tracked, "tracked");
    INTERN(str_max_events, "max_events");
    INTERN(str_max_bytes, "max_bytes");
    INTERN(str_wake_count, "wake_count");
    INTERN(str_wake_bytes, "wake_bytes");
    queue_names[Q_LOCK] = str__lock;
    queue_names[Q_ITEMS] = str__items;
    queue_names[Q_BYTES] = str__bytes;
    queue_names[Q_TRACKED] = str_tracked;
    INTERN(str__shed, "_shed");
    INTERN(str_acquire, "acquire");
    INTERN(str_release, "release");
    INTERN(str_append, "append");
    INTERN(str__capture, "_capture");
    INTERN(str_capture, "capture");
    INTERN(str_user, "user");
    INTERN(str_blocked, "blocked");
    INTERN(str__accepting, "_accepting");
    INTERN(str__started_pid, "_started_pid");
    INTERN(str__enqueue_slow, "_enqueue_slow");
    INTERN(str__start, "_start");
    INTERN(str_flusher, "flusher");
    INTERN(str_wake, "wake");
    INTERN(str_enforcer, "enforcer");
    INTERN(str_actions, "actions");
    INTERN(str_hot_events, "hot_events");
    INTERN(str_hot, "hot");
    INTERN(str_client, "client");
    INTERN(str_headers, "headers");
    INTERN(str_path, "path");
    INTERN(str_method, "method");
    INTERN(str_type, "type");
    INTERN(str_query_string, "query_string");
    INTERN(str_path_params, "path_params");
    INTERN(str_kind, "kind");
    INTERN(str_raw, "raw");
    INTERN(str_body_tee, "body_tee");
    INTERN(str_ended, "ended");
    INTERN(str_read_any, "read_any");
    INTERN(str_overflow, "overflow");
    INTERN(empty_str, "");
    INTERN(str_werkzeug_request, "werkzeug.request");
    INTERN(str_view_args, "view_args");
    INTERN(str___dict__, "__dict__");
    INTERN(str_form, "form");
    INTERN(str__cached_json, "_cached_json");
    INTERN(str_script_name, "SCRIPT_NAME");
    INTERN(str_path_info, "PATH_INFO");
    INTERN(str_request_method, "REQUEST_METHOD");
    INTERN(str_get, "GET");
    INTERN(environ_keys[0], "REMOTE_ADDR"); /* _context._ENVIRON_KEYS, in its order */
    INTERN(environ_keys[1], "HTTP_USER_AGENT");
    INTERN(environ_keys[2], "QUERY_STRING");
    INTERN(environ_keys[3], "CONTENT_TYPE");
    INTERN(environ_keys[4], "HTTP_X_FORWARDED_FOR");
    INTERN(environ_keys[5], "HTTP_FORWARDED");
    INTERN(environ_keys[6], "HTTP_X_REAL_IP");
    empty_bytes = PyBytes_FromStringAndSize("", 0);
    empty_tuple = PyTuple_New(0);
    if (empty_bytes == NULL || empty_tuple == NULL) {
        return NULL;
    }
    INTERN(str__current, "_current");
    INTERN(str_close, "close");
    INTERN(str_app, "app");
    INTERN(str__client, "_client");
    INTERN(str_has_ip_blocks, "has_ip_blocks");
    INTERN(str_has_user_blocks, "has_user_blocks");
    INTERN(str_content_length, "CONTENT_LENGTH");
    INTERN(str_transfer_encoding, "HTTP_TRANSFER_ENCODING");
    INTERN(str_file_wrapper, "wsgi.file_wrapper");
    INTERN(str_head, "HEAD");
    INTERN(str_options, "OPTIONS");
    {
        PyObject *collections = PyImport_ImportModule("collections"), *append;
        if (collections == NULL) {
            return NULL;
        }
        deque_type = (PyTypeObject *)PyObject_GetAttrString(collections, "deque"); /* held for good */
        Py_DECREF(collections);
        if (deque_type == NULL || !PyType_Check(deque_type)) {
            PyErr_SetString(PyExc_ImportError, "collections.deque is not a type");
            return NULL;
        }
        append = PyObject_GetAttrString((PyObject *)deque_type, "append");
        if (append == NULL) {
            return NULL;
        }
        if (Py_IS_TYPE(append, &PyMethodDescr_Type) && ((PyMethodDescrObject *)append)->d_method->ml_flags == METH_O) {
            deque_append_fn = ((PyMethodDescrObject *)append)->d_method->ml_meth;
        }
        Py_DECREF(append);
        if (deque_append_fn == NULL) { /* not the C deque: put() calls its append */
            Py_CLEAR(deque_type);
        }
    }
    no_body = PyTuple_Pack(3, str_get, str_head, str_options); /* wsgi._NO_BODY */
    if (no_body == NULL) {
        return NULL;
    }
    Py_SETREF(no_body, PyFrozenSet_New(no_body));
    if (no_body == NULL) {
        return NULL;
    }
    INTERN(str_wsgi_input, "wsgi.input");
    INTERN(str_max_body_bytes, "max_body_bytes");
    wsgi_kind = PyLong_FromLong(1); /* _context.WSGI */
    asgi_kind = PyLong_FromLong(0); /* _context.ASGI */
    zero = PyLong_FromLong(0);
    if (wsgi_kind == NULL || asgi_kind == NULL || zero == NULL) {
        return NULL;
    }
    INTERN(str_http, "http");
    INTERN(str_http_request, "http.request");
    INTERN(str_body, "body");
    INTERN(str_more_body, "more_body");
    INTERN(str_record, "record");
    INTERN(str_throw, "throw");
    INTERN(str__receive, "_receive");
    INTERN(str__track, "_track");
    INTERN(str_w_id, "id");
    INTERN(str_w_name, "name");
    INTERN(str_w_timestamp, "timestamp");
    INTERN(str_w_properties, "properties");
    INTERN(str_w_user_identifiers, "user_identifiers");
    INTERN(str_w_request, "request");
    INTERN(str_w_body, "body");
    INTERN(str_w_blocked, "blocked");
    INTERN(str_plus, "+");
    INTERN(str_space, " ");
    INTERN(str_amp, "&");
    INTERN(str_w_query, "query");
    INTERN(str_w_json, "json");
    INTERN(str_w_client_ip, "client_ip");
    INTERN(str_w_user_agent, "user_agent");
    INTERN(str_w_verb, "verb");
    INTERN(str_w_params, "params");
    INTERN(str_w_user_agent_header, "user-agent");
    INTERN(str_w_content_type, "content-type");
    INTERN(qk_id, "id");
    INTERN(qk_name, "name");
    INTERN(qk_timestamp, "timestamp");
    INTERN(qk_properties, "properties");
    INTERN(qk_user_identifiers, "user_identifiers");
    INTERN(qk_request, "request");
    INTERN(qk_client_ip, "client_ip");
    INTERN(qk_user_agent, "user_agent");
    INTERN(qk_verb, "verb");
    INTERN(qk_params, "params");
    INTERN(qk_body, "body");
    INTERN(qk_timestamp_method, "timestamp");
    INTERN(keyword_names[0], "properties");
    INTERN(keyword_names[1], "user_identifiers");
    INTERN(keyword_names[2], "timestamp");
    INTERN(keyword_names[3], "collect_body");
    INTERN(keyword_names[4], "request");
    if (PyType_Ready(&TrackerType) < 0 || PyType_Ready(&FrontType) < 0 || PyType_Ready(&BoundType) < 0
        || PyType_Ready(&WSGICallType) < 0 || PyType_Ready(&RLockType) < 0 || PyType_Ready(&ASGICallType) < 0
        || PyType_Ready(&ForwardType) < 0 || PyType_Ready(&TeeReceiveType) < 0) {
        return NULL;
    }
    wire_constants = Py_BuildValue("(iiLiii)", WIRE_MIN_KV_TEXT, WIRE_CACHED_TEXT, WIRE_CARD_INT_MIN, WIRE_MAX_KEYED_TEXT,
                                   WIRE_INFO_CACHE_SIZE, SCRUB_MAX_DEPTH);
    if (wire_constants == NULL) {
        return NULL;
    }
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        Py_DECREF(wire_constants);
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Tracker", (PyObject *)&TrackerType) < 0
        || PyModule_AddObjectRef(module, "Front", (PyObject *)&FrontType) < 0
        || PyModule_AddObjectRef(module, "BoundResponse", (PyObject *)&BoundType) < 0
        || PyModule_AddObjectRef(module, "WSGICall", (PyObject *)&WSGICallType) < 0
        || PyModule_AddObjectRef(module, "ASGICall", (PyObject *)&ASGICallType) < 0
        || PyModule_AddObjectRef(module, "Forward", (PyObject *)&ForwardType) < 0
        || PyModule_AddObjectRef(module, "TeeReceive", (PyObject *)&TeeReceiveType) < 0
        || PyModule_AddObjectRef(module, "RLock", (PyObject *)&RLockType) < 0
        || PyModule_AddObjectRef(module, "WIRE_CONSTANTS", wire_constants) < 0) {
        Py_DECREF(wire_constants);
        Py_DECREF(module);
        return NULL;
    }
    Py_DECREF(wire_constants);
    return module;
}
