#include "cli.h"
#include "core/dtype.h"
#include "json_out.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

unsigned cli_parse_providers(const char *list) {
    unsigned mask = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strcasecmp(tok, "cpu") || !strcmp(tok, "CPUExecutionProvider")) mask |= KILN_PROVIDER_CPU;
        else if (!strcasecmp(tok, "cuda") || !strcmp(tok, "CUDAExecutionProvider")) mask |= KILN_PROVIDER_CUDA;
        else {
            fprintf(stderr, "kiln: unknown provider '%s' (cpu, cuda)\n", tok);
            return 0;
        }
    }
    return mask;
}

/* Session options the subcommands share (--providers, --static with --dim, --[no-]cuda-graph). */
cli_session_opts cli_opts;

int cli_parse_session_opt(int argc, char **argv, int *i) {
    const char *a = argv[*i];
    int more = *i + 1 < argc;
    if (!strcmp(a, "--providers") && more) {
        if (!(cli_opts.providers = cli_parse_providers(argv[++*i]))) return -1;
        return 1;
    }
    if (!strcmp(a, "--cuda-graph")) {
        cli_opts.graph_capture = 1;
        return 1;
    }
    if (!strcmp(a, "--no-cuda-graph")) {
        cli_opts.graph_capture = -1;
        return 1;
    }
    if (!strcmp(a, "--specialize") || !strcmp(a, "--no-specialize")) {
        cli_opts.specialize = a[2] == 'n' ? -1 : 1;
        return 1;
    }
    if (!strcmp(a, "--fp16")) {
        cli_opts.float16 = 1;
        return 1;
    }
    if (!strcmp(a, "--bf16")) {
        cli_opts.bf16 = 1;
        return 1;
    }
    if (!strcmp(a, "--no-winograd")) {
        cli_opts.no_winograd = 1;
        return 1;
    }
    if (!strcmp(a, "--memory-limit") && more) {
        char *end;
        double mb = strtod(argv[++*i], &end);
        if (*end || !(mb > 0)) {
            fprintf(stderr, "kiln: --memory-limit needs a positive number of MiB\n");
            return -1;
        }
        cli_opts.memory_limit = (size_t)(mb * 1024 * 1024);
        return 1;
    }
    if (!strcmp(a, "--timeout") && more) {
        char *end;
        double ms = strtod(argv[++*i], &end);
        if (*end || !(ms > 0)) {
            fprintf(stderr, "kiln: --timeout needs a positive number of milliseconds\n");
            return -1;
        }
        cli_opts.run.timeout_ms = ms;
        return 1;
    }
    if (!strcmp(a, "--free-dim") && more) {
        const char *d = argv[++*i];
        size_t l = strlen(cli_opts.dims);
        if (!strchr(d, '=') || l + strlen(d) + 2 > sizeof cli_opts.dims) {
            fprintf(stderr, "kiln: --free-dim needs NAME=N\n");
            return -1;
        }
        snprintf(cli_opts.dims + l, sizeof cli_opts.dims - l, "%s%s", l ? "," : "", d);
        return 1;
    }
    return 0;
}

kiln_session *cli_open(const char *path, int threads, int allow_missing, int verbose) {
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = threads;
    opt.verbose = verbose;
    if (cli_opts.providers) opt.providers = cli_opts.providers;
    opt.graph_capture = cli_opts.graph_capture;
    opt.float16 = cli_opts.float16;
    opt.cpu_bf16 = cli_opts.bf16;
    opt.cpu_winograd = cli_opts.no_winograd ? -1 : 0;
    opt.dim_overrides = cli_opts.dims[0] ? cli_opts.dims : NULL;
    opt.memory_limit = cli_opts.memory_limit;
    opt.specialize = cli_opts.specialize;
    kiln_err e = {0};
    kiln_model *m;
    if (kiln_model_load_file(path, &m, &e)) {
        fprintf(stderr, "kiln: %s: %s\n", path, e.msg);
        return NULL;
    }
    kiln_session *s;
    if (kiln_session_open_model(m, &opt, allow_missing, &s)) {
        fprintf(stderr, "kiln: %s: %s\n", path, kiln_last_error());
        return NULL;
    }
    if (kiln_session_warning(s)[0]) fprintf(stderr, "kiln: warning: %s\n", kiln_session_warning(s));
    return s;
}

static unsigned next_rand(unsigned *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 8) & 0xffffff;
}

int cli_synthetic_input(kiln_session *s, size_t i, const dim_binding *dims, int n_dims, unsigned *seed,
                        kiln_tensor *t) {
    kiln_io_info info;
    kiln_session_input_info(s, i, &info);
    memset(t, 0, sizeof *t);
    if (info.is_sequence || info.is_map || info.rank < 0 || !info.dtype) {
        fprintf(stderr, "kiln: input '%s' has no static tensor type; give it with --inputs\n", info.name);
        return -1;
    }
    t->dtype = info.dtype;
    t->rank = info.rank;
    for (int d = 0; d < info.rank; d++) {
        t->dims[d] = info.dims[d] >= 0 ? info.dims[d] : 1;
        for (int k = 0; k < n_dims; k++)
            if (info.dim_names && info.dim_names[d] && !strcmp(dims[k].name, info.dim_names[d])) t->dims[d] = dims[k].value;
    }
    kiln_err e;
    if (kiln_tensor_alloc(t, &e)) {
        fprintf(stderr, "kiln: %s\n", e.msg);
        return -1;
    }
    int64_t n = kiln_numel(t);
    for (int64_t k = 0; k < n; k++) {
        unsigned r = next_rand(seed);
        if (t->dtype == KILN_DTYPE_STRING) ((char **)t->data)[k] = kiln_str_new("a", 1);
        else if (kiln_dtype_is_float(t->dtype)) kiln_store_f64(t->dtype, t->data, k, (double)r / (1 << 23) - 1.0);
        else kiln_store_f64(t->dtype, t->data, k, (double)(r & 1));
    }
    return 0;
}

void cli_print_summary(const char *name, const kiln_value *v) {
    if (v->kind == KILN_KIND_NONE) {
        printf("%s: none (empty optional)\n", name);
        return;
    }
    if (v->kind == KILN_KIND_SEQUENCE) {
        printf("%s: sequence of %d %s tensors\n", name, v->seq_len, kiln_dtype_name((kiln_dtype)v->seq_dtype));
        return;
    }
    if (kiln_kind_is_map(v->kind)) {
        char t[64];
        kiln_map_type_str(KILN_KIND_MAP, v->map_key_dtype, v->map_val_dtype, t, sizeof t);
        if (v->kind == KILN_KIND_MAP) printf("%s: %s of %lld entries\n", name, t, (long long)v->maps[0].keys.dims[0]);
        else printf("%s: sequence of %d %s\n", name, v->n_maps, t);
        return;
    }
    const kiln_tensor *t = &v->t;
    char shape[256];
    kiln_shape_str(t, shape, sizeof shape);
    int64_t n = kiln_numel(t);
    printf("%s: %s", name, shape);
    if (t->dtype == KILN_DTYPE_STRING) {
        printf(" [");
        for (int64_t i = 0; i < n && i < 4; i++) { /* control bytes (NUL included) and non-UTF-8 escaped */
            const unsigned char *s = (const unsigned char *)kiln_str_bytes(((char *const *)t->data)[i]);
            printf("%s\"", i ? ", " : "");
            for (size_t k = 0, len = kiln_str_len((const char *)s), l; k < len && k < 64; k += l) {
                l = utf8_seq_len(s + k, len - k);
                if (l > 1) fwrite(s + k, 1, l, stdout);
                else if (l == 1 && s[k] >= 0x20 && s[k] != 0x7f && s[k] != '"' && s[k] != '\\') putchar(s[k]);
                else printf("\\x%02x", s[k]), l = 1;
            }
            printf("%s\"", kiln_str_len((const char *)s) > 64 ? "..." : "");
        }
        printf("%s]\n", n > 4 ? ", ..." : "");
        return;
    }
    if (t->dtype == KILN_DTYPE_COMPLEX64 || t->dtype == KILN_DTYPE_COMPLEX128 || !kiln_dtype_size(t->dtype)) {
        printf("\n");
        return;
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = kiln_load_f64(t->dtype, t->data, i);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
    }
    if (n > 0) printf(" min %.6g max %.6g mean %.6g", lo, hi, sum / (double)n);
    printf(" [");
    for (int64_t i = 0; i < n && i < 6; i++) printf("%s%.6g", i ? ", " : "", kiln_load_f64(t->dtype, t->data, i));
    printf("%s]\n", n > 6 ? ", ..." : "");
}
