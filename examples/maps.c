/* Maps through kiln's C API: a model whose input is a map (a DictVectorizer pipeline from
 * skl2onnx) and whose class probabilities come out of ZipMap as a sequence of maps.
 * Usage: example_maps MODEL [KEY=VALUE ...]: feeds the pairs as the first input, a map(string,
 * float), and prints every output: tensors by their values, each map as key=value pairs. */
#include "kiln.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_map(const kiln_value *m) {
    size_t n = kiln_value_map_size(m);
    const void *keys = kiln_value_map_keys(m), *vals = kiln_value_map_values(m);
    for (size_t i = 0; i < n; i++) {
        if (kiln_value_map_key_dtype(m) == KILN_DTYPE_STRING) printf(" %s=", ((const char *const *)keys)[i]);
        else printf(" %lld=", (long long)((const int64_t *)keys)[i]);
        switch (kiln_value_dtype(m)) {
        case KILN_DTYPE_FLOAT: printf("%.9g", ((const float *)vals)[i]); break;
        case KILN_DTYPE_DOUBLE: printf("%.17g", ((const double *)vals)[i]); break;
        case KILN_DTYPE_INT64: printf("%lld", (long long)((const int64_t *)vals)[i]); break;
        default: printf("%s", ((const char *const *)vals)[i]); break;
        }
    }
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: example_maps MODEL [KEY=VALUE ...]\n");
        return 2;
    }
    kiln_session *s;
    if (kiln_session_open(argv[1], NULL, &s) != KILN_OK) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], kiln_last_error());
        return 1;
    }
    int n = argc - 2;
    const char **keys = calloc((size_t)(n ? n : 1), sizeof *keys);
    float *vals = calloc((size_t)(n ? n : 1), sizeof *vals);
    for (int i = 0; i < n; i++) {
        char *eq = strchr(argv[i + 2], '=');
        if (eq) *eq = 0;
        keys[i] = argv[i + 2];
        vals[i] = eq ? strtof(eq + 1, NULL) : 0.0f;
    }
    kiln_io_info in;
    kiln_session_input_info(s, 0, &in);
    kiln_value *x = NULL, **out = calloc(kiln_session_output_count(s), sizeof *out);
    int rc = 1;
    if (kiln_value_map_new(KILN_DTYPE_STRING, KILN_DTYPE_FLOAT, (size_t)n, keys, vals, &x) != KILN_OK) {
        fprintf(stderr, "bad input: %s\n", kiln_last_error());
    } else if (kiln_run_values(s, NULL, 1, &in.name, (const kiln_value *const *)&x, 0, NULL, out) != KILN_OK) {
        fprintf(stderr, "run failed: %s\n", kiln_session_error(s));
    } else {
        for (size_t k = 0; k < kiln_session_output_count(s); k++) {
            kiln_io_info info;
            kiln_session_output_info(s, k, &info);
            const kiln_value *v = out[k];
            if (kiln_value_kind(v) == KILN_VALUE_MAP) {
                printf("%s:", info.name);
                print_map(v);
            } else if (kiln_value_kind(v) == KILN_VALUE_SEQUENCE && kiln_value_map_key_dtype(v)) {
                for (size_t i = 0; i < kiln_value_sequence_length(v); i++) {
                    printf("%s[%zu]:", info.name, i);
                    print_map(kiln_value_item(v, i));
                }
            } else if (kiln_value_kind(v) == KILN_VALUE_TENSOR && kiln_value_dtype(v) == KILN_DTYPE_INT64) {
                printf("%s:", info.name);
                size_t count = kiln_value_nbytes(v) / sizeof(int64_t);
                for (size_t i = 0; i < count; i++) printf(" %lld", (long long)((const int64_t *)kiln_value_data(v))[i]);
                printf("\n");
            } else if (kiln_value_kind(v) == KILN_VALUE_TENSOR && kiln_value_dtype(v) == KILN_DTYPE_STRING) {
                printf("%s:", info.name);
                int64_t count = 1;
                for (int d = 0; d < kiln_value_rank(v); d++) count *= kiln_value_dims(v)[d];
                for (int64_t i = 0; i < count; i++) printf(" %s", ((const char *const *)kiln_value_data(v))[i]);
                printf("\n");
            }
        }
        rc = 0;
    }
    for (size_t k = 0; k < kiln_session_output_count(s); k++) kiln_value_free(out[k]);
    kiln_value_free(x);
    free(out);
    free(keys);
    free(vals);
    kiln_session_close(s);
    return rc;
}
