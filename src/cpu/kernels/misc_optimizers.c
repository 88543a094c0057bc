/* The ai.onnx.preview.training optimisers, run as inference of one update step: Adagrad, Adam and
 * Momentum (standard or Nesterov). Inputs are R (learning rate, scalar), T (update count, int64
 * scalar) and then n tensors to optimise followed by their per-tensor companions, grouped by kind:
 *   Adagrad   X_1..X_n, G_1..G_n, H_1..H_n          -> X_new.., H_new..
 *   Adam      X.., G.., V.., H..                    -> X_new.., V_new.., H_new..
 *   Momentum  X.., G.., V..                         -> X_new.., V_new..
 * Every companion has its X's shape and type (float or double); arithmetic is double. Elements are
 * independent, so large tensors are split across threads. */
#include "../../ops/op.h"

#include <math.h>
#include <string.h>

enum { OPT_ADAGRAD, OPT_ADAM, OPT_MOMENTUM };

typedef struct opt_cfg {
    int kind;
    int per;     /* tensors per optimised variable among the inputs (X, G and the states) */
    int n;       /* number of optimised variables */
    double r;
    int64_t t;
    double norm, decay_factor, epsilon, alpha, beta, norm_post;
    int nesterov;
} opt_cfg;

static kiln_status need_float_attr(kiln_ctx *ctx, const char *name, double *out) {
    if (!kiln_has_attr(ctx->node, name))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "missing required attribute '%s'", name);
    *out = kiln_attr_float(ctx->node, name, 0.0f);
    return KILN_OK;
}

static kiln_status parse_attrs(kiln_ctx *ctx, opt_cfg *c) {
    const kiln_node *nd = ctx->node;
    if (c->kind == OPT_ADAGRAD) {
        c->norm = kiln_attr_float(nd, "norm_coefficient", 0.0f);
        c->decay_factor = kiln_attr_float(nd, "decay_factor", 0.0f);
        c->epsilon = kiln_attr_float(nd, "epsilon", 1e-6f);
    } else if (c->kind == OPT_ADAM) {
        c->norm = kiln_attr_float(nd, "norm_coefficient", 0.0f);
        c->norm_post = kiln_attr_float(nd, "norm_coefficient_post", 0.0f);
        c->alpha = kiln_attr_float(nd, "alpha", 0.9f);
        c->beta = kiln_attr_float(nd, "beta", 0.999f);
        c->epsilon = kiln_attr_float(nd, "epsilon", 1e-6f);
    } else {
        KILN_TRY(need_float_attr(ctx, "alpha", &c->alpha));
        KILN_TRY(need_float_attr(ctx, "beta", &c->beta));
        KILN_TRY(need_float_attr(ctx, "norm_coefficient", &c->norm));
        if (!kiln_has_attr(nd, "mode"))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "missing required attribute 'mode'");
        const char *mode = kiln_attr_string(nd, "mode", "");
        if (strcmp(mode, "standard") && strcmp(mode, "nesterov"))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "mode '%s' is not 'standard' or 'nesterov'", mode);
        c->nesterov = !strcmp(mode, "nesterov");
    }
    return KILN_OK;
}

/* Checks the inputs; reads R and T when they hold data. */
static kiln_status parse(kiln_ctx *ctx, int kind, opt_cfg *c) {
    static const char *state_names[3][4] = {{"X", "G", "H"}, {"X", "G", "V", "H"}, {"X", "G", "V"}};
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->per = kind == OPT_ADAM ? 4 : 3;
    int outs_per = c->per - 1;
    if (ctx->n_in < 2 + c->per || (ctx->n_in - 2) % c->per)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "expected R, T and then %d tensors per optimised variable, got %d inputs",
                         c->per, ctx->n_in);
    c->n = (ctx->n_in - 2) / c->per;
    if (ctx->n_out > c->n * outs_per)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%d outputs for %d variables; at most %d",
                         ctx->n_out, c->n, c->n * outs_per);
    KILN_TRY(parse_attrs(ctx, c));
    kiln_tensor *r, *t;
    KILN_TRY(kiln_need_input(ctx, 0, &r));
    KILN_TRY(kiln_need_input(ctx, 1, &t));
    KILN_TRY(kiln_check_dtype(ctx, r, 0, 2, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE));
    KILN_TRY(kiln_check_dtype(ctx, t, 1, 1, KILN_DTYPE_INT64));
    if ((r->rank > 0 && kiln_numel(r) != 1) || (t->rank > 0 && kiln_numel(t) != 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "R and T must be scalars");
    if (r->data) KILN_TRY(kiln_read_scalar(ctx, r, &c->r));
    if (t->data) c->t = *(const int64_t *)t->data;
    char b1[96], b2[96];
    for (int i = 0; i < c->n; i++) {
        kiln_tensor *x;
        KILN_TRY(kiln_need_input(ctx, 2 + i, &x));
        KILN_TRY(kiln_check_dtype(ctx, x, 2 + i, 2, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE));
        for (int s = 1; s < c->per; s++) {
            kiln_tensor *o;
            KILN_TRY(kiln_need_input(ctx, 2 + s * c->n + i, &o));
            if (o->dtype != x->dtype || (kiln_shape_concrete(x) && kiln_shape_concrete(o) &&
                                          !kiln_shape_equal(o, x)))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "%s_%d %s %s must have X_%d's type and shape %s %s",
                                 state_names[kind][s], i + 1, kiln_dtype_name(o->dtype),
                                 kiln_shape_str(o, b1, sizeof b1), i + 1, kiln_dtype_name(x->dtype),
                                 kiln_shape_str(x, b2, sizeof b2));
        }
    }
    return KILN_OK;
}

static kiln_status opt_infer(kiln_ctx *ctx, int kind) {
    opt_cfg c;
    KILN_TRY(parse(ctx, kind, &c));
    for (int o = 0; o < ctx->n_out; o++) {
        if (!kiln_output(ctx, o)) continue;
        const kiln_tensor *x = kiln_input(ctx, 2 + o % c.n);
        KILN_TRY(x->rank < 0 ? kiln_set_output_unknown(ctx, o, x->dtype) : kiln_set_output_like(ctx, o, x));
    }
    return KILN_OK;
}

typedef struct opt_job {
    const opt_cfg *c;
    int dt;
    const void *x, *g, *v, *h;   /* v: Adam/Momentum momentum; h: Adagrad/Adam squared gradients */
    void *x_new, *v_new, *h_new; /* NULL when not wanted */
    double r_eff;                /* learning rate after decay / bias correction */
    double beta_eff;             /* Momentum: beta, or 1 on the first step */
} opt_job;

static void opt_range(void *arg, int64_t begin, int64_t end) {
    const opt_job *j = arg;
    const opt_cfg *c = j->c;
    int dt = j->dt;
    for (int64_t i = begin; i < end; i++) {
        double x = kiln_load_f64(dt, j->x, i), g = c->norm * x + kiln_load_f64(dt, j->g, i);
        double xn, vn = 0, hn = 0;
        if (c->kind == OPT_ADAGRAD) {
            hn = kiln_load_f64(dt, j->h, i) + g * g;
            xn = x - j->r_eff * g / (sqrt(hn) + c->epsilon);
        } else if (c->kind == OPT_ADAM) {
            vn = c->alpha * kiln_load_f64(dt, j->v, i) + (1 - c->alpha) * g;
            hn = c->beta * kiln_load_f64(dt, j->h, i) + (1 - c->beta) * g * g;
            xn = (1 - c->norm_post) * (x - j->r_eff * vn / (sqrt(hn) + c->epsilon));
        } else {
            vn = c->alpha * kiln_load_f64(dt, j->v, i) + j->beta_eff * g;
            xn = x - j->r_eff * (c->nesterov ? g + c->alpha * vn : vn);
        }
        if (j->x_new) kiln_store_f64(dt, j->x_new, i, xn);
        if (j->v_new) kiln_store_f64(dt, j->v_new, i, vn);
        if (j->h_new) kiln_store_f64(dt, j->h_new, i, hn);
    }
}

static void *out_data(kiln_ctx *ctx, int o) {
    kiln_tensor *t = o < ctx->n_out ? kiln_output(ctx, o) : NULL;
    return t ? t->data : NULL;
}

static kiln_status opt_compute(kiln_ctx *ctx, int kind) {
    opt_cfg c;
    KILN_TRY(parse(ctx, kind, &c));
    opt_job j = {.c = &c, .r_eff = c.r, .beta_eff = c.t > 0 ? c.beta : 1.0};
    if (kind == OPT_ADAGRAD) j.r_eff = c.r / (1.0 + (double)c.t * c.decay_factor);
    if (kind == OPT_ADAM && c.t > 0)
        j.r_eff = c.r * sqrt(1.0 - pow(c.beta, (double)c.t)) / (1.0 - pow(c.alpha, (double)c.t));
    for (int i = 0; i < c.n; i++) {
        const kiln_tensor *x = kiln_input(ctx, 2 + i);
        j.dt = x->dtype;
        j.x = x->data;
        j.g = kiln_input(ctx, 2 + c.n + i)->data;
        j.x_new = out_data(ctx, i);
        if (kind == OPT_ADAGRAD) {
            j.h = kiln_input(ctx, 2 + 2 * c.n + i)->data;
            j.h_new = out_data(ctx, c.n + i);
        } else {
            j.v = kiln_input(ctx, 2 + 2 * c.n + i)->data;
            j.v_new = out_data(ctx, c.n + i);
            if (kind == OPT_ADAM) {
                j.h = kiln_input(ctx, 2 + 3 * c.n + i)->data;
                j.h_new = out_data(ctx, 2 * c.n + i);
            }
        }
        kiln_parallel_for(ctx, kiln_numel(x), 16384, opt_range, &j);
    }
    return KILN_OK;
}

kiln_status kmisc_adagrad_infer(kiln_ctx *ctx) { return opt_infer(ctx, OPT_ADAGRAD); }
kiln_status kmisc_adagrad_compute(kiln_ctx *ctx) { return opt_compute(ctx, OPT_ADAGRAD); }
kiln_status kmisc_adam_infer(kiln_ctx *ctx) { return opt_infer(ctx, OPT_ADAM); }
kiln_status kmisc_adam_compute(kiln_ctx *ctx) { return opt_compute(ctx, OPT_ADAM); }
kiln_status kmisc_momentum_infer(kiln_ctx *ctx) { return opt_infer(ctx, OPT_MOMENTUM); }
kiln_status kmisc_momentum_compute(kiln_ctx *ctx) { return opt_compute(ctx, OPT_MOMENTUM); }
