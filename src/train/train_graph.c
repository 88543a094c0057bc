/* kiln_train_build_graphs: the training, eval and inference models of the training artifacts
 * (docs/training.md, "Artifacts"). Each graph is built on a fresh load of the model: trainable
 * initializers become graph inputs, a `labels` input and the loss nodes are appended, and for
 * the training model autodiff.c appends the gradient nodes. */
#include "train_graph.h"
#include "autodiff.h"
#include "../core/dtype.h"
#include "../onnx/model_write.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LOSS_MSE, LOSS_L1, LOSS_BCE, LOSS_CE };

typedef struct build {
    const kiln_train_graph_opts *o;
    int loss_kind;
    kiln_err *e;
    kiln_model *m;
    kiln_ad ad;
    int out;          /* the model output the loss takes */
    int *params;      /* value index of each trainable parameter */
    int *frozen;
    int n_orig_outputs;
    int *orig_outputs;
} build;

static kiln_status oom(kiln_err *e) { return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory"); }

static int find_main_value(const kiln_graph *g, const char *name) {
    int v = kiln_graph_find_value(g, name);
    return v >= 0 && g->values[v].outer < 0 ? v : -1;
}

/* A value of exactly this name: the names of the contract (loss, labels, <param>_grad). */
static int exact_value(build *b, const char *name) {
    kiln_graph *g = b->m->graph;
    if (kiln_graph_find_value(g, name) >= 0) {
        kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "the model already has a value named '%s', which the training "
                  "model needs for itself", name);
        return -1;
    }
    int v = kiln_graph_add_value(g, name);
    if (v < 0) oom(b->e);
    return v;
}

static kiln_status check_names(build *b) {
    const kiln_train_graph_opts *o = b->o;
    kiln_graph *g = b->m->graph;
    for (int i = 0; i < o->n_frozen; i++) {
        int v = find_main_value(g, o->frozen[i]);
        if (v < 0 || !g->values[v].is_const)
            return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "frozen parameter '%s' is not an initializer of the model",
                             o->frozen[i]);
        b->frozen[i] = v;
    }
    for (int i = 0; i < o->n_requires_grad; i++) {
        const char *name = o->requires_grad[i];
        int v = find_main_value(g, name);
        if (v < 0) return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "unknown parameter '%s': no value of that name "
                                    "in the model", name);
        const kiln_graph_value *gv = &g->values[v];
        if (!gv->is_const || gv->konst.kind != KILN_KIND_TENSOR || gv->producer >= 0)
            return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "parameter '%s' is not an initializer of the model", name);
        int dt = gv->konst.t.dtype;
        if (dt != KILN_DTYPE_FLOAT && dt != KILN_DTYPE_DOUBLE)
            return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "parameter '%s' has element type %s; only float and "
                             "double initializers are trained", name, kiln_dtype_name(dt));
        for (int j = 0; j < o->n_frozen; j++)
            if (!strcmp(o->frozen[j], name))
                return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "parameter '%s' is both trainable and frozen", name);
        for (int j = 0; j < i; j++)
            if (!strcmp(o->requires_grad[j], name))
                return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "parameter '%s' is named twice", name);
        b->params[i] = v;
    }
    return KILN_OK;
}

/* The trainable initializers become graph inputs, after the model's inputs and `labels`. */
static kiln_status params_to_inputs(build *b, int labels) {
    kiln_graph *g = b->m->graph;
    int n = g->n_inputs + 1 + b->o->n_requires_grad;
    int *ins = malloc(sizeof(int) * (size_t)n);
    if (!ins) return oom(b->e);
    int k = 0;
    for (int i = 0; i < g->n_inputs; i++) ins[k++] = g->inputs[i];
    ins[k++] = labels;
    for (int i = 0; i < b->o->n_requires_grad; i++) {
        kiln_graph_value *gv = &g->values[b->params[i]];
        kiln_tensor t = gv->konst.t;
        gv->type.kind = KILN_KIND_TENSOR;
        gv->type.optional = 0;
        gv->type.dtype = t.dtype;
        gv->type.rank = t.rank;
        memcpy(gv->type.dims, t.dims, sizeof t.dims);
        gv->has_type = 1;
        kiln_value_release(&gv->konst);
        memset(&gv->konst, 0, sizeof gv->konst);
        gv->is_const = 0;
        gv->is_input = 1;
        ins[k++] = b->params[i];
    }
    free(g->inputs);
    g->inputs = ins;
    g->n_inputs = n;
    return KILN_OK;
}

static int op(build *b, const char *name, const int *ins, int n_in, kiln_attr *at, int n_at) {
    return kiln_ad_op1(&b->ad, "", name, ins, n_in, at, n_at);
}

/* labels input and the loss nodes; returns the `loss` value or -1 */
static int append_loss(build *b) {
    kiln_graph *g = b->m->graph;
    kiln_graph_value *ov = &g->values[b->out];
    if (!ov->has_type || !ov->type.dtype) {
        /* an output declared without a type: static inference gives it */
        opt_ctx oc;
        kiln_status st = opt_ctx_init(&oc, g, NULL, 0, b->e);
        if (!st) {
            const kiln_tensor *f = opt_fact(&oc, b->out);
            if (f->dtype) {
                ov->has_type = 1;
                ov->type.kind = KILN_KIND_TENSOR;
                ov->type.dtype = f->dtype;
                ov->type.rank = f->rank;
                if (f->rank > 0) memcpy(ov->type.dims, f->dims, sizeof(int64_t) * (size_t)f->rank);
            }
        }
        opt_ctx_free(&oc);
        if (st) return -1;
    }
    int dt = ov->has_type ? ov->type.dtype : 0;
    if (dt != KILN_DTYPE_FLOAT && dt != KILN_DTYPE_DOUBLE) {
        kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "output '%s' has element type %s; the loss takes a float or "
                  "double output", ov->name, dt ? kiln_dtype_name(dt) : "unknown (not declared)");
        return -1;
    }
    kiln_type out_type = ov->type;
    int labels = exact_value(b, "labels");
    if (labels < 0) return -1;
    kiln_graph_value *lv = &g->values[labels];
    lv->has_type = 1;
    lv->is_input = 1;
    lv->type = out_type;
    if (b->loss_kind == LOSS_CE) {
        if (out_type.rank >= 0 && out_type.rank < 2) {
            kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "cross_entropy takes logits [N, C, ...]; output '%s' has rank %d",
                      ov->name, out_type.rank);
            return -1;
        }
        if (b->ad.opset < 13 && out_type.rank != 2) {
            kiln_fail(b->e, KILN_ERR_NOT_IMPLEMENTED, "cross_entropy over logits of rank other than 2 needs opset 13 "
                      "or later (the model imports %d)", b->ad.opset);
            return -1;
        }
        if (b->ad.opset < 12) {
            kiln_fail(b->e, KILN_ERR_NOT_IMPLEMENTED, "cross_entropy needs opset 12 or later "
                      "(NegativeLogLikelihoodLoss); the model imports %d", b->ad.opset);
            return -1;
        }
        lv->type.dtype = KILN_DTYPE_INT64;
        if (out_type.rank > 0) {
            lv->type.rank = out_type.rank - 1;
            lv->type.dims[0] = out_type.dims[0];
            for (int d = 2; d < out_type.rank; d++) lv->type.dims[d - 1] = out_type.dims[d];
        }
    }
    if (params_to_inputs(b, labels)) return -1;
    int x = b->out, loss = exact_value(b, "loss");
    if (loss < 0) return -1;
    kiln_attr *at = calloc(2, sizeof *at);
    if (!at) return oom(b->e), -1;
    int t, ins[3];
    if (b->loss_kind == LOSS_CE) {
        if (!kiln_ad_attr_int(&at[0], "axis", 1)) goto fail;
        int lsm = op(b, "LogSoftmax", &x, 1, at, 1);
        if (lsm < 0) return -1;
        /* ignore_index -100: PyTorch's default, so that padded targets are skipped the same way */
        if (!(at = calloc(2, sizeof *at)) || !kiln_ad_attr_string(&at[0], "reduction", "mean") ||
            !kiln_ad_attr_int(&at[1], "ignore_index", -100))
            goto fail;
        ins[0] = lsm;
        ins[1] = labels;
        int outs[1] = {loss};
        if (kiln_ad_node(&b->ad, "", "NegativeLogLikelihoodLoss", ins, 2, outs, 1, at, 2) < 0) return -1;
    } else {
        ins[0] = x;
        ins[1] = labels;
        int d = op(b, "Sub", ins, 2, NULL, 0);
        if (d < 0) goto fail;
        if (b->loss_kind == LOSS_MSE) {
            ins[0] = ins[1] = d;
            t = op(b, "Mul", ins, 2, NULL, 0);
        } else if (b->loss_kind == LOSS_L1) {
            t = op(b, "Abs", &d, 1, NULL, 0);
        } else {
            /* max(x, 0) - x y + log(1 + exp(-|x|)), PyTorch's stable form */
            int r = op(b, "Relu", &x, 1, NULL, 0);
            int xy = op(b, "Mul", ins, 2, NULL, 0);
            int ab = r < 0 || xy < 0 ? -1 : op(b, "Abs", &x, 1, NULL, 0);
            int ng = ab < 0 ? -1 : op(b, "Neg", &ab, 1, NULL, 0);
            int sp = ng < 0 ? -1 : op(b, "Softplus", &ng, 1, NULL, 0);
            if (sp < 0) goto fail;
            ins[0] = r;
            ins[1] = xy;
            int s = op(b, "Sub", ins, 2, NULL, 0);
            ins[0] = s;
            ins[1] = sp;
            t = s < 0 ? -1 : op(b, "Add", ins, 2, NULL, 0);
        }
        if (t < 0 || !kiln_ad_attr_int(&at[0], "keepdims", 0)) goto fail;
        int outs[1] = {loss};
        if (kiln_ad_node(&b->ad, "", "ReduceMean", &t, 1, outs, 1, at, 1) < 0) return -1;
    }
    kiln_graph_value *lossv = &g->values[loss];
    lossv->has_type = 1;
    lossv->type.kind = KILN_KIND_TENSOR;
    lossv->type.dtype = dt;
    lossv->type.rank = 0;
    return loss;
fail:
    if (at) {
        kiln_attr_free(&at[0]);
        kiln_attr_free(&at[1]);
        free(at);
    }
    if (!b->e->code) oom(b->e);
    return -1;
}

static kiln_status add_prop(kiln_model *m, const char *key, const char *value, kiln_err *e) {
    char **k = realloc(m->prop_keys, sizeof(char *) * (size_t)(m->n_props + 1));
    if (!k) return oom(e);
    m->prop_keys = k;
    char **v = realloc(m->prop_values, sizeof(char *) * (size_t)(m->n_props + 1));
    if (!v) return oom(e);
    m->prop_values = v;
    k[m->n_props] = strdup(key);
    v[m->n_props] = strdup(value);
    if (!k[m->n_props] || !v[m->n_props]) {
        free(k[m->n_props]);
        free(v[m->n_props]);
        return oom(e);
    }
    m->n_props++;
    return KILN_OK;
}

static kiln_status set_outputs(build *b, const int *outs, int n) {
    kiln_graph *g = b->m->graph;
    int *o = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!o) return oom(b->e);
    memcpy(o, outs, sizeof(int) * (size_t)n);
    free(g->outputs);
    g->outputs = o;
    g->n_outputs = n;
    return KILN_OK;
}

/* Loads the model and prepares params, labels and loss; *loss gets the loss value. */
static kiln_status prepare(build *b, const char *model_path, int *loss) {
    KILN_TRY(kiln_model_load_file(model_path, &b->m, b->e));
    kiln_graph *g = b->m->graph;
    kiln_ad_init(&b->ad, b->m, b->e);
    if (b->o->output) {
        b->out = -1;
        for (int i = 0; i < g->n_outputs; i++)
            if (!strcmp(g->values[g->outputs[i]].name, b->o->output)) b->out = g->outputs[i];
        if (b->out < 0)
            return kiln_fail(b->e, KILN_ERR_INVALID_ARGUMENT, "the model has no output named '%s'", b->o->output);
    } else {
        if (g->n_outputs < 1) return kiln_fail(b->e, KILN_ERR_INVALID_MODEL, "the model has no output");
        b->out = g->outputs[0];
    }
    b->n_orig_outputs = g->n_outputs;
    b->orig_outputs = malloc(sizeof(int) * (size_t)(g->n_outputs ? g->n_outputs : 1));
    if (!b->orig_outputs) return oom(b->e);
    memcpy(b->orig_outputs, g->outputs, sizeof(int) * (size_t)g->n_outputs);
    KILN_TRY(check_names(b));
    b->ad.prefix = "loss";
    *loss = append_loss(b);
    b->ad.prefix = "grad";
    return *loss < 0 ? b->e->code : KILN_OK;
}

static void finish(build *b) {
    kiln_ad_free(&b->ad);
    if (b->m) kiln_model_free(b->m);
    b->m = NULL;
    free(b->orig_outputs);
    b->orig_outputs = NULL;
}

static kiln_status write_to(build *b, const char *dir, const char *file) {
    size_t len = strlen(dir) + strlen(file) + 2;
    char *p = malloc(len);
    if (!p) return oom(b->e);
    snprintf(p, len, "%s/%s", dir, file);
    kiln_status st = kiln_model_write(b->m, p, b->e);
    free(p);
    return st;
}

static kiln_status build_training(build *b, const char *model_path, const char *out_dir) {
    int loss;
    KILN_TRY(prepare(b, model_path, &loss));
    kiln_graph *g = b->m->graph;
    int np = b->o->n_requires_grad;
    int *grads = malloc(sizeof(int) * (size_t)np), *outs = malloc(sizeof(int) * (size_t)(np + 1));
    if (!grads || !outs) {
        free(grads);
        free(outs);
        return oom(b->e);
    }
    kiln_status st = kiln_ad_expand_attention(&b->ad, b->params, np);
    if (!st) st = kiln_ad_backward(&b->ad, loss, b->params, np, b->frozen, b->o->n_frozen, grads);
    outs[0] = loss;
    for (int i = 0; !st && i < np; i++) {
        char name[512];
        snprintf(name, sizeof name, "%s_grad", g->values[b->params[i]].name);
        int v = exact_value(b, name);
        if (v < 0) {
            st = b->e->code;
            break;
        }
        int o[1] = {v};
        if (kiln_ad_node(&b->ad, "", "Identity", &grads[i], 1, o, 1, NULL, 0) < 0) {
            st = b->e->code;
            break;
        }
        g = b->m->graph;
        kiln_graph_value *gv = &g->values[v], *pv = &g->values[b->params[i]];
        gv->has_type = 1;
        gv->type = pv->type;
        outs[i + 1] = v;
    }
    if (!st) st = set_outputs(b, outs, np + 1);
    free(grads);
    free(outs);
    if (st) return st;
    /* the parameter list, as the contract's metadata says it */
    size_t len = 1;
    for (int i = 0; i < np; i++) len += strlen(b->o->requires_grad[i]) + 1;
    char *list = malloc(len);
    if (!list) return oom(b->e);
    list[0] = 0;
    for (int i = 0; i < np; i++) {
        if (i) strcat(list, ",");
        strcat(list, b->o->requires_grad[i]);
    }
    st = add_prop(b->m, "kiln.train.params", list, b->e);
    free(list);
    if (!st) st = add_prop(b->m, "kiln.train.loss", b->o->loss, b->e);
    if (!st) st = add_prop(b->m, "kiln.train.output", g->values[b->out].name, b->e);
    if (!st) st = write_to(b, out_dir, "training_model.onnx");
    return st;
}

static kiln_status build_eval(build *b, const char *model_path, const char *out_dir) {
    int loss;
    KILN_TRY(prepare(b, model_path, &loss));
    int n = b->n_orig_outputs + 1;
    int *outs = malloc(sizeof(int) * (size_t)n);
    if (!outs) return oom(b->e);
    outs[0] = loss;
    memcpy(outs + 1, b->orig_outputs, sizeof(int) * (size_t)b->n_orig_outputs);
    kiln_status st = set_outputs(b, outs, n);
    free(outs);
    if (!st) st = add_prop(b->m, "kiln.train.loss", b->o->loss, b->e);
    if (!st) st = write_to(b, out_dir, "eval_model.onnx");
    return st;
}

static kiln_status copy_file(const char *from, const char *dir, const char *file, kiln_err *e) {
    size_t len = strlen(dir) + strlen(file) + 2;
    char *p = malloc(len);
    if (!p) return oom(e);
    snprintf(p, len, "%s/%s", dir, file);
    FILE *in = fopen(from, "rb"), *out = in ? fopen(p, "wb") : NULL;
    kiln_status st = KILN_OK;
    if (!in || !out) {
        st = kiln_fail(e, KILN_ERR_IO, "cannot copy '%s' to '%s': %s", from, p, strerror(errno));
    } else {
        char buf[1 << 16];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, in)) > 0)
            if (fwrite(buf, 1, k, out) != k) break;
        if (ferror(in) || ferror(out)) st = kiln_fail(e, KILN_ERR_IO, "cannot copy '%s' to '%s'", from, p);
    }
    if (in) fclose(in);
    if (out && fclose(out) && !st) st = kiln_fail(e, KILN_ERR_IO, "cannot write '%s': %s", p, strerror(errno));
    free(p);
    return st;
}

static kiln_status build_all(const char *model_path, const kiln_train_graph_opts *o, const char *out_dir,
                             kiln_err *e) {
    if (!model_path || !o || !out_dir)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "kiln_train_build_graphs: a model path, options and an "
                         "output folder are required");
    static const char *const names[] = {"mse", "l1", "bce_with_logits", "cross_entropy"};
    int kind = -1;
    for (int i = 0; i < 4; i++)
        if (o->loss && !strcmp(o->loss, names[i])) kind = i;
    if (kind < 0)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "unknown loss '%s': expected mse, cross_entropy, "
                         "bce_with_logits or l1", o->loss ? o->loss : "(none)");
    if (o->n_requires_grad < 1 || !o->requires_grad)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "no trainable parameter named (--requires-grad)");
    if (o->n_frozen < 0 || (o->n_frozen && !o->frozen))
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "bad frozen parameter list");
    build b = {0};
    b.o = o;
    b.loss_kind = kind;
    b.e = e;
    b.params = calloc((size_t)o->n_requires_grad, sizeof(int));
    b.frozen = calloc((size_t)(o->n_frozen + 1), sizeof(int));
    kiln_status st = !b.params || !b.frozen ? oom(e) : KILN_OK;
    if (!st) st = build_training(&b, model_path, out_dir);
    finish(&b);
    if (!st) st = build_eval(&b, model_path, out_dir);
    finish(&b);
    if (!st) st = copy_file(model_path, out_dir, "inference_model.onnx", e);
    free(b.params);
    free(b.frozen);
    return st;
}

int kiln_train_build_graphs(const char *model_path, const kiln_train_graph_opts *o, const char *out_dir) {
    kiln_err e = {0};
    kiln_status st = build_all(model_path, o, out_dir, &e);
    if (st) kiln_set_last_error(&e);
    return st;
}
