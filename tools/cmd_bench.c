/* kiln bench: latency percentiles, throughput and peak memory of repeated runs. */
#include "cli.h"
#include "plot.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *npz = NULL;
    int threads = 0, runs = 100, warmup = 10;
    int sopt;
    const char *profile = NULL, *plot = NULL;
    dim_binding dims[32];
    int n_dims = 0;
    for (int i = 1; i < argc; i++) {
        int more = i + 1 < argc;
        if (!strcmp(argv[i], "--threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && more) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && more) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--inputs") && more) npz = argv[++i];
        else if (!strcmp(argv[i], "--profile") && more) profile = argv[++i];
        else if (!strcmp(argv[i], "--plot") && more) plot = argv[++i];
        else if ((sopt = cli_parse_session_opt(argc, argv, &i)) != 0) {
            if (sopt < 0) return 2;
        }
        else if (!strcmp(argv[i], "--dim") && more && n_dims < 32) {
            char *eq = strchr(argv[++i], '=');
            if (!eq) { fprintf(stderr, "kiln bench: --dim needs NAME=N\n"); return 2; }
            *eq = 0;
            dims[n_dims++] = (dim_binding){argv[i], atoll(eq + 1)};
        } else if (argv[i][0] != '-' && !model) model = argv[i];
        else { fprintf(stderr, "kiln bench: unknown or incomplete option '%s'\n", argv[i]); return 2; }
    }
    if (!model || runs < 1 || warmup < 0) { fprintf(stderr, "kiln bench: need a model and --runs >= 1\n"); return 2; }
    kiln_session *s = cli_open(model, threads, 0, 0);
    if (!s) return 1;
    if (profile) kiln_session_start_profiling(s, profile);
    size_t ni = kiln_session_input_count(s), no = kiln_session_output_count(s);
    kiln_value *vals = calloc(ni ? ni : 1, sizeof *vals);
    const char **names = calloc(ni ? ni : 1, sizeof *names);
    kiln_value *outs = calloc(no ? no : 1, sizeof *outs);
    int *idx = calloc(no ? no : 1, sizeof(int));
    double *lat = calloc((size_t)runs, sizeof(double));
    int rc = 1;
    npz_entry *ents = NULL;
    int ne = 0;
    char err[512];
    if (npz && npz_read_file(npz, &ents, &ne, err, sizeof err)) { fprintf(stderr, "kiln: %s\n", err); goto out; }
    unsigned seed = 7;
    for (size_t i = 0; i < ni; i++) {
        kiln_io_info io;
        kiln_session_input_info(s, i, &io);
        names[i] = io.name;
        vals[i].kind = KILN_KIND_TENSOR;
        int found = 0;
        for (int k = 0; k < ne; k++) {
            const char *nm = !strncmp(ents[k].name, "in.", 3) ? ents[k].name + 3 : ents[k].name;
            if (!strcmp(nm, io.name)) { vals[i].t = ents[k].t; vals[i].t.owner = NULL; found = 1; }
        }
        if (!found && cli_synthetic_input(s, i, dims, n_dims, &seed, &vals[i].t)) goto out;
    }
    for (size_t k = 0; k < no; k++) idx[k] = (int)k;
    for (int r = -warmup; r < runs; r++) {
        double t0 = cli_now();
        if (kiln_session_run_values_opts(s, &cli_opts.run, (int)ni, names, vals, (int)no, idx, outs)) {
            fprintf(stderr, "kiln: %s: %s\n", model, kiln_session_error(s));
            goto out;
        }
        double t1 = cli_now();
        for (size_t k = 0; k < no; k++) kiln_value_release(&outs[k]);
        if (r >= 0) lat[r] = (t1 - t0) * 1e3;
    }
    double total = 0;
    for (int r = 0; r < runs; r++) total += lat[r];
    qsort(lat, (size_t)runs, sizeof(double), cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    kiln_plan_stats st;
    kiln_session_plan_stats(s, &st);
    printf("model: %s\nthreads: %d, runs: %d (after %d warm-up)\n", model, threads, runs, warmup);
    printf("latency ms: p50 %.3f  p90 %.3f  p99 %.3f  min %.3f  mean %.3f\n", lat[runs / 2],
           lat[(int)(runs * 0.9)], lat[(int)(runs * 0.99) < runs ? (int)(runs * 0.99) : runs - 1], lat[0],
           total / runs);
    printf("throughput: %.1f runs/s\n", runs / (total / 1e3));
    printf("peak RSS: %.1f MiB; arena %zu bytes\n", ru.ru_maxrss / 1024.0, st.arena_bytes);
    cli_print_overheads(s, threads);
    if (plot && bench_plot(plot, s, model, lat, runs, (int)ni, names, vals, (int)no, idx, outs)) goto out;
    rc = 0;
out:
    for (size_t i = 0; i < ni; i++) if (vals[i].t.owner) kiln_value_release(&vals[i]);
    npz_free(ents, ne);
    free(vals); free(names); free(outs); free(idx); free(lat);
    if (profile) {
        const char *written = kiln_session_end_profiling(s);
        if (written) fprintf(stderr, "kiln: profile written to %s\n", written);
        else fprintf(stderr, "kiln: %s\n", kiln_session_error(s));
    }
    kiln_session_close(s);
    return rc;
}
