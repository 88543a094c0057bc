/* The com.microsoft mask formats (spec §7): 1-D forms become per-batch key windows, raw 0/1
 * masks become an additive term of 0 / mask_filter_value, exactly as the reference adds them
 * (so a fully masked row still attends to every key, quirk Q6). */
#include "attention_common.h"

#include <stdlib.h>
#include <string.h>

enum mask_form {
    MASK_NONE,
    MASK_KEY_LEN,     /* (B) */
    MASK_END_START,   /* (2B) */
    MASK_VARLEN,      /* (3B+2): key lengths first; expanded to a key window (quirk Q5) */
    MASK_DUMMY,       /* (B,1) or (1,1) */
    MASK_KEY_PADDING, /* (B,T) or, MHA, (B,L) */
    MASK_3D,          /* (B,S,T) */
    MASK_4D           /* (B,1,M,M) */
};

static int form_of(const kiln_tensor *m, int kind, int64_t B, int64_t S, int64_t L, int64_t T) {
    const int64_t *d = m->dims;
    switch (m->rank) {
    case 1:
        if (d[0] == B) return MASK_KEY_LEN;
        if (kind == KATTN_MASK_ATTENTION && d[0] == 2 * B) return MASK_END_START;
        if (d[0] == 3 * B + 2) return MASK_VARLEN;
        return -1;
    case 2:
        if (kind == KATTN_MASK_ATTENTION && d[1] == 1 && (d[0] == B || d[0] == 1)) return MASK_DUMMY;
        if (d[0] == B && (d[1] == T || (kind == KATTN_MASK_MHA && d[1] == L))) return MASK_KEY_PADDING;
        return -1;
    case 3:
        return d[0] == B && d[1] == S && d[2] == T ? MASK_3D : -1;
    case 4:
        if (kind != KATTN_MASK_ATTENTION) return -1;
        return d[0] == B && d[1] == 1 && d[2] == d[3] && d[2] >= T ? MASK_4D : -1;
    default:
        return -1;
    }
}

kiln_status kattn_mask_check(kiln_ctx *ctx, const kiln_tensor *mask, int kind, int64_t B,
                             int64_t S, int64_t L, int64_t T, int64_t required_m, int causal) {
    char buf[128];
    const char *what = kind == KATTN_MASK_ATTENTION ? "mask_index" : "key_padding_mask";
    if (mask->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be int32, got %s", what,
                         kattn_shape(mask, buf, sizeof buf));
    int f = form_of(mask, kind, B, S, L, T);
    if (f < 0) {
        if (kind == KATTN_MASK_ATTENTION)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "mask_index %s must be (B), (2B), (3B+2), (B,T), (B,1), (B,S,T) or "
                             "(B,1,M,M) with M >= T; here B=%lld S=%lld T=%lld",
                             kattn_shape(mask, buf, sizeof buf), (long long)B, (long long)S,
                             (long long)T);
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "key_padding_mask %s shall be 1D, 2D, or 3D: (B), (3B+2), (B,L), (B,T) or "
                         "(B,S,T); here B=%lld S=%lld L=%lld T=%lld",
                         kattn_shape(mask, buf, sizeof buf), (long long)B, (long long)S,
                         (long long)L, (long long)T);
    }
    if (f == MASK_4D) {
        if (causal)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "a 4-D mask_index requires unidirectional = 0 (the mask already "
                             "encodes causality)");
        if (required_m >= 0 && mask->dims[3] != required_m)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "4-D mask_index has max sequence length %lld, but past (shared buffer) "
                             "holds %lld",
                             (long long)mask->dims[3], (long long)required_m);
    }
    return KILN_OK;
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

kiln_status kattn_mask_build(kiln_ctx *ctx, const kiln_tensor *mask, int kind, int64_t B,
                             int64_t S, int64_t L, int64_t T, float filter, kattn_mask *out) {
    memset(out, 0, sizeof *out);
    if (!mask) return KILN_OK;
    const int32_t *m = mask->data;
    int f = form_of(mask, kind, B, S, L, T);
    if (f == MASK_KEY_LEN || f == MASK_END_START || f == MASK_VARLEN) {
        out->key_lo = malloc(sizeof(int64_t) * (size_t)(B ? B : 1));
        out->key_hi = malloc(sizeof(int64_t) * (size_t)(B ? B : 1));
        if (!out->key_lo || !out->key_hi) {
            kattn_mask_free(out);
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the attention mask");
        }
        for (int64_t b = 0; b < B; b++) {
            out->key_hi[b] = clamp64(m[b], 0, T);
            out->key_lo[b] = f == MASK_END_START ? clamp64(m[B + b], 0, T) : 0;
        }
        return KILN_OK;
    }
    if (f == MASK_DUMMY || f < 0) return KILN_OK;

    size_t n = (size_t)(f == MASK_KEY_PADDING ? B * T : B * S * T);
    out->add = malloc(sizeof(float) * (n ? n : 1));
    if (!out->add) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the attention mask");
    float *a = out->add;
    out->addend.p = a;
    out->addend.cols = T;
    if (f == MASK_KEY_PADDING) {
        int64_t W = mask->dims[1];
        /* A (B, L) mask with past keys in front describes the new keys; the past ones stay
         * visible. */
        int64_t shift = T - W;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < T; j++) {
                int64_t c = j - shift;
                a[b * T + j] = (c < 0 || m[b * W + c]) ? 0.0f : filter;
            }
        out->addend.sb = T;
    } else if (f == MASK_3D) {
        for (size_t i = 0; i < n; i++) a[i] = m[i] ? 0.0f : filter;
        out->addend.sb = S * T;
        out->addend.ss = T;
    } else { /* 4-D Megatron: query s reads row T - S + s, columns [0, T) */
        int64_t M = mask->dims[3];
        for (int64_t b = 0; b < B; b++)
            for (int64_t s = 0; s < S; s++) {
                const int32_t *row = m + (b * M + (T - S + s)) * M;
                float *ar = a + (b * S + s) * T;
                for (int64_t j = 0; j < T; j++) ar[j] = row[j] ? 0.0f : filter;
            }
        out->addend.sb = S * T;
        out->addend.ss = T;
    }
    return KILN_OK;
}

void kattn_mask_free(kattn_mask *m) {
    free(m->key_lo);
    free(m->key_hi);
    free(m->add);
    memset(m, 0, sizeof *m);
}

void kattn_mask_apply(const kattn_mask *m, kattn_sdpa *p, int addend_slot) {
    if (m->key_lo) {
        p->key_lo = m->key_lo;
        p->key_hi = m->key_hi;
        p->window_additive = 1;
    }
    if (m->add) p->add[addend_slot] = m->addend;
}
