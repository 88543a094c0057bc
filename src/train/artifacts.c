/* kiln_train_artifacts: the training, eval and inference models (the graph builder,
 * kiln_train_build_graphs, src/train/autodiff*) and the initial checkpoint, whose parameters are
 * the model's initializers named trainable and whose optimizer state is empty. */
#include "train/train.h"
#include "core/graph.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_graph.h"

static kiln_status fail_last(kiln_err *e) {
    kiln_set_last_error(e);
    return e->code;
}

/* The initial checkpoint: each trainable initializer of the model, then the optimizer's defaults. */
static kiln_status write_checkpoint(const char *model_path, const kiln_train_artifacts_options *o, const char *path,
                                    kiln_err *e) {
    kiln_model *model = NULL;
    kiln_checkpoint *ck = NULL;
    KILN_TRY(kiln_model_load_file(model_path, &model, e));
    kiln_status st = kiln_checkpoint_new(&ck);
    if (st) {
        kiln_model_free(model);
        return kiln_fail(e, st, "%s", kiln_last_error());
    }
    kiln_graph *g = model->graph;
    for (size_t i = 0; i < o->n_requires_grad && !e->code; i++) {
        const char *name = o->requires_grad[i];
        int v = name ? kiln_graph_find_value(g, name) : -1;
        if (v < 0 || !g->values[v].is_const || g->values[v].konst.kind != KILN_KIND_TENSOR) {
            kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "'%s' is not an initializer of %s", name ? name : "(null)", model_path);
            break;
        }
        const kiln_tensor *t = &g->values[v].konst.t;
        if (t->dtype != KILN_DTYPE_FLOAT) {
            kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED, "trainable parameter '%s' is %s; training takes float32 parameters",
                      name, kiln_dtype_name((kiln_dtype)t->dtype));
            break;
        }
        kiln_tensor_desc d = {(kiln_dtype)t->dtype, t->rank, t->dims, t->data, KILN_MEMORY_HOST};
        if (kiln_checkpoint_add_param(ck, name, &d, 1)) kiln_fail(e, kiln_last_status(), "%s", kiln_last_error());
    }
    if (!e->code && kiln_ckpt_set_optimizer_defaults(ck, o->optimizer, e) == KILN_OK &&
        kiln_checkpoint_save(ck, path) != KILN_OK)
        kiln_fail(e, kiln_last_status(), "%s", kiln_last_error());
    kiln_checkpoint_free(ck);
    kiln_model_free(model);
    return e->code;
}

kiln_status kiln_train_artifacts(const char *model, const kiln_train_artifacts_options *o, const char *out_dir) {
    kiln_err e = {0};
    if (!model || !o || !out_dir || (o->n_requires_grad && !o->requires_grad) || (o->n_frozen && !o->frozen))
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_train_artifacts: NULL argument"), fail_last(&e);
    if (!o->n_requires_grad)
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "train artifacts: no parameter requires a gradient"), fail_last(&e);
    if (!o->optimizer || (strcmp(o->optimizer, "adamw") && strcmp(o->optimizer, "sgd")))
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "train artifacts: unknown optimizer '%s' (expected adamw or sgd)",
                         o->optimizer ? o->optimizer : "(null)"), fail_last(&e);
    for (size_t i = 0; i < o->n_requires_grad; i++)
        for (size_t j = 0; j < o->n_frozen; j++)
            if (o->requires_grad[i] && o->frozen[j] && !strcmp(o->requires_grad[i], o->frozen[j]))
                return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "train artifacts: '%s' is both trainable and frozen",
                                 o->requires_grad[i]), fail_last(&e);
    kiln_train_graph_opts go = {o->requires_grad, (int)o->n_requires_grad, o->frozen, (int)o->n_frozen, o->loss,
                                o->output};
    if (kiln_train_build_graphs(model, &go, out_dir) != 0) {
        /* the builder reports through kiln_last_error */
        kiln_fail(&e, kiln_last_status() ? kiln_last_status() : KILN_ERR_INVALID_MODEL, "%s", kiln_last_error());
        return fail_last(&e);
    }
    size_t n = strlen(out_dir);
    char *path = malloc(n + 32);
    if (!path) return kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory"), fail_last(&e);
    snprintf(path, n + 32, "%s/checkpoint.kckpt", out_dir);
    write_checkpoint(model, o, path, &e);
    free(path);
    if (e.code) kiln_err_prefix(&e, "train artifacts");
    return e.code ? fail_last(&e) : KILN_OK;
}
