/* Optional, OptionalHasElement, OptionalGetElement. At run time an optional holding an element
 * is just that element's value (tensor or sequence); an empty one is a KILN_KIND_NONE value. */
#include "sequence_util.h"

/* Static inference for an output that will carry input v's value. */
static kiln_status mirror_static(kiln_ctx *ctx, const kiln_value *v) {
    if (!v || v->kind == KILN_KIND_NONE) return kiln_set_output_unknown(ctx, 0, 0);
    if (v->kind == KILN_KIND_SEQUENCE) {
        kiln_seq_mark_output(ctx, 0, v->seq_dtype);
        return KILN_OK;
    }
    if (v->t.rank < 0) return kiln_set_output_unknown(ctx, 0, v->t.dtype);
    return kiln_set_output_like(ctx, 0, &v->t);
}

static kiln_status copy_to_output(kiln_ctx *ctx, const kiln_value *v) {
    if (!ctx->n_out || !ctx->out[0]) return KILN_OK;
    kiln_value_release(ctx->out[0]);
    return kiln_value_copy(ctx->out[0], v, ctx->err);
}

/* ---- Optional ---- */

static kiln_status optional_check(kiln_ctx *ctx, const kiln_value **in) {
    *in = ctx->n_in > 0 ? ctx->in[0] : NULL;
    if (*in && (*in)->kind == KILN_KIND_NONE)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be a tensor or a sequence, not an optional");
    if (!*in && !kiln_has_attr(ctx->node, "type"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "an Optional without input needs the attribute 'type'");
    return KILN_OK;
}

static int empty_is_sequence(kiln_ctx *ctx) {
    const kiln_attr *a = kiln_node_attr(ctx->node, "type");
    /* the attribute records a tensor element type only for tensor types */
    return a && a->type == KILN_ATTR_TYPE_PROTO && a->tp_elem_type == 0;
}

static void set_empty(kiln_ctx *ctx) {
    if (!ctx->n_out || !ctx->out[0]) return;
    kiln_value *o = ctx->out[0];
    kiln_value_release(o);
    memset(o, 0, sizeof *o);
    o->kind = KILN_KIND_NONE;
    o->none_is_seq = empty_is_sequence(ctx);
}

static kiln_status optional_infer(kiln_ctx *ctx) {
    const kiln_value *in;
    KILN_TRY(optional_check(ctx, &in));
    if (!in) {
        set_empty(ctx);
        return KILN_OK;
    }
    return mirror_static(ctx, in);
}

static kiln_status optional_compute(kiln_ctx *ctx) {
    const kiln_value *in;
    KILN_TRY(optional_check(ctx, &in));
    if (!in) {
        set_empty(ctx);
        return KILN_OK;
    }
    return copy_to_output(ctx, in);
}

/* ---- OptionalHasElement ---- */

static kiln_status has_element_check(kiln_ctx *ctx) {
    if (ctx->opset < 18 && (ctx->n_in < 1 || !ctx->in[0]))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "missing required input 0 (the input may be omitted from opset 18)");
    if (ctx->n_in > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "takes one input, got %d", ctx->n_in);
    return KILN_OK;
}

static kiln_status has_element_infer(kiln_ctx *ctx) {
    KILN_TRY(has_element_check(ctx));
    return kiln_set_output(ctx, 0, KILN_DTYPE_BOOL, 0, NULL);
}

static kiln_status has_element_compute(kiln_ctx *ctx) {
    KILN_TRY(has_element_check(ctx));
    kiln_tensor *out = kiln_output(ctx, 0);
    const kiln_value *in = ctx->n_in > 0 ? ctx->in[0] : NULL;
    if (out) *(uint8_t *)out->data = in && in->kind != KILN_KIND_NONE;
    return KILN_OK;
}

/* ---- OptionalGetElement ---- */

static kiln_status get_element_check(kiln_ctx *ctx, const kiln_value **in) {
    *in = ctx->n_in > 0 ? ctx->in[0] : NULL;
    if (!*in) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 0");
    return KILN_OK;
}

static kiln_status get_element_infer(kiln_ctx *ctx) {
    const kiln_value *in;
    KILN_TRY(get_element_check(ctx, &in));
    return mirror_static(ctx, in);
}

static kiln_status get_element_compute(kiln_ctx *ctx) {
    const kiln_value *in;
    KILN_TRY(get_element_check(ctx, &in));
    if (in->kind == KILN_KIND_NONE)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the optional input is empty");
    return copy_to_output(ctx, in);
}

const kiln_op kiln_ops_optional[] = {
    {"", "Optional", 15, KILN_OP_DYNAMIC, NULL, optional_infer, optional_compute, NULL},
    {"", "OptionalHasElement", 15, 0, NULL, has_element_infer, has_element_compute, NULL},
    {"", "OptionalGetElement", 15, KILN_OP_DYNAMIC, NULL, get_element_infer, get_element_compute, NULL},
    {0},
};
