/* The CUDA execution provider library's entry: libkiln loads libkiln_cuda.so when a session asks
 * for CUDA and calls kiln_provider_open, which starts the device and returns the vtable below. */
#include "cuda_ep.h"
#include "kernels/grad.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KILN_EXPORT __attribute__((visibility("default")))

/* Families are weak: a trimmed build may leave one out. */
#define WEAK_FAMILY(f) extern const kiln_kernel kiln_cuda_kernels_##f[] __attribute__((weak));
KILN_CUDA_FAMILIES(WEAK_FAMILY)
#undef WEAK_FAMILY

static const kiln_kernel *const *kernel_tables(void) {
#define ENTRY(f) kiln_cuda_kernels_##f,
    static const kiln_kernel *const all[] = {KILN_CUDA_FAMILIES(ENTRY) NULL};
#undef ENTRY
    /* drop the absent (NULL) families so kiln_kernel_find's NULL terminator is the real end */
    static const kiln_kernel *present[sizeof all / sizeof all[0]];
    static int done;
    if (!done) {
        int n = 0;
        for (size_t i = 0; i + 1 < sizeof all / sizeof all[0]; i++)
            if (all[i]) present[n++] = all[i];
        present[n] = NULL;
        done = 1;
    }
    return present;
}

static kiln_status fail_from_base(kiln_err *e, kiln_status st) {
    return kiln_fail(e, st, "%s", kiln_cuda_last_error());
}

/* The training kernels (the kiln gradient ops, NegativeLogLikelihoodLoss, and the vtable's
 * fill_zero / accumulate_f32 / optim_step that keep a train module on the device) are on by
 * default since their first GPU run (2026-12-06, H100: tests/gpu/test_train_cuda.py and
 * bench/train_bench.py --device cuda matched PyTorch); KILN_CUDA_TRAINING=0 keeps gradients and
 * the optimizer on the host, the path used before. */
static int training_enabled(void) {
    const char *v = getenv("KILN_CUDA_TRAINING");
    return !(v && v[0] == '0');
}

static int is_training_kernel(const kiln_node *n) {
    size_t len = strlen(n->op_type);
    return (!strcmp(n->domain, "kiln") && len > 4 && !strcmp(n->op_type + len - 4, "Grad")) ||
           (!n->domain[0] && !strcmp(n->op_type, "NegativeLogLikelihoodLoss"));
}

static void cuda_claim(kiln_provider *p, const kiln_graph *g, const kiln_node *n, kiln_claim *out) {
    (void)p;
    const kiln_kernel *k = kiln_kernel_find(kernel_tables(), n->domain, n->op_type, n->opset);
    if (k && is_training_kernel(n) && !training_enabled()) {
        snprintf(out->why, sizeof out->why, "the CUDA training kernels are switched off (KILN_CUDA_TRAINING=0)");
        return;
    }
    if (!k) {
        snprintf(out->why, sizeof out->why, "no CUDA kernel for %s%s%s (opset %d)", n->domain,
                 n->domain[0] ? ":" : "", n->op_type, n->opset);
        return;
    }
    enum { MAX_IO = 64 };
    if (n->n_in > MAX_IO || n->n_out > MAX_IO) {
        snprintf(out->why, sizeof out->why, "more than %d inputs or outputs", MAX_IO);
        return;
    }
    /* absent trailing inputs read as NULL: supports() may look past n_in for optional inputs */
    const kiln_graph_value *in[MAX_IO] = {0}, *outs[MAX_IO] = {0};
    for (int i = 0; i < n->n_in; i++) in[i] = n->in[i] >= 0 ? &g->values[n->in[i]] : NULL;
    for (int i = 0; i < n->n_out; i++) outs[i] = n->out[i] >= 0 ? &g->values[n->out[i]] : NULL;
    if (k->supports && !k->supports(n, in, outs, out->why, sizeof out->why)) return;
    out->claimed = 1;
    out->kernel = k;
}

static kiln_status cuda_alloc(kiln_provider *p, size_t bytes, void **out, kiln_err *e) {
    kiln_cuda_ep *c = (kiln_cuda_ep *)p;
    *out = NULL;
    /* stream-ordered: a block freed by an earlier node is reused without waiting */
    cudaError_t err = cudaMallocAsync(out, bytes ? bytes : 256, (cudaStream_t)kiln_cuda_stream(c->cp));
    if (err != cudaSuccess) {
        char what[96];
        snprintf(what, sizeof what, "cudaMallocAsync(%zu bytes)", bytes);
        return fail_from_base(e, kiln_cuda_check((int)err, what));
    }
    return KILN_OK;
}

static void cuda_free(kiln_provider *p, void *ptr) {
    kiln_cuda_ep *c = (kiln_cuda_ep *)p;
    if (ptr) cudaFreeAsync(ptr, (cudaStream_t)kiln_cuda_stream(c->cp));
}

static kiln_status cuda_to_device(kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e) {
    kiln_status st = kiln_cuda_h2d(((kiln_cuda_ep *)p)->cp, dst, src, bytes);
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_to_host(kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e) {
    kiln_status st = kiln_cuda_d2h(((kiln_cuda_ep *)p)->cp, dst, src, bytes);
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_copy(kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e) {
    kiln_status st = kiln_cuda_d2d(((kiln_cuda_ep *)p)->cp, dst, src, bytes);
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_sync(kiln_provider *p, kiln_err *e) {
    kiln_status st = kiln_cuda_sync(((kiln_cuda_ep *)p)->cp);
    return st ? fail_from_base(e, st) : KILN_OK;
}

/* ---- the training module's device steps ---- */

static kiln_status cuda_fill_zero(kiln_provider *p, void *dst, size_t bytes, kiln_err *e) {
    kiln_status st = bytes ? kiln_cuda_memset(((kiln_cuda_ep *)p)->cp, dst, 0, bytes) : KILN_OK;
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_accumulate_f32(kiln_provider *p, float *dst, const float *src, int64_t n, kiln_err *e) {
    kiln_status st = kiln_cuda_accumulate_f32(kiln_cuda_stream(((kiln_cuda_ep *)p)->cp), dst, src, n);
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_optim_step(kiln_provider *p, const kiln_optim_update *u, kiln_err *e) {
    kiln_cuda_optim k = {u->adamw, u->param, u->grad, u->m, u->v, u->n,
                         u->decay, u->w1, u->b2, u->c2, u->bc2_sqrt, u->eps, u->neg_step,
                         u->wd, u->mom, u->keep, u->neg_lr, u->nesterov, u->first};
    kiln_status st = kiln_cuda_optim_step(kiln_cuda_stream(((kiln_cuda_ep *)p)->cp), &k);
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_capture_begin(kiln_provider *p, kiln_err *e) {
    cudaStream_t s = (cudaStream_t)kiln_cuda_stream(((kiln_cuda_ep *)p)->cp);
    kiln_status st = kiln_cuda_check((int)cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                                     "cudaStreamBeginCapture");
    return st ? fail_from_base(e, st) : KILN_OK;
}

static kiln_status cuda_capture_end(kiln_provider *p, void **graph, kiln_err *e) {
    cudaStream_t s = (cudaStream_t)kiln_cuda_stream(((kiln_cuda_ep *)p)->cp);
    cudaGraph_t g = NULL;
    cudaGraphExec_t exec = NULL;
    *graph = NULL;
    kiln_status st = kiln_cuda_check((int)cudaStreamEndCapture(s, &g), "cudaStreamEndCapture");
    if (!st) st = kiln_cuda_check((int)cudaGraphInstantiate(&exec, g, 0), "cudaGraphInstantiate");
    if (g) cudaGraphDestroy(g);
    if (st) return fail_from_base(e, st);
    *graph = exec;
    return KILN_OK;
}

static kiln_status cuda_replay(kiln_provider *p, void *graph, kiln_err *e) {
    cudaStream_t s = (cudaStream_t)kiln_cuda_stream(((kiln_cuda_ep *)p)->cp);
    kiln_status st = kiln_cuda_check((int)cudaGraphLaunch((cudaGraphExec_t)graph, s), "cudaGraphLaunch");
    return st ? fail_from_base(e, st) : KILN_OK;
}

static void cuda_graph_free(kiln_provider *p, void *graph) {
    (void)p;
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

static const char *cuda_describe(kiln_provider *p) { return ((kiln_cuda_ep *)p)->desc; }

static void cuda_destroy(kiln_provider *p) {
    kiln_cuda_ep *c = (kiln_cuda_ep *)p;
    if (!c) return;
    if (c->cp) kiln_cuda_sync(c->cp);
    if (c->cudnn) cudnnDestroy((cudnnHandle_t)c->cudnn);
    if (c->cublaslt) cublasLtDestroy((cublasLtHandle_t)c->cublaslt);
    kiln_cuda_provider_destroy(c->cp);
    free(c);
}

kiln_status kiln_cuda_cudnn(kiln_ctx *ctx, void **handle) {
    kiln_cuda_ep *c = kiln_cuda_ep_of(ctx);
    if (!c->cudnn) {
        cudnnHandle_t h;
        cudnnStatus_t s = cudnnCreate(&h);
        if (s != CUDNN_STATUS_SUCCESS)
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "cudnnCreate: %s", cudnnGetErrorString(s));
        s = cudnnSetStream(h, (cudaStream_t)kiln_cuda_stream(c->cp));
        if (s != CUDNN_STATUS_SUCCESS) {
            cudnnDestroy(h);
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "cudnnSetStream: %s", cudnnGetErrorString(s));
        }
        c->cudnn = h;
    }
    *handle = c->cudnn;
    return KILN_OK;
}

static const kiln_provider_vtable cuda_vtable = {
    .name = "CUDAExecutionProvider",
    .short_name = "cuda",
    .host_memory = 0,
    .claim = cuda_claim,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .to_device = cuda_to_device,
    .to_host = cuda_to_host,
    .copy = cuda_copy,
    .sync = cuda_sync,
    .capture_begin = cuda_capture_begin,
    .capture_end = cuda_capture_end,
    .replay = cuda_replay,
    .graph_free = cuda_graph_free,
    .describe = cuda_describe,
    .destroy = cuda_destroy,
};

/* cuda_vtable plus the training entries (KILN_CUDA_TRAINING=1), filled once */
static kiln_provider_vtable cuda_training_vtable;
static pthread_once_t training_vtable_once = PTHREAD_ONCE_INIT;

static void fill_training_vtable(void) {
    cuda_training_vtable = cuda_vtable;
    cuda_training_vtable.fill_zero = cuda_fill_zero;
    cuda_training_vtable.accumulate_f32 = cuda_accumulate_f32;
    cuda_training_vtable.optim_step = cuda_optim_step;
}

KILN_EXPORT int kiln_provider_abi(void) { return KILN_PROVIDER_ABI; }

/* The kernel tables (NULL-terminated), for listings (`kiln ops`); needs no device. */
KILN_EXPORT const kiln_kernel *const *kiln_provider_kernels(void) { return kernel_tables(); }

/* KILN_CUDA_PLACEMENT_ONLY=1 on a machine without a usable GPU: a provider that claims nodes as
 * the real one would but has no device, so `kiln info --providers cuda` can show a model's
 * placement anywhere (running fails with a clear error). */
static const kiln_provider_vtable placement_only_vtable;

/* memory stands in on the host (constants are still "uploaded" at placement); kernels fail at
 * their first CUDA call, so a run reports the missing device */
static kiln_status po_alloc(kiln_provider *p, size_t b, void **out, kiln_err *e) {
    *out = malloc(b ? b : 1);
    return *out ? KILN_OK : kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
}
static void po_free(kiln_provider *p, void *ptr) { free(ptr); }
static kiln_status po_copy(kiln_provider *p, void *d, const void *s, size_t b, kiln_err *e) {
    if (b) memmove(d, s, b);
    return KILN_OK;
}
static kiln_status po_sync(kiln_provider *p, kiln_err *e) { return KILN_OK; }
static void po_destroy(kiln_provider *p) { free(p); }

static const kiln_provider_vtable placement_only_vtable = {
    .name = "CUDAExecutionProvider",
    .short_name = "cuda",
    .host_memory = 0,
    .claim = cuda_claim,
    .alloc = po_alloc,
    .free = po_free,
    .to_device = po_copy,
    .to_host = po_copy,
    .copy = po_copy,
    .sync = po_sync,
    .describe = cuda_describe,
    .destroy = po_destroy,
};

KILN_EXPORT kiln_status kiln_provider_open(const kiln_provider_config *cfg, kiln_provider **out, kiln_err *e) {
    *out = NULL;
    kiln_cuda_ep *c = calloc(1, sizeof *c);
    if (!c) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    c->base.vt = &cuda_vtable;
    if (training_enabled()) {
        pthread_once(&training_vtable_once, fill_training_vtable);
        c->base.vt = &cuda_training_vtable;
    }
    kiln_status st = kiln_cuda_provider_create(cfg->device_id, &c->cp);
    const char *po = getenv("KILN_CUDA_PLACEMENT_ONLY");
    if (st && po && po[0] == '1') {
        c->base.vt = &placement_only_vtable;
        snprintf(c->desc, sizeof c->desc, "no device, placement only (%s)", kiln_cuda_last_error());
        *out = &c->base;
        return KILN_OK;
    }
    if (st) {
        kiln_fail(e, st == KILN_ERR_NO_MEMORY ? st : KILN_ERR_NO_PROVIDER, "%s", kiln_cuda_last_error());
        free(c);
        return e->code;
    }
    const kiln_cuda_device_info *d = kiln_cuda_info(c->cp);
    snprintf(c->desc, sizeof c->desc, "%s, compute %d.%d, %d SMs, %.1f GiB", d->name, d->cc_major, d->cc_minor,
             d->sm_count, (double)d->total_mem / (1024.0 * 1024 * 1024));
    /* keep freed blocks in the pool across runs instead of returning them at each sync */
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, d->device) == cudaSuccess) {
        uint64_t keep = UINT64_MAX;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    *out = &c->base;
    return KILN_OK;
}
