/* Fused optimizers: AdamW and SGD with torch.optim's arithmetic (its single-tensor CPU path), one
 * pass over each parameter, in float32 with the scalars rounded to float32 where torch rounds them,
 * so that training matches PyTorch step for step. Big parameters are cut into chunks run on the
 * optimizer's thread pool. Also the linear-warmup learning-rate scheduler. */
#include "train/train.h"
#include "core/provider.h"
#include "cpu/threadpool.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements per chunk: below this a parameter is updated on the calling thread alone, as waking the
 * pool costs more than the update. */
#define OPT_GRAIN 32768

typedef struct adamw_job {
    float *p, *m, *v;
    const float *g;
    float decay, w1, b2, c2, bc2_sqrt, eps, neg_step;
} adamw_job;

static void adamw_range(void *arg, int64_t begin, int64_t end) {
    const adamw_job *j = arg;
    for (int64_t i = begin; i < end; i++) {
        float g = j->g[i];
        /* decoupled decay first, on the parameter alone (torch: param.mul_(1 - lr * wd)) */
        float p = j->p[i] * j->decay;
        /* exp_avg.lerp_(grad, 1 - beta1): torch's lerp takes the form that is exact at weight 0 or 1 */
        float m = j->m[i];
        m = j->w1 < 0.5f ? m + j->w1 * (g - m) : g - (g - m) * (1.0f - j->w1);
        /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) */
        float v = j->v[i] * j->b2;
        v = v + j->c2 * g * g;
        /* denom = sqrt(v) / sqrt(bias_correction2) + eps; param.addcdiv_(m, denom, value=-step_size) */
        float denom = sqrtf(v) / j->bc2_sqrt + j->eps;
        p = p + j->neg_step * (m / denom);
        j->p[i] = p;
        j->m[i] = m;
        j->v[i] = v;
    }
}

static void run_chunks(kiln_threadpool *tp, int64_t n, kiln_pool_fn fn, void *arg) {
    if (!tp || n < 2 * OPT_GRAIN || kiln_threadpool_size(tp) < 2) fn(arg, 0, n);
    else kiln_threadpool_run(tp, n, OPT_GRAIN, fn, arg);
}

void kiln_adamw_scalars(const kiln_adamw_hp *hp, kiln_optim_update *u) {
    /* the scalars as torch computes them: Python floats (double), rounded to float32 when they
     * meet a float32 tensor */
    double bc1 = 1.0 - pow(hp->beta1, (double)hp->step);
    double bc2 = 1.0 - pow(hp->beta2, (double)hp->step);
    u->adamw = 1;
    u->decay = (float)(1.0 - hp->lr * hp->weight_decay);
    u->w1 = (float)(1.0 - hp->beta1);
    u->b2 = (float)hp->beta2;
    u->c2 = (float)(1.0 - hp->beta2);
    u->bc2_sqrt = (float)sqrt(bc2);
    u->eps = (float)hp->eps;
    u->neg_step = (float)(-(hp->lr / bc1));
}

void kiln_adamw_update(kiln_threadpool *tp, const kiln_adamw_hp *hp, float *param, const float *grad, float *m,
                       float *v, int64_t n) {
    kiln_optim_update u = {0};
    kiln_adamw_scalars(hp, &u);
    adamw_job j = {
        .p = param, .m = m, .v = v, .g = grad,
        .decay = u.decay, .w1 = u.w1, .b2 = u.b2, .c2 = u.c2, .bc2_sqrt = u.bc2_sqrt, .eps = u.eps,
        .neg_step = u.neg_step,
    };
    run_chunks(tp, n, adamw_range, &j);
}

typedef struct sgd_job {
    float *p, *buf;
    const float *g;
    float wd, mom, keep, neg_lr;
    int nesterov, first, has_buf;
} sgd_job;

static void sgd_range(void *arg, int64_t begin, int64_t end) {
    const sgd_job *j = arg;
    for (int64_t i = begin; i < end; i++) {
        float p = j->p[i];
        float g = j->g[i];
        if (j->wd != 0.0f) g = g + j->wd * p;            /* grad.add(param, alpha=wd) */
        if (j->has_buf) {
            float b = j->first ? g : j->buf[i] * j->mom + j->keep * g; /* buf.mul_(m).add_(g, alpha=1-d) */
            j->buf[i] = b;
            g = j->nesterov ? g + j->mom * b : b;
        }
        j->p[i] = p + j->neg_lr * g;                       /* param.add_(grad, alpha=-lr) */
    }
}

void kiln_sgd_scalars(const kiln_sgd_hp *hp, kiln_optim_update *u) {
    u->adamw = 0;
    u->wd = (float)hp->weight_decay;
    u->mom = (float)hp->momentum;
    u->keep = (float)(1.0 - hp->dampening);
    u->neg_lr = (float)(-hp->lr);
    u->nesterov = hp->nesterov;
    u->first = hp->first;
}

void kiln_sgd_update(kiln_threadpool *tp, const kiln_sgd_hp *hp, float *param, const float *grad, float *buf,
                     int64_t n) {
    kiln_optim_update u = {0};
    kiln_sgd_scalars(hp, &u);
    sgd_job j = {
        .p = param, .buf = buf, .g = grad,
        .wd = u.wd, .mom = u.mom, .keep = u.keep, .neg_lr = u.neg_lr, .nesterov = u.nesterov, .first = u.first,
        .has_buf = hp->momentum != 0.0 && buf != NULL,
    };
    run_chunks(tp, n, sgd_range, &j);
}

/* ---- the optimizer object ---- */

static kiln_status fail_last(kiln_err *e) {
    kiln_set_last_error(e);
    return e->code;
}

kiln_status kiln_optimizer_open(kiln_train_module *m, kiln_optimizer **out) {
    kiln_err e = {0};
    if (!m || !out) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_open: NULL argument"), fail_last(&e);
    *out = NULL;
    const char *name = m->ck->optimizer;
    if (!name)
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "optimizer: the checkpoint records no optimizer "
                         "(kiln_checkpoint_set_optimizer)"), fail_last(&e);
    for (int i = 0; i < m->n_train; i++)
        if (m->tp[i]->dtype != KILN_DTYPE_FLOAT)
            return kiln_fail(&e, KILN_ERR_NOT_IMPLEMENTED, "optimizer: parameter '%s' is %s; the optimizers take float32",
                             m->tp[i]->name, kiln_dtype_name((kiln_dtype)m->tp[i]->dtype)), fail_last(&e);
    kiln_optimizer *o = calloc(1, sizeof *o);
    if (!o) return kiln_fail(&e, KILN_ERR_NO_MEMORY, "optimizer: out of memory"), fail_last(&e);
    o->m = m;
    o->adamw = !strcmp(name, "adamw");
    o->tp = m->pool; /* the training session's pool: steps and runs never overlap */
    *out = o;
    return KILN_OK;
}

void kiln_optimizer_close(kiln_optimizer *o) {
    if (!o) return;
    free(o);
}

double kiln_optimizer_get_lr(const kiln_optimizer *o) { return o ? kiln_ckpt_hparam(o->m->ck, "lr", 0.0) : 0.0; }

kiln_status kiln_optimizer_set_lr(kiln_optimizer *o, double lr) {
    kiln_err e = {0};
    if (!o) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_set_lr: optimizer is NULL"), fail_last(&e);
    if (!(lr >= 0.0) || isinf(lr))
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "optimizer: learning rate %g must be finite and >= 0", lr),
               fail_last(&e);
    if (kiln_ckpt_set_hparam(o->m->ck, "lr", lr, &e)) return fail_last(&e);
    return KILN_OK;
}

/* The step on the module's device: the same scalars, applied by the provider's kernel to the
 * device copies; the checkpoint's host values are then stale until kiln_ckpt_pull. */
static kiln_status device_step(kiln_optimizer *o, int64_t step, kiln_err *e) {
    kiln_train_module *m = o->m;
    kiln_checkpoint *ck = m->ck;
    kiln_provider *dev = m->dev;
    KILN_TRY(kiln_module_push(m, e));
    if (!m->grad_valid)
        for (int i = 0; i < m->n_train; i++) KILN_TRY(dev->vt->fill_zero(dev, m->dgrad[i], m->tp[i]->nbytes, e));
    kiln_optim_update u = {0};
    if (o->adamw) {
        kiln_adamw_hp hp = {kiln_ckpt_hparam(ck, "lr", 1e-3), kiln_ckpt_hparam(ck, "beta1", 0.9),
                            kiln_ckpt_hparam(ck, "beta2", 0.999), kiln_ckpt_hparam(ck, "eps", 1e-8),
                            kiln_ckpt_hparam(ck, "weight_decay", 0.01), step};
        kiln_adamw_scalars(&hp, &u);
    } else {
        kiln_sgd_hp hp = {kiln_ckpt_hparam(ck, "lr", 1e-3), kiln_ckpt_hparam(ck, "momentum", 0.0),
                          kiln_ckpt_hparam(ck, "dampening", 0.0), kiln_ckpt_hparam(ck, "weight_decay", 0.0),
                          kiln_ckpt_hparam(ck, "nesterov", 0.0) != 0.0, 0};
        kiln_sgd_scalars(&hp, &u);
    }
    for (int i = 0; i < m->n_train; i++) {
        kiln_ckpt_param *p = m->tp[i];
        int created = 0;
        u.param = m->dparam[p - ck->params];
        u.grad = m->dgrad[i];
        u.n = p->numel;
        u.m = u.v = NULL;
        if (o->adamw) {
            if (!(u.m = kiln_module_dev_state(m, i, "m", NULL, e)) || !(u.v = kiln_module_dev_state(m, i, "v", NULL, e)))
                return e->code;
        } else if (u.mom != 0.0f) {
            if (!(u.m = kiln_module_dev_state(m, i, "momentum", &created, e))) return e->code;
        }
        u.first = created;
        KILN_TRY(dev->vt->optim_step(dev, &u, e));
        m->host_stale = 1;
    }
    return KILN_OK;
}

kiln_status kiln_optimizer_step(kiln_optimizer *o) {
    kiln_err e = {0};
    if (!o) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_optimizer_step: optimizer is NULL"), fail_last(&e);
    kiln_train_module *m = o->m;
    kiln_checkpoint *ck = m->ck;
    int64_t step = ck->step + 1;
    if (m->dev) {
        if (device_step(o, step, &e)) return fail_last(&e);
        ck->step = step;
        return KILN_OK;
    }
    /* a pending reset means no gradient has been computed since: the gradients are zero */
    if (!m->grad_valid)
        for (int i = 0; i < m->n_train; i++) memset(m->grad[i], 0, m->tp[i]->nbytes);
    if (o->adamw) {
        kiln_adamw_hp hp = {kiln_ckpt_hparam(ck, "lr", 1e-3), kiln_ckpt_hparam(ck, "beta1", 0.9),
                            kiln_ckpt_hparam(ck, "beta2", 0.999), kiln_ckpt_hparam(ck, "eps", 1e-8),
                            kiln_ckpt_hparam(ck, "weight_decay", 0.01), step};
        for (int i = 0; i < m->n_train; i++) {
            kiln_ckpt_param *p = m->tp[i];
            float *mm = kiln_ckpt_state(p, "m", NULL, &e), *vv = mm ? kiln_ckpt_state(p, "v", NULL, &e) : NULL;
            if (!vv) return fail_last(&e);
            kiln_adamw_update(o->tp, &hp, p->data, m->grad[i], mm, vv, p->numel);
        }
    } else {
        kiln_sgd_hp hp = {kiln_ckpt_hparam(ck, "lr", 1e-3), kiln_ckpt_hparam(ck, "momentum", 0.0),
                          kiln_ckpt_hparam(ck, "dampening", 0.0), kiln_ckpt_hparam(ck, "weight_decay", 0.0),
                          kiln_ckpt_hparam(ck, "nesterov", 0.0) != 0.0, 0};
        for (int i = 0; i < m->n_train; i++) {
            kiln_ckpt_param *p = m->tp[i];
            float *buf = NULL;
            int created = 0;
            if (hp.momentum != 0.0 && !(buf = kiln_ckpt_state(p, "momentum", &created, &e))) return fail_last(&e);
            hp.first = created;
            kiln_sgd_update(o->tp, &hp, p->data, m->grad[i], buf, p->numel);
        }
    }
    ck->step = step;
    return KILN_OK;
}

/* ---- learning-rate scheduler ---- */

kiln_status kiln_lr_scheduler_linear(kiln_optimizer *o, int64_t warmup_steps, int64_t total_steps,
                                     double initial_lr, kiln_lr_scheduler **out) {
    kiln_err e = {0};
    if (!o || !out) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_lr_scheduler_linear: NULL argument"), fail_last(&e);
    *out = NULL;
    if (warmup_steps < 0 || total_steps < 0)
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "scheduler: step counts must be >= 0 (warmup %lld, total %lld)",
                         (long long)warmup_steps, (long long)total_steps), fail_last(&e);
    if (warmup_steps > total_steps)
        return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "scheduler: warmup steps (%lld) exceed the total (%lld)",
                         (long long)warmup_steps, (long long)total_steps), fail_last(&e);
    KILN_TRY(kiln_optimizer_set_lr(o, initial_lr));
    kiln_lr_scheduler *s = calloc(1, sizeof *s);
    if (!s) return kiln_fail(&e, KILN_ERR_NO_MEMORY, "scheduler: out of memory"), fail_last(&e);
    s->o = o;
    s->warmup = warmup_steps;
    s->total = total_steps;
    s->initial_lr = initial_lr;
    *out = s;
    return KILN_OK;
}

kiln_status kiln_lr_scheduler_step(kiln_lr_scheduler *s) {
    kiln_err e = {0};
    if (!s) return kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_lr_scheduler_step: scheduler is NULL"), fail_last(&e);
    double t = (double)s->o->m->ck->step, f;
    if (t < (double)s->warmup) f = t / fmax(1.0, (double)s->warmup);
    else f = fmax(0.0, ((double)s->total - t) / fmax(1.0, (double)(s->total - s->warmup)));
    return kiln_optimizer_set_lr(s->o, s->initial_lr * f);
}

void kiln_lr_scheduler_free(kiln_lr_scheduler *s) { free(s); }
