/* Strings through kiln's C API, NUL bytes included. ONNX strings are byte strings: an input given
 * as KILN_DTYPE_SIZED_STRING ({data, len} elements) keeps every byte, and an output's elements are
 * read to their full length with kiln_value_strings() (or kiln_string_length() on one element).
 * Usage: example_strings MODEL: feeds the first input, a string tensor, with three strings holding
 * NUL and non-UTF-8 bytes, then once more through the NUL-terminated entry point (each string then
 * ends at its first NUL), and prints every output string as LENGTH:HEX. It also makes a map with
 * such string keys and a string tensor value, and prints them back the same way. */
#include "kiln.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_string(const char *p, size_t len) {
    printf(" %zu:", len);
    for (size_t i = 0; i < len; i++) printf("%02x", (unsigned char)p[i]);
}

/* Prints the string tensor v (or says what it is instead). */
static int print_strings(const char *name, const kiln_value *v) {
    printf("%s:", name);
    if (kiln_value_kind(v) != KILN_VALUE_TENSOR || kiln_value_dtype(v) != KILN_DTYPE_STRING) {
        printf(" not a string tensor\n");
        return 0;
    }
    size_t n = 1;
    for (int d = 0; d < kiln_value_rank(v); d++) n *= (size_t)kiln_value_dims(v)[d];
    kiln_string *views = calloc(n ? n : 1, sizeof *views);
    if (!views || kiln_value_strings(v, views, n) != KILN_OK) {
        fprintf(stderr, "kiln_value_strings: %s\n", views ? kiln_last_error() : "out of memory");
        free(views);
        return 1;
    }
    for (size_t i = 0; i < n; i++) print_string(views[i].data, views[i].len);
    printf("\n");
    free(views);
    return 0;
}

static int run_and_print(kiln_session *s, const char *label, const kiln_tensor_desc *in) {
    kiln_io_info info;
    if (kiln_session_input_info(s, 0, &info) != KILN_OK) {
        fprintf(stderr, "input 0: %s\n", kiln_last_error());
        return 1;
    }
    size_t no = kiln_session_output_count(s);
    kiln_value **out = calloc(no ? no : 1, sizeof *out);
    if (!out) return 1;
    const char *in_name = info.name;
    if (kiln_run(s, 1, &in_name, in, 0, NULL, out) != KILN_OK) {
        fprintf(stderr, "run (%s): %s\n", label, kiln_session_error(s));
        free(out);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < no; i++) {
        kiln_io_info oi;
        char name[300];
        kiln_session_output_info(s, i, &oi);
        snprintf(name, sizeof name, "%s %s", label, oi.name);
        rc |= print_strings(name, out[i]);
        kiln_value_free(out[i]);
    }
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: example_strings MODEL\n");
        return 2;
    }
    kiln_session *s;
    if (kiln_session_open(argv[1], NULL, &s) != KILN_OK) {
        fprintf(stderr, "cannot open %s: %s\n", argv[1], kiln_last_error());
        return 1;
    }
    const kiln_string sized[3] = {{"a\0b", 3}, {"", 0}, {"\xff\0\xfe", 3}};
    const char *terminated[3] = {"a\0b", "", "\xff\0\xfe"}; /* read up to the first NUL: "a", "", "\xff" */
    int64_t dims[1] = {3};
    kiln_tensor_desc in = {KILN_DTYPE_SIZED_STRING, 1, dims, sized, KILN_MEMORY_HOST};
    int rc = run_and_print(s, "sized", &in);
    in.dtype = KILN_DTYPE_STRING;
    in.data = terminated;
    rc |= run_and_print(s, "terminated", &in);
    kiln_session_close(s);

    /* values made from sized strings: a tensor, and a map whose keys hold NUL bytes */
    kiln_value *t, *m;
    in.dtype = KILN_DTYPE_SIZED_STRING;
    in.data = sized;
    const int64_t map_vals[3] = {1, 2, 3};
    const kiln_string keys[3] = {{"k\0z", 3}, {"k", 1}, {"k\0a", 3}}; /* three distinct keys */
    if (kiln_value_tensor_new(&in, &t) != KILN_OK || kiln_value_map_new(KILN_DTYPE_SIZED_STRING, KILN_DTYPE_INT64, 3,
                                                                        keys, map_vals, &m) != KILN_OK) {
        fprintf(stderr, "values: %s\n", kiln_last_error());
        return 1;
    }
    rc |= print_strings("tensor value", t);
    printf("map keys (byte order):");
    const char *const *k = kiln_value_map_keys(m);
    for (size_t i = 0; i < kiln_value_map_size(m); i++) {
        print_string(k[i], kiln_string_length(k[i]));
        printf("=%lld", (long long)((const int64_t *)kiln_value_map_values(m))[i]);
    }
    printf("\n");
    kiln_value_free(t);
    kiln_value_free(m);
    return rc;
}
