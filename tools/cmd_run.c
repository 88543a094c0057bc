/* kiln run: feed inputs from .npy/.npz/.pb files, run once, write each output as NAME.npy (a
 * tensor) or NAME.json (a sequence, a map or a sequence of maps). */
#include "cli.h"
#include "json_out.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef cli_feed feed;

static int add_feed(feed **feeds, int *n, const char *name, kiln_value v) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*feeds)[i].name, name)) {
            fprintf(stderr, "kiln: input '%s' is given twice\n", name);
            kiln_value_release(&v);
            return -1;
        }
    feed *f = realloc(*feeds, (size_t)(*n + 1) * sizeof *f);
    if (!f) return -1;
    *feeds = f;
    f[*n].name = strdup(name);
    f[*n].v = v;
    (*n)++;
    return 0;
}

/* test_data_set folder: input_K.pb feeds the K-th model input (TensorProto, or Sequence/Optional
 * protos for inputs of those kinds). */
int cli_load_pb_inputs(kiln_session *s, const char *dir, cli_feed **feeds, int *n) {
    for (size_t k = 0; k < kiln_session_input_count(s); k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/input_%zu.pb", dir, k);
        size_t size;
        void *buf = read_whole_file(path, &size);
        if (!buf) {
            if (errno == ENOENT) continue; /* optional inputs may be left out */
            fprintf(stderr, "kiln: cannot read '%s': %s\n", path, strerror(errno));
            return -1;
        }
        kiln_io_info info;
        kiln_session_input_info(s, k, &info);
        const kiln_graph_value *gv = &s->model->graph->values[s->model->graph->inputs[k]];
        int kind = gv->type.optional ? KILN_KIND_NONE : info.is_sequence ? KILN_KIND_SEQUENCE : KILN_KIND_TENSOR;
        kiln_value v;
        kiln_err e;
        kiln_status st = kiln_parse_value_proto(buf, size, kind, &v, NULL, &e);
        free(buf);
        if (st) {
            fprintf(stderr, "kiln: %s: %s\n", path, e.msg);
            return -1;
        }
        if (add_feed(feeds, n, info.name, v)) return -1;
    }
    return 0;
}

static const char *strip_prefix(const char *name) { return !strncmp(name, "in.", 3) ? name + 3 : name; }

/* mkdir -p: the output folder and its missing parents. */
static int make_dirs(const char *dir, char *err, size_t cap) {
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1;; p++) {
        int end = !*p;
        if (*p != '/' && !end) continue;
        *p = 0;
        if (mkdir(path, 0777) && errno != EEXIST) {
            snprintf(err, cap, "cannot create the output folder '%s': %s", path, strerror(errno));
            return 1;
        }
        if (end) break;
        *p = '/';
    }
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        snprintf(err, cap, "'%s' is not a folder", dir);
        return 1;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *outdir = ".", *npz = NULL, *testdir = NULL;
    int threads = 0, verbose = 0, quiet = 0;
    int sopt;
    const char *profile = NULL;
    char **singles = calloc((size_t)argc, sizeof(char *));
    int n_singles = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--input") && more) singles[n_singles++] = argv[++i];
        else if (!strcmp(a, "--inputs") && more) npz = argv[++i];
        else if (!strcmp(a, "--test-data") && more) testdir = argv[++i];
        else if (!strcmp(a, "--output-dir") && more) outdir = argv[++i];
        else if (!strcmp(a, "--threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--verbose")) verbose = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--profile") && more) profile = argv[++i];
        else if ((sopt = cli_parse_session_opt(argc, argv, &i)) != 0) {
            if (sopt < 0) { free(singles); return 2; }
        }
        else if (a[0] != '-' && !model) model = a;
        else {
            fprintf(stderr, "kiln run: unknown or incomplete option '%s'\n", a);
            free(singles);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "kiln run: no model given\n");
        free(singles);
        return 2;
    }
    kiln_session *s = cli_open(model, threads, 0, verbose);
    if (!s) { free(singles); return 1; }
    if (profile) kiln_session_start_profiling(s, profile);
    feed *feeds = NULL;
    int n = 0, rc = 1;
    char err[512];
    if (testdir && cli_load_pb_inputs(s, testdir, &feeds, &n)) goto out;
    if (npz) {
        npz_entry *ents;
        int ne;
        if (npz_read_file(npz, &ents, &ne, err, sizeof err)) {
            fprintf(stderr, "kiln: %s\n", err);
            goto out;
        }
        for (int i = 0; i < ne; i++) {
            const char *nm = strip_prefix(ents[i].name);
            if (!strncmp(ents[i].name, "out.", 4)) continue; /* reference outputs beside inputs */
            kiln_value v = {0};
            v.kind = KILN_KIND_TENSOR;
            v.t = ents[i].t;
            ents[i].t.owner = NULL;
            if (add_feed(&feeds, &n, nm, v)) { npz_free(ents, ne); goto out; }
        }
        npz_free(ents, ne);
    }
    for (int i = 0; i < n_singles; i++) {
        char *eq = strchr(singles[i], '=');
        if (!eq) {
            fprintf(stderr, "kiln run: --input needs NAME=FILE.npy, got '%s'\n", singles[i]);
            goto out;
        }
        *eq = 0;
        kiln_value v = {0};
        v.kind = KILN_KIND_TENSOR;
        if (npy_read_file(eq + 1, &v.t, err, sizeof err)) {
            fprintf(stderr, "kiln: input '%s': %s\n", singles[i], err);
            goto out;
        }
        if (add_feed(&feeds, &n, singles[i], v)) goto out;
    }
    {
        const char **names = calloc((size_t)(n ? n : 1), sizeof *names);
        kiln_value *vals = calloc((size_t)(n ? n : 1), sizeof *vals);
        size_t no = kiln_session_output_count(s);
        int *idx = calloc(no ? no : 1, sizeof(int));
        kiln_value *outs = calloc(no ? no : 1, sizeof *outs);
        for (int i = 0; i < n; i++) { names[i] = feeds[i].name; vals[i] = feeds[i].v; }
        for (size_t k = 0; k < no; k++) idx[k] = (int)k;
        double t0 = cli_now();
        kiln_status st = kiln_session_run_values_opts(s, &cli_opts.run, n, names, vals, (int)no, idx, outs);
        double t1 = cli_now();
        if (st) {
            fprintf(stderr, "kiln: %s: %s\n", model, kiln_session_error(s));
        } else {
            int no_dir = make_dirs(outdir, err, sizeof err);
            if (no_dir) fprintf(stderr, "kiln: %s\n", err);
            rc = no_dir;
            for (size_t k = 0; k < no; k++) {
                kiln_io_info info;
                kiln_session_output_info(s, k, &info);
                if (!quiet) cli_print_summary(info.name, &outs[k]);
                if (!no_dir && outs[k].kind != KILN_KIND_NONE) {
                    char path[4096], fname[1024];
                    int npy = outs[k].kind == KILN_KIND_TENSOR;
                    snprintf(fname, sizeof fname, "%s", info.name);
                    for (char *c = fname; *c; c++) if (*c == '/' || *c == '\\') *c = '_';
                    snprintf(path, sizeof path, "%s/%s.%s", outdir, fname, npy ? "npy" : "json");
                    if (npy ? npy_write_file(path, &outs[k].t, err, sizeof err)
                            : json_write_value(path, &outs[k], err, sizeof err)) {
                        fprintf(stderr, "kiln: %s\n", err);
                        rc = 1;
                    }
                }
                kiln_value_release(&outs[k]);
            }
            if (!quiet && !rc) printf("ran in %.3f ms; outputs written to %s/\n", (t1 - t0) * 1e3, outdir);
        }
        free(names); free(vals); free(idx); free(outs);
    }
out:
    for (int i = 0; i < n; i++) {
        free(feeds[i].name);
        kiln_value_release(&feeds[i].v);
    }
    free(feeds);
    free(singles);
    if (profile) {
        const char *written = kiln_session_end_profiling(s);
        if (written) fprintf(stderr, "kiln: profile written to %s\n", written);
        else fprintf(stderr, "kiln: %s\n", kiln_session_error(s));
    }
    kiln_session_close(s);
    return rc;
}
