/* The op registry: a flat list of kernel family tables. Families are referenced weakly so that a
 * family file can be added (or be absent in a trimmed build) without touching the rest. */
#include "op.h"
#include <string.h>

#define FAMILIES(X)                                                                                 \
    X(elementwise) X(unary) X(binary) X(logical) X(cast) X(activation) X(reduce) X(softmax)        \
    X(norm) X(tensor) X(shape) X(gather) X(scatter) X(pad) X(matmul) X(conv) X(pool) X(quant)      \
    X(image) X(rnn) X(control) X(sequence) X(optional) X(random) X(signal) X(string) X(ml)          \
    X(contrib) X(attention) X(misc) X(einsum) X(linalg) X(nms) X(resize) X(topk) X(cumsum)      \
    X(quantcontrib) X(ml_maps) X(transformers)                                      \
    X(grad_elementwise) X(grad_nn) X(grad_conv) X(grad_pool)

#define DECLARE(f) extern const kiln_op kiln_ops_##f[] __attribute__((weak));
FAMILIES(DECLARE)
#undef DECLARE

#define ENTRY(f) kiln_ops_##f,
static const kiln_op *const *families(void) {
    static const kiln_op *const list[] = {FAMILIES(ENTRY) NULL};
    return list;
}
#undef ENTRY
#define COUNT(f) +1
enum { N_FAMILIES = 0 FAMILIES(COUNT) };
#undef COUNT

static int domain_eq(const char *a, const char *b) {
    /* "ai.onnx" and "" name the same default domain */
    if (!a || !strcmp(a, "ai.onnx")) a = "";
    if (!b || !strcmp(b, "ai.onnx")) b = "";
    return !strcmp(a, b);
}

const kiln_op *kiln_find_op(const char *domain, const char *name, int opset) {
    const kiln_op *best = NULL;
    const kiln_op *const *fam = families();
    for (int f = 0; f < N_FAMILIES; f++) {
        if (!fam[f]) continue;
        for (const kiln_op *op = fam[f]; op->name; op++) {
            if (strcmp(op->name, name) || !domain_eq(op->domain, domain)) continue;
            if (op->since > opset) continue;
            if (!best || op->since > best->since) best = op;
        }
    }
    return best;
}

int kiln_list_ops(const kiln_op **out, int max) {
    int n = 0;
    const kiln_op *const *fam = families();
    for (int f = 0; f < N_FAMILIES; f++) {
        if (!fam[f]) continue;
        for (const kiln_op *op = fam[f]; op->name; op++) {
            if (n < max && out) out[n] = op;
            n++;
        }
    }
    return n;
}
