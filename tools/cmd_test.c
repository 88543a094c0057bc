/* kiln test: runs ONNX test-case folders (model.onnx + test_data_set_N/{input,output}_K.pb) and
 * prints a pass/fail summary. Each case runs in a child process, so a crash or a hang (60 s) in one
 * case is reported as that case's failure instead of ending the run. */
#include "cli.h"
#include "core/dtype.h"
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>


static double tol_rel = 1e-3, tol_abs = 1e-7;

static int is_dir(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

static int has_model(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.onnx", dir);
    return !access(p, R_OK);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_dir(const char *dir, const char *prefix, char ***out) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *de;
    int n = 0, cap = 0;
    char **names = NULL;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strncmp(de->d_name, prefix, strlen(prefix))) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, (size_t)cap * sizeof *names);
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    *out = names;
    return n;
}

static int compare_tensor(const kiln_tensor *got, const kiln_tensor *want, char *why, size_t wl) {
    char a[256], b[256];
    if (got->dtype != want->dtype || !kiln_shape_equal(got, want)) {
        snprintf(why, wl, "got %s, expected %s", kiln_shape_str(got, a, sizeof a), kiln_shape_str(want, b, sizeof b));
        return 0;
    }
    int64_t n = kiln_numel(want);
    if (want->dtype == KILN_DTYPE_STRING) {
        for (int64_t i = 0; i < n; i++)
            if (!kiln_str_eq(((char *const *)got->data)[i], ((char *const *)want->data)[i])) {
                snprintf(why, wl, "string %lld: got \"%s\" (%zu bytes), expected \"%s\" (%zu bytes)", (long long)i,
                         kiln_str_bytes(((char *const *)got->data)[i]), kiln_str_len(((char *const *)got->data)[i]),
                         kiln_str_bytes(((char *const *)want->data)[i]), kiln_str_len(((char *const *)want->data)[i]));
                return 0;
            }
        return 1;
    }
    if (!kiln_dtype_size(want->dtype) || kiln_dtype_is_integer(want->dtype) || want->dtype == KILN_DTYPE_BOOL ||
        (want->dtype >= KILN_DTYPE_FLOAT8E4M3FN && want->dtype <= KILN_DTYPE_FLOAT8E5M2FNUZ)) {
        size_t bytes = kiln_tensor_nbytes(want);
        if (bytes && memcmp(got->data, want->data, bytes)) {
            for (int64_t i = 0; i < n; i++)
                if (kiln_load_f64(want->dtype, got->data, i) != kiln_load_f64(want->dtype, want->data, i) &&
                    !(isnan(kiln_load_f64(want->dtype, got->data, i)) && isnan(kiln_load_f64(want->dtype, want->data, i)))) {
                    snprintf(why, wl, "element %lld: got %g, expected %g", (long long)i,
                             kiln_load_f64(want->dtype, got->data, i), kiln_load_f64(want->dtype, want->data, i));
                    return 0;
                }
            if (kiln_dtype_size(want->dtype) && !(want->dtype >= KILN_DTYPE_FLOAT8E4M3FN)) {
                snprintf(why, wl, "bytes differ");
                return 0;
            }
        }
        return 1;
    }
    int cplx = want->dtype == KILN_DTYPE_COMPLEX64 || want->dtype == KILN_DTYPE_COMPLEX128;
    int64_t m = cplx ? 2 * n : n;
    int sub = want->dtype == KILN_DTYPE_COMPLEX64 ? KILN_DTYPE_FLOAT : want->dtype == KILN_DTYPE_COMPLEX128 ? KILN_DTYPE_DOUBLE : want->dtype;
    for (int64_t i = 0; i < m; i++) {
        double x = kiln_load_f64(sub, got->data, i), y = kiln_load_f64(sub, want->data, i);
        if (isnan(x) && isnan(y)) continue;
        if (isinf(y) && x == y) continue;
        if (!(fabs(x - y) <= tol_abs + tol_rel * fabs(y))) {
            snprintf(why, wl, "element %lld: got %.9g, expected %.9g", (long long)i, x, y);
            return 0;
        }
    }
    return 1;
}

static int compare_value(const kiln_value *got, const kiln_value *want, char *why, size_t wl) {
    if (got->kind != want->kind) {
        snprintf(why, wl, "got a %s, expected a %s", got->kind == KILN_KIND_TENSOR ? "tensor" : got->kind == KILN_KIND_SEQUENCE ? "sequence" : "none",
                 want->kind == KILN_KIND_TENSOR ? "tensor" : want->kind == KILN_KIND_SEQUENCE ? "sequence" : "none");
        return 0;
    }
    if (want->kind == KILN_KIND_TENSOR) return compare_tensor(&got->t, &want->t, why, wl);
    if (want->kind == KILN_KIND_SEQUENCE) {
        if (got->seq_len != want->seq_len) {
            snprintf(why, wl, "sequence of %d, expected %d", got->seq_len, want->seq_len);
            return 0;
        }
        for (int i = 0; i < want->seq_len; i++)
            if (!compare_tensor(&got->seq[i], &want->seq[i], why, wl)) return 0;
    }
    return 1;
}

typedef cli_feed feed;

/* Runs one case in this process; writes "PASS" or "FAIL reason" into msg. */
static int run_case(const char *dir, int threads, char *msg, size_t ml) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = threads;
    kiln_session *s;
    if (kiln_session_open(path, &opt, &s)) {
        snprintf(msg, ml, "load: %s", kiln_last_error());
        return 0;
    }
    char **sets;
    int nsets = list_dir(dir, "test_data_set_", &sets), ok = 1;
    if (nsets <= 0) { snprintf(msg, ml, "no test_data_set_N folders"); kiln_session_close(s); return 0; }
    for (int k = 0; k < nsets && ok; k++) {
        char sd[4096];
        snprintf(sd, sizeof sd, "%s/%s", dir, sets[k]);
        feed *feeds = NULL;
        int nf = 0;
        if (cli_load_pb_inputs(s, sd, &feeds, &nf)) { snprintf(msg, ml, "%s: bad input files", sets[k]); ok = 0; break; }
        size_t no = kiln_session_output_count(s);
        const char **names = calloc((size_t)nf + 1, sizeof *names);
        kiln_value *vals = calloc((size_t)nf + 1, sizeof *vals), *outs = calloc(no + 1, sizeof *outs);
        int *idx = calloc(no + 1, sizeof(int));
        for (int i = 0; i < nf; i++) { names[i] = feeds[i].name; vals[i] = feeds[i].v; }
        for (size_t i = 0; i < no; i++) idx[i] = (int)i;
        if (kiln_session_run_values(s, nf, names, vals, (int)no, idx, outs)) {
            snprintf(msg, ml, "run: %s", kiln_session_error(s));
            ok = 0;
        }
        for (size_t i = 0; ok && i < no; i++) {
            char op[4096];
            snprintf(op, sizeof op, "%s/output_%zu.pb", sd, i);
            size_t size;
            void *buf = read_whole_file(op, &size);
            if (!buf) continue; /* an output without reference data is not checked */
            kiln_io_info info;
            kiln_session_output_info(s, i, &info);
            const kiln_graph_value *gv = &s->model->graph->values[s->model->graph->outputs[i]];
            int kind = gv->type.optional ? KILN_KIND_NONE : info.is_sequence ? KILN_KIND_SEQUENCE : KILN_KIND_TENSOR;
            kiln_value want;
            kiln_err e;
            if (kiln_parse_value_proto(buf, size, kind, &want, NULL, &e)) {
                snprintf(msg, ml, "%s: %s", op, e.msg);
                ok = 0;
            } else {
                char why[512];
                if (!compare_value(&outs[i], &want, why, sizeof why)) {
                    snprintf(msg, ml, "%s output '%s': %s", sets[k], info.name, why);
                    ok = 0;
                }
                kiln_value_release(&want);
            }
            free(buf);
        }
        for (size_t i = 0; i < no; i++) kiln_value_release(&outs[i]);
        for (int i = 0; i < nf; i++) { free(feeds[i].name); kiln_value_release(&feeds[i].v); }
        free(feeds); free(names); free(vals); free(outs); free(idx);
    }
    for (int k = 0; k < nsets; k++) free(sets[k]);
    free(sets);
    kiln_session_close(s);
    if (ok) snprintf(msg, ml, "PASS");
    return ok;
}

static int run_isolated(const char *dir, int threads, char *msg, size_t ml) {
    int fds[2];
    if (pipe(fds)) return run_case(dir, threads, msg, ml);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { close(fds[0]); close(fds[1]); return run_case(dir, threads, msg, ml); }
    if (pid == 0) {
        close(fds[0]);
        alarm(60);
        char m[2048];
        int ok = run_case(dir, threads, m, sizeof m);
        ssize_t w = write(fds[1], m, strlen(m) + 1);
        (void)w;
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got < ml - 1 && (r = read(fds[0], msg + got, ml - 1 - got)) > 0) got += (size_t)r;
    msg[got] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
        snprintf(msg, ml, "crashed with signal %d (%s)", WTERMSIG(status), WTERMSIG(status) == SIGALRM ? "timeout" : strsignal(WTERMSIG(status)));
        return 0;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* One name a line, '#' starts a comment. A name written "?name" is a case whose outcome is random
 * (unseeded random ops compared with numpy's draws): it stays a known failure even when it passes
 * by chance, so it is never counted as passing nor reported as a change; random[k] marks those. */
static char **read_list(const char *path, int *n, unsigned char **random) {
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char line[1024], **names = NULL;
    unsigned char *rnd = NULL;
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        char *h = strchr(line, '#');
        if (h) *h = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
        if (!*s) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            names = realloc(names, (size_t)cap * sizeof *names);
            rnd = realloc(rnd, (size_t)cap);
        }
        rnd[*n] = *s == '?';
        names[(*n)++] = strdup(*s == '?' ? s + 1 : s);
    }
    fclose(f);
    *random = rnd;
    return names;
}

int cmd_test(int argc, char **argv) {
    const char *expect = NULL, *write_failures = NULL;
    int quiet = 0, threads = 1;
    char **dirs = calloc((size_t)argc, sizeof(char *));
    int nd = 0;
    for (int i = 1; i < argc; i++) {
        int more = i + 1 < argc;
        if (!strcmp(argv[i], "--expect-fail") && more) expect = argv[++i];
        else if (!strcmp(argv[i], "--write-failures") && more) write_failures = argv[++i];
        else if (!strcmp(argv[i], "--rtol") && more) tol_rel = atof(argv[++i]);
        else if (!strcmp(argv[i], "--atol") && more) tol_abs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else if (argv[i][0] != '-') dirs[nd++] = argv[i];
        else { fprintf(stderr, "kiln test: unknown option '%s'\n", argv[i]); free(dirs); return 2; }
    }
    if (!nd) { fprintf(stderr, "kiln test: no test folders given\n"); free(dirs); return 2; }
    int n_expect = 0;
    unsigned char *random = NULL;
    char **expected = expect ? read_list(expect, &n_expect, &random) : NULL;
    if (expect && !expected && access(expect, R_OK)) {
        fprintf(stderr, "kiln test: cannot read '%s'\n", expect);
        free(dirs);
        return 2;
    }
    FILE *wf = write_failures ? fopen(write_failures, "w") : NULL;
    int passed = 0, failed = 0, xfail = 0, xpass = 0;
    for (int d = 0; d < nd; d++) {
        char **cases = NULL;
        int nc;
        const char *base = dirs[d];
        int single = has_model(base);
        if (single) {
            nc = 1;
        } else {
            nc = list_dir(base, "", &cases);
            if (nc < 0) { fprintf(stderr, "kiln test: cannot read folder '%s'\n", base); continue; }
        }
        for (int c = 0; c < nc; c++) {
            char dir[4096];
            if (single) snprintf(dir, sizeof dir, "%s", base);
            else snprintf(dir, sizeof dir, "%s/%s", base, cases[c]);
            if (!is_dir(dir) || !has_model(dir)) continue;
            char *slash = strrchr(dir, '/');
            const char *name = slash && slash[1] ? slash + 1 : dir;
            while (slash && !slash[1] && slash > dir) { *slash = 0; slash = strrchr(dir, '/'); name = slash ? slash + 1 : dir; }
            int listed = 0, chance = 0;
            for (int k = 0; k < n_expect; k++)
                if (!strcmp(expected[k], name)) listed = 1, chance |= random[k];
            char msg[2048];
            int ok = run_isolated(dir, threads, msg, sizeof msg);
            if (ok && !listed) passed++;
            else if (ok && chance) { xfail++; if (!quiet) printf("xfail %s: passed by chance (random outcome), not counted\n", name); }
            else if (ok && listed) { passed++; xpass++; printf("XPASS %s (listed as failing: remove it from %s)\n", name, expect); }
            else if (listed) { xfail++; if (!quiet) printf("xfail %s: %s\n", name, msg); }
            else { failed++; printf("FAIL %s: %s\n", name, msg); }
            if (!ok && wf) fprintf(wf, "%s\n", name);
            if (ok && !quiet && !listed) printf("ok   %s\n", name);
        }
        for (int c = 0; c < (single ? 0 : nc); c++) free(cases[c]);
        free(cases);
    }
    if (wf) fclose(wf);
    for (int k = 0; k < n_expect; k++) free(expected[k]);
    free(expected);
    free(random);
    free(dirs);
    int total = passed + failed + xfail;
    printf("%d of %d test cases pass (%.1f%%); %d known failures listed, %d listed ones now pass\n", passed, total,
           total ? 100.0 * passed / total : 0.0, xfail, xpass);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
