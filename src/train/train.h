/* Training runtime internals: the checkpoint (checkpoint.c), the fused optimizers (optimizer.c),
 * the train module (module.c) and artifact generation (artifacts.c). The public face is the
 * kiln_checkpoint_* / kiln_train_* / kiln_optimizer_* part of kiln.h. */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include "core/tensor.h"

/* Per-parameter optimizer state slots: AdamW keeps "m" and "v", SGD with momentum "momentum". */
#define KILN_CKPT_MAX_STATE 4
#define KILN_CKPT_MAX_HPARAMS 16
#define KILN_CKPT_NAME_MAX 4096

typedef struct kiln_ckpt_param {
    char *name;
    int dtype;
    int rank;
    int64_t dims[KILN_MAX_RANK];
    int64_t numel;
    size_t nbytes;
    int requires_grad;
    void *data;                       /* malloc'd, nbytes */
    int n_state;
    char *state_name[KILN_CKPT_MAX_STATE];
    void *state[KILN_CKPT_MAX_STATE]; /* each nbytes, same dtype and shape as the parameter */
} kiln_ckpt_param;

struct kiln_checkpoint {
    int n_params, cap_params;
    kiln_ckpt_param *params;
    char *optimizer;                  /* "adamw", "sgd", or NULL: none recorded */
    int n_hparams;
    char *hp_key[KILN_CKPT_MAX_HPARAMS];
    double hp_val[KILN_CKPT_MAX_HPARAMS];
    int64_t step;                     /* optimizer steps taken */
    struct kiln_train_module *mirror; /* a module holding device copies of the parameters, or NULL */
};

kiln_ckpt_param *kiln_ckpt_find(const kiln_checkpoint *ck, const char *name);
/* The state slot `name` of p, made (zero-filled) when absent; NULL when out of memory. */
void *kiln_ckpt_state(kiln_ckpt_param *p, const char *name, int *created, kiln_err *e);
/* The hyper-parameter's value, or def when the checkpoint has none of that name. */
double kiln_ckpt_hparam(const kiln_checkpoint *ck, const char *key, double def);
kiln_status kiln_ckpt_set_hparam(kiln_checkpoint *ck, const char *key, double value, kiln_err *e);
/* Writes the optimizer's defaults (torch.optim's) for "adamw" or "sgd", clearing state and step. */
kiln_status kiln_ckpt_set_optimizer_defaults(kiln_checkpoint *ck, const char *name, kiln_err *e);

uint32_t kiln_crc32(uint32_t crc, const void *data, size_t n);

/* The fused optimizer updates of one float32 parameter (optimizer.c); the hyper-parameters are read
 * once per step. `step` is the step being taken (1 for the first). */
typedef struct kiln_adamw_hp { double lr, beta1, beta2, eps, weight_decay; int64_t step; } kiln_adamw_hp;
typedef struct kiln_sgd_hp { double lr, momentum, dampening, weight_decay; int nesterov; int first; } kiln_sgd_hp;
struct kiln_threadpool;
void kiln_adamw_update(struct kiln_threadpool *tp, const kiln_adamw_hp *hp, float *param, const float *grad,
                       float *m, float *v, int64_t n);
/* buf may be NULL when momentum is 0. With hp->first the buffer starts as a copy of the gradient. */
void kiln_sgd_update(struct kiln_threadpool *tp, const kiln_sgd_hp *hp, float *param, const float *grad,
                     float *buf, int64_t n);
/* The per-step scalars of those updates, as a provider's optim_step takes them (core/provider.h). */
struct kiln_optim_update;
void kiln_adamw_scalars(const kiln_adamw_hp *hp, struct kiln_optim_update *u);
void kiln_sgd_scalars(const kiln_sgd_hp *hp, struct kiln_optim_update *u);

/* Device residency (module.c). Checkpoint reads call kiln_ckpt_pull first, which brings the
 * parameters and optimizer state a module trained on the device back to the host; checkpoint writes
 * call kiln_ckpt_changed after, so that the module uploads them again before its next use. */
kiln_status kiln_ckpt_pull(const kiln_checkpoint *ck, kiln_err *e);
void kiln_ckpt_changed(kiln_checkpoint *ck);

/* The train module (module.c): sessions over the training and eval models, fed the checkpoint's
 * parameters as inputs; gradient buffers it owns. */
struct kiln_train_module {
    kiln_checkpoint *ck;              /* borrowed: the caller keeps it alive */
    kiln_session *train, *eval;       /* eval may be NULL */
    char *train_path;
    int n_train;                      /* trainable parameters, in the training model's order */
    kiln_ckpt_param **tp;
    float **grad;                     /* one buffer per trainable parameter */
    int grad_valid;                   /* 0: reset pending (lazy_reset_grad), the next step overwrites */
    struct kiln_threadpool *pool;     /* the training session's CPU pool */
    /* Device residency: with dev set, every checkpoint parameter has a copy in dev's memory
     * (dparam, by checkpoint index), and the gradients (dgrad, by trainable index) and optimizer
     * state (dstate[index * KILN_CKPT_MAX_STATE + slot], made on first use) live there only. */
    struct kiln_provider *dev;
    void **dparam, **dgrad, **dscratch, **dstate;
    int n_dparam;
    int host_stale;                   /* the device's parameters / state are newer than the checkpoint's */
    int dev_stale;                    /* the checkpoint changed: upload before the next use */
    uint64_t xfer_bytes;              /* host <-> device bytes the module copied */
};

/* The device copy of trainable parameter i's state slot `name` (made and uploaded on first use),
 * or NULL with e set; *created as kiln_ckpt_state's. */
float *kiln_module_dev_state(kiln_train_module *m, int i, const char *name, int *created, kiln_err *e);
/* Uploads the checkpoint when it changed since the module last used it. */
kiln_status kiln_module_push(kiln_train_module *m, kiln_err *e);

/* The optimizer (optimizer.c): the checkpoint's optimizer applied to the module's gradients. */
struct kiln_optimizer {
    kiln_train_module *m;
    struct kiln_threadpool *tp;
    int adamw;
};

struct kiln_lr_scheduler {
    kiln_optimizer *o;
    int64_t warmup, total;
    double initial_lr;
};

#endif
