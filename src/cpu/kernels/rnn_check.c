/* RNN / LSTM / GRU: attributes and input validation, shared by infer and compute. */
#include "rnn_common.h"
#include <ctype.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int kind;
    int uses_alpha, uses_beta;
    float alpha, beta; /* defaults, as for the ONNX operators of the same name */
} act_table[] = {
    {"sigmoid", RNN_ACT_SIGMOID, 0, 0, 0.f, 0.f},
    {"tanh", RNN_ACT_TANH, 0, 0, 0.f, 0.f},
    {"relu", RNN_ACT_RELU, 0, 0, 0.f, 0.f},
    {"affine", RNN_ACT_AFFINE, 1, 1, 1.f, 0.f},
    {"leakyrelu", RNN_ACT_LEAKYRELU, 1, 0, 0.01f, 0.f},
    {"thresholdedrelu", RNN_ACT_THRESHOLDEDRELU, 1, 0, 1.f, 0.f},
    {"scaledtanh", RNN_ACT_SCALEDTANH, 1, 1, 1.f, 1.f},
    {"hardsigmoid", RNN_ACT_HARDSIGMOID, 1, 1, 0.2f, 0.5f},
    {"elu", RNN_ACT_ELU, 1, 0, 1.f, 0.f},
    {"softsign", RNN_ACT_SOFTSIGN, 0, 0, 0.f, 0.f},
    {"softplus", RNN_ACT_SOFTPLUS, 0, 0, 0.f, 0.f},
};

static int name_ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

static const char *cell_name(int cell) {
    return cell == RNN_CELL_LSTM ? "LSTM" : cell == RNN_CELL_GRU ? "GRU" : "RNN";
}

kiln_status kiln_rnn_parse_cfg(kiln_ctx *ctx, int cell, rnn_cfg *cfg) {
    const kiln_node *n = ctx->node;
    memset(cfg, 0, sizeof *cfg);
    cfg->cell = cell;
    cfg->n_gates = cell == RNN_CELL_LSTM ? 4 : cell == RNN_CELL_GRU ? 3 : 1;
    cfg->n_acts = cell == RNN_CELL_LSTM ? 3 : cell == RNN_CELL_GRU ? 2 : 1;

    cfg->hidden = kiln_has_attr(n, "hidden_size") ? kiln_attr_int(n, "hidden_size", 0) : -1;
    if (kiln_has_attr(n, "hidden_size") && cfg->hidden <= 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "hidden_size must be positive, got %lld",
                         (long long)cfg->hidden);

    const char *dir = kiln_attr_string(n, "direction", "forward");
    if (!strcmp(dir, "forward")) {
        cfg->dirs = 1;
    } else if (!strcmp(dir, "reverse")) {
        cfg->dirs = 1;
        cfg->reverse = 1;
    } else if (!strcmp(dir, "bidirectional")) {
        cfg->dirs = 2;
    } else {
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "direction '%s' is not forward, reverse or bidirectional", dir);
    }

    cfg->layout = (int)kiln_attr_int(n, "layout", 0);
    if (cfg->layout != 0 && cfg->layout != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "layout must be 0 or 1, got %d", cfg->layout);
    if (cfg->layout && ctx->opset < 14)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "layout needs opset 14 or later");

    cfg->has_clip = kiln_has_attr(n, "clip");
    cfg->clip = kiln_attr_float(n, "clip", 0.f);
    if (cfg->has_clip && !(cfg->clip >= 0.f))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "clip must be non-negative, got %g",
                         (double)cfg->clip);

    cfg->input_forget = cell == RNN_CELL_LSTM && kiln_attr_int(n, "input_forget", 0) != 0;
    cfg->linear_before_reset = cell == RNN_CELL_GRU && kiln_attr_int(n, "linear_before_reset", 0) != 0;

    static const char *const defaults[3][3] = {
        {"Tanh"}, {"Sigmoid", "Tanh", "Tanh"}, {"Sigmoid", "Tanh"}};
    int n_names = 0, n_alpha = 0, n_beta = 0;
    char *const *names = kiln_attr_strings(n, "activations", &n_names);
    const float *alphas = kiln_attr_floats(n, "activation_alpha", &n_alpha);
    const float *betas = kiln_attr_floats(n, "activation_beta", &n_beta);
    int need = cfg->n_acts * cfg->dirs;
    /* A bidirectional node listing one direction's activations means the same for both. */
    int repeat = names && n_names == cfg->n_acts && cfg->dirs == 2;
    if (names && n_names < need && !repeat)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "%s with %d direction(s) needs %d activations, got %d", cell_name(cell),
                         cfg->dirs, need, n_names);
    int ai = 0, bi = 0;
    for (int k = 0; k < need; k++) {
        const char *nm = names ? names[repeat ? k % cfg->n_acts : k] : defaults[cell][k % cfg->n_acts];
        int found = -1;
        for (size_t t = 0; t < sizeof act_table / sizeof act_table[0]; t++)
            if (name_ieq(nm, act_table[t].name)) found = (int)t;
        if (found < 0)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unknown activation '%s'", nm);
        rnn_act *a = &cfg->act[k / cfg->n_acts][k % cfg->n_acts];
        a->kind = act_table[found].kind;
        a->alpha = act_table[found].alpha;
        a->beta = act_table[found].beta;
        /* alpha/beta lists are consumed, in order, only by the activations that take them */
        if (act_table[found].uses_alpha && alphas && ai < n_alpha) a->alpha = alphas[ai++];
        if (act_table[found].uses_beta && betas && bi < n_beta) a->beta = betas[bi++];
    }
    return KILN_OK;
}

static int dim_ok(int64_t have, int64_t want) { return have < 0 || want < 0 || have == want; }

static const char *const input_names[8] = {"X", "W", "R", "B", "sequence_lens", "initial_h",
                                           "initial_c", "P"};

static kiln_status check_dims(kiln_ctx *ctx, const kiln_tensor *t, int idx, int rank,
                              const int64_t *want) {
    char buf[128];
    if (t->rank < 0) return KILN_OK; /* static inference, rank unknown */
    int ok = t->rank == rank;
    for (int i = 0; ok && i < rank; i++) ok = dim_ok(t->dims[i], want[i]);
    if (ok) return KILN_OK;
    char wbuf[128];
    int p = 0;
    p += snprintf(wbuf + p, sizeof wbuf - p, "[");
    for (int i = 0; i < rank && p < (int)sizeof wbuf; i++)
        p += want[i] >= 0 ? snprintf(wbuf + p, sizeof wbuf - p, "%s%lld", i ? "," : "", (long long)want[i])
                          : snprintf(wbuf + p, sizeof wbuf - p, "%s?", i ? "," : "");
    if (p < (int)sizeof wbuf) snprintf(wbuf + p, sizeof wbuf - p, "]");
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' is %s, expected shape %s",
                     input_names[idx], kiln_shape_str(t, buf, sizeof buf), wbuf);
}

kiln_status kiln_rnn_check_inputs(kiln_ctx *ctx, const rnn_cfg *cfg, rnn_dims *d, int set_outputs) {
    int max_in = cfg->cell == RNN_CELL_LSTM ? 8 : 6;
    int max_out = cfg->cell == RNN_CELL_LSTM ? 3 : 2;
    for (int i = max_in; i < ctx->n_in; i++)
        if (ctx->in[i])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "%s takes at most %d inputs, got %d",
                             cell_name(cfg->cell), max_in, ctx->n_in);
    if (ctx->n_out > max_out)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "%s has at most %d outputs, got %d",
                         cell_name(cfg->cell), max_out, ctx->n_out);

    kiln_tensor *X, *W, *R;
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    KILN_TRY(kiln_need_input(ctx, 1, &W));
    KILN_TRY(kiln_need_input(ctx, 2, &R));
    KILN_TRY(kiln_check_dtype(ctx, X, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    for (int i = 1; i < max_in && i < ctx->n_in; i++) {
        const kiln_tensor *t = kiln_input(ctx, i);
        if (i == 4) {
            if (t && t->dtype != KILN_DTYPE_INT32 && t->dtype != KILN_DTYPE_INT64)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "input 'sequence_lens' has element type %s, expected int32",
                                 kiln_dtype_name((kiln_dtype)t->dtype));
            continue;
        }
        if (!t && ctx->in[i])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' is not a tensor",
                             input_names[i]);
        if (t && t->dtype != X->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input '%s' has element type %s but X has %s", input_names[i],
                             kiln_dtype_name((kiln_dtype)t->dtype),
                             kiln_dtype_name((kiln_dtype)X->dtype));
    }

    const int64_t G = cfg->n_gates, D = cfg->dirs;
    int64_t S = -1, B = -1, I = -1, H = cfg->hidden;
    if (X->rank >= 0) {
        if (X->rank != 3)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' has rank %d, expected 3",
                             X->rank);
        S = X->dims[cfg->layout ? 1 : 0];
        B = X->dims[cfg->layout ? 0 : 1];
        I = X->dims[2];
    }
    if (H < 0 && R->rank == 3) H = R->dims[2];
    if (H < 0 && W->rank == 3 && W->dims[1] >= 0) H = W->dims[1] / G;
    if (H < 0 && ctx->static_mode == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot determine hidden_size");
    const int64_t GH = H >= 0 ? G * H : -1;

    int64_t w[3] = {D, GH, I};
    KILN_TRY(check_dims(ctx, W, 1, 3, w));
    int64_t r[3] = {D, GH, H};
    KILN_TRY(check_dims(ctx, R, 2, 3, r));
    const kiln_tensor *t;
    if ((t = kiln_input(ctx, 3))) {
        int64_t b[2] = {D, GH >= 0 ? 2 * GH : -1};
        KILN_TRY(check_dims(ctx, t, 3, 2, b));
    }
    if ((t = kiln_input(ctx, 4))) {
        int64_t l[1] = {B};
        KILN_TRY(check_dims(ctx, t, 4, 1, l));
        if (t->data && S >= 0 && kiln_shape_concrete(t)) {
            for (int64_t i = 0; i < t->dims[0]; i++) {
                int64_t v = t->dtype == KILN_DTYPE_INT32 ? ((const int32_t *)t->data)[i]
                                                         : ((const int64_t *)t->data)[i];
                if (v < 0 || v > S)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "sequence_lens[%lld] = %lld is outside [0, %lld]",
                                     (long long)i, (long long)v, (long long)S);
            }
        }
    }
    for (int i = 5; i <= 6; i++) {
        if (i == 6 && cfg->cell != RNN_CELL_LSTM) break;
        if ((t = kiln_input(ctx, i))) {
            int64_t s[3] = {D, B, H};
            if (cfg->layout) s[0] = B, s[1] = D;
            KILN_TRY(check_dims(ctx, t, i, 3, s));
        }
    }
    if (cfg->cell == RNN_CELL_LSTM && (t = kiln_input(ctx, 7))) {
        int64_t p[2] = {D, H >= 0 ? 3 * H : -1};
        KILN_TRY(check_dims(ctx, t, 7, 2, p));
    }

    d->S = S, d->B = B, d->in_size = I, d->H = H, d->D = D;
    if (!set_outputs) return KILN_OK;
    for (int o = 0; o < ctx->n_out; o++) {
        if (!ctx->out[o]) continue;
        if (X->rank < 0) {
            KILN_TRY(kiln_set_output_unknown(ctx, o, X->dtype));
            continue;
        }
        int64_t dims[4];
        if (o == 0) {
            if (cfg->layout) dims[0] = B, dims[1] = S, dims[2] = D, dims[3] = H;
            else dims[0] = S, dims[1] = D, dims[2] = B, dims[3] = H;
            KILN_TRY(kiln_set_output(ctx, o, X->dtype, 4, dims));
        } else {
            if (cfg->layout) dims[0] = B, dims[1] = D, dims[2] = H;
            else dims[0] = D, dims[1] = B, dims[2] = H;
            KILN_TRY(kiln_set_output(ctx, o, X->dtype, 3, dims));
        }
    }
    return KILN_OK;
}
