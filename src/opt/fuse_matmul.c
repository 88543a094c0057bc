/* Matrix-product fusions.
 *
 * MatMul(A, B) + Add(bias) -> Gemm(A, B, bias) when A and B are 2-D: the Gemm kernel writes the
 * broadcast bias into the output and lets the product accumulate onto it, so the sum needs no
 * second pass and no intermediate buffer. With batch dimensions on A only (a transformer's
 * [B, S, K] x [K, N] projections) and a bias of N values, kiln:MatMulBias instead: one node, and
 * on the GPU one cuBLASLt call with a bias epilogue.
 *
 * Transpose(perm swapping the last two axes) + MatMul -> com.microsoft FusedMatMul with transA /
 * transB: the product reads the operand transposed instead of a copy being made. A Transpose of
 * a constant (or of a value computed from constants only) is left alone: constant folding turns it
 * into a transposed weight, which is better. */
#include "fusions.h"
#include <stdlib.h>
#include <string.h>

/* Add's other operand broadcasts onto the product's [M, N] without growing it. */
static int bias_fits(const kiln_tensor *bias, const kiln_tensor *prod) {
    if (bias->rank < 0 || bias->rank > 2 || prod->rank != 2) return 0;
    for (int i = 0; i < bias->rank; i++) {
        int64_t d = bias->dims[bias->rank - 1 - i], p = prod->dims[1 - i];
        if (d != 1 && (d != p || !opt_dim_known(d))) return 0;
    }
    return 1;
}

kiln_status opt_fuse_matmul_add(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *add = &g->nodes[i];
        if (add->removed || add->domain[0] || strcmp(add->op_type, "Add") || add->n_in != 2 ||
            add->n_out != 1 || add->opset < 7)
            continue;
        for (int k = 0; k < 2; k++) {
            int p = add->in[k], bias = add->in[1 - k];
            kiln_node *mm = opt_private(c, p, 1) ? opt_producer(c, p, "MatMul") : NULL;
            if (!mm || mm->n_in != 2 || p == bias) continue;
            const kiln_tensor *fa = opt_fact(c, mm->in[0]), *fb = opt_fact(c, mm->in[1]);
            const kiln_tensor *fp = opt_fact(c, p), *fbias = opt_fact(c, bias);
            if (!opt_float_type(fa->dtype) || fbias->dtype != fa->dtype || fb->rank != 2) continue;
            if (fa->rank > 2 && fbias->rank == 1 && opt_dim_known(fb->dims[1]) && fbias->dims[0] == fb->dims[1]) {
                int ins[3] = {mm->in[0], mm->in[1], bias}, out = add->out[0];
                kiln_node *pattern[2] = {mm, add};
                KILN_TRY(opt_replace(c, pattern, 2, "kiln", "MatMulBias", 1, ins, 3, &out, 1, NULL, 0));
                break;
            }
            if (fa->rank != 2 || !bias_fits(fbias, fp)) continue;
            kiln_attr *attrs = calloc(2, sizeof *attrs);
            if (!attrs || !opt_attr_float(&attrs[0], "alpha", 1.0f) ||
                !opt_attr_float(&attrs[1], "beta", 1.0f)) {
                opt_attrs_free(attrs, attrs ? 2 : 0);
                return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
            }
            int ins[3] = {mm->in[0], mm->in[1], bias}, out = add->out[0];
            kiln_node *pattern[2] = {mm, add};
            KILN_TRY(opt_replace(c, pattern, 2, "", "Gemm", add->opset, ins, 3, &out, 1, attrs, 2));
            break;
        }
    }
    return KILN_OK;
}

/* v = Transpose(x) swapping the last two axes, read only by the product; returns x or -1. */
static int swapped_operand(opt_ctx *c, int v, kiln_node **tr) {
    *tr = opt_private(c, v, 1) ? opt_producer(c, v, "Transpose") : NULL;
    if (!*tr || (*tr)->n_in != 1 || opt_foldable(c, (*tr)->in[0])) return -1;
    int n = 0;
    const int64_t *perm = kiln_attr_ints(*tr, "perm", &n);
    if (!perm) /* no perm reverses all axes: a swap only for 2-D */
        return opt_fact(c, (*tr)->in[0])->rank == 2 ? (*tr)->in[0] : -1;
    if (n < 2) return -1;
    for (int i = 0; i < n - 2; i++)
        if (perm[i] != i) return -1;
    return perm[n - 2] == n - 1 && perm[n - 1] == n - 2 ? (*tr)->in[0] : -1;
}

kiln_status opt_fuse_transpose_matmul(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *mm = &g->nodes[i];
        if (mm->removed || mm->domain[0] || strcmp(mm->op_type, "MatMul") || mm->n_in != 2 ||
            mm->n_out != 1)
            continue;
        if (mm->in[0] == mm->in[1]) continue; /* one Transpose read twice is not private */
        kiln_node *ta, *tb;
        int a = swapped_operand(c, mm->in[0], &ta), b = swapped_operand(c, mm->in[1], &tb);
        if (a < 0 && b < 0) continue;
        /* FusedMatMul has float kernels only (MatMul also multiplies integers) */
        int dt = opt_fact(c, mm->in[0])->dtype;
        if (!opt_float_type(dt)) continue;
        kiln_attr *attrs = calloc(3, sizeof *attrs);
        if (!attrs || !opt_attr_int(&attrs[0], "transA", a >= 0) ||
            !opt_attr_int(&attrs[1], "transB", b >= 0) || !opt_attr_float(&attrs[2], "alpha", 1.0f)) {
            opt_attrs_free(attrs, attrs ? 3 : 0);
            return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        kiln_node *pattern[3];
        int np = 0;
        if (a >= 0) pattern[np++] = ta;
        if (b >= 0) pattern[np++] = tb;
        pattern[np++] = mm;
        int ins[2] = {a >= 0 ? a : mm->in[0], b >= 0 ? b : mm->in[1]}, out = mm->out[0];
        KILN_TRY(opt_replace(c, pattern, np, "com.microsoft", "FusedMatMul", -1, ins, 2, &out, 1,
                             attrs, 3));
    }
    return KILN_OK;
}
