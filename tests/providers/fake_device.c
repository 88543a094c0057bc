/* A provider library for testing the provider machinery without a GPU: it is loaded in place of
 * libkiln_cuda.so (KILN_PROVIDER_PATH) and keeps its "device" memory in host blocks it owns, so
 * that placement, copy nodes, per-device arenas and device inputs/outputs run in CI. Every block
 * carries a magic header, and every kernel and copy checks that the pointers it is handed are
 * its own blocks (or inside one): a host pointer reaching a device kernel, or a device pointer
 * reaching host code unchecked, fails loudly. It claims float32 Relu and Add (same shapes, or a
 * scalar operand) and Reshape (shape on the host), and Shape of anything never. */
#include "core/provider.h"
#include "ops/op.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

enum { MAGIC = 0x6b696c6e, MAX_BLOCKS = 4096 };

typedef struct block { uint32_t magic; size_t bytes; } block;

typedef struct fake_dev {
    kiln_provider base;
    long allocs, copies_in, copies_out;
} fake_dev;

/* One device shared by every provider instance (sessions on one GPU share its memory): each live
 * block with the instance that allocated it. */
static struct { void *data; size_t size; fake_dev *owner; } blocks[MAX_BLOCKS];

/* 1 when [p, p+bytes) lies inside a live device block. */
static int owned(const fake_dev *d, const void *p, size_t bytes) {
    (void)d;
    for (int i = 0; i < MAX_BLOCKS; i++) {
        const char *b = blocks[i].data;
        if (b && (const char *)p >= b && (const char *)p + bytes <= b + blocks[i].size) return 1;
    }
    return 0;
}

static kiln_status f_alloc(kiln_provider *p, size_t bytes, void **out, kiln_err *e) {
    fake_dev *d = (fake_dev *)p;
    block *b = malloc(sizeof(block) + bytes + 64);
    if (!b) return kiln_fail(e, KILN_ERR_NO_MEMORY, "fake device: out of memory");
    b->magic = MAGIC;
    b->bytes = bytes;
    char *data = (char *)b + 64;
    memset(data, 0x7f, bytes); /* poison: kernels must write every element */
    for (int i = 0; i < MAX_BLOCKS; i++)
        if (!blocks[i].data) {
            blocks[i].data = data;
            blocks[i].size = bytes;
            blocks[i].owner = d;
            d->allocs++;
            *out = data;
            return KILN_OK;
        }
    free(b);
    return kiln_fail(e, KILN_ERR_NO_MEMORY, "fake device: too many blocks");
}

static void f_free(kiln_provider *p, void *ptr) {
    fake_dev *d = (fake_dev *)p;
    if (!ptr) return;
    for (int i = 0; i < MAX_BLOCKS; i++)
        if (blocks[i].data == ptr && blocks[i].owner == d) {
            blocks[i].data = NULL;
            free((char *)ptr - 64);
            return;
        }
    fprintf(stderr, "fake device: free of a pointer this instance does not own\n");
    abort();
}

static kiln_status f_to_device(kiln_provider *p, void *dst, const void *src, size_t n, kiln_err *e) {
    fake_dev *d = (fake_dev *)p;
    if (!owned(d, dst, n) || owned(d, src, n))
        return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: to_device with a wrong-side pointer");
    memcpy(dst, src, n);
    d->copies_in++;
    return KILN_OK;
}

static kiln_status f_to_host(kiln_provider *p, void *dst, const void *src, size_t n, kiln_err *e) {
    fake_dev *d = (fake_dev *)p;
    if (owned(d, dst, n) || !owned(d, src, n))
        return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: to_host with a wrong-side pointer");
    memcpy(dst, src, n);
    d->copies_out++;
    return KILN_OK;
}

static kiln_status f_copy(kiln_provider *p, void *dst, const void *src, size_t n, kiln_err *e) {
    fake_dev *d = (fake_dev *)p;
    if (!owned(d, dst, n) || !owned(d, src, n))
        return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: device copy with a host pointer");
    memmove(dst, src, n);
    return KILN_OK;
}

static kiln_status f_sync(kiln_provider *p, kiln_err *e) { return KILN_OK; }

/* ---- the training module's device steps (the CPU optimizer's arithmetic, on checked blocks) ---- */

static kiln_status f_fill_zero(kiln_provider *p, void *dst, size_t n, kiln_err *e) {
    if (n && !owned((fake_dev *)p, dst, n)) return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: zero fill of a host pointer");
    if (n) memset(dst, 0, n);
    return KILN_OK;
}

static kiln_status f_accumulate(kiln_provider *p, float *dst, const float *src, int64_t n, kiln_err *e) {
    size_t b = (size_t)n * sizeof(float);
    if (n && (!owned((fake_dev *)p, dst, b) || !owned((fake_dev *)p, src, b)))
        return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: accumulation with a host pointer");
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
    return KILN_OK;
}

static kiln_status f_optim_step(kiln_provider *p, const kiln_optim_update *u, kiln_err *e) {
    fake_dev *d = (fake_dev *)p;
    size_t b = (size_t)u->n * sizeof(float);
    if (u->n && (!owned(d, u->param, b) || !owned(d, u->grad, b) || (u->m && !owned(d, u->m, b)) ||
                 (u->v && !owned(d, u->v, b))))
        return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: optimizer step with a host pointer");
    if (u->adamw && (!u->m || !u->v)) return kiln_fail(e, KILN_ERR_RUNTIME, "fake device: AdamW without its state");
    for (int64_t i = 0; i < u->n; i++) {
        float g = u->grad[i], pv = u->param[i];
        if (u->adamw) {
            pv = pv * u->decay;
            float m = u->m[i];
            m = u->w1 < 0.5f ? m + u->w1 * (g - m) : g - (g - m) * (1.0f - u->w1);
            float v = u->v[i] * u->b2;
            v = v + u->c2 * g * g;
            float denom = sqrtf(v) / u->bc2_sqrt + u->eps;
            pv = pv + u->neg_step * (m / denom);
            u->m[i] = m;
            u->v[i] = v;
        } else {
            if (u->wd != 0.0f) g = g + u->wd * pv;
            if (u->m) {
                float bb = u->first ? g : u->m[i] * u->mom + u->keep * g;
                u->m[i] = bb;
                g = u->nesterov ? g + u->mom * bb : bb;
            }
            pv = pv + u->neg_lr * g;
        }
        u->param[i] = pv;
    }
    return KILN_OK;
}

/* ---- kernels ---- */

static kiln_status need_dev(kiln_ctx *ctx, const kiln_tensor *t, const char *what) {
    if (t && kiln_numel(t) > 0 && !owned((fake_dev *)ctx->ep, t->data, kiln_tensor_nbytes(t)))
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "fake device: %s is not in device memory", what);
    return KILN_OK;
}

static int float_only(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                      char *why, size_t cap) {
    for (int i = 0; i < n->n_in; i++)
        if (in[i] && (!in[i]->has_type || in[i]->type.dtype != KILN_DTYPE_FLOAT)) {
            snprintf(why, cap, "the fake device takes float32 only");
            return 0;
        }
    return 1;
}

static kiln_status relu_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    KILN_TRY(need_dev(ctx, x, "input 0"));
    KILN_TRY(need_dev(ctx, y, "output 0"));
    const float *a = x->data;
    float *o = y->data;
    for (int64_t i = 0, n = kiln_numel(y); i < n; i++) o[i] = a[i] > 0 ? a[i] : 0;
    return KILN_OK;
}

static int add_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                        char *why, size_t cap) {
    if (!float_only(n, in, out, why, cap)) return 0;
    const kiln_type *a = &in[0]->type, *b = &in[1]->type;
    int scalar = b->rank == 0 || (b->rank == 1 && b->dims[0] == 1);
    int same = a->rank == b->rank && a->rank >= 0;
    for (int i = 0; same && i < a->rank; i++) same = a->dims[i] == b->dims[i] && a->dims[i] >= 0;
    if (!scalar && !same) snprintf(why, cap, "the fake device adds same shapes or a scalar only");
    return scalar || same;
}

static kiln_status add_compute(kiln_ctx *ctx) {
    kiln_tensor *a = kiln_input(ctx, 0), *b = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    KILN_TRY(need_dev(ctx, a, "input 0"));
    KILN_TRY(need_dev(ctx, b, "input 1"));
    KILN_TRY(need_dev(ctx, y, "output 0"));
    const float *x = a->data, *z = b->data;
    int64_t nb = kiln_numel(b);
    float *o = y->data;
    for (int64_t i = 0, n = kiln_numel(y); i < n; i++) o[i] = x[i] + z[nb == 1 ? 0 : i];
    return KILN_OK;
}

static int reshape_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    if (in[0] && in[0]->has_type && in[0]->type.dtype == KILN_DTYPE_FLOAT) return 1;
    snprintf(why, cap, "the fake device reshapes float32 only");
    return 0;
}

static kiln_status reshape_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0), *s = kiln_input(ctx, 1);
    KILN_TRY(need_dev(ctx, x, "input 0"));
    KILN_TRY(need_dev(ctx, y, "output 0"));
    if (s && owned((fake_dev *)ctx->ep, s->data, kiln_tensor_nbytes(s)))
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "fake device: the shape input should be on the host");
    memmove(y->data, x->data, kiln_tensor_nbytes(y));
    return KILN_OK;
}

static const kiln_kernel kernels[] = {
    {"", "Relu", 1, 0, float_only, NULL, NULL, relu_compute},
    {"", "Add", 1, 0, add_supports, NULL, NULL, add_compute},
    {"", "Reshape", 5, 1u << 1, reshape_supports, NULL, NULL, reshape_compute},
    {0},
};

static void f_claim(kiln_provider *p, const kiln_graph *g, const kiln_node *n, kiln_claim *out) {
    const kiln_kernel *const tables[] = {kernels, NULL};
    const kiln_kernel *k = kiln_kernel_find(tables, n->domain, n->op_type, n->opset);
    if (!k) {
        snprintf(out->why, sizeof out->why, "no fake-device kernel for %s", n->op_type);
        return;
    }
    const kiln_graph_value *in[16] = {0}, *outs[16] = {0};
    if (n->n_in > 16 || n->n_out > 16) return;
    for (int i = 0; i < n->n_in; i++) in[i] = n->in[i] >= 0 ? &g->values[n->in[i]] : NULL;
    for (int i = 0; i < n->n_out; i++) outs[i] = n->out[i] >= 0 ? &g->values[n->out[i]] : NULL;
    if (k->supports && !k->supports(n, in, outs, out->why, sizeof out->why)) return;
    out->claimed = 1;
    out->kernel = k;
}

static const char *f_describe(kiln_provider *p) { return "fake device (host memory, checked)"; }

static void f_destroy(kiln_provider *p) {
    fake_dev *d = (fake_dev *)p;
    int leaked = 0;
    for (int i = 0; i < MAX_BLOCKS; i++) leaked += blocks[i].data && blocks[i].owner == d;
    if (leaked) fprintf(stderr, "fake device: %d blocks still allocated at destroy\n", leaked);
    if (getenv("KILN_FAKE_STATS"))
        fprintf(stderr, "fake device: %ld allocations, %ld copies in, %ld out, %d leaked\n", d->allocs,
                d->copies_in, d->copies_out, leaked);
    if (leaked && getenv("KILN_FAKE_STRICT")) abort();
    free(d);
}

static const kiln_provider_vtable vt = {
    .name = "CUDAExecutionProvider", /* it stands in for the CUDA library */
    .short_name = "fake",
    .host_memory = 0,
    .claim = f_claim,
    .alloc = f_alloc,
    .free = f_free,
    .to_device = f_to_device,
    .to_host = f_to_host,
    .copy = f_copy,
    .sync = f_sync,
    .describe = f_describe,
    .destroy = f_destroy,
    .fill_zero = f_fill_zero,
    .accumulate_f32 = f_accumulate,
    .optim_step = f_optim_step,
};

EXPORT int kiln_provider_abi(void) { return KILN_PROVIDER_ABI; }

EXPORT kiln_status kiln_provider_open(const kiln_provider_config *cfg, kiln_provider **out, kiln_err *e) {
    fake_dev *d = calloc(1, sizeof *d);
    if (!d) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    d->base.vt = &vt;
    *out = &d->base;
    return KILN_OK;
}
