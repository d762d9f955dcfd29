/*
 * gateway._idscan: find the ids a route's pointers name in a JSON text, and splice their
 * replacements in, without building Python objects for the rest of the document.
 *
 * ID translation (gateway/mapping/flow.py) used to parse each translated body with orjson,
 * rewrite the ids in the parsed value and serialise it again: ~470k instructions for a call
 * with 50 ids each way, two thirds of an untranslated call. Here one pass over the bytes
 * validates the JSON (RFC 8259: grammar, UTF-8, escapes, surrogate pairs) and records each
 * id's place; Python looks the ids up in the mapping cache (dict lookups in C) and splice()
 * writes the body with every other byte as it was.
 *
 * The walk follows the same rules as gateway.mapping.translate.walk (see that module); for
 * whatever it does not decide the same way for certain, scan() answers None and the caller
 * takes the parsed-value path, which also gives the errors their words:
 *   - anything that is not valid JSON, or nests deeper than MAX_DEPTH;
 *   - on a strict program (a route refusing unknown ids), a value where an id or a container
 *     belongs that is neither (the caller raises NotAnId from the parsed value);
 *   - an object meeting a node with "*" (every value of an object), a key the pointers name
 *     twice in one object (the parsed value keeps the last), a key with an escape where keys
 *     are compared, an id with an escape, an integer id of more than 18 digits, or "-0".
 *
 * Program(nodes, leaves): nodes is a sequence of (strict, star, entries), star the child
 * of "*" or None, entries a sequence of (key bytes, child, index or -1); a child is a node
 * number (>= 0) or ~leaf (< 0). scan(body) -> (values, spans) | None: values[leaf] is the
 * list of ids (str) found at that leaf in document order, spans packs (start, end, leaf) of
 * each id token as three uint32 in document order. splice(body, spans, news) -> bytes:
 * news[leaf][i] is the replacement of the i-th id of that leaf, or None to keep it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 1024    /* as orjson reads: a deeper body is "not JSON" either way */
#define MAX_ENTRIES 64    /* named segments of one node (a duplicate-key bit each) */
#define MAX_INT_DIGITS 18 /* an integer id that surely fits in an int64, as orjson reads it */
#define NO_TARGET INT32_MIN

enum { OK = 0, GIVE_UP = 1, FAILED = 2, MORE = 3 }; /* FAILED: a Python exception is set */

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    int32_t child;
    int64_t index; /* the array index this segment also names, or -1 */
} Entry;

typedef struct {
    int strict;
    int32_t star; /* NO_TARGET when the node has no "*" */
    int lists;    /* a "*" or an index segment: arrays are entered */
    Py_ssize_t n_entries;
    Entry *entries;
} Node;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_nodes, n_leaves;
    Node *nodes;
    PyObject *keys; /* keeps the key bytes alive */
} Program;

typedef struct {
    const unsigned char *base, *p, *end;
    int depth;
    int leaf_strict;
    PyObject *values; /* list of lists, one per leaf */
    uint32_t *spans;
    Py_ssize_t n_spans, cap_spans;
    PyObject *views;   /* scan(body, views): a dict per leaf, id -> replacement; or NULL */
    PyObject *news;    /* then: a list per leaf, the replacement of each id or None */
    Py_ssize_t *hits;  /* then: ids replaced, per leaf */
    Py_ssize_t misses; /* then: ids the views do not hold */
} Scan;

/* --- character classes ----------------------------------------------------------------- */

/* 1 for the bytes that stop the plain run of a string: '"', '\\', controls, non-ASCII;
 * and for JSON's four whitespace bytes. */
static unsigned char STOP[256], WS[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++) {
        STOP[c] = (c == '"' || c == '\\' || c < 0x20 || c >= 0x80);
        WS[c] = (c == ' ' || c == '\n' || c == '\r' || c == '\t');
    }
}

/* Eight bytes at a time: a mask with the high bit of each byte that is '"', '\\', a
 * control or non-ASCII. The lowest such byte is always marked exactly (these tests' borrows
 * only run upwards from a byte that does match), so its place is the mask's lowest bit. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WORDS 1 /* the first byte in memory is the word's lowest */
#endif

static inline uint64_t stop_mask8(const unsigned char *p) {
    uint64_t x, q, b;
    memcpy(&x, p, 8);
    q = x ^ (ONES * '"'); /* a zero byte where x holds '"' */
    b = x ^ (ONES * '\\');
    uint64_t below = (x - ONES * 0x20) & ~x; /* high bit set under a byte < 0x20 */
    uint64_t quote = (q - ONES) & ~q;
    uint64_t slash = (b - ONES) & ~b;
    return (below | quote | slash | x) & HIGHS; /* x: a non-ASCII byte */
}

/* The first byte at or after p that STOP marks, or end. */
static inline const unsigned char *next_stop(const unsigned char *p, const unsigned char *end) {
#ifdef WORDS
    while (end - p >= 8) {
        uint64_t m = stop_mask8(p);
        if (m)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && !STOP[*p])
        p++;
    return p;
}

static inline void skip_ws(Scan *s) {
    const unsigned char *p = s->p, *end = s->end;
    while (p < end && WS[*p])
        p++;
    s->p = p;
}

static int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return 0;
        v = (v << 4) | d;
    }
    *out = v;
    return 1;
}

/* One UTF-8 sequence starting at p (a byte >= 0x80): its length, or 0 when not valid
 * (overlong forms, surrogates and code points beyond U+10FFFF are not). */
static Py_ssize_t utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        return (left >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && p[1] >= 0xA0)
            return 0; /* a surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90)
            return 0; /* beyond U+10FFFF */
        return 4;
    }
    return 0;
}

/* A string at s->p (on its opening quote): validated; s->p after the closing quote.
 * *escaped gets ESCAPED when it held an escape, NON_ASCII when a byte >= 0x80. */
enum { ESCAPED = 1, NON_ASCII = 2 };

static int string(Scan *s, int *escaped) {
    const unsigned char *p = s->p + 1, *end = s->end;
    *escaped = 0;
    for (;;) {
        p = next_stop(p, end);
        if (p >= end)
            return GIVE_UP;
        unsigned c = *p;
        if (c == '"') {
            s->p = p + 1;
            return OK;
        }
        if (c < 0x20)
            return GIVE_UP;
        if (c >= 0x80) {
            Py_ssize_t n = utf8_seq(p, end);
            *escaped |= NON_ASCII;
            if (!n)
                return GIVE_UP;
            p += n;
            continue;
        }
        /* a backslash */
        *escaped |= ESCAPED;
        if (end - p < 2)
            return GIVE_UP;
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p += 2;
            break;
        case 'u': {
            unsigned u, lo;
            if (end - p < 6 || !hex4(p + 2, &u))
                return GIVE_UP;
            p += 6;
            if (u >= 0xDC00 && u <= 0xDFFF)
                return GIVE_UP; /* a low surrogate alone */
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return GIVE_UP; /* a high surrogate alone */
                p += 6;
            }
            break;
        }
        default:
            return GIVE_UP;
        }
    }
}

/* A number at s->p: validated; *is_int when it has no fraction and no exponent. */
static int number(Scan *s, int *is_int) {
    const unsigned char *p = s->p, *end = s->end;
    *is_int = 1;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return GIVE_UP;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return GIVE_UP;
    }
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return GIVE_UP;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    return OK;
}

static int literal(Scan *s, const char *word, Py_ssize_t n) {
    if (s->end - s->p < n || memcmp(s->p, word, (size_t)n) != 0)
        return GIVE_UP;
    s->p += n;
    return OK;
}

static int record(Scan *s, int32_t leaf, const unsigned char *start, const unsigned char *stop,
                  PyObject *value) {
    if (value == NULL)
        return FAILED;
    PyObject *list = PyList_GET_ITEM(s->values, leaf);
    int err = PyList_Append(list, value);
    if (err == 0 && s->views != NULL) {
        PyObject *new = PyDict_GetItemWithError(PyList_GET_ITEM(s->views, leaf), value);
        if (new == NULL && PyErr_Occurred()) {
            err = -1;
        } else {
            if (new != NULL && PyUnicode_Check(new))
                s->hits[leaf]++;
            else
                s->misses++, new = Py_None;
            err = PyList_Append(PyList_GET_ITEM(s->news, leaf), new);
        }
    }
    Py_DECREF(value);
    if (err < 0)
        return FAILED;
    if (s->n_spans + 3 > s->cap_spans) {
        Py_ssize_t cap = s->cap_spans ? s->cap_spans * 2 : 96;
        uint32_t *grown = PyMem_Realloc(s->spans, (size_t)cap * sizeof(uint32_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return FAILED;
        }
        s->spans = grown;
        s->cap_spans = cap;
    }
    s->spans[s->n_spans++] = (uint32_t)(start - s->base);
    s->spans[s->n_spans++] = (uint32_t)(stop - s->base);
    s->spans[s->n_spans++] = (uint32_t)leaf;
    return OK;
}

static int value(Scan *s, const Program *prog, int32_t target);

/* The value at a leaf: a non-empty string or an integer is an id; null is no reference;
 * anything else is skipped, or gives up on a strict program (NotAnId is the slow path's). */
static int leaf_value(Scan *s, const Program *prog, int32_t leaf) {
    const unsigned char *start = s->p;
    int r;
    if (*start == '"') {
        int escaped;
        if ((r = string(s, &escaped)) != OK)
            return r;
        if (escaped & ESCAPED)
            return GIVE_UP;
        Py_ssize_t len = (s->p - start) - 2;
        if (len == 0)
            return s->leaf_strict ? GIVE_UP : OK;
        PyObject *id;
        if (escaped & NON_ASCII) {
            id = PyUnicode_DecodeUTF8((const char *)start + 1, len, NULL);
        } else { /* ASCII: the bytes are the characters */
            id = PyUnicode_New(len, 127);
            if (id != NULL)
                memcpy(PyUnicode_1BYTE_DATA(id), start + 1, (size_t)len);
        }
        return record(s, leaf, start, s->p, id);
    }
    if (*start == '-' || (*start >= '0' && *start <= '9')) {
        int is_int;
        if ((r = number(s, &is_int)) != OK)
            return r;
        Py_ssize_t len = s->p - start;
        Py_ssize_t digits = len - (*start == '-');
        if (!is_int || digits > MAX_INT_DIGITS || (len == 2 && start[0] == '-' && start[1] == '0'))
            return (s->leaf_strict || is_int) ? GIVE_UP : OK;
        return record(s, leaf, start, s->p, PyUnicode_DecodeASCII((const char *)start, len, NULL));
    }
    if (*start == 'n')
        return literal(s, "null", 4);
    if (s->leaf_strict)
        return GIVE_UP;
    return value(s, prog, NO_TARGET);
}

static const Entry *find_key(const Node *node, const unsigned char *key, Py_ssize_t len,
                             Py_ssize_t *at) {
    for (Py_ssize_t i = 0; i < node->n_entries; i++) {
        const Entry *e = &node->entries[i];
        if (e->key_len == len && memcmp(e->key, key, (size_t)len) == 0) {
            *at = i;
            return e;
        }
    }
    return NULL;
}

/* After a member or an element: a comma (MORE follow) or the closing byte (OK). */
static inline int next_member(Scan *s, unsigned char close) {
    skip_ws(s);
    if (s->p < s->end && *s->p == ',') {
        s->p++;
        skip_ws(s);
        return MORE;
    }
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return OK;
    }
    return GIVE_UP;
}

static int object(Scan *s, const Program *prog, const Node *node) {
    uint64_t seen = 0;
    int r;
    if (node != NULL && node->star != NO_TARGET)
        return GIVE_UP; /* "*" over an object's values: the slow path */
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return OK;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"')
            return GIVE_UP;
        const unsigned char *key = s->p;
        int escaped;
        if ((r = string(s, &escaped)) != OK)
            return r;
        int32_t child = NO_TARGET;
        if (node != NULL) {
            if (escaped & ESCAPED)
                return GIVE_UP;
            Py_ssize_t at;
            const Entry *e = find_key(node, key + 1, (s->p - key) - 2, &at);
            if (e != NULL) {
                if (seen & ((uint64_t)1 << at))
                    return GIVE_UP; /* the same named field twice */
                seen |= (uint64_t)1 << at;
                child = e->child;
            }
        }
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return GIVE_UP;
        s->p++;
        skip_ws(s);
        if ((r = value(s, prog, child)) != OK || (r = next_member(s, '}')) != MORE)
            return r;
    }
}

static int array(Scan *s, const Program *prog, const Node *node) {
    int r;
    if (node != NULL && !node->lists) {
        if (node->strict)
            return GIVE_UP; /* an array where an object belongs */
        node = NULL;
    }
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return OK;
    }
    for (int64_t i = 0;; i++) {
        int32_t child = NO_TARGET;
        if (node != NULL) {
            if (node->star != NO_TARGET) {
                child = node->star;
            } else {
                for (Py_ssize_t k = 0; k < node->n_entries; k++) {
                    if (node->entries[k].index == i) {
                        child = node->entries[k].child;
                        break;
                    }
                }
            }
        }
        if (s->p >= s->end)
            return GIVE_UP;
        if ((r = value(s, prog, child)) != OK || (r = next_member(s, ']')) != MORE)
            return r;
    }
}

/* Any value at s->p, walked with ``target``: a node, ~leaf, or NO_TARGET (validated only). */
static int value(Scan *s, const Program *prog, int32_t target) {
    if (s->p >= s->end)
        return GIVE_UP;
    if (target != NO_TARGET && target < 0)
        return leaf_value(s, prog, ~target);
    const Node *node = target == NO_TARGET ? NULL : &prog->nodes[target];
    int r, escaped, is_int;
    switch (*s->p) {
    case '{':
    case '[':
        if (++s->depth > MAX_DEPTH)
            return GIVE_UP;
        r = *s->p == '{' ? object(s, prog, node) : array(s, prog, node);
        s->depth--;
        return r;
    case 'n':
        return literal(s, "null", 4);
    }
    if (node != NULL && node->strict)
        return GIVE_UP; /* a scalar where a container belongs */
    switch (*s->p) {
    case '"':
        return string(s, &escaped);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    default:
        return number(s, &is_int);
    }
}

/* --- Program --------------------------------------------------------------------------- */

static void Program_dealloc(Program *self) {
    if (self->nodes != NULL) {
        for (Py_ssize_t i = 0; i < self->n_nodes; i++)
            PyMem_Free(self->nodes[i].entries);
        PyMem_Free(self->nodes);
    }
    Py_XDECREF(self->keys);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_child(Program *self, long child) {
    if ((child >= 0 && child < self->n_nodes) || (child < 0 && ~child < self->n_leaves))
        return 1;
    PyErr_SetString(PyExc_ValueError, "a child names no node or leaf");
    return 0;
}

static int Program_init(Program *self, PyObject *args, PyObject *kwds) {
    PyObject *nodes;
    Py_ssize_t n_leaves;
    static char *kwlist[] = {"nodes", "leaves", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On", kwlist, &nodes, &n_leaves))
        return -1;
    if (self->nodes != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Program is already initialised");
        return -1;
    }
    PyObject *seq = PySequence_Fast(nodes, "nodes must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n_leaves < 1 || n_leaves > INT32_MAX || n > INT32_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a program needs a node and a leaf");
        return -1;
    }
    self->keys = PyList_New(0);
    self->nodes = PyMem_Calloc((size_t)n, sizeof(Node));
    if (self->keys == NULL || self->nodes == NULL) {
        Py_DECREF(seq);
        if (self->nodes == NULL)
            PyErr_NoMemory();
        return -1;
    }
    self->n_nodes = n;
    self->n_leaves = n_leaves;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *star, *entries;
        int strict;
        Node *node = &self->nodes[i];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "pOO", &strict, &star,
                              &entries))
            goto fail;
        node->strict = strict;
        node->star = NO_TARGET;
        if (star != Py_None) {
            long c = PyLong_AsLong(star);
            if ((c == -1 && PyErr_Occurred()) || !check_child(self, c))
                goto fail;
            node->star = (int32_t)c;
            node->lists = 1;
        }
        PyObject *es = PySequence_Fast(entries, "entries must be a sequence");
        if (es == NULL)
            goto fail;
        Py_ssize_t m = PySequence_Fast_GET_SIZE(es);
        if (m > MAX_ENTRIES || (m > 0 && node->star != NO_TARGET)) {
            Py_DECREF(es);
            PyErr_SetString(PyExc_ValueError, "a node has '*' and named segments, or too many");
            goto fail;
        }
        node->entries = PyMem_Calloc((size_t)(m ? m : 1), sizeof(Entry));
        if (node->entries == NULL) {
            Py_DECREF(es);
            PyErr_NoMemory();
            goto fail;
        }
        node->n_entries = m;
        for (Py_ssize_t k = 0; k < m; k++) {
            PyObject *key;
            long child;
            long long index;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(es, k), "SlL", &key, &child, &index) ||
                !check_child(self, child) || PyList_Append(self->keys, key) < 0) {
                Py_DECREF(es);
                goto fail;
            }
            Entry *e = &node->entries[k];
            e->key = PyBytes_AS_STRING(key);
            e->key_len = PyBytes_GET_SIZE(key);
            e->child = (int32_t)child;
            e->index = index;
            if (index >= 0)
                node->lists = 1;
        }
        Py_DECREF(es);
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static PyObject *spliced(const char *src, Py_ssize_t len, const uint32_t *sp, Py_ssize_t n,
                         PyObject *news);

static PyObject *new_lists(Py_ssize_t n) {
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *l = PyList_New(0);
        if (l == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, l);
    }
    return out;
}

static PyObject *Program_scan(Program *self, PyObject *args) {
    Py_buffer buf;
    PyObject *arg, *views = Py_None;
    if (self->nodes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Program is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O|O", &arg, &views))
        return NULL;
    if (views != Py_None) {
        if (!PyList_Check(views) || PyList_GET_SIZE(views) != self->n_leaves) {
            PyErr_SetString(PyExc_TypeError, "views must be a list of a dict per leaf");
            return NULL;
        }
        for (Py_ssize_t i = 0; i < self->n_leaves; i++) {
            if (!PyDict_Check(PyList_GET_ITEM(views, i))) {
                PyErr_SetString(PyExc_TypeError, "views must be a list of a dict per leaf");
                return NULL;
            }
        }
    }
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    Scan s = {0};
    if (views != Py_None) {
        s.views = views;
        s.news = new_lists(self->n_leaves);
        s.hits = PyMem_Calloc((size_t)self->n_leaves, sizeof(Py_ssize_t));
        if (s.news == NULL || s.hits == NULL) {
            if (s.hits == NULL)
                PyErr_NoMemory();
            goto done;
        }
    }
    if (buf.len >= UINT32_MAX) { /* spans are uint32 offsets: far beyond any body read */
        result = Py_NewRef(Py_None);
        goto done;
    }
    s.base = s.p = buf.buf;
    s.end = s.base + buf.len;
    s.leaf_strict = self->nodes[0].strict;
    s.values = new_lists(self->n_leaves);
    if (s.values == NULL)
        goto done;
    skip_ws(&s);
    int r = value(&s, self, 0);
    if (r == OK) {
        skip_ws(&s);
        if (s.p != s.end)
            r = GIVE_UP; /* something after the value */
    }
    if (r == FAILED)
        goto done;
    if (r == GIVE_UP) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *spans = PyBytes_FromStringAndSize((const char *)s.spans,
                                                s.n_spans * (Py_ssize_t)sizeof(uint32_t));
    if (spans == NULL)
        goto done;
    if (s.views == NULL) {
        result = PyTuple_Pack(2, s.values, spans);
        Py_DECREF(spans);
        goto done;
    }
    PyObject *hits = PyList_New(self->n_leaves), *out = Py_None;
    Py_ssize_t replaced = 0;
    for (Py_ssize_t i = 0; hits != NULL && i < self->n_leaves; i++) {
        PyObject *h = PyLong_FromSsize_t(s.hits[i]);
        replaced += s.hits[i];
        if (h == NULL)
            Py_CLEAR(hits);
        else
            PyList_SET_ITEM(hits, i, h);
    }
    if (hits != NULL && s.misses == 0) /* every id replaced: the new body at once */
        out = replaced ? spliced(buf.buf, buf.len, s.spans, s.n_spans / 3, s.news) : arg;
    else
        Py_INCREF(out);
    if (hits != NULL && out != NULL)
        result = PyTuple_Pack(5, s.values, spans, s.news, hits, out);
    if (out != arg)
        Py_XDECREF(out);
    Py_XDECREF(hits);
    Py_DECREF(spans);
done:
    Py_XDECREF(s.values);
    Py_XDECREF(s.news);
    PyMem_Free(s.hits);
    PyMem_Free(s.spans);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef Program_methods[] = {
    {"scan", (PyCFunction)Program_scan, METH_VARARGS,
     "scan(body[, views]) -> (values, spans) | None: the ids the pointers name, per leaf, "
     "and their places; None when the body is not JSON or the walk is the slow path's to "
     "decide. With views (a dict per leaf: id -> replacement): (values, spans, news, hits, "
     "out), news[leaf][i] the replacement of each id or None, hits the ids replaced per leaf, "
     "out the new body when every id had a replacement (the body itself when none was "
     "found), else None."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway._idscan.Program",
    .tp_basicsize = sizeof(Program),
    .tp_dealloc = (destructor)Program_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled set of pointers (see gateway/_idscan.c).",
    .tp_methods = Program_methods,
    .tp_init = (initproc)Program_init,
    .tp_new = PyType_GenericNew,
};

/* --- splice ---------------------------------------------------------------------------- */

/* Bytes a replacement takes as a JSON string, quotes included. */
static Py_ssize_t escaped_len(const unsigned char *t, Py_ssize_t n) {
    const unsigned char *first = next_stop(t, t + n); /* non-ASCII stops too: counted below */
    Py_ssize_t out = 2 + (first - t);
    for (Py_ssize_t i = first - t; i < n; i++) {
        unsigned c = t[i];
        out += (c == '"' || c == '\\') ? 2 : (c < 0x20 ? 6 : 1);
    }
    return out;
}

static char *write_escaped(char *w, const unsigned char *t, Py_ssize_t n, Py_ssize_t len) {
    static const char hex[] = "0123456789abcdef";
    *w++ = '"';
    if (len == n + 2) { /* nothing to escape */
        memcpy(w, t, (size_t)n);
        w += n;
        *w++ = '"';
        return w;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned c = t[i];
        if (c == '"' || c == '\\') {
            *w++ = '\\';
            *w++ = (char)c;
        } else if (c < 0x20) {
            *w++ = '\\';
            *w++ = 'u';
            *w++ = '0';
            *w++ = '0';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        } else {
            *w++ = (char)c;
        }
    }
    *w++ = '"';
    return w;
}

/* The body (src, len) with the replacements of news written over the n spans sp. */
static PyObject *spliced(const char *src, Py_ssize_t len, const uint32_t *sp, Py_ssize_t n,
                         PyObject *news) {
    PyObject *result = NULL;
    Py_ssize_t n_leaves = PyList_GET_SIZE(news);
    Py_ssize_t *next = PyMem_Calloc((size_t)(n_leaves ? n_leaves : 1), sizeof(Py_ssize_t));
    Py_ssize_t *sizes = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_ssize_t));
    if (next == NULL || sizes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* First pass: check every span and replacement, and the length of the result. */
    Py_ssize_t total = len, last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t start = sp[3 * i], stop = sp[3 * i + 1], leaf = sp[3 * i + 2];
        if (start < last || stop < start || stop > len || leaf >= n_leaves) {
            PyErr_SetString(PyExc_ValueError, "spans do not fit the body");
            goto done;
        }
        last = stop;
        PyObject *list = PyList_GET_ITEM(news, leaf);
        if (!PyList_Check(list) || next[leaf] >= PyList_GET_SIZE(list)) {
            PyErr_SetString(PyExc_ValueError, "fewer replacements than spans");
            goto done;
        }
        PyObject *new = PyList_GET_ITEM(list, next[leaf]);
        next[leaf]++;
        if (new == Py_None)
            continue;
        Py_ssize_t n_text;
        const char *text = PyUnicode_AsUTF8AndSize(new, &n_text);
        if (text == NULL)
            goto done;
        sizes[i] = escaped_len((const unsigned char *)text, n_text);
        total += sizes[i] - (Py_ssize_t)(stop - start);
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    char *w = PyBytes_AS_STRING(result);
    memset(next, 0, (size_t)(n_leaves ? n_leaves : 1) * sizeof(Py_ssize_t));
    last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t start = sp[3 * i], stop = sp[3 * i + 1], leaf = sp[3 * i + 2];
        PyObject *new = PyList_GET_ITEM(PyList_GET_ITEM(news, leaf), next[leaf]);
        next[leaf]++;
        if (new == Py_None)
            continue;
        memcpy(w, src + last, (size_t)(start - last));
        w += start - last;
        Py_ssize_t n_text;
        const char *text = PyUnicode_AsUTF8AndSize(new, &n_text); /* cached by the first pass */
        w = write_escaped(w, (const unsigned char *)text, n_text, sizes[i]);
        last = stop;
    }
    memcpy(w, src + last, (size_t)(len - last));
done:
    PyMem_Free(next);
    PyMem_Free(sizes);
    return result;
}

static PyObject *splice(PyObject *module, PyObject *args) {
    Py_buffer body, spans;
    PyObject *news;
    if (!PyArg_ParseTuple(args, "y*y*O!", &body, &spans, &PyList_Type, &news))
        return NULL;
    PyObject *result = spliced(body.buf, body.len, spans.buf,
                               spans.len / (Py_ssize_t)(3 * sizeof(uint32_t)), news);
    PyBuffer_Release(&body);
    PyBuffer_Release(&spans);
    return result;
}

static PyMethodDef module_methods[] = {
    {"splice", splice, METH_VARARGS,
     "splice(body, spans, news) -> bytes: the body with the i-th id of each leaf replaced by "
     "news[leaf][i] written as a JSON string (None keeps it)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway._idscan",
    .m_doc = "Find and replace a route's ids in a JSON text (see gateway/_idscan.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__idscan(void) {
    init_tables();
    if (PyType_Ready(&ProgramType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Program", (PyObject *)&ProgramType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
