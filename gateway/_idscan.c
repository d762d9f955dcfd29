/*
 * gateway._idscan: find the ids a route's pointers name in a JSON text, and splice their
 * replacements in, without building Python objects for the rest of the document.
 *
 * ID translation (gateway/mapping/flow.py) used to parse each translated body with orjson,
 * rewrite the ids in the parsed value and serialise it again: ~470k instructions for a call
 * with 50 ids each way, two thirds of an untranslated call. Here one pass over the bytes
 * validates the JSON (RFC 8259: grammar, UTF-8, escapes, surrogate pairs), finds each id,
 * looks it up in the mapping cache's Index for its leaf on the id's own bytes and, when
 * every id has a replacement, writes the new body with every other byte as it was.
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
 * Program(nodes, leaves, found): nodes is a sequence of (strict, star, entries), star the
 * child of "*" or None, entries a sequence of (key bytes, child, index or -1); a child is a
 * node number (>= 0) or ~leaf (< 0); leaves a tuple, one item per leaf, handed back in each
 * result; found the tuple type of the results (see Program_scan); records a tuple, the key
 * each leaf's replacements are counted under in scan()'s ``done``. Index: id -> replacement,
 * kept by the mapping cache and looked up on the bytes of each id (see below).
 * splice(body, spans, news) -> bytes: news[leaf][i] is the replacement of the i-th id of
 * that leaf, or None to keep it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_DEPTH 1024    /* as orjson reads: a deeper body is "not JSON" either way */
#define MAX_ENTRIES 64    /* named segments of one node (a duplicate-key bit each) */
#define MAX_INT_DIGITS 18 /* an integer id that surely fits in an int64, as orjson reads it */
#define NO_TARGET INT32_MIN


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
    PyObject *keys;       /* keeps the key bytes alive */
    PyObject *leaves;     /* a tuple: what the caller calls each leaf (first in a result) */
    PyObject *records;    /* a tuple: the key each leaf's replacements are counted under */
    PyTypeObject *found;  /* a tuple type of six: the type of scan()'s result */
} Program;

typedef struct Index Index;

typedef struct {
    const unsigned char *base, *end; /* *end is 0: the body is a bytes object */
    int depth;
    int leaf_strict;
    int failed; /* a Python exception is set (the walk answered NULL for it) */
    uint32_t *spans;
    Py_ssize_t n_spans, cap_spans;
    Index **indexes;   /* an Index per leaf, id -> replacement */
    PyObject **repl;   /* the replacement of each id (held) or NULL */
    Py_ssize_t *sizes; /* the bytes each replacement takes as a JSON string */
    Py_ssize_t *hits;  /* ids replaced, per leaf */
    Py_ssize_t misses; /* ids the indexes do not hold */
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

/* The first byte at or after p that STOP marks, or end. Sixteen bytes at a time where
 * SSE2 is (every x86-64): a signed compare below 0x20 marks controls and non-ASCII bytes
 * (>= 0x80 are negative) in one instruction; then eight at a time, then one. */
static inline const unsigned char *next_stop(const unsigned char *p, const unsigned char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\');
    const __m128i low = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, slash)),
                                   _mm_cmplt_epi8(x, low));
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#endif
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

/* The walk's position is a pointer passed along and returned (NULL: give up, or with
 * s->failed an exception), so it stays in a register. The body is a bytes object, whose
 * buffer CPython ends with a 0 byte: a loop over bytes stops there without checking the end
 * (0 is no whitespace, no digit, and ends a string as a control byte does). */

static inline const unsigned char *skip_ws(const unsigned char *p) {
    if (*p > ' ')
        return p; /* most often: no whitespace */
    if (*p == ' ' && p[1] > ' ')
        return p + 1; /* or one space, as after json.dumps's ", " and ": " */
    while (WS[*p])
        p++;
    return p;
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

/* A string's special byte at p (a backslash, a control or a non-ASCII byte): the byte
 * after it (and its escape or UTF-8 sequence), or NULL when the string is not valid. */
enum { ESCAPED = 1, NON_ASCII = 2 };

static const unsigned char *__attribute__((noinline))
string_special(const unsigned char *p, const unsigned char *end, int *flags) {
    unsigned c = *p;
    if (c < 0x20)
        return NULL; /* a control byte, or the end */
    if (c >= 0x80) {
        Py_ssize_t n = utf8_seq(p, end);
        *flags |= NON_ASCII;
        return n ? p + n : NULL;
    }
    *flags |= ESCAPED; /* a backslash */
    if (end - p < 2)
        return NULL;
    switch (p[1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 2;
    case 'u': {
        unsigned u, lo;
        if (end - p < 6 || !hex4(p + 2, &u))
            return NULL;
        p += 6;
        if (u >= 0xDC00 && u <= 0xDFFF)
            return NULL; /* a low surrogate alone */
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return NULL; /* a high surrogate alone */
            p += 6;
        }
        return p;
    }
    default:
        return NULL;
    }
}

/* The rest of a string from p (after its opening quote), validated: the byte after its
 * closing quote, or NULL. *flags gets ESCAPED when it held an escape, NON_ASCII a byte >=
 * 0x80. */
static inline const unsigned char *string_rest(const unsigned char *p, const unsigned char *end,
                                               int *flags) {
    for (;;) {
        p = next_stop(p, end); /* at end: the 0 byte, which string_special refuses */
        if (*p == '"')
            return p + 1;
        if ((p = string_special(p, end, flags)) == NULL)
            return NULL;
    }
}

#define DIGIT(c) ((unsigned)((c) - '0') < 10)

/* A number from p, validated: the byte after it, or NULL; *is_int when it has no fraction
 * and no exponent. */
static inline const unsigned char *number(const unsigned char *p, int *is_int) {
    *is_int = 1;
    if (*p == '-')
        p++;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        do
            p++;
        while (DIGIT(*p));
    } else {
        return NULL;
    }
    if (*p == '.') {
        *is_int = 0;
        p++;
        if (!DIGIT(*p))
            return NULL;
        do
            p++;
        while (DIGIT(*p));
    }
    if (*p == 'e' || *p == 'E') {
        *is_int = 0;
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!DIGIT(*p))
            return NULL;
        do
            p++;
        while (DIGIT(*p));
    }
    return p;
}

static inline const unsigned char *literal(const Scan *s, const unsigned char *p,
                                           const char *word, Py_ssize_t n) {
    if (s->end - p < n || memcmp(p, word, (size_t)n) != 0)
        return NULL;
    return p + n;
}

/* --- Index: id -> replacement, looked up on the id's bytes ------------------------------
 *
 * The mapping cache keeps one per view next to its dict (gateway/mapping/cache.py), so the
 * scanner looks each id up where it lies in the body: no str made per id, no list, and the
 * replacement's bytes written straight into the new body. Open addressing with linear
 * probing over (hash, key, value); the hash is SipHash-1-3 (as CPython's str hash) under a
 * key drawn from os.urandom when the module loads, so ids a partner chooses cannot be made
 * to collide. Keys and values are str; a key is hashed and compared as UTF-8. */

static Py_ssize_t escaped_len(const unsigned char *t, Py_ssize_t n);

static uint64_t SIP_K0, SIP_K1;

static int sip_key(void) { /* SIP_K0, SIP_K1 from os.urandom(16) */
    PyObject *os = PyImport_ImportModule("os");
    PyObject *key = os ? PyObject_CallMethod(os, "urandom", "i", 16) : NULL;
    Py_XDECREF(os);
    if (key == NULL)
        return -1;
    if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != 16) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_RuntimeError, "os.urandom(16) gave no 16 bytes");
        return -1;
    }
    memcpy(&SIP_K0, PyBytes_AS_STRING(key), 8);
    memcpy(&SIP_K1, PyBytes_AS_STRING(key) + 8, 8);
    Py_DECREF(key);
    return 0;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                             \
    do {                                                                                     \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                            \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                               \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                               \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                            \
    } while (0)

static uint64_t siphash13(const unsigned char *p, Py_ssize_t n) {
    uint64_t v0 = SIP_K0 ^ UINT64_C(0x736f6d6570736575), v1 = SIP_K1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = SIP_K0 ^ UINT64_C(0x6c7967656e657261), v3 = SIP_K1 ^ UINT64_C(0x7465646279746573);
    uint64_t b = (uint64_t)n << 56, m;
    const unsigned char *end = p + (n & ~(Py_ssize_t)7);
    for (; p < end; p += 8) {
        memcpy(&m, p, 8); /* little-endian hosts; elsewhere a different (still keyed) hash */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t t = 0;
    switch (n & 7) {
    case 7: t |= (uint64_t)p[6] << 48; /* fall through */
    case 6: t |= (uint64_t)p[5] << 40; /* fall through */
    case 5: t |= (uint64_t)p[4] << 32; /* fall through */
    case 4: t |= (uint64_t)p[3] << 24; /* fall through */
    case 3: t |= (uint64_t)p[2] << 16; /* fall through */
    case 2: t |= (uint64_t)p[1] << 8;  /* fall through */
    case 1: t |= (uint64_t)p[0];
    }
    b |= t;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A str's UTF-8 bytes (its own for ASCII, else CPython's cached copy); NULL with an
 * exception when it has none (a lone surrogate). */
static inline const char *utf8_of(PyObject *str, Py_ssize_t *n) {
    if (PyUnicode_IS_COMPACT_ASCII(str)) {
        *n = PyUnicode_GET_LENGTH(str);
        return (const char *)PyUnicode_1BYTE_DATA(str);
    }
    return PyUnicode_AsUTF8AndSize(str, n);
}

typedef struct {
    uint64_t hash;
    PyObject *key; /* NULL: an empty slot */
    PyObject *value;
    Py_ssize_t json_len; /* bytes the value takes written as a JSON string */
} Slot;

struct Index {
    PyObject_HEAD
    Py_ssize_t used, mask;
    Slot *slots;
};

static PyTypeObject IndexType;

/* The slot holding the key with these bytes, or the empty slot where it would go. */
static inline Slot *index_slot(const Index *ix, uint64_t h, const char *key, Py_ssize_t n) {
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)ix->mask);
    for (;;) {
        Slot *slot = &ix->slots[i];
        if (slot->key == NULL)
            return slot;
        if (slot->hash == h) {
            Py_ssize_t len;
            const char *k = utf8_of(slot->key, &len); /* never fails: checked when stored */
            if (len == n && memcmp(k, key, (size_t)n) == 0)
                return slot;
        }
        i = (i + 1) & ix->mask;
    }
}

static inline const Slot *index_get(const Index *ix, const unsigned char *key, Py_ssize_t n) {
    if (ix->used == 0)
        return NULL;
    const Slot *slot = index_slot(ix, siphash13(key, n), (const char *)key, n);
    return slot->key != NULL ? slot : NULL;
}

static int index_resize(Index *ix, Py_ssize_t cap) {
    Slot *old = ix->slots;
    Py_ssize_t old_cap = old ? ix->mask + 1 : 0;
    Slot *slots = PyMem_Calloc((size_t)cap, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ix->slots = slots;
    ix->mask = cap - 1;
    for (Py_ssize_t i = 0; i < old_cap; i++) {
        if (old[i].key == NULL)
            continue;
        Py_ssize_t j = (Py_ssize_t)(old[i].hash & (uint64_t)ix->mask);
        while (slots[j].key != NULL)
            j = (j + 1) & ix->mask;
        slots[j] = old[i];
    }
    PyMem_Free(old);
    return 0;
}

static PyObject *Index_set(Index *self, PyObject *args) {
    PyObject *key, *value;
    if (!PyArg_ParseTuple(args, "UU", &key, &value))
        return NULL;
    Py_ssize_t n, n_value;
    const char *k = utf8_of(key, &n), *v = k ? utf8_of(value, &n_value) : NULL;
    if (v == NULL) {
        /* not UTF-8 (a lone surrogate): never in a JSON text, so never looked up here */
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    Py_ssize_t json_len = escaped_len((const unsigned char *)v, n_value);
    if ((self->used + 1) * 2 > (self->slots ? self->mask + 1 : 0) &&
        index_resize(self, self->slots ? (self->mask + 1) * 2 : 8) < 0)
        return NULL;
    uint64_t h = siphash13((const unsigned char *)k, n);
    Slot *slot = index_slot(self, h, k, n);
    Py_INCREF(value);
    if (slot->key == NULL) {
        Py_INCREF(key);
        slot->key = key;
        slot->hash = h;
        self->used++;
    } else {
        Py_DECREF(slot->value);
    }
    slot->value = value;
    slot->json_len = json_len;
    Py_RETURN_TRUE;
}

static PyObject *Index_discard(Index *self, PyObject *key) {
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "an Index key is a str");
        return NULL;
    }
    Py_ssize_t n;
    const char *k = utf8_of(key, &n);
    if (k == NULL) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    if (self->used == 0)
        Py_RETURN_FALSE;
    Slot *slot = index_slot(self, siphash13((const unsigned char *)k, n), k, n);
    if (slot->key == NULL)
        Py_RETURN_FALSE;
    Py_DECREF(slot->key);
    Py_DECREF(slot->value);
    self->used--;
    /* Backward-shift deletion: move up every later entry of the run that may sit here. */
    Py_ssize_t i = slot - self->slots, j = i, mask = self->mask;
    self->slots[i].key = self->slots[i].value = NULL;
    for (;;) {
        j = (j + 1) & mask;
        Slot *next = &self->slots[j];
        if (next->key == NULL)
            break;
        Py_ssize_t home = (Py_ssize_t)(next->hash & (uint64_t)mask);
        /* next may move to i when its home is not in the cyclic range (i, j] */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            self->slots[i] = *next;
            next->key = next->value = NULL;
            i = j;
        }
    }
    if (self->used == 0) { /* a view emptied by expiry or invalidation: give the memory back */
        PyMem_Free(self->slots);
        self->slots = NULL;
        self->mask = 0;
    }
    Py_RETURN_TRUE;
}

static void index_clear(Index *self) {
    Slot *slots = self->slots;
    Py_ssize_t cap = slots ? self->mask + 1 : 0;
    self->slots = NULL;
    self->used = self->mask = 0;
    for (Py_ssize_t i = 0; i < cap; i++) {
        if (slots[i].key != NULL) {
            Py_DECREF(slots[i].key);
            Py_DECREF(slots[i].value);
        }
    }
    PyMem_Free(slots);
}

static PyObject *Index_get(Index *self, PyObject *args) {
    PyObject *key, *dflt = Py_None;
    if (!PyArg_ParseTuple(args, "U|O", &key, &dflt))
        return NULL;
    Py_ssize_t n;
    const char *k = utf8_of(key, &n);
    if (k == NULL) {
        PyErr_Clear();
        return Py_NewRef(dflt);
    }
    const Slot *slot = index_get(self, (const unsigned char *)k, n);
    return Py_NewRef(slot != NULL ? slot->value : dflt);
}

static PyObject *Index_clear_method(Index *self, PyObject *unused) {
    index_clear(self);
    Py_RETURN_NONE;
}

static int Index_init(Index *self, PyObject *args, PyObject *kwds) {
    PyObject *items = NULL;
    static char *kwlist[] = {"items", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O", kwlist, &items))
        return -1;
    index_clear(self);
    if (items == NULL)
        return 0;
    PyObject *it = PyObject_GetIter(items), *pair;
    if (it == NULL)
        return -1;
    while ((pair = PyIter_Next(it)) != NULL) {
        PyObject *r = Index_set(self, pair);
        Py_DECREF(pair);
        if (r == NULL) {
            Py_DECREF(it);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static void Index_dealloc(Index *self) {
    index_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Index_len(Index *self) { return self->used; }

static PySequenceMethods Index_as_sequence = {.sq_length = (lenfunc)Index_len};

static PyMethodDef Index_methods[] = {
    {"set", (PyCFunction)Index_set, METH_VARARGS,
     "set(key, value) -> bool: key -> value (both str); False (nothing stored) when either "
     "has no UTF-8 form (a lone surrogate), which no JSON text can hold."},
    {"discard", (PyCFunction)Index_discard, METH_O, "discard(key) -> bool: whether it was held."},
    {"get", (PyCFunction)Index_get, METH_VARARGS, "get(key[, default])"},
    {"clear", (PyCFunction)Index_clear_method, METH_NOARGS, "clear(): hold nothing."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "gateway._idscan.Index",
    .tp_basicsize = sizeof(Index),
    .tp_dealloc = (destructor)Index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Index([(key, value), ...]): str -> str, looked up by the scanner on the "
              "bytes of an id (see gateway/_idscan.c).",
    .tp_methods = Index_methods,
    .tp_as_sequence = &Index_as_sequence,
    .tp_init = (initproc)Index_init,
    .tp_new = PyType_GenericNew,
};

/* --- the walk -------------------------------------------------------------------------- */

/* An id at [start, stop) of the body (its token: a string with its quotes, or an integer),
 * its bytes [key, key + n): its place and its replacement recorded. 0, or -1 with
 * s->failed (out of memory). */
static int record(Scan *s, int32_t leaf, const unsigned char *start, const unsigned char *stop,
                  const unsigned char *key, Py_ssize_t n) {
    if (s->n_spans + 3 > s->cap_spans) {
        Py_ssize_t cap = s->cap_spans ? s->cap_spans * 2 : 96;
        uint32_t *grown = PyMem_Realloc(s->spans, (size_t)cap * sizeof(uint32_t));
        if (grown != NULL)
            s->spans = grown;
        PyObject **repl = PyMem_Realloc(s->repl, (size_t)(cap / 3) * sizeof(PyObject *));
        if (repl != NULL)
            s->repl = repl;
        Py_ssize_t *sizes = PyMem_Realloc(s->sizes, (size_t)(cap / 3) * sizeof(Py_ssize_t));
        if (sizes != NULL)
            s->sizes = sizes;
        if (grown == NULL || repl == NULL || sizes == NULL) {
            PyErr_NoMemory();
            s->failed = 1;
            return -1;
        }
        s->cap_spans = cap;
    }
    const Slot *slot = index_get(s->indexes[leaf], key, n);
    PyObject *new = NULL;
    if (slot != NULL) {
        new = Py_NewRef(slot->value); /* held: a collection may run Python code */
        s->sizes[s->n_spans / 3] = slot->json_len;
        s->hits[leaf]++;
    } else {
        s->misses++;
    }
    s->repl[s->n_spans / 3] = new;
    s->spans[s->n_spans++] = (uint32_t)(start - s->base);
    s->spans[s->n_spans++] = (uint32_t)(stop - s->base);
    s->spans[s->n_spans++] = (uint32_t)leaf;
    return 0;
}

static const unsigned char *value(Scan *s, const Program *prog, int32_t target,
                                  const unsigned char *p);

/* The value at a leaf: a non-empty string or an integer is an id; null is no reference;
 * anything else is skipped, or gives up on a strict program (NotAnId is the slow path's). */
static const unsigned char *leaf_value(Scan *s, const Program *prog, int32_t leaf,
                                       const unsigned char *p) {
    const unsigned char *start = p;
    if (*p == '"') {
        int flags = 0;
        if ((p = string_rest(p + 1, s->end, &flags)) == NULL || (flags & ESCAPED))
            return NULL;
        Py_ssize_t len = (p - start) - 2;
        if (len == 0)
            return s->leaf_strict ? NULL : p;
        return record(s, leaf, start, p, start + 1, len) == 0 ? p : NULL;
    }
    if (*p == '-' || DIGIT(*p)) {
        int is_int;
        if ((p = number(p, &is_int)) == NULL)
            return NULL;
        Py_ssize_t len = p - start;
        Py_ssize_t digits = len - (*start == '-');
        if (!is_int || digits > MAX_INT_DIGITS || (len == 2 && start[0] == '-' && start[1] == '0'))
            return (s->leaf_strict || is_int) ? NULL : p;
        return record(s, leaf, start, p, start, len) == 0 ? p : NULL;
    }
    if (*p == 'n')
        return literal(s, p, "null", 4);
    if (s->leaf_strict)
        return NULL;
    return value(s, prog, NO_TARGET, p);
}

/* A member's or an element's value: strings and numbers no pointer names are skipped here,
 * the rest by value(). */
static inline const unsigned char *member(Scan *s, const Program *prog, int32_t target,
                                          const unsigned char *p) {
    if (target == NO_TARGET) {
        int x;
        if (*p == '"')
            return string_rest(p + 1, s->end, &x);
        if (DIGIT(*p) || *p == '-')
            return number(p, &x);
    }
    return value(s, prog, target, p);
}

static const unsigned char *object(Scan *s, const Program *prog, const Node *node,
                                   const unsigned char *p) {
    uint64_t seen = 0;
    if (node != NULL && node->star != NO_TARGET)
        return NULL; /* "*" over an object's values: the slow path */
    p = skip_ws(p + 1);
    if (*p == '}')
        return p + 1;
    for (;;) {
        if (*p != '"')
            return NULL;
        const unsigned char *key = p + 1;
        int flags = 0;
        if ((p = string_rest(key, s->end, &flags)) == NULL)
            return NULL;
        int32_t child = NO_TARGET;
        if (node != NULL) {
            if (flags & ESCAPED)
                return NULL;
            Py_ssize_t len = (p - key) - 1;
            for (Py_ssize_t i = 0; i < node->n_entries; i++) {
                const Entry *e = &node->entries[i];
                if (e->key_len == len && (len == 0 || (e->key[0] == (char)key[0] &&
                                                       memcmp(e->key, key, (size_t)len) == 0))) {
                    if (seen & ((uint64_t)1 << i))
                        return NULL; /* the same named field twice */
                    seen |= (uint64_t)1 << i;
                    child = e->child;
                    break;
                }
            }
        }
        p = skip_ws(p);
        if (*p != ':')
            return NULL;
        p = skip_ws(p + 1);
        if ((p = member(s, prog, child, p)) == NULL)
            return NULL;
        p = skip_ws(p);
        if (*p == ',') {
            p = skip_ws(p + 1);
            continue;
        }
        return *p == '}' ? p + 1 : NULL;
    }
}

static const unsigned char *array(Scan *s, const Program *prog, const Node *node,
                                  const unsigned char *p) {
    if (node != NULL && !node->lists) {
        if (node->strict)
            return NULL; /* an array where an object belongs */
        node = NULL;
    }
    p = skip_ws(p + 1);
    if (*p == ']')
        return p + 1;
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
        if ((p = member(s, prog, child, p)) == NULL)
            return NULL;
        p = skip_ws(p);
        if (*p == ',') {
            p = skip_ws(p + 1);
            continue;
        }
        return *p == ']' ? p + 1 : NULL;
    }
}

/* Any value at p, walked with ``target``: a node, ~leaf, or NO_TARGET (validated only). */
static const unsigned char *value(Scan *s, const Program *prog, int32_t target,
                                  const unsigned char *p) {
    if (target != NO_TARGET && target < 0)
        return leaf_value(s, prog, ~target, p);
    const Node *node = target == NO_TARGET ? NULL : &prog->nodes[target];
    int x;
    switch (*p) {
    case '{':
    case '[':
        if (++s->depth > MAX_DEPTH)
            return NULL;
        p = *p == '{' ? object(s, prog, node, p) : array(s, prog, node, p);
        s->depth--;
        return p;
    case 'n':
        return literal(s, p, "null", 4);
    }
    if (node != NULL && node->strict)
        return NULL; /* a scalar where a container belongs */
    switch (*p) {
    case '"':
        return string_rest(p + 1, s->end, &x);
    case 't':
        return literal(s, p, "true", 4);
    case 'f':
        return literal(s, p, "false", 5);
    default:
        return number(p, &x);
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
    Py_XDECREF(self->leaves);
    Py_XDECREF(self->records);
    Py_XDECREF(self->found);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_child(Program *self, long child) {
    if ((child >= 0 && child < self->n_nodes) || (child < 0 && ~child < self->n_leaves))
        return 1;
    PyErr_SetString(PyExc_ValueError, "a child names no node or leaf");
    return 0;
}

static int Program_init(Program *self, PyObject *args, PyObject *kwds) {
    PyObject *nodes, *leaves, *found, *records;
    static char *kwlist[] = {"nodes", "leaves", "found", "records", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!O!O!", kwlist, &nodes, &PyTuple_Type,
                                     &leaves, &PyType_Type, &found, &PyTuple_Type, &records))
        return -1;
    if (self->nodes != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Program is already initialised");
        return -1;
    }
    if (!PyType_IsSubtype((PyTypeObject *)found, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "found must be a tuple type");
        return -1;
    }
    Py_ssize_t n_leaves = PyTuple_GET_SIZE(leaves);
    if (PyTuple_GET_SIZE(records) != n_leaves) {
        PyErr_SetString(PyExc_ValueError, "a record per leaf");
        return -1;
    }
    self->leaves = Py_NewRef(leaves);
    self->records = Py_NewRef(records);
    self->found = (PyTypeObject *)Py_NewRef(found);
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
                         PyObject *const *repl, const Py_ssize_t *known);

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

/* values[leaf]: the ids of each leaf as str, in document order (from their spans). */
static PyObject *values_of(const unsigned char *body, const uint32_t *sp, Py_ssize_t n,
                           Py_ssize_t n_leaves) {
    PyObject *values = new_lists(n_leaves);
    for (Py_ssize_t i = 0; values != NULL && i < n; i++) {
        uint32_t start = sp[3 * i], stop = sp[3 * i + 1], leaf = sp[3 * i + 2];
        PyObject *id = body[start] == '"' /* validated UTF-8 without escapes */
                           ? PyUnicode_DecodeUTF8((const char *)body + start + 1,
                                                  (Py_ssize_t)(stop - start) - 2, NULL)
                           : PyUnicode_DecodeASCII((const char *)body + start,
                                                   (Py_ssize_t)(stop - start), NULL);
        if (id == NULL || PyList_Append(PyList_GET_ITEM(values, leaf), id) < 0)
            Py_CLEAR(values);
        Py_XDECREF(id);
    }
    return values;
}

/* news[leaf]: the replacement of each id of the leaf, or None. */
static PyObject *news_of(const uint32_t *sp, Py_ssize_t n, Py_ssize_t n_leaves,
                         PyObject *const *repl) {
    PyObject *news = new_lists(n_leaves);
    for (Py_ssize_t i = 0; news != NULL && i < n; i++) {
        PyObject *new = repl[i] != NULL ? repl[i] : Py_None;
        if (PyList_Append(PyList_GET_ITEM(news, sp[3 * i + 2]), new) < 0)
            Py_CLEAR(news);
    }
    return news;
}

/* done[records[leaf]] += the ids replaced at the leaf, for each leaf that had any. */
static int count_hits(Program *self, const Py_ssize_t *hits, PyObject *done) {
    for (Py_ssize_t i = 0; i < self->n_leaves; i++) {
        if (hits[i] == 0)
            continue;
        PyObject *key = PyTuple_GET_ITEM(self->records, i);
        PyObject *had = PyDict_GetItemWithError(done, key), *now;
        if (had == NULL && PyErr_Occurred())
            return -1;
        if (had == NULL) {
            now = PyLong_FromSsize_t(hits[i]);
        } else {
            PyObject *add = PyLong_FromSsize_t(hits[i]);
            now = add ? PyNumber_Add(had, add) : NULL;
            Py_XDECREF(add);
        }
        if (now == NULL || PyDict_SetItem(done, key, now) < 0) {
            Py_XDECREF(now);
            return -1;
        }
        Py_DECREF(now);
    }
    return 0;
}

/* scan()'s result: a Program.found of (leaves, values, spans, news, hits, out). */
static PyObject *found_of(Program *self, PyObject *values, PyObject *spans, PyObject *news,
                          PyObject *hits, PyObject *out) {
    PyObject *t = self->found->tp_alloc(self->found, 6);
    if (t == NULL)
        return NULL;
    PyObject *items[6] = {self->leaves, values, spans, news, hits, out};
    for (int i = 0; i < 6; i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
    return t;
}

static PyObject *Program_scan(Program *self, PyObject *args) {
    Py_buffer buf;
    PyObject *arg, *indexes, *done;
    if (self->nodes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Program is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOO!", &arg, &indexes, &PyDict_Type, &done))
        return NULL;
    if (!PyList_Check(indexes) || PyList_GET_SIZE(indexes) != self->n_leaves) {
        PyErr_SetString(PyExc_TypeError, "indexes must be a list of an Index per leaf");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->n_leaves; i++) {
        if (Py_TYPE(PyList_GET_ITEM(indexes, i)) != &IndexType) {
            PyErr_SetString(PyExc_TypeError, "indexes must be a list of an Index per leaf");
            return NULL;
        }
    }
    if (!PyBytes_Check(arg)) { /* its buffer ends with a 0 byte, which the walk relies on */
        PyErr_SetString(PyExc_TypeError, "scan() takes a bytes object");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL, *spans = NULL, *hits = NULL, *values = NULL, *news = NULL;
    Scan s = {0};
    /* the list's items: held by the list, which the caller holds during the call */
    s.indexes = (Index **)((PyListObject *)indexes)->ob_item;
    s.hits = PyMem_Calloc((size_t)self->n_leaves, sizeof(Py_ssize_t));
    if (s.hits == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (buf.len >= UINT32_MAX) { /* spans are uint32 offsets: far beyond any body read */
        result = Py_NewRef(Py_None);
        goto done;
    }
    s.base = buf.buf;
    s.end = s.base + buf.len;
    s.leaf_strict = self->nodes[0].strict;
    const unsigned char *end = value(&s, self, 0, skip_ws(s.base));
    if (s.failed)
        goto done;
    if (end == NULL || skip_ws(end) != s.end) { /* not JSON, or something after the value */
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t n = s.n_spans / 3;
    spans = PyBytes_FromStringAndSize((const char *)s.spans,
                                      s.n_spans * (Py_ssize_t)sizeof(uint32_t));
    if (spans == NULL)
        goto done;
    hits = PyList_New(self->n_leaves);
    Py_ssize_t replaced = 0;
    for (Py_ssize_t i = 0; hits != NULL && i < self->n_leaves; i++) {
        PyObject *h = PyLong_FromSsize_t(s.hits[i]);
        replaced += s.hits[i];
        if (h == NULL)
            Py_CLEAR(hits);
        else
            PyList_SET_ITEM(hits, i, h);
    }
    if (hits == NULL || count_hits(self, s.hits, done) < 0)
        goto done;
    if (s.misses == 0) { /* every id replaced: the new body at once, and no lists */
        PyObject *out = replaced ? spliced(buf.buf, buf.len, s.spans, n, s.repl, s.sizes) : Py_NewRef(arg);
        if (out != NULL) {
            result = found_of(self, Py_None, spans, Py_None, hits, out);
            Py_DECREF(out);
        }
        goto done;
    }
    values = values_of(s.base, s.spans, n, self->n_leaves);
    news = values ? news_of(s.spans, n, self->n_leaves, s.repl) : NULL;
    if (news != NULL)
        result = found_of(self, values, spans, news, hits, Py_None);
done:
    Py_XDECREF(spans);
    Py_XDECREF(hits);
    Py_XDECREF(values);
    Py_XDECREF(news);
    for (Py_ssize_t i = 0; s.repl != NULL && i < s.n_spans / 3; i++)
        Py_XDECREF(s.repl[i]);
    PyMem_Free(s.hits);
    PyMem_Free(s.spans);
    PyMem_Free(s.repl);
    PyMem_Free(s.sizes);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef Program_methods[] = {
    {"scan", (PyCFunction)Program_scan, METH_VARARGS,
     "scan(body, indexes, done) -> found | None: the ids the pointers name in body (bytes), "
     "each looked up in indexes[leaf] (an Index per leaf), the replacements of each leaf "
     "counted into done[records[leaf]]; None when the body is not JSON or the "
     "walk is the slow path's to decide. found (of the Program's found type): (leaves, "
     "values, spans, news, hits, out): hits the ids replaced per leaf; when every id had a "
     "replacement, out is the new body (the body itself when none was found) and values, "
     "news are None; else values[leaf] the ids of each leaf as str and news[leaf][i] the "
     "replacement of each or None, out None."},
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

/* The body (src, len) with repl[i] (a str, or NULL to keep the id) written over span i;
 * known[i], when given, the bytes repl[i] takes as a JSON string. */
static PyObject *spliced(const char *src, Py_ssize_t len, const uint32_t *sp, Py_ssize_t n,
                         PyObject *const *repl, const Py_ssize_t *known) {
    PyObject *result = NULL;
    Py_ssize_t *sizes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    if (sizes == NULL)
        return PyErr_NoMemory();
    /* First pass: check every span, and the length of the result. */
    Py_ssize_t total = len, last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t start = sp[3 * i], stop = sp[3 * i + 1];
        if (start < last || stop < start || stop > len) {
            PyErr_SetString(PyExc_ValueError, "spans do not fit the body");
            goto done;
        }
        last = stop;
        if (repl[i] == NULL)
            continue;
        if (known != NULL) {
            sizes[i] = known[i];
        } else {
            Py_ssize_t n_text;
            const char *text = utf8_of(repl[i], &n_text);
            if (text == NULL)
                goto done;
            sizes[i] = escaped_len((const unsigned char *)text, n_text);
        }
        total += sizes[i] - (Py_ssize_t)(stop - start);
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    char *w = PyBytes_AS_STRING(result);
    last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (repl[i] == NULL)
            continue;
        uint32_t start = sp[3 * i], stop = sp[3 * i + 1];
        memcpy(w, src + last, (size_t)(start - last));
        w += start - last;
        Py_ssize_t n_text;
        const char *text = utf8_of(repl[i], &n_text); /* known to succeed: the first pass */
        w = write_escaped(w, (const unsigned char *)text, n_text, sizes[i]);
        last = stop;
    }
    memcpy(w, src + last, (size_t)(len - last));
done:
    PyMem_Free(sizes);
    return result;
}

static PyObject *splice(PyObject *module, PyObject *args) {
    Py_buffer body, spans;
    PyObject *news, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*O!", &body, &spans, &PyList_Type, &news))
        return NULL;
    Py_ssize_t n = spans.len / (Py_ssize_t)(3 * sizeof(uint32_t)), n_leaves = PyList_GET_SIZE(news);
    const uint32_t *sp = spans.buf;
    Py_ssize_t *next = PyMem_Calloc((size_t)(n_leaves ? n_leaves : 1), sizeof(Py_ssize_t));
    PyObject **repl = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    if (next == NULL || repl == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* the i-th id of each leaf: news[leaf][i] */
        uint32_t leaf = sp[3 * i + 2];
        PyObject *list = leaf < n_leaves ? PyList_GET_ITEM(news, leaf) : NULL;
        if (list == NULL || !PyList_Check(list) || next[leaf] >= PyList_GET_SIZE(list)) {
            PyErr_SetString(PyExc_ValueError, "fewer replacements than spans");
            goto done;
        }
        PyObject *new = PyList_GET_ITEM(list, next[leaf]++);
        if (new != Py_None && !PyUnicode_Check(new)) {
            PyErr_SetString(PyExc_TypeError, "a replacement is a str or None");
            goto done;
        }
        repl[i] = new == Py_None ? NULL : new;
    }
    result = spliced(body.buf, body.len, sp, n, repl, NULL);
done:
    PyMem_Free(next);
    PyMem_Free(repl);
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
    if (PyType_Ready(&ProgramType) < 0 || PyType_Ready(&IndexType) < 0 || sip_key() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Program", (PyObject *)&ProgramType) < 0 ||
        PyModule_AddObjectRef(m, "Index", (PyObject *)&IndexType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
