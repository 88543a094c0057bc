/* The scaled-dot-product core shared by every attention op: a tiled online softmax ("flash
 * attention" on the CPU). Work items are (batch, head, block of query rows); each walks the key
 * tiles its rows can see, computes a (rows × keys) score block with one sgemm, adds the score
 * terms, folds it into running row maxima / sums, and accumulates P·V with a second sgemm.
 * Scores of masked-out tiles (causal future, beyond a 1-D mask's window) are never computed. */
#include "attention_common.h"
#include "attention_kernels.h"
#include "attention_vecmath.h"
#include "gemm_util.h"
#include "../threadpool.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Work sizes. With BLAS serial, a 64-row query block against 128-key tiles keeps the score block,
 * the K/V tiles and the accumulator in L2 while giving sgemm enough work per call. */
enum { QBLOCK = 64, KTILE = 128, MIN_QBLOCK = 16 };

typedef struct sdpa_job {
    const kattn_sdpa *p;
    int64_t qblocks;   /* query blocks per (batch, head) */
    int64_t bq, tk;    /* rows per block, keys per tile */
    int avx512;        /* own block kernels instead of cblas_sgemm */
    int pack_k;        /* AVX-512 with enough query rows per block to pay for transposing K */
    int64_t per_task;  /* query blocks per work item (whole heads when there are many heads) */
    int heavy_first;   /* items are single blocks, last (costliest causal) query blocks first */
    atomic_int failed; /* a worker could not allocate its scratch */
} sdpa_job;

/* A worker's transposed copy of one (batch, key head)'s keys, H × Tp, reused by the consecutive
 * query blocks of that head that the worker takes (AVX-512 path). */
typedef struct kt_cache {
    float *kt;
    int64_t Tp, b, nk;
} kt_cache;

typedef struct row_window {
    int64_t lo, hi; /* keys this row may see; lo >= hi: none (row of -inf) */
} row_window;

/* Keys query row s of batch b can see, before additive terms. */
static row_window window_of(const kattn_sdpa *p, int64_t b, int64_t s, int64_t T) {
    int64_t lim = T, lo0 = 0;
    if (p->causal) {
        int64_t c = (p->past_b ? p->past_b[b] : p->past) + s + 1;
        if (c < lim) lim = c;
        if (lim < 0) lim = 0;
        if (p->local_window > 0 && c - p->local_window > 0) lo0 = c - p->local_window;
    }
    row_window w = {lo0, lim};
    if (p->key_lo) {
        int64_t lo = p->key_lo[b], hi = p->key_hi[b];
        if (lo < lo0) lo = lo0;
        if (hi > lim) hi = lim;
        if (lo < hi) {
            w.lo = lo;
            w.hi = hi;
        } else if (!p->window_additive) {
            w.lo = w.hi = 0;
        }
        /* additive window with nothing visible: every key carries the same penalty, which the
         * softmax cancels, so the row attends to all causally visible keys */
    }
    return w;
}

static inline int64_t batch_off(const kattn_sdpa *p, int64_t b, int64_t sb, int64_t ss) {
    return p->row0 ? p->row0[b] * ss : b * sb;
}

static float softcap_of(float x, float c) { return c * tanhf(x / c); }

/* One (batch, head, query block). scratch: bq*tk scores, bq*Hv accumulator, 2*bq row stats. */
static void sdpa_block(const sdpa_job *job, int64_t task, float *scratch, row_window *win,
                       kt_cache *ktc) {
    const kattn_sdpa *p = job->p;
    const kattn_vec_ops *vo = kattn_vec();
    int64_t qb = task % job->qblocks, bn = task / job->qblocks;
    if (job->heavy_first) { /* see kattn_run */
        qb = job->qblocks - 1 - task / (p->B * p->N);
        bn = task % (p->B * p->N);
    }
    int64_t n = bn % p->N, b = bn / p->N;
    int64_t S = p->seq_len ? p->seq_len[b] : p->S;
    int64_t T = p->seq_len ? p->seq_len[b] : p->T;
    int64_t s0 = qb * job->bq;
    if (s0 >= S) return;
    int64_t rows = S - s0 < job->bq ? S - s0 : job->bq;
    int64_t nk = n / (p->N / p->N_kv);
    const float *q = p->q.p + batch_off(p, b, p->q.sb, p->q.ss) + n * p->q.sn + s0 * p->q.ss;
    const float *k = p->k.p + batch_off(p, b, p->k.sb, p->k.ss) + nk * p->k.sn;
    const float *v = p->v.p + batch_off(p, b, p->v.sb, p->v.ss) + nk * p->v.sn;
    float *out = p->out + batch_off(p, b, p->o_sb, p->o_ss) + n * p->o_sn + s0 * p->o_ss;
    int64_t tk = job->tk, Hv = p->Hv;
    int64_t tkp = (tk + 31) / 32 * 32; /* score rows padded for the 32-key kernel */
    float *sc = scratch, *acc = sc + job->bq * tkp, *mx = acc + job->bq * Hv, *sum = mx + job->bq;
    if (job->pack_k && (ktc->b != b || ktc->nk != nk)) {
        kattn_pack_kt(k, p->k.ss, T, p->H, ktc->kt, ktc->Tp);
        ktc->b = b;
        ktc->nk = nk;
    }

    int64_t klo = T, khi = 0;
    for (int64_t i = 0; i < rows; i++) {
        win[i] = window_of(p, b, s0 + i, T);
        if (win[i].lo < win[i].hi) {
            if (win[i].lo < klo) klo = win[i].lo;
            if (win[i].hi > khi) khi = win[i].hi;
        }
        /* a sink is one more score in the softmax whose value adds nothing to the output */
        int sink = p->sink || p->smooth;
        mx[i] = sink ? (p->sink ? p->sink[n] : 0.0f) : -INFINITY;
        sum[i] = sink ? 1.0f : 0.0f;
    }
    memset(acc, 0, sizeof(float) * rows * Hv);
    if (p->qk_out) { /* the scores output needs every column, so one tile spans [0, T) */
        klo = 0;
        khi = T;
    }

    for (int64_t t0 = klo; t0 < khi; t0 += tk) {
        int64_t tn = khi - t0 < tk ? khi - t0 : tk, ld;
        if (job->pack_k) {
            ld = (tn + 31) / 32 * 32;
            kattn_qk_avx512(q, p->q.ss, rows, ktc->kt + t0, ktc->Tp, ld, p->H, p->scale, sc, ld);
        } else if (job->avx512) {
            ld = tn;
            kattn_qk_direct_avx512(q, p->q.ss, rows, k + t0 * p->k.ss, p->k.ss, tn, p->H, p->scale, sc, ld);
        } else {
            ld = tn;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)tn, (int)p->H,
                        p->scale, q, (int)p->q.ss, k + t0 * p->k.ss, (int)p->k.ss, 0.0f, sc, (int)ld);
        }
        for (int64_t i = 0; i < rows; i++) {
            float *x = sc + i * ld;
            int64_t s = s0 + i;
            float *qo = p->qk_out ? p->qk_out + ((b * p->N + n) * p->S + s) * p->T : NULL;
            if (qo && p->qk_mode == 0) memcpy(qo + t0, x, sizeof(float) * tn);
            if (p->softcap > 0.0f)
                for (int64_t j = 0; j < tn; j++) x[j] = softcap_of(x[j], p->softcap);
            if (qo && p->qk_mode == 1) memcpy(qo + t0, x, sizeof(float) * tn);
            for (int a = 0; a < KATTN_MAX_ADDENDS; a++) {
                const kattn_addend *ad = &p->add[a];
                if (!ad->p) continue;
                const float *ar = ad->p + b * ad->sb + n * ad->sn + s * ad->ss;
                int64_t have = ad->cols - t0;
                if (have > tn) have = tn;
                if (have > 0) vo->add(x, ar + t0, have);
                for (int64_t j = have < 0 ? 0 : have; j < tn; j++) x[j] = -INFINITY;
            }
            /* outside the row's window */
            int64_t lo = win[i].lo - t0, hi = win[i].hi - t0;
            if (lo > tn) lo = tn;
            if (hi < 0) hi = 0;
            if (lo >= hi) {
                lo = hi = 0;
            }
            for (int64_t j = 0; j < lo; j++) x[j] = -INFINITY;
            for (int64_t j = hi; j < tn; j++) x[j] = -INFINITY;
            if (qo && p->qk_mode == 2) memcpy(qo + t0, x, sizeof(float) * tn);

            float m_old = mx[i], m_new = vo->row_max(x, tn);
            if (m_old > m_new) m_new = m_old;
            if (m_new == -INFINITY) { /* nothing visible yet in this row */
                memset(x, 0, sizeof(float) * tn);
                continue;
            }
            float corr = m_old == m_new ? 1.0f : m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
            float s_new = vo->exp_shift_sum(x, tn, m_new);
            sum[i] = sum[i] * corr + s_new;
            mx[i] = m_new;
            if (corr != 1.0f) vo->scale(acc + i * Hv, Hv, corr);
        }
        if (job->avx512)
            kattn_pv_avx512(sc, ld, rows, v + t0 * p->v.ss, p->v.ss, tn, Hv, acc, Hv);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)Hv, (int)tn, 1.0f,
                        sc, (int)ld, v + t0 * p->v.ss, (int)p->v.ss, 1.0f, acc, (int)Hv);
        if (p->qk_out && p->qk_mode == 3) {
            for (int64_t i = 0; i < rows; i++) {
                float *qo = p->qk_out + ((b * p->N + n) * p->S + s0 + i) * p->T;
                float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
                for (int64_t j = 0; j < tn; j++) qo[t0 + j] = sc[i * ld + j] * inv;
            }
        }
    }
    for (int64_t i = 0; i < rows; i++) {
        float *o = out + i * p->o_ss;
        if (sum[i] > 0.0f) {
            memcpy(o, acc + i * Hv, sizeof(float) * Hv);
            vo->scale(o, Hv, 1.0f / sum[i]);
        } else {
            /* Every score was -inf (only hard masks do that) or there are no keys: the softmax is
             * 0/0. Like onnxruntime, such a row gets probabilities and output 0 rather than NaN. */
            memset(o, 0, sizeof(float) * Hv);
            if (p->qk_out && p->qk_mode == 3) {
                float *qo = p->qk_out + ((b * p->N + n) * p->S + s0 + i) * p->T;
                memset(qo, 0, sizeof(float) * T);
            }
        }
    }
}

static void sdpa_range(void *arg, int64_t begin, int64_t end) {
    sdpa_job *job = arg;
    const kattn_sdpa *p = job->p;
    int64_t tkp = (job->tk + 31) / 32 * 32;
    size_t nf = (size_t)(job->bq * tkp + job->bq * p->Hv + 2 * job->bq);
    float *scratch = malloc(nf * sizeof(float));
    row_window *win = malloc(sizeof(row_window) * (size_t)job->bq);
    /* +32 columns: a tile starting anywhere below T may read a padded 32-column group past T */
    kt_cache ktc = {NULL, (p->T + 31) / 32 * 32 + 32, -1, -1};
    if (job->pack_k) ktc.kt = malloc(sizeof(float) * (size_t)(p->H * ktc.Tp));
    if (!scratch || !win || (job->pack_k && !ktc.kt)) {
        atomic_store(&job->failed, 1);
    } else {
        int64_t total = p->B * p->N * job->qblocks;
        for (int64_t t = begin * job->per_task; t < end * job->per_task && t < total; t++)
            sdpa_block(job, t, scratch, win, &ktc);
    }
    free(scratch);
    free(win);
    free(ktc.kt);
}

kiln_status kattn_run(kiln_ctx *ctx, const kattn_sdpa *p) {
    if (p->B == 0 || p->N == 0 || p->S == 0) return KILN_OK;
    /* cblas takes int sizes and strides */
    int64_t big = p->T;
    const int64_t dims[] = {p->H, p->Hv, p->q.ss, p->k.ss, p->v.ss};
    for (int i = 0; i < 5; i++)
        if (dims[i] > big) big = dims[i];
    if (big > INT32_MAX / 2)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "attention dimensions too large (%lld)",
                         (long long)big);
    kattn_blas_serial();
    sdpa_job job;
    job.p = p;
    job.bq = p->S < QBLOCK ? p->S : QBLOCK;
    /* fewer query rows (decoding) leave room for longer key tiles */
    job.tk = p->qk_out ? p->T : (p->S < QBLOCK ? KTILE * (QBLOCK / job.bq < 8 ? QBLOCK / job.bq : 8)
                                                : KTILE);
    if (job.tk < 1) job.tk = 1;
    job.qblocks = (p->S + job.bq - 1) / job.bq;
    job.avx512 = kattn_have_avx512() && kattn_isa_cap() >= 2;
    job.pack_k = job.avx512 && job.bq >= 8;
    atomic_init(&job.failed, 0);
    /* With several heads per thread, whole heads per work item let a worker transpose each head's
     * keys once; otherwise split heads into query blocks to use every thread. */
    int64_t heads = p->B * p->N, threads = kiln_num_threads(ctx);
    job.per_task = heads >= 4 * threads ? job.qblocks : 1;
    job.heavy_first = 0;
    /* Only with the block kernels above: cblas_sgemm's sums for a row depend on how many rows
     * its call has (OpenBLAS takes other kernels for the leftover rows), so without AVX-512 the
     * blocks keep one height at every thread count and the output its bits. */
    if (job.per_task == 1 && threads > 1 && p->S > 2 * MIN_QBLOCK && !p->qk_out && job.avx512) {
        /* Few heads for the threads (BERT, ViT and GPT-2 at batch 1: 12 heads on 16 threads):
         * items of 64 rows gave 24 (48 with ViT's 197 rows, a quarter of them 5 rows long), so
         * most threads took two and some one. Cut each head into at least 3 * threads / heads
         * blocks of equal height instead (multiples of 4 rows, the kernels' row blocks). */
        int64_t want = (3 * threads + heads - 1) / heads;
        if (want > job.qblocks) {
            int64_t q = want, bq = (p->S + q - 1) / q;
            if (bq < MIN_QBLOCK) bq = MIN_QBLOCK;
            bq = (bq + 3) / 4 * 4;
            if (bq < job.bq) {
                job.bq = bq;
                job.qblocks = (p->S + bq - 1) / bq;
            }
        }
    }
    int64_t tasks = (heads * job.qblocks + job.per_task - 1) / job.per_task;
    /* Work-based grain: QK^T and PV are about S*T*(H+Hv) multiply-adds per head (~0.1 ns each
     * with the vector kernels, plus the softmax), so a tiny model's attention stays on the
     * calling thread instead of waiting for a worker on every layer. */
    double ns = (double)heads * p->S * p->T * (double)(p->H + p->Hv) * 0.1;
    int64_t grain = kpar_grain(tasks, ns);
    /* A causal block's cost grows with its last row (the keys it sees), up to qblocks times the
     * first block's: handing out the costliest blocks first lets the cheap ones fill the gaps at
     * the end (longest-first scheduling) instead of one thread taking a long block while the
     * others have finished. Only where the pool makes every block a chunk of its own: chunks of
     * several consecutive items would pair costly blocks with costly ones (and lose the head
     * each chunk's blocks share). */
    job.heavy_first = job.per_task == 1 && p->causal && job.qblocks > 1 && grain == 1 &&
                      threads > 1 && kiln_threadpool_plan((int)threads, tasks, 1) == tasks;
    kiln_parallel_for(ctx, tasks, grain, sdpa_range, &job);
    if (atomic_load(&job.failed))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for attention scratch");
    return KILN_OK;
}
