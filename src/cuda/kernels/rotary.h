/* Rotary position embedding on the GPU (com.microsoft and ONNX RotaryEmbedding): each head vector's
 * first rd entries are rotated pairwise, the pairs being (i, i + rd/2) or, interleaved, (2i, 2i+1),
 * by the angle whose cosine and sine are row `position` of the caches; entries past rd are copied. */
#ifndef KILN_CUDA_KERNELS_ROTARY_H
#define KILN_CUDA_KERNELS_ROTARY_H

#include "kiln.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    KILN_ROPE_POS_BS = 0,   /* position_ids (B, S): position = pos[b·S + s] */
    KILN_ROPE_POS_BASE = 1, /* one position_ids value: position = pos[0] + s */
    KILN_ROPE_POS_NONE = 2  /* no position_ids: the caches are (B, S, rd/2), row b·S + s */
};

typedef struct kiln_cuda_rope {
    int dtype;             /* KILN_DTYPE_FLOAT, FLOAT16 or BFLOAT16, for x, the caches and y */
    int64_t B, N, S, H;    /* B·N·S head vectors of H elements */
    int64_t rd;            /* rotated entries (even, <= H); caches are rd/2 wide */
    int heads_first;       /* x and y (B, N, S, H); else (B, S, N, H) */
    int interleaved;
    int pos_mode;          /* KILN_ROPE_POS_* */
    const int64_t *pos;    /* device position_ids (NULL with KILN_ROPE_POS_NONE) */
    int64_t cache_rows;    /* rows of the caches; a position outside [0, cache_rows) gives NaN */
    const void *x, *cos_cache, *sin_cache;
    void *y;               /* may equal x */
} kiln_cuda_rope;

/* Enqueues the rotation on stream (a cudaStream_t). */
kiln_status kiln_cuda_rotary(void *stream, const kiln_cuda_rope *r);

#ifdef __cplusplus
}
#endif

#endif
