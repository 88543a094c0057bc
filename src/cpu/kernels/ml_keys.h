/* A sorted index over a list of int64 or string keys (attribute lists of the ai.onnx.ml ops on
 * maps and categories): lookups by binary search, duplicates resolved once when it is built. */
#ifndef KILN_ML_KEYS_H
#define KILN_ML_KEYS_H

#include "../../ops/op.h"
#include <stdint.h>

typedef struct ml_keys {
    int is_str;
    int64_t n;               /* distinct keys */
    const int64_t *ints;     /* the attribute's keys (borrowed) */
    char *const *strs;
    int64_t *order;          /* positions in the attribute list of the distinct keys, ascending */
} ml_keys;

/* Builds the index over n keys (ints or strs); of equal keys the last one is kept when keep_last,
 * else the first. Returns 0, or -1 when out of memory. */
int ml_keys_build(ml_keys *k, int64_t n, const int64_t *ints, char *const *strs, int keep_last);
void ml_keys_free(ml_keys *k);
/* Position in the attribute list of key x, or -1. */
int64_t ml_keys_find_int(const ml_keys *k, int64_t x);
int64_t ml_keys_find_str(const ml_keys *k, const char *x);

/* CategoryMapper and FeatureVectorizer (ml_features.c), listed in ml_maps.c's table. */
kiln_status kiln_ml_category_init(kiln_ctx *ctx);
kiln_status kiln_ml_category_infer(kiln_ctx *ctx);
kiln_status kiln_ml_category_compute(kiln_ctx *ctx);
void kiln_ml_category_fini(void *state);
kiln_status kiln_ml_featvec_infer(kiln_ctx *ctx);
kiln_status kiln_ml_featvec_compute(kiln_ctx *ctx);

#endif
