/* The execution-provider interface: what every provider (the CPU, a GPU, ...) implements.
 *
 * A provider owns one memory space (its device), allocates in it, copies between it and the
 * host, and runs the nodes it claims. The session opens its providers in the order the caller
 * lists them; the CPU provider is always last and takes every node the others leave. Placement
 * is decided once per session, after static inference: each node goes to the first provider
 * whose claim accepts it, and the placer (core/placement.c) inserts copy nodes where a value
 * crosses from one memory space to another. Memory plans keep one arena per memory space.
 *
 * Op definitions are shared: a node's kiln_op (ops/op.h) parses attributes (init), validates and
 * infers output types and shapes (infer) for every provider. A provider's kernel only computes;
 * its inputs and outputs live in the provider's memory except the inputs marked host_inputs
 * (shapes, axes, sizes: what infer reads), which the placer keeps on the host.
 *
 * Work may be asynchronous: a device provider enqueues its kernels and copies on its stream and
 * the runtime calls sync() before the host reads a device value. Buffers are released in stream
 * order, so a device arena can be reused by the next kernel without a sync.
 *
 * A provider that is not built into libkiln lives in its own shared library, loaded only when a
 * session asks for it (providers/registry.c): its entry point is kiln_provider_open_fn. */
#ifndef KILN_PROVIDER_H
#define KILN_PROVIDER_H

#include "graph.h"
#include "status.h"

struct kiln_ctx;
struct kiln_provider;

/* A kernel of a provider other than the CPU, for one op definition. */
typedef struct kiln_kernel {
    const char *domain;       /* "" = ai.onnx, "com.microsoft", ... */
    const char *name;
    int since;                /* first opset version of the definition it computes */
    unsigned host_inputs;     /* bit i: input i is read on the host (by infer or compute) */
    /* Optional: returns 1 when the kernel takes node n, whose inputs and outputs have the static
     * types in[i] / out[i] (NULL: absent; dtype 0 or rank -1: unknown); else 0 with the reason
     * written into why ("float64 is not supported"). */
    int (*supports)(const kiln_node *n, const kiln_graph_value *const *in,
                    const kiln_graph_value *const *out, char *why, size_t cap);
    /* Optional per-node state (descriptors, prepacked weights); ctx->kernel_state at compute. */
    kiln_status (*init)(struct kiln_ctx *ctx, void **state);
    void (*fini)(void *state);
    kiln_status (*compute)(struct kiln_ctx *ctx);
} kiln_kernel;

/* What a provider answers when asked to place a node. */
typedef struct kiln_claim {
    int claimed;               /* 0: not claimed; why says the reason */
    const kiln_kernel *kernel; /* the kernel that runs it; NULL for the CPU, whose kernels are the
                                  op definitions' own compute functions */
    char why[200];
} kiln_claim;

/* One fused optimizer step over n float32 values in a provider's memory (train/optimizer.c). The
 * scalars are worked out once on the host, as torch rounds them, so that every provider applies the
 * same float32 arithmetic. */
typedef struct kiln_optim_update {
    int adamw;                 /* 1: AdamW with state m, v; 0: SGD with momentum buffer m (or NULL) */
    float *param;
    const float *grad;
    float *m, *v;
    int64_t n;
    float decay, w1, b2, c2, bc2_sqrt, eps, neg_step; /* AdamW */
    float wd, mom, keep, neg_lr;                      /* SGD */
    int nesterov, first;                              /* SGD: first = the buffer starts as the gradient */
} kiln_optim_update;

typedef struct kiln_provider_vtable {
    /* ONNX Runtime's name for it ("CPUExecutionProvider", ...) */
    const char *name;
    /* a short name for logs and copy values ("cpu", ...) */
    const char *short_name;
    /* 1: memory is the host's (values need no copy to be read by the CPU) */
    int host_memory;
    /* Placement: whether this provider runs node n (the CPU provider claims through ops/). */
    void (*claim)(struct kiln_provider *p, const kiln_graph *g, const kiln_node *n, kiln_claim *out);
    /* Memory in the provider's space. free(NULL) is a no-op. */
    kiln_status (*alloc)(struct kiln_provider *p, size_t bytes, void **out, kiln_err *e);
    void (*free)(struct kiln_provider *p, void *ptr);
    /* Copies, asynchronous on the provider's stream; the source must stay valid until sync. */
    kiln_status (*to_device)(struct kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e);
    kiln_status (*to_host)(struct kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e);
    kiln_status (*copy)(struct kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e);
    /* Waits for everything enqueued so far. */
    kiln_status (*sync)(struct kiln_provider *p, kiln_err *e);
    /* Optional graph capture (a recorded launch sequence): begin recording the work a run enqueues, end it, and
     * replay the recording. NULL when the provider cannot capture. */
    kiln_status (*capture_begin)(struct kiln_provider *p, kiln_err *e);
    kiln_status (*capture_end)(struct kiln_provider *p, void **graph, kiln_err *e);
    kiln_status (*replay)(struct kiln_provider *p, void *graph, kiln_err *e);
    void (*graph_free)(struct kiln_provider *p, void *graph);
    /* A line describing the device ("NVIDIA H100 80GB HBM3, compute 9.0, 132 SMs"). */
    const char *(*describe)(struct kiln_provider *p);
    void (*destroy)(struct kiln_provider *p);
    /* Optional, for training with parameters and gradients in the provider's memory (NULL: the
     * module keeps them on the host). Enqueued on the provider's stream like the copies. */
    kiln_status (*fill_zero)(struct kiln_provider *p, void *dst, size_t bytes, kiln_err *e);
    /* dst[i] += src[i] over n float32 values */
    kiln_status (*accumulate_f32)(struct kiln_provider *p, float *dst, const float *src, int64_t n, kiln_err *e);
    kiln_status (*optim_step)(struct kiln_provider *p, const kiln_optim_update *u, kiln_err *e);
} kiln_provider_vtable;

/* The base every provider struct starts with. */
typedef struct kiln_provider {
    const kiln_provider_vtable *vt;
    int index;                /* position in the session's provider list */
    int verbose;
} kiln_provider;

/* Options a provider library is opened with. */
typedef struct kiln_provider_config {
    int device_id;
    int verbose;
} kiln_provider_config;

/* The entry point a provider library exports (under the name KILN_PROVIDER_ENTRY). */
typedef kiln_status (*kiln_provider_open_fn)(const kiln_provider_config *cfg, kiln_provider **out,
                                             kiln_err *e);
#define KILN_PROVIDER_ENTRY "kiln_provider_open"
/* The version a library's kiln_provider_abi() must return to be loaded. */
#define KILN_PROVIDER_ABI 2 /* 2: the training entries at the vtable's end */

/* Looks a kernel up in a provider's table (terminated by a NULL name): the entry for (domain,
 * name) with the highest `since` not above opset. */
const kiln_kernel *kiln_kernel_find(const kiln_kernel *const *tables, const char *domain,
                                    const char *name, int opset);

#endif
