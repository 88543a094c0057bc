/* The train module: runs the training and eval models with the checkpoint's parameters fed as
 * inputs, keeps one gradient buffer per trainable parameter, and accumulates the training model's
 * gradient outputs into them until lazy_reset_grad (ONNX Runtime's Module semantics). Also export
 * for inference: the inference model with the trained values as its initializers. */
#include "train/train.h"
#include "core/graph.h"
#include "core/session.h"
#include "core/provider.h"
#include "onnx/model_write.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kiln_status fail_last(kiln_err *e) {
    kiln_set_last_error(e);
    return e->code;
}

static void dev_release(kiln_train_module *m);

void kiln_train_module_close(kiln_train_module *m) {
    if (!m) return;
    dev_release(m);
    if (m->grad)
        for (int i = 0; i < m->n_train; i++) free(m->grad[i]);
    free(m->grad);
    free(m->tp);
    kiln_session_close(m->train);
    kiln_session_close(m->eval);
    free(m->train_path);
    free(m);
}

static int session_input(const kiln_session *s, const char *name, kiln_io_info *info) {
    for (size_t i = 0; i < kiln_session_input_count(s); i++) {
        kiln_session_input_info(s, i, info);
        if (!strcmp(info->name, name)) return 1;
    }
    return 0;
}

static int session_output(const kiln_session *s, const char *name) {
    kiln_io_info info;
    for (size_t i = 0; i < kiln_session_output_count(s); i++) {
        kiln_session_output_info(s, i, &info);
        if (!strcmp(info.name, name)) return 1;
    }
    return 0;
}

/* A graph input fed from the checkpoint must be declared with the parameter's dtype and shape
 * (symbolic dimensions accept any size). */
static kiln_status check_feed(const kiln_session *s, const char *model, const kiln_ckpt_param *p, kiln_err *e) {
    kiln_io_info info;
    if (!session_input(s, p->name, &info))
        return kiln_fail(e, KILN_ERR_INVALID_MODEL, "%s: trainable parameter '%s' is not a graph input", model, p->name);
    int ok = info.dtype == (kiln_dtype)p->dtype && (info.rank < 0 || info.rank == p->rank);
    for (int d = 0; ok && info.rank >= 0 && d < p->rank; d++) ok = info.dims[d] < 0 || info.dims[d] == p->dims[d];
    if (!ok) {
        kiln_tensor t = {0};
        char want[160];
        kiln_tensor_set_shape(&t, p->dtype, p->rank, p->dims);
        kiln_shape_str(&t, want, sizeof want);
        return kiln_fail(e, KILN_ERR_INVALID_MODEL,
                         "%s: graph input '%s' does not match the checkpoint's parameter (%s)", model, p->name, want);
    }
    return KILN_OK;
}

static kiln_status open_session(const char *path, const kiln_options *opt, kiln_session **out, kiln_err *e) {
    if (kiln_session_open(path, opt, out) == KILN_OK) return KILN_OK;
    return kiln_fail(e, kiln_last_status(), "%s", kiln_last_error());
}

/* The trainable names from metadata kiln.train.params (comma-separated); else every checkpoint
 * parameter that requires a gradient and is a graph input of the training model. */
static kiln_status find_trainable(kiln_train_module *m, const char *path, kiln_err *e) {
    kiln_model_metadata md;
    const char *list = NULL;
    if (kiln_session_model_metadata(m->train, &md) == KILN_OK)
        for (size_t i = 0; i < md.n_custom; i++)
            if (!strcmp(md.custom_keys[i], "kiln.train.params")) list = md.custom_values[i];
    kiln_checkpoint *ck = m->ck;
    m->tp = calloc((size_t)ck->n_params + 1, sizeof *m->tp);
    if (!m->tp) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_io_info info;
    if (!list) {
        for (int i = 0; i < ck->n_params; i++)
            if (ck->params[i].requires_grad && session_input(m->train, ck->params[i].name, &info))
                m->tp[m->n_train++] = &ck->params[i];
        return KILN_OK;
    }
    const char *at = list;
    while (*at) {
        const char *end = strchr(at, ',');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        char name[KILN_CKPT_NAME_MAX + 1];
        if (len == 0 || len > KILN_CKPT_NAME_MAX)
            return kiln_fail(e, KILN_ERR_INVALID_MODEL, "%s: bad kiln.train.params metadata '%s'", path, list);
        memcpy(name, at, len);
        name[len] = 0;
        kiln_ckpt_param *p = kiln_ckpt_find(ck, name);
        if (!p)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s trains parameter '%s', which the checkpoint lacks", path,
                             name);
        for (int j = 0; j < m->n_train; j++)
            if (m->tp[j] == p) return kiln_fail(e, KILN_ERR_INVALID_MODEL, "%s: '%s' is listed twice", path, name);
        if (m->n_train == ck->n_params)
            return kiln_fail(e, KILN_ERR_INVALID_MODEL, "%s: more trainable names than parameters", path);
        m->tp[m->n_train++] = p;
        at = end ? end + 1 : at + len;
    }
    return KILN_OK;
}

/* ---- device residency ----
 * With a device provider that has the training entries (core/provider.h), the module keeps a device
 * copy of every checkpoint parameter, feeds those to the sessions as device inputs, takes the
 * gradient outputs on the device and accumulates them there, and the optimizer updates the copies
 * in place. The checkpoint's host values are brought up to date only when read (kiln_ckpt_pull). */

static void dev_free(kiln_train_module *m, void **pp) {
    if (*pp) m->dev->vt->free(m->dev, *pp);
    *pp = NULL;
}

/* Brings the trained values back to the checkpoint (when it can), then frees every device buffer. */
static void dev_release(kiln_train_module *m) {
    if (!m->dev) return;
    kiln_err e = {0};
    if (m->ck && m->ck->mirror == m) {
        kiln_ckpt_pull(m->ck, &e); /* a failure here leaves the last values pulled */
        m->ck->mirror = NULL;
    }
    for (int i = 0; m->dparam && i < m->n_dparam; i++) {
        dev_free(m, &m->dparam[i]);
        for (int k = 0; m->dstate && k < KILN_CKPT_MAX_STATE; k++) dev_free(m, &m->dstate[i * KILN_CKPT_MAX_STATE + k]);
    }
    for (int i = 0; i < m->n_train; i++) {
        if (m->dgrad) dev_free(m, &m->dgrad[i]);
        if (m->dscratch) dev_free(m, &m->dscratch[i]);
    }
    m->dev->vt->sync(m->dev, &e);
    free(m->dparam);
    free(m->dstate);
    free(m->dgrad);
    free(m->dscratch);
    m->dparam = m->dstate = m->dgrad = m->dscratch = NULL;
    m->dev = NULL;
}

static kiln_status dev_upload(kiln_train_module *m, void *dst, const void *src, size_t bytes, kiln_err *e) {
    if (!bytes) return KILN_OK;
    m->xfer_bytes += bytes;
    return m->dev->vt->to_device(m->dev, dst, src, bytes, e);
}

static kiln_status dev_download(kiln_train_module *m, void *dst, const void *src, size_t bytes, kiln_err *e) {
    if (!bytes) return KILN_OK;
    m->xfer_bytes += bytes;
    return m->dev->vt->to_host(m->dev, dst, src, bytes, e);
}

kiln_status kiln_module_push(kiln_train_module *m, kiln_err *e) {
    if (!m->dev || !m->dev_stale) return KILN_OK;
    kiln_checkpoint *ck = m->ck;
    for (int i = 0; i < m->n_dparam; i++) {
        KILN_TRY(dev_upload(m, m->dparam[i], ck->params[i].data, ck->params[i].nbytes, e));
        /* the state may have been cleared or replaced: made again from the host on first use */
        for (int k = 0; k < KILN_CKPT_MAX_STATE; k++) dev_free(m, &m->dstate[i * KILN_CKPT_MAX_STATE + k]);
    }
    KILN_TRY(m->dev->vt->sync(m->dev, e));
    m->dev_stale = 0;
    return KILN_OK;
}

kiln_status kiln_ckpt_pull(const kiln_checkpoint *ck, kiln_err *e) {
    kiln_train_module *m = ck ? ck->mirror : NULL;
    if (!m || !m->dev || !m->host_stale) return KILN_OK;
    /* only the optimizer writes device copies: the trainable parameters and their state */
    for (int i = 0; i < m->n_train; i++) {
        kiln_ckpt_param *p = m->tp[i];
        int idx = (int)(p - ck->params);
        KILN_TRY(dev_download(m, p->data, m->dparam[idx], p->nbytes, e));
        for (int k = 0; k < p->n_state; k++) {
            void *d = m->dstate[idx * KILN_CKPT_MAX_STATE + k];
            if (d) KILN_TRY(dev_download(m, p->state[k], d, p->nbytes, e));
        }
    }
    KILN_TRY(m->dev->vt->sync(m->dev, e));
    m->host_stale = 0;
    return KILN_OK;
}

void kiln_ckpt_changed(kiln_checkpoint *ck) {
    if (ck && ck->mirror) ck->mirror->dev_stale = 1;
}

float *kiln_module_dev_state(kiln_train_module *m, int i, const char *name, int *created, kiln_err *e) {
    kiln_ckpt_param *p = m->tp[i];
    /* the host slot decides whether the state exists (and holds its value when it was loaded) */
    void *host = kiln_ckpt_state(p, name, created, e);
    if (!host) return NULL;
    int slot = 0;
    while (slot < p->n_state && p->state[slot] != host) slot++;
    if (slot == p->n_state) {
        kiln_fail(e, KILN_ERR_RUNTIME, "optimizer: state '%s' of '%s' has no slot", name, p->name);
        return NULL;
    }
    void **d = &m->dstate[(p - m->ck->params) * KILN_CKPT_MAX_STATE + slot];
    if (!*d) {
        if (m->dev->vt->alloc(m->dev, p->nbytes, d, e) || dev_upload(m, *d, host, p->nbytes, e)) return NULL;
    }
    return *d;
}

/* Takes the device path when the training session has a device provider that can run the
 * optimizer; leaves the module on the host (dev NULL) otherwise. */
static kiln_status dev_open(kiln_train_module *m, kiln_err *e) {
    kiln_provider *dev = kiln_session_device(m->train);
    if (!dev || dev->vt->host_memory || !dev->vt->fill_zero || !dev->vt->accumulate_f32 || !dev->vt->optim_step)
        return KILN_OK;
    if (m->ck->mirror)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "the checkpoint is already trained by another module on a "
                         "device (close that module first)");
    kiln_checkpoint *ck = m->ck;
    m->dev = dev;
    m->n_dparam = ck->n_params;
    m->dparam = calloc((size_t)ck->n_params + 1, sizeof *m->dparam);
    m->dstate = calloc(((size_t)ck->n_params + 1) * KILN_CKPT_MAX_STATE, sizeof *m->dstate);
    m->dgrad = calloc((size_t)m->n_train + 1, sizeof *m->dgrad);
    m->dscratch = calloc((size_t)m->n_train + 1, sizeof *m->dscratch);
    if (!m->dparam || !m->dstate || !m->dgrad || !m->dscratch) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < ck->n_params; i++) KILN_TRY(dev->vt->alloc(dev, ck->params[i].nbytes, &m->dparam[i], e));
    for (int i = 0; i < m->n_train; i++) KILN_TRY(dev->vt->alloc(dev, m->tp[i]->nbytes, &m->dgrad[i], e));
    ck->mirror = m;
    m->dev_stale = 1;
    return kiln_module_push(m, e);
}

kiln_memory kiln_train_module_memory(const kiln_train_module *m) {
    return m && m->dev ? KILN_MEMORY_DEVICE : KILN_MEMORY_HOST;
}

uint64_t kiln_train_module_transfer_bytes(const kiln_train_module *m) { return m ? m->xfer_bytes : 0; }

kiln_status kiln_train_module_open(const char *training_model, const char *eval_model, kiln_checkpoint *ck,
                                   const kiln_options *opt, kiln_train_module **out) {
    kiln_err e = {0};
    if (!training_model || !ck || !out)
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_train_module_open: NULL argument"), fail_last(&e);
    *out = NULL;
    kiln_train_module *m = calloc(1, sizeof *m);
    if (!m || !(m->train_path = strdup(training_model))) {
        free(m);
        return kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory"), fail_last(&e);
    }
    m->ck = ck;
    if (open_session(training_model, opt, &m->train, &e) || find_trainable(m, training_model, &e)) goto fail;
    m->pool = m->train->tp;
    m->grad = calloc((size_t)m->n_train + 1, sizeof *m->grad);
    if (!m->grad) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    for (int i = 0; i < m->n_train; i++) {
        kiln_ckpt_param *p = m->tp[i];
        char gname[KILN_CKPT_NAME_MAX + 8];
        snprintf(gname, sizeof gname, "%s_grad", p->name);
        if (p->dtype != KILN_DTYPE_FLOAT) {
            kiln_fail(&e, KILN_ERR_NOT_IMPLEMENTED, "trainable parameter '%s' is %s; training takes float32 parameters",
                      p->name, kiln_dtype_name((kiln_dtype)p->dtype));
            goto fail;
        }
        if (check_feed(m->train, training_model, p, &e)) goto fail;
        if (!session_output(m->train, gname)) {
            kiln_fail(&e, KILN_ERR_INVALID_MODEL, "%s has no output '%s' for trainable parameter '%s'", training_model,
                      gname, p->name);
            goto fail;
        }
        if (!(m->grad[i] = calloc(1, p->nbytes))) {
            kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory for the gradient of '%s'", p->name);
            goto fail;
        }
    }
    if (!session_output(m->train, "loss")) {
        kiln_fail(&e, KILN_ERR_INVALID_MODEL, "%s has no output 'loss'", training_model);
        goto fail;
    }
    if (dev_open(m, &e)) goto fail;
    if (eval_model) {
        if (open_session(eval_model, opt, &m->eval, &e)) goto fail;
        if (!session_output(m->eval, "loss")) {
            kiln_fail(&e, KILN_ERR_INVALID_MODEL, "%s has no output 'loss'", eval_model);
            goto fail;
        }
    }
    *out = m;
    return KILN_OK;
fail:
    kiln_train_module_close(m);
    return fail_last(&e);
}

static kiln_session *pick(const kiln_train_module *m, int eval) { return eval ? m->eval : m->train; }

const kiln_session *kiln_train_module_session(const kiln_train_module *m, int eval) { return m ? pick(m, eval) : NULL; }

/* The caller's inputs: graph inputs that are not checkpoint parameters. */
size_t kiln_train_module_input_count(const kiln_train_module *m, int eval) {
    if (!m || !pick(m, eval)) return 0;
    kiln_session *s = pick(m, eval);
    size_t n = 0;
    kiln_io_info info;
    for (size_t i = 0; i < kiln_session_input_count(s); i++) {
        kiln_session_input_info(s, i, &info);
        if (!kiln_ckpt_find(m->ck, info.name)) n++;
    }
    return n;
}

const char *kiln_train_module_input_name(const kiln_train_module *m, int eval, size_t k) {
    if (!m || !pick(m, eval)) return NULL;
    kiln_session *s = pick(m, eval);
    kiln_io_info info;
    for (size_t i = 0; i < kiln_session_input_count(s); i++) {
        kiln_session_input_info(s, i, &info);
        if (!kiln_ckpt_find(m->ck, info.name) && k-- == 0) return info.name;
    }
    return NULL;
}

size_t kiln_train_module_eval_output_count(const kiln_train_module *m) {
    return m && m->eval ? kiln_session_output_count(m->eval) : 0;
}

const char *kiln_train_module_eval_output_name(const kiln_train_module *m, size_t i) {
    kiln_io_info info;
    if (!m || !m->eval || kiln_session_output_info(m->eval, i, &info) != KILN_OK) return NULL;
    return info.name;
}

/* Names and tensors for one run: the caller's inputs (each must be a caller input of the model,
 * all of them given), then every checkpoint parameter the model takes as an input. */
static kiln_status gather_feeds(kiln_train_module *m, kiln_session *s, size_t n_in, const char *const *names,
                                const kiln_tensor_desc *inputs, const char ***fnames, kiln_tensor_desc **feeds,
                                size_t *n_feeds, kiln_err *e) {
    size_t n_model = kiln_session_input_count(s);
    *fnames = calloc(n_model + n_in + 1, sizeof **fnames);
    *feeds = calloc(n_model + n_in + 1, sizeof **feeds);
    if (!*fnames || !*feeds) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    if (n_in && (!names || !inputs)) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input names or tensors are NULL");
    kiln_io_info info;
    size_t k = 0;
    if (m->dev) {
        /* device copies current for a device session; host values current for a host one */
        KILN_TRY(kiln_module_push(m, e));
        if (!kiln_session_device(s)) KILN_TRY(kiln_ckpt_pull(m->ck, e));
        else if (s != m->train) KILN_TRY(m->dev->vt->sync(m->dev, e)); /* another session's stream reads them */
    }
    for (size_t i = 0; i < n_in; i++) {
        if (!names[i]) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input %zu has no name", i);
        if (kiln_ckpt_find(m->ck, names[i]))
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                             "input '%s' is a checkpoint parameter: the module feeds it (set it in the checkpoint)",
                             names[i]);
        if (!session_input(s, names[i], &info))
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "the model has no input '%s'", names[i]);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(names[j], names[i])) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is given twice", names[i]);
        (*fnames)[k] = names[i];
        (*feeds)[k++] = inputs[i];
    }
    for (size_t i = 0; i < n_model; i++) {
        kiln_session_input_info(s, i, &info);
        kiln_ckpt_param *p = kiln_ckpt_find(m->ck, info.name);
        if (!p) {
            size_t j = 0;
            while (j < n_in && strcmp(names[j], info.name)) j++;
            if (j == n_in) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is missing", info.name);
            continue;
        }
        (*fnames)[k] = p->name;
        if (m->dev && kiln_session_device(s))
            (*feeds)[k++] = (kiln_tensor_desc){(kiln_dtype)p->dtype, p->rank, p->dims, m->dparam[p - m->ck->params],
                                               KILN_MEMORY_DEVICE};
        else
            (*feeds)[k++] = (kiln_tensor_desc){(kiln_dtype)p->dtype, p->rank, p->dims, p->data, KILN_MEMORY_HOST};
    }
    *n_feeds = k;
    return KILN_OK;
}

static kiln_status run_failed(kiln_session *s, const char *what, kiln_err *e) {
    return kiln_fail(e, kiln_last_status() ? kiln_last_status() : KILN_ERR_RUNTIME, "%s: %s", what, kiln_last_error());
}

static int is_desc(const kiln_value *v, const kiln_ckpt_param *p, int device_ok) {
    if (kiln_value_kind(v) != KILN_VALUE_TENSOR || kiln_value_dtype(v) != (kiln_dtype)p->dtype ||
        kiln_value_rank(v) != p->rank || (!device_ok && kiln_value_memory(v) != KILN_MEMORY_HOST))
        return 0;
    const int64_t *d = kiln_value_dims(v);
    for (int i = 0; i < p->rank; i++)
        if (d[i] != p->dims[i]) return 0;
    return 1;
}

/* The step's outputs into the device gradients: a gradient computed on the device is copied or
 * added there; one a CPU node computed (a host value) is uploaded first. One sync at the end, for
 * the loss, also keeps the host sources alive until their copies are done. */
static kiln_status device_accumulate(kiln_train_module *m, kiln_value **outs, float *loss, kiln_err *e) {
    kiln_provider *dev = m->dev;
    for (int i = 0; i < m->n_train; i++) {
        const kiln_ckpt_param *p = m->tp[i];
        const void *g = kiln_value_data(outs[i + 1]);
        int on_dev = kiln_value_memory(outs[i + 1]) == KILN_MEMORY_DEVICE;
        if (!p->nbytes) continue;
        if (!m->grad_valid) {
            KILN_TRY(on_dev ? dev->vt->copy(dev, m->dgrad[i], g, p->nbytes, e) : dev_upload(m, m->dgrad[i], g, p->nbytes, e));
            continue;
        }
        if (!on_dev) {
            if (!m->dscratch[i]) KILN_TRY(dev->vt->alloc(dev, p->nbytes, &m->dscratch[i], e));
            KILN_TRY(dev_upload(m, m->dscratch[i], g, p->nbytes, e));
            g = m->dscratch[i];
        }
        KILN_TRY(dev->vt->accumulate_f32(dev, m->dgrad[i], g, p->numel, e));
    }
    if (kiln_value_memory(outs[0]) == KILN_MEMORY_DEVICE) KILN_TRY(dev_download(m, loss, kiln_value_data(outs[0]), sizeof(float), e));
    else *loss = *(const float *)kiln_value_data(outs[0]);
    return dev->vt->sync(dev, e);
}

kiln_status kiln_train_step(kiln_train_module *m, size_t n_in, const char *const *in_names,
                            const kiln_tensor_desc *inputs, float *loss) {
    kiln_err e = {0};
    if (!m || !loss) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_train_step: NULL argument"), fail_last(&e);
    const char **fnames = NULL, **onames = NULL;
    kiln_tensor_desc *feeds = NULL;
    kiln_value **outs = NULL;
    size_t n_feeds = 0, n_out = (size_t)m->n_train + 1;
    char *gnames = NULL;
    if (gather_feeds(m, m->train, n_in, in_names, inputs, &fnames, &feeds, &n_feeds, &e)) goto done;
    onames = calloc(n_out, sizeof *onames);
    outs = calloc(n_out, sizeof *outs);
    size_t stride = KILN_CKPT_NAME_MAX + 8;
    gnames = malloc(n_out * stride);
    if (!onames || !outs || !gnames) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    onames[0] = "loss";
    for (int i = 0; i < m->n_train; i++) {
        snprintf(gnames + (size_t)i * stride, stride, "%s_grad", m->tp[i]->name);
        onames[i + 1] = gnames + (size_t)i * stride;
    }
    kiln_run_options ro = {0};
    ro.outputs_on_device = m->dev != NULL;
    if (kiln_run_with_options(m->train, &ro, n_feeds, fnames, feeds, n_out, onames, outs) != KILN_OK) {
        run_failed(m->train, "train step", &e);
        goto done;
    }
    if (kiln_value_kind(outs[0]) != KILN_VALUE_TENSOR || kiln_value_dtype(outs[0]) != KILN_DTYPE_FLOAT ||
        kiln_value_nbytes(outs[0]) != sizeof(float) || (!m->dev && kiln_value_memory(outs[0]) != KILN_MEMORY_HOST)) {
        kiln_fail(&e, KILN_ERR_INVALID_MODEL, "train step: output 'loss' is not a float32 scalar");
        goto done;
    }
    for (int i = 0; i < m->n_train; i++)
        if (!is_desc(outs[i + 1], m->tp[i], m->dev != NULL)) {
            kiln_fail(&e, KILN_ERR_INVALID_MODEL, "train step: gradient '%s' does not have its parameter's dtype and shape",
                      onames[i + 1]);
            goto done;
        }
    if (m->dev) {
        if (device_accumulate(m, outs, loss, &e)) goto done;
    } else {
        *loss = *(const float *)kiln_value_data(outs[0]);
        for (int i = 0; i < m->n_train; i++) {
            const kiln_ckpt_param *p = m->tp[i];
            const float *g = kiln_value_data(outs[i + 1]);
            if (!m->grad_valid) memcpy(m->grad[i], g, p->nbytes);
            else
                for (int64_t j = 0; j < p->numel; j++) m->grad[i][j] += g[j];
        }
    }
    m->grad_valid = 1;
done:
    if (outs)
        for (size_t i = 0; i < n_out; i++) kiln_value_free(outs[i]);
    free(outs);
    free(onames);
    free(gnames);
    free(fnames);
    free(feeds);
    return e.code ? fail_last(&e) : KILN_OK;
}

kiln_status kiln_eval_step(kiln_train_module *m, size_t n_in, const char *const *in_names,
                           const kiln_tensor_desc *inputs, kiln_value **outputs) {
    kiln_err e = {0};
    if (!m || !outputs) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_eval_step: NULL argument"), fail_last(&e);
    if (!m->eval) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "eval step: the module was opened without an eval model"), fail_last(&e);
    const char **fnames = NULL;
    kiln_tensor_desc *feeds = NULL;
    size_t n_feeds = 0;
    if (gather_feeds(m, m->eval, n_in, in_names, inputs, &fnames, &feeds, &n_feeds, &e) == KILN_OK &&
        kiln_run(m->eval, n_feeds, fnames, feeds, 0, NULL, outputs) != KILN_OK)
        run_failed(m->eval, "eval step", &e);
    free(fnames);
    free(feeds);
    return e.code ? fail_last(&e) : KILN_OK;
}

void kiln_train_module_lazy_reset_grad(kiln_train_module *m) {
    if (m) m->grad_valid = 0;
}

kiln_status kiln_train_module_get_grad(kiln_train_module *m, const char *name, kiln_tensor_desc *out) {
    kiln_err e = {0};
    if (!m || !name || !out) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_train_module_get_grad: NULL argument"), fail_last(&e);
    for (int i = 0; i < m->n_train; i++)
        if (!strcmp(m->tp[i]->name, name)) {
            if (!m->grad_valid) memset(m->grad[i], 0, m->tp[i]->nbytes);
            else if (m->dev && (dev_download(m, m->grad[i], m->dgrad[i], m->tp[i]->nbytes, &e) ||
                                m->dev->vt->sync(m->dev, &e)))
                return fail_last(&e);
            *out = (kiln_tensor_desc){(kiln_dtype)m->tp[i]->dtype, m->tp[i]->rank, m->tp[i]->dims, m->grad[i],
                                      KILN_MEMORY_HOST};
            return KILN_OK;
        }
    return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "module: no trainable parameter '%s'", name), fail_last(&e);
}

/* ---- export for inference ---- */

kiln_status kiln_train_module_export(kiln_train_module *m, const char *path, size_t n_out,
                                     const char *const *output_names) {
    kiln_err e = {0};
    if (!m || !path || (n_out && !output_names))
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_train_module_export: NULL argument"), fail_last(&e);
    /* inference_model.onnx beside the training model */
    const char *slash = strrchr(m->train_path, '/');
    size_t dir_len = slash ? (size_t)(slash - m->train_path + 1) : 0;
    char *inf = malloc(dir_len + 32);
    const char **names = calloc((size_t)m->ck->n_params + 1, sizeof *names);
    kiln_tensor_desc *vals = calloc((size_t)m->ck->n_params + 1, sizeof *vals);
    kiln_model *model = NULL;
    if (!inf || !names || !vals) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    memcpy(inf, m->train_path, dir_len);
    strcpy(inf + dir_len, "inference_model.onnx");
    if (kiln_ckpt_pull(m->ck, &e)) goto done;
    if (kiln_model_load_file(inf, &model, &e)) goto done;
    /* every checkpoint parameter that is an initializer of the inference model takes its value */
    kiln_graph *g = model->graph;
    size_t n = 0;
    for (int i = 0; i < m->ck->n_params; i++) {
        const kiln_ckpt_param *p = &m->ck->params[i];
        int v = kiln_graph_find_value(g, p->name);
        if (v < 0 || !g->values[v].is_const) continue;
        names[n] = p->name;
        vals[n++] = (kiln_tensor_desc){(kiln_dtype)p->dtype, p->rank, p->dims, p->data, KILN_MEMORY_HOST};
    }
    kiln_model_free(model);
    model = NULL;
    kiln_load_overrides ov = {n, names, vals};
    if (kiln_model_load_file_with(inf, &ov, &model, &e)) goto done;
    g = model->graph;
    if (n_out) {
        int *outs = malloc(n_out * sizeof *outs);
        if (!outs) {
            kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < n_out; i++) {
            int v = output_names[i] ? kiln_graph_find_value(g, output_names[i]) : -1;
            int known = 0;
            for (int j = 0; v >= 0 && j < g->n_outputs; j++) known |= g->outputs[j] == v;
            if (v < 0 || (!known && !(g->values[v].has_type && g->values[v].type.dtype))) {
                kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "export: '%s' is not a graph output (or typed value) of %s",
                          output_names[i] ? output_names[i] : "(null)", inf);
                free(outs);
                goto done;
            }
            outs[i] = v;
        }
        free(g->outputs);
        g->outputs = outs;
        g->n_outputs = (int)n_out;
    }
    if (kiln_model_write(model, path, &e)) kiln_err_prefix(&e, "export");
done:
    kiln_model_free(model);
    free(inf);
    free(names);
    free(vals);
    return e.code ? fail_last(&e) : KILN_OK;
}
