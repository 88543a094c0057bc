/* The training checkpoint: parameters, the optimizer's name, hyper-parameters, step count and
 * per-parameter state, in the binary format docs/training.md ("Checkpoint format") describes.
 * Every count and size read from a file is checked against the bytes that remain before anything
 * is allocated, so a truncated, corrupt or hostile file fails with a message instead of a huge
 * allocation or an out-of-bounds read. */
#include "train/train.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CKPT_MAGIC "KILNCKPT"
#define CKPT_VERSION 1u
#define CKPT_HEADER 32 /* magic 8, version 4, flags 4, payload size 8, crc 4, reserved 4 */

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib's crc32) ---- */

static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = 1;
}

uint32_t kiln_crc32(uint32_t crc, const void *data, size_t n) {
    /* the table is idempotent to build, so two threads racing here write the same words */
    if (!crc_ready) crc_init();
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- in-memory checkpoint ---- */

static void param_free(kiln_ckpt_param *p) {
    free(p->name);
    free(p->data);
    for (int s = 0; s < p->n_state; s++) {
        free(p->state_name[s]);
        free(p->state[s]);
    }
}

static void clear_state(kiln_checkpoint *ck) {
    for (int i = 0; i < ck->n_params; i++) {
        kiln_ckpt_param *p = &ck->params[i];
        for (int s = 0; s < p->n_state; s++) {
            free(p->state_name[s]);
            free(p->state[s]);
        }
        p->n_state = 0;
    }
    ck->step = 0;
}

void kiln_checkpoint_free(kiln_checkpoint *ck) {
    if (!ck) return;
    /* freed before a module training it on a device (the API says free it last; a garbage
     * collector may not): that module must not write back into it when it closes */
    if (ck->mirror) ck->mirror->ck = NULL;
    for (int i = 0; i < ck->n_params; i++) param_free(&ck->params[i]);
    free(ck->params);
    free(ck->optimizer);
    for (int i = 0; i < ck->n_hparams; i++) free(ck->hp_key[i]);
    free(ck);
}

kiln_status kiln_checkpoint_new(kiln_checkpoint **out) {
    kiln_err e = {0};
    if (!out) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_new: out is NULL");
        kiln_set_last_error(&e);
        return e.code;
    }
    *out = calloc(1, sizeof **out);
    if (!*out) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory");
        kiln_set_last_error(&e);
        return e.code;
    }
    return KILN_OK;
}

kiln_ckpt_param *kiln_ckpt_find(const kiln_checkpoint *ck, const char *name) {
    for (int i = 0; i < ck->n_params; i++)
        if (!strcmp(ck->params[i].name, name)) return &ck->params[i];
    return NULL;
}

void *kiln_ckpt_state(kiln_ckpt_param *p, const char *name, int *created, kiln_err *e) {
    if (created) *created = 0;
    for (int s = 0; s < p->n_state; s++)
        if (!strcmp(p->state_name[s], name)) return p->state[s];
    if (p->n_state == KILN_CKPT_MAX_STATE) {
        kiln_fail(e, KILN_ERR_RUNTIME, "checkpoint: parameter '%s' has too many state tensors", p->name);
        return NULL;
    }
    char *nm = strdup(name);
    void *buf = calloc(1, p->nbytes ? p->nbytes : 1);
    if (!nm || !buf) {
        free(nm);
        free(buf);
        kiln_fail(e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory for the state of '%s'", p->name);
        return NULL;
    }
    p->state_name[p->n_state] = nm;
    p->state[p->n_state++] = buf;
    if (created) *created = 1;
    return buf;
}

double kiln_ckpt_hparam(const kiln_checkpoint *ck, const char *key, double def) {
    for (int i = 0; i < ck->n_hparams; i++)
        if (!strcmp(ck->hp_key[i], key)) return ck->hp_val[i];
    return def;
}

kiln_status kiln_ckpt_set_hparam(kiln_checkpoint *ck, const char *key, double value, kiln_err *e) {
    for (int i = 0; i < ck->n_hparams; i++)
        if (!strcmp(ck->hp_key[i], key)) {
            ck->hp_val[i] = value;
            return KILN_OK;
        }
    if (ck->n_hparams == KILN_CKPT_MAX_HPARAMS)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: more than %d hyper-parameters",
                         KILN_CKPT_MAX_HPARAMS);
    if (!key[0] || strlen(key) > 64)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: a hyper-parameter name must have 1 to 64 bytes");
    char *k = strdup(key);
    if (!k) return kiln_fail(e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory");
    ck->hp_key[ck->n_hparams] = k;
    ck->hp_val[ck->n_hparams++] = value;
    return KILN_OK;
}

static const char *const ADAMW_KEYS[] = {"lr", "beta1", "beta2", "eps", "weight_decay"};
static const double ADAMW_DEFAULTS[] = {1e-3, 0.9, 0.999, 1e-8, 0.01};
static const char *const SGD_KEYS[] = {"lr", "momentum", "dampening", "weight_decay", "nesterov"};
static const double SGD_DEFAULTS[] = {1e-3, 0.0, 0.0, 0.0, 0.0};

static int known_hparam(const char *opt, const char *key) {
    const char *const *keys = !strcmp(opt, "adamw") ? ADAMW_KEYS : SGD_KEYS;
    for (int i = 0; i < 5; i++)
        if (!strcmp(keys[i], key)) return 1;
    return 0;
}

kiln_status kiln_ckpt_set_optimizer_defaults(kiln_checkpoint *ck, const char *name, kiln_err *e) {
    const char *const *keys;
    const double *vals;
    if (name && !strcmp(name, "adamw")) keys = ADAMW_KEYS, vals = ADAMW_DEFAULTS;
    else if (name && !strcmp(name, "sgd")) keys = SGD_KEYS, vals = SGD_DEFAULTS;
    else
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "unknown optimizer '%s' (expected adamw or sgd)",
                         name ? name : "(null)");
    char *nm = strdup(name);
    if (!nm) return kiln_fail(e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory");
    free(ck->optimizer);
    ck->optimizer = nm;
    for (int i = 0; i < ck->n_hparams; i++) free(ck->hp_key[i]);
    ck->n_hparams = 0;
    clear_state(ck);
    for (int i = 0; i < 5; i++) KILN_TRY(kiln_ckpt_set_hparam(ck, keys[i], vals[i], e));
    return KILN_OK;
}

static kiln_status fail_last(kiln_err *e) {
    kiln_set_last_error(e);
    return e->code;
}

kiln_status kiln_checkpoint_set_optimizer(kiln_checkpoint *ck, const char *name) {
    kiln_err e = {0};
    if (!ck) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_set_optimizer: checkpoint is NULL"), fail_last(&e);
    if (kiln_ckpt_pull(ck, &e) || kiln_ckpt_set_optimizer_defaults(ck, name, &e)) return fail_last(&e);
    kiln_ckpt_changed(ck);
    return KILN_OK;
}

kiln_status kiln_checkpoint_set_hparam(kiln_checkpoint *ck, const char *key, double value) {
    kiln_err e = {0};
    if (!ck || !key) kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_set_hparam: NULL argument");
    else if (!ck->optimizer) kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: no optimizer recorded");
    else if (!known_hparam(ck->optimizer, key))
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: %s has no hyper-parameter '%s'", ck->optimizer, key);
    else if (value != value) kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: hyper-parameter '%s' is NaN", key);
    else kiln_ckpt_set_hparam(ck, key, value, &e);
    return e.code ? fail_last(&e) : KILN_OK;
}

kiln_status kiln_checkpoint_get_hparam(const kiln_checkpoint *ck, const char *key, double *value) {
    kiln_err e = {0};
    if (!ck || !key || !value) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_get_hparam: NULL argument"), fail_last(&e);
    for (int i = 0; i < ck->n_hparams; i++)
        if (!strcmp(ck->hp_key[i], key)) {
            *value = ck->hp_val[i];
            return KILN_OK;
        }
    kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: no hyper-parameter '%s'", key);
    return fail_last(&e);
}

const char *kiln_checkpoint_optimizer(const kiln_checkpoint *ck) { return ck && ck->optimizer ? ck->optimizer : ""; }
int64_t kiln_checkpoint_step(const kiln_checkpoint *ck) { return ck ? ck->step : 0; }
size_t kiln_checkpoint_param_count(const kiln_checkpoint *ck) { return ck ? (size_t)ck->n_params : 0; }
const char *kiln_checkpoint_param_name(const kiln_checkpoint *ck, size_t i) {
    return ck && i < (size_t)ck->n_params ? ck->params[i].name : NULL;
}
int kiln_checkpoint_param_requires_grad(const kiln_checkpoint *ck, size_t i) {
    return ck && i < (size_t)ck->n_params ? ck->params[i].requires_grad : 0;
}

/* Checks a tensor's dtype and shape and returns its byte size (0 with e set on failure; an empty
 * tensor is refused too, as no model parameter is empty). */
static size_t checked_size(int dtype, int rank, const int64_t *dims, int64_t *numel, const char *what,
                           kiln_err *e) {
    if (dtype == KILN_DTYPE_STRING || kiln_dtype_size((kiln_dtype)dtype) == 0) {
        kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: dtype %d is not a fixed-size numeric type", what, dtype);
        return 0;
    }
    if (rank < 0 || rank > KILN_MAX_RANK) {
        kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: rank %d is out of range (0..%d)", what, rank, KILN_MAX_RANK);
        return 0;
    }
    int64_t n = kiln_checked_numel(rank, dims);
    if (n < 0) {
        kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: %s shape", what,
                  n == KILN_NUMEL_TOO_LARGE ? "oversized" : "negative dimension in the");
        return 0;
    }
    int ok = 1;
    size_t nb = kiln_checked_nbytes(dtype, n, &ok);
    if (!ok || n == 0) {
        kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: %s", what, n == 0 ? "empty tensor" : "oversized tensor");
        return 0;
    }
    *numel = n;
    return nb;
}

kiln_status kiln_checkpoint_add_param(kiln_checkpoint *ck, const char *name, const kiln_tensor_desc *value,
                                      int requires_grad) {
    kiln_err e = {0};
    if (!ck || !name || !value || (!value->data && value->rank >= 0)) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_add_param: NULL argument");
        return fail_last(&e);
    }
    if (ck->mirror) {
        /* the module's device copies are indexed by the parameters it was opened with */
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: parameters cannot be added while a module trains "
                  "them in device memory (close the module first)");
        return fail_last(&e);
    }
    if (!name[0] || strlen(name) > KILN_CKPT_NAME_MAX) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: a parameter name must have 1 to %d bytes",
                  KILN_CKPT_NAME_MAX);
        return fail_last(&e);
    }
    if (kiln_ckpt_find(ck, name)) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: parameter '%s' is already there", name);
        return fail_last(&e);
    }
    if (value->memory != KILN_MEMORY_HOST) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: parameter '%s' must be in host memory", name);
        return fail_last(&e);
    }
    kiln_ckpt_param p = {0};
    char what[128];
    snprintf(what, sizeof what, "checkpoint parameter '%.80s'", name);
    if (value->rank > 0 && !value->dims) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "%s: dims is NULL", what);
        return fail_last(&e);
    }
    size_t nb = checked_size(value->dtype, value->rank, value->dims, &p.numel, what, &e);
    if (!nb) return fail_last(&e);
    if (ck->n_params == ck->cap_params) {
        int cap = ck->cap_params ? 2 * ck->cap_params : 8;
        kiln_ckpt_param *np = realloc(ck->params, (size_t)cap * sizeof *np);
        if (!np) return kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory"), fail_last(&e);
        ck->params = np;
        ck->cap_params = cap;
    }
    p.name = strdup(name);
    p.data = malloc(nb);
    if (!p.name || !p.data) {
        param_free(&p);
        return kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory for '%s'", name), fail_last(&e);
    }
    memcpy(p.data, value->data, nb);
    p.dtype = value->dtype;
    p.rank = value->rank;
    for (int d = 0; d < p.rank; d++) p.dims[d] = value->dims[d];
    p.nbytes = nb;
    p.requires_grad = requires_grad != 0;
    ck->params[ck->n_params++] = p;
    return KILN_OK;
}

kiln_status kiln_checkpoint_get_param(const kiln_checkpoint *ck, const char *name, kiln_tensor_desc *out) {
    kiln_err e = {0};
    if (!ck || !name || !out) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_get_param: NULL argument"), fail_last(&e);
    const kiln_ckpt_param *p = kiln_ckpt_find(ck, name);
    if (!p) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: no parameter '%s'", name), fail_last(&e);
    if (kiln_ckpt_pull(ck, &e)) return fail_last(&e);
    out->dtype = (kiln_dtype)p->dtype;
    out->rank = p->rank;
    out->dims = p->dims;
    out->data = p->data;
    out->memory = KILN_MEMORY_HOST;
    return KILN_OK;
}

kiln_status kiln_checkpoint_set_param(kiln_checkpoint *ck, const char *name, const kiln_tensor_desc *value) {
    kiln_err e = {0};
    if (!ck || !name || !value || !value->data)
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_set_param: NULL argument"), fail_last(&e);
    kiln_ckpt_param *p = kiln_ckpt_find(ck, name);
    if (!p) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "checkpoint: no parameter '%s'", name), fail_last(&e);
    int same = value->dtype == (kiln_dtype)p->dtype && value->rank == p->rank && value->memory == KILN_MEMORY_HOST;
    for (int d = 0; same && d < p->rank; d++) same = value->dims[d] == p->dims[d];
    if (!same) {
        kiln_tensor t = {0};
        char want[160];
        kiln_tensor_set_shape(&t, p->dtype, p->rank, p->dims);
        kiln_shape_str(&t, want, sizeof want);
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT,
                         "checkpoint: parameter '%s' is %s; the new value must have its dtype and shape (in host memory)",
                         name, want), fail_last(&e);
    }
    if (kiln_ckpt_pull(ck, &e)) return fail_last(&e);
    memcpy(p->data, value->data, p->nbytes);
    kiln_ckpt_changed(ck);
    return KILN_OK;
}

/* ---- writing ---- */

typedef struct wbuf { unsigned char *p; size_t n, cap; int oom; } wbuf;

static void put(wbuf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) {
            if (cap > SIZE_MAX / 2) { b->oom = 1; return; }
            cap *= 2;
        }
        unsigned char *np = realloc(b->p, cap);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
/* The format is little-endian; kiln builds for little-endian hosts only, so values go as they are. */
static void put_u32(wbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(wbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(wbuf *b, const char *s) {
    size_t n = strlen(s);
    put_u32(b, (uint32_t)n);
    put(b, s, n);
}

kiln_status kiln_checkpoint_save(const kiln_checkpoint *ck, const char *path) {
    kiln_err e = {0};
    if (!ck || !path) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_save: NULL argument"), fail_last(&e);
    if (kiln_ckpt_pull(ck, &e)) return fail_last(&e);
    wbuf b = {0};
    unsigned char header[CKPT_HEADER] = {0};
    put(&b, header, sizeof header); /* filled once the payload is known */
    put_u32(&b, (uint32_t)ck->n_params);
    for (int i = 0; i < ck->n_params; i++) {
        const kiln_ckpt_param *p = &ck->params[i];
        put_str(&b, p->name);
        put_u32(&b, (uint32_t)p->dtype);
        put_u32(&b, (uint32_t)p->rank);
        for (int d = 0; d < p->rank; d++) put_u64(&b, (uint64_t)p->dims[d]);
        put_u32(&b, p->requires_grad ? 1u : 0u);
        put_u64(&b, p->nbytes);
        put(&b, p->data, p->nbytes);
    }
    put_str(&b, ck->optimizer ? ck->optimizer : "");
    put_u32(&b, (uint32_t)ck->n_hparams);
    for (int i = 0; i < ck->n_hparams; i++) {
        put_str(&b, ck->hp_key[i]);
        put(&b, &ck->hp_val[i], 8);
    }
    put_u64(&b, (uint64_t)ck->step);
    uint32_t n_state = 0;
    for (int i = 0; i < ck->n_params; i++) n_state += (uint32_t)ck->params[i].n_state;
    put_u32(&b, n_state);
    for (int i = 0; i < ck->n_params; i++) {
        const kiln_ckpt_param *p = &ck->params[i];
        for (int s = 0; s < p->n_state; s++) {
            put_u32(&b, (uint32_t)i);
            put_str(&b, p->state_name[s]);
            put_u64(&b, p->nbytes);
            put(&b, p->state[s], p->nbytes);
        }
    }
    if (b.oom) {
        free(b.p);
        return kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory while writing '%s'", path), fail_last(&e);
    }
    uint64_t payload = b.n - CKPT_HEADER;
    uint32_t crc = kiln_crc32(0, b.p + CKPT_HEADER, payload), version = CKPT_VERSION, flags = 0;
    memcpy(b.p, CKPT_MAGIC, 8);
    memcpy(b.p + 8, &version, 4);
    memcpy(b.p + 12, &flags, 4);
    memcpy(b.p + 16, &payload, 8);
    memcpy(b.p + 24, &crc, 4);

    /* atomic: a crash or a full disk leaves the old file (or none), never a partial one */
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(b.p);
        return kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory"), fail_last(&e);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n;
    if (f) ok = (fflush(f) == 0) && ok, ok = (fsync(fileno(f)) == 0) && ok, ok = (fclose(f) == 0) && ok;
    int err = errno;
    free(b.p);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) err = errno;
        remove(tmp);
        free(tmp);
        return kiln_fail(&e, KILN_ERR_IO, "checkpoint: cannot write '%s': %s", path, strerror(err)), fail_last(&e);
    }
    free(tmp);
    return KILN_OK;
}

/* ---- reading ---- */

typedef struct rbuf { const unsigned char *p; size_t n, at; } rbuf;

static int take(rbuf *r, void *dst, size_t n) {
    if (n > r->n - r->at) return 0;
    memcpy(dst, r->p + r->at, n);
    r->at += n;
    return 1;
}

#define NEED(cond, ...)                                                                             \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            kiln_fail(&e, KILN_ERR_INVALID_MODEL, __VA_ARGS__);                                     \
            goto fail;                                                                              \
        }                                                                                           \
    } while (0)

static char *take_str(rbuf *r, size_t max) {
    uint32_t n;
    if (!take(r, &n, 4) || n > max || n > r->n - r->at) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    memcpy(s, r->p + r->at, n);
    s[n] = 0;
    r->at += n;
    if (strlen(s) != n) { /* an embedded NUL would make two names compare equal */
        free(s);
        return NULL;
    }
    return s;
}

static kiln_status parse(const unsigned char *bytes, size_t size, const char *path, kiln_checkpoint *ck,
                         kiln_err *out_e) {
    kiln_err e = {0};
    char *str = NULL;
    NEED(size >= CKPT_HEADER, "truncated: %zu bytes, shorter than the %d-byte header", size, CKPT_HEADER);
    NEED(!memcmp(bytes, CKPT_MAGIC, 8), "not a kiln checkpoint (bad magic)");
    uint32_t version, crc;
    uint64_t payload;
    memcpy(&version, bytes + 8, 4);
    memcpy(&payload, bytes + 16, 8);
    memcpy(&crc, bytes + 24, 4);
    NEED(version == CKPT_VERSION, "format version %u is not supported (this kiln reads version %u)", version,
         CKPT_VERSION);
    NEED(payload <= size - CKPT_HEADER, "truncated: the header announces %llu payload bytes, the file has %zu",
         (unsigned long long)payload, size - CKPT_HEADER);
    NEED(payload == size - CKPT_HEADER, "%zu bytes of trailing data after the payload",
         (size_t)(size - CKPT_HEADER - payload));
    uint32_t got = kiln_crc32(0, bytes + CKPT_HEADER, (size_t)payload);
    NEED(got == crc, "corrupt: CRC32 of the payload is %08x, the header says %08x", got, crc);

    rbuf r = {bytes + CKPT_HEADER, (size_t)payload, 0};
    uint32_t n_params;
    NEED(take(&r, &n_params, 4), "truncated parameter count");
    /* each parameter needs at least 4 + 1 + 4 + 4 + 4 + 8 bytes: bounds the count before allocating */
    NEED(n_params <= (r.n - r.at) / 25, "parameter count %u exceeds what the payload can hold", n_params);
    ck->params = calloc(n_params ? n_params : 1, sizeof *ck->params);
    NEED(ck->params, "out of memory for %u parameters", n_params);
    ck->cap_params = (int)(n_params ? n_params : 1);
    for (uint32_t i = 0; i < n_params; i++) {
        kiln_ckpt_param *p = &ck->params[i];
        p->name = take_str(&r, KILN_CKPT_NAME_MAX);
        NEED(p->name && p->name[0], "parameter %u: bad or truncated name", i);
        ck->n_params = (int)i + 1;
        for (uint32_t j = 0; j < i; j++) NEED(strcmp(ck->params[j].name, p->name), "parameter '%s' appears twice", p->name);
        uint32_t dtype, rank, flags;
        NEED(take(&r, &dtype, 4) && take(&r, &rank, 4), "parameter '%s': truncated", p->name);
        NEED(rank <= KILN_MAX_RANK, "parameter '%s': rank %u is out of range", p->name, rank);
        uint64_t dims[KILN_MAX_RANK];
        NEED(take(&r, dims, 8 * (size_t)rank), "parameter '%s': truncated shape", p->name);
        for (uint32_t d = 0; d < rank; d++) {
            NEED(dims[d] <= (uint64_t)KILN_MAX_NUMEL, "parameter '%s': dimension %u is oversized", p->name, d);
            p->dims[d] = (int64_t)dims[d];
        }
        p->dtype = (int)dtype;
        p->rank = (int)rank;
        char what[128];
        snprintf(what, sizeof what, "parameter '%.80s'", p->name);
        size_t nb = dtype > 64 ? 0 : checked_size((int)dtype, p->rank, p->dims, &p->numel, what, &e);
        if (dtype > 64) NEED(0, "parameter '%s': unknown dtype %u", p->name, dtype);
        if (!nb) {
            e.code = KILN_ERR_INVALID_MODEL;
            goto fail;
        }
        uint64_t stored;
        NEED(take(&r, &flags, 4) && take(&r, &stored, 8), "parameter '%s': truncated", p->name);
        NEED(flags <= 1, "parameter '%s': unknown flags %u", p->name, flags);
        NEED(stored == nb, "parameter '%s': %llu data bytes for a shape of %zu bytes", p->name,
             (unsigned long long)stored, nb);
        NEED(nb <= r.n - r.at, "parameter '%s': truncated data (%zu bytes announced, %zu left)", p->name, nb,
             r.n - r.at);
        p->requires_grad = (int)flags;
        p->nbytes = nb;
        p->data = malloc(nb);
        NEED(p->data, "out of memory for parameter '%s' (%zu bytes)", p->name, nb);
        take(&r, p->data, nb);
    }
    str = take_str(&r, 64);
    NEED(str, "bad or truncated optimizer name");
    NEED(!str[0] || !strcmp(str, "adamw") || !strcmp(str, "sgd"), "unknown optimizer '%s'", str);
    if (str[0]) ck->optimizer = str;
    else free(str);
    str = NULL;
    uint32_t n_hp;
    NEED(take(&r, &n_hp, 4), "truncated hyper-parameter count");
    NEED(n_hp <= KILN_CKPT_MAX_HPARAMS, "%u hyper-parameters (at most %d)", n_hp, KILN_CKPT_MAX_HPARAMS);
    for (uint32_t i = 0; i < n_hp; i++) {
        free(str);
        str = take_str(&r, 64);
        double v;
        NEED(str && str[0] && take(&r, &v, 8), "hyper-parameter %u: bad or truncated", i);
        NEED(v == v, "hyper-parameter '%s' is NaN", str);
        for (int j = 0; j < ck->n_hparams; j++) NEED(strcmp(ck->hp_key[j], str), "hyper-parameter '%s' appears twice", str);
        ck->hp_key[ck->n_hparams] = str;
        ck->hp_val[ck->n_hparams++] = v;
        str = NULL;
    }
    uint64_t step;
    uint32_t n_state;
    NEED(take(&r, &step, 8), "truncated step count");
    NEED(step <= (uint64_t)INT64_MAX, "step count out of range");
    ck->step = (int64_t)step;
    NEED(take(&r, &n_state, 4), "truncated state count");
    NEED(n_state <= (r.n - r.at) / 17, "state count %u exceeds what the payload can hold", n_state);
    for (uint32_t i = 0; i < n_state; i++) {
        uint32_t idx;
        uint64_t nb;
        NEED(take(&r, &idx, 4), "state %u: truncated", i);
        NEED(idx < (uint32_t)ck->n_params, "state %u: parameter index %u out of range", i, idx);
        kiln_ckpt_param *p = &ck->params[idx];
        free(str);
        str = take_str(&r, 64);
        NEED(str && str[0], "state %u of '%s': bad or truncated name", i, p->name);
        for (int s = 0; s < p->n_state; s++) NEED(strcmp(p->state_name[s], str), "state '%s' of '%s' appears twice", str, p->name);
        NEED(p->n_state < KILN_CKPT_MAX_STATE, "parameter '%s' has too many state tensors", p->name);
        NEED(take(&r, &nb, 8), "state '%s' of '%s': truncated", str, p->name);
        NEED(nb == p->nbytes, "state '%s' of '%s': %llu bytes, the parameter has %zu", str, p->name,
             (unsigned long long)nb, p->nbytes);
        NEED(nb <= r.n - r.at, "state '%s' of '%s': truncated data", str, p->name);
        void *buf = malloc(p->nbytes);
        NEED(buf, "out of memory for state '%s' of '%s'", str, p->name);
        take(&r, buf, p->nbytes);
        p->state_name[p->n_state] = str;
        p->state[p->n_state++] = buf;
        str = NULL;
    }
    NEED(r.at == r.n, "%zu unread bytes at the end of the payload", r.n - r.at);
    return KILN_OK;
fail:
    free(str);
    kiln_err_prefix(&e, "checkpoint '%s'", path);
    *out_e = e;
    return e.code;
}

kiln_status kiln_checkpoint_load(const char *path, kiln_checkpoint **out) {
    kiln_err e = {0};
    if (!path || !out) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_checkpoint_load: NULL argument"), fail_last(&e);
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kiln_fail(&e, KILN_ERR_IO, "checkpoint '%s': %s", path, strerror(errno)), fail_last(&e);
    unsigned char *bytes = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return kiln_fail(&e, KILN_ERR_IO, "checkpoint '%s': cannot read its size", path), fail_last(&e);
    }
    bytes = malloc(size ? (size_t)size : 1);
    if (!bytes) {
        fclose(f);
        return kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint '%s': out of memory (%ld bytes)", path, size), fail_last(&e);
    }
    size_t got = fread(bytes, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(bytes);
        return kiln_fail(&e, KILN_ERR_IO, "checkpoint '%s': read %zu of %ld bytes", path, got, size), fail_last(&e);
    }
    kiln_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck) {
        free(bytes);
        return kiln_fail(&e, KILN_ERR_NO_MEMORY, "checkpoint: out of memory"), fail_last(&e);
    }
    kiln_status st = parse(bytes, (size_t)size, path, ck, &e);
    free(bytes);
    if (st) {
        kiln_checkpoint_free(ck);
        return fail_last(&e);
    }
    *out = ck;
    return KILN_OK;
}
