/* kiln bench --plot: draws into an RGB buffer (filled rectangles and a 5x7 bitmap font, upper case
 * only) and saves it with libpng; a build without libpng fails with a message instead. */
#include "plot.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#ifdef KILN_HAVE_PNG   /* to the end of write_png: the drawing is only reachable with libpng */
#include <png.h>

enum { W = PLOT_WIDTH, H = PLOT_HEIGHT, MAX_ROWS = 12, BINS = 40, PROFILED_RUNS = 20 };

typedef struct rgb { unsigned char r, g, b; } rgb;
static const rgb WHITE = {255, 255, 255}, INK = {40, 40, 48}, GRID = {225, 225, 232},
                 BLUE = {70, 120, 190}, ORANGE = {230, 140, 50}, GREEN = {40, 150, 80}, RED = {200, 50, 50};

typedef struct canvas { unsigned char *px; } canvas;

static void fill(canvas *c, int x0, int y0, int w, int h, rgb col) {
    for (int y = y0 < 0 ? 0 : y0; y < y0 + h && y < H; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x0 + w && x < W; x++) {
            unsigned char *p = c->px + ((size_t)y * W + x) * 3;
            p[0] = col.r, p[1] = col.g, p[2] = col.b;
        }
}

/* 5x7 glyphs, one byte a row, bit 4 the leftmost column; GLYPHS[i] draws FONT_CHARS[i] */
static const char FONT_CHARS[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:%-/()_=+<>#?";
static const unsigned char GLYPHS[][7] = {
    {14, 17, 19, 21, 25, 17, 14}, {4, 12, 4, 4, 4, 4, 14},     {14, 17, 1, 2, 4, 8, 31},
    {31, 2, 4, 2, 1, 17, 14},     {2, 6, 10, 18, 31, 2, 2},    {31, 16, 30, 1, 1, 17, 14},
    {6, 8, 16, 30, 17, 17, 14},   {31, 1, 2, 4, 8, 8, 8},      {14, 17, 17, 14, 17, 17, 14},
    {14, 17, 17, 15, 1, 2, 12},   /* A */ {14, 17, 17, 17, 31, 17, 17}, {30, 17, 17, 30, 17, 17, 30},
    {14, 17, 16, 16, 16, 17, 14}, {28, 18, 17, 17, 17, 18, 28}, {31, 16, 16, 30, 16, 16, 31},
    {31, 16, 16, 30, 16, 16, 16}, {14, 17, 16, 23, 17, 17, 15}, {17, 17, 17, 31, 17, 17, 17},
    {14, 4, 4, 4, 4, 4, 14},      {7, 2, 2, 2, 2, 18, 12},     {17, 18, 20, 24, 20, 18, 17},
    {16, 16, 16, 16, 16, 16, 31}, {17, 27, 21, 21, 17, 17, 17}, {17, 17, 25, 21, 19, 17, 17},
    {14, 17, 17, 17, 17, 17, 14}, {30, 17, 17, 30, 16, 16, 16}, {14, 17, 17, 17, 21, 18, 13},
    {30, 17, 17, 30, 20, 18, 17}, {15, 16, 16, 14, 1, 1, 30},  {31, 4, 4, 4, 4, 4, 4},
    {17, 17, 17, 17, 17, 17, 14}, {17, 17, 17, 17, 17, 10, 4}, {17, 17, 17, 21, 21, 21, 10},
    {17, 17, 10, 4, 10, 17, 17},  {17, 17, 17, 10, 4, 4, 4},   {31, 1, 2, 4, 8, 16, 31},
    /* . */ {0, 0, 0, 0, 0, 12, 12}, {0, 0, 0, 0, 12, 4, 8},   {0, 12, 12, 0, 12, 12, 0},
    {24, 25, 2, 4, 8, 19, 3},     {0, 0, 0, 31, 0, 0, 0},      {0, 1, 2, 4, 8, 16, 0},
    {2, 4, 8, 8, 8, 4, 2},        {8, 4, 2, 2, 2, 4, 8},       {0, 0, 0, 0, 0, 0, 31},
    {0, 0, 31, 0, 31, 0, 0},      {0, 4, 4, 31, 4, 4, 0},      {2, 4, 8, 16, 8, 4, 2},
    {8, 4, 2, 1, 2, 4, 8},        {10, 10, 31, 10, 31, 10, 10}, {14, 17, 1, 2, 4, 0, 4},
};
_Static_assert(sizeof GLYPHS / sizeof GLYPHS[0] == sizeof FONT_CHARS - 1, "one glyph per font character");

static int text_width(const char *s, int scale) { return (int)strlen(s) * 6 * scale; }

/* Draws s with its top-left corner at (x, y); lower case is drawn as upper case, a character the
 * font lacks as '?', a space as nothing. */
static void text(canvas *c, int x, int y, const char *s, int scale, rgb col) {
    for (; *s; s++, x += 6 * scale) {
        if (*s == ' ') continue;
        const char *at = strchr(FONT_CHARS, toupper((unsigned char)*s));
        const unsigned char *g = GLYPHS[at && *at ? at - FONT_CHARS : (int)sizeof FONT_CHARS - 2];
        for (int row = 0; row < 7; row++)
            for (int col_ = 0; col_ < 5; col_++)
                if (g[row] & (16 >> col_)) fill(c, x + col_ * scale, y + row * scale, scale, scale, col);
    }
}

/* A round step (1, 2 or 5 times a power of ten) giving about n ticks over span. */
static double nice_step(double span, int n) {
    double raw = span / n, p = 1;
    while (p * 10 <= raw) p *= 10;
    while (p > raw) p /= 10;
    return raw <= p ? p : raw <= 2 * p ? 2 * p : raw <= 5 * p ? 5 * p : 10 * p;
}

static void fmt_ms(char *buf, size_t cap, double v) {
    snprintf(buf, cap, v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : v >= 1 ? "%.2f" : "%.3g", v);
}

/* A tick value with as many decimals as the step needs (0.0002 -> 4). */
static void fmt_tick(char *buf, size_t cap, double v, double step) {
    int d = 0;
    for (double p = step; p < 0.999 && d < 9; p *= 10) d++;
    snprintf(buf, cap, "%.*f", d, v);
}

/* Text on a white box, readable over bars and grid lines. */
static void label(canvas *c, int x, int y, const char *s, rgb col) {
    fill(c, x - 2, y - 2, text_width(s, 2) + 2, 18, WHITE);
    text(c, x, y, s, 2, col);
}

static int pct(int runs, double q) { int i = (int)(runs * q); return i < runs ? i : runs - 1; }

/* Panel 1: latency histogram with p50 and p99 marked. Far-out runs (past Tukey's fence or twice
 * the p95, but never more than a tenth of them) would squeeze the rest into one bar, as a stall of
 * a busy machine does: they are counted in a red last bar, and the percentiles written out above. */
static void draw_histogram(canvas *c, const double *lat, int runs, int top) {
    const int x0 = 80, x1 = W - 40, y0 = top + 40, y1 = top + 280;
    text(c, 40, top, "LATENCY PER RUN (MS)", 2, INK);
    char buf[96], v[4][32];
    const double q[4] = {lat[pct(runs, 0.5)], lat[pct(runs, 0.9)], lat[pct(runs, 0.99)], lat[runs - 1]};
    for (int k = 0; k < 4; k++) fmt_ms(v[k], sizeof v[k], q[k]);
    snprintf(buf, sizeof buf, "P50 %s  P90 %s  P99 %s  MAX %s", v[0], v[1], v[2], v[3]);
    text(c, x1 - text_width(buf, 2), top, buf, 2, INK);
    double lo = lat[0], hi = lat[runs - 1], p75 = lat[pct(runs, 0.75)];
    double cap = p75 + 3 * (p75 - lat[pct(runs, 0.25)]);   /* Tukey's far-out fence */
    if (cap > 2 * lat[pct(runs, 0.95)]) cap = 2 * lat[pct(runs, 0.95)];
    if (cap < q[1]) cap = q[1];   /* at most a tenth of the runs in the red bar */
    if (hi > cap && cap > lo) hi = cap;
    if (hi - lo < 1e-9) lo -= 0.5e-3, hi += 0.5e-3;
    double step = nice_step(hi - lo, 6);
    lo = step * (double)(long long)(lo / step);   /* axis starts on a tick */
    if (lo > lat[0]) lo -= step;
    hi = lo + step * (double)(long long)((hi - lo) / step + 1);
    int count[BINS] = {0}, most = 0, over = 0;
    for (int r = 0; r < runs; r++) {
        int b = (int)((lat[r] - lo) / (hi - lo) * BINS);
        over += lat[r] > hi;
        b = b < 0 ? 0 : b >= BINS ? BINS - 1 : b;
        if (++count[b] > most) most = count[b];
    }
    int ystep = (int)(nice_step(most, 5) + 0.5);   /* run counts on round grid lines */
    if (ystep < 1) ystep = 1;
    int lines = (most + ystep - 1) / ystep;
    most = lines * ystep;
    for (int k = 0; k <= lines; k++) {
        int y = y1 - (y1 - y0) * k / lines;
        fill(c, x0, y, x1 - x0, 1, GRID);
        snprintf(buf, sizeof buf, "%d", ystep * k);
        text(c, x0 - 10 - text_width(buf, 2), y - 7, buf, 2, INK);
    }
    int bw = (x1 - x0) / BINS;
    for (int b = 0; b < BINS; b++) {
        int h = (int)((double)count[b] / most * (y1 - y0));
        fill(c, x0 + b * bw + 1, y1 - h, bw - 2, h, BLUE);
    }
    if (over) {
        int h = (int)((double)over / most * (y1 - y0));
        fill(c, x0 + (BINS - 1) * bw + 1, y1 - (h > 2 ? h : 2), bw - 2, h > 2 ? h : 2, RED);
    }
    fill(c, x0, y1, x1 - x0, 2, INK);
    fill(c, x0, y0, 2, y1 - y0 + 2, INK);
    for (double t = lo; t <= hi + step * 1e-6; t += step) {   /* x ticks in ms */
        int x = x0 + (int)((t - lo) / (hi - lo) * (bw * BINS));
        fill(c, x, y1, 2, 8, INK);
        fmt_tick(buf, sizeof buf, t, step);
        int tx = x - text_width(buf, 2) / 2;
        text(c, tx + text_width(buf, 2) > W - 4 ? W - 4 - text_width(buf, 2) : tx, y1 + 14, buf, 2, INK);
    }
    const struct { int i; const char *name; rgb col; } marks[2] = {{0, "P50", GREEN}, {2, "P99", RED}};
    for (int m = 0; m < 2; m++) {
        if (q[marks[m].i] > hi) continue;   /* off the axis: written above only */
        int x = x0 + (int)((q[marks[m].i] - lo) / (hi - lo) * (bw * BINS));
        for (int y = y0; y < y1; y += 8) fill(c, x, y, 2, 4, marks[m].col);
        snprintf(buf, sizeof buf, "%s %s", marks[m].name, v[marks[m].i]);
        label(c, x + 6 + text_width(buf, 2) > x1 ? x - 6 - text_width(buf, 2) : x + 6, y0 + m * 20, buf,
              marks[m].col);
    }
    if (over) {   /* last: over the marker lines */
        char at[32];
        fmt_tick(at, sizeof at, hi, step);
        snprintf(buf, sizeof buf, "%d RUN%s OVER %s MS: RED BAR", over, over > 1 ? "S" : "", at);
        label(c, x1 - text_width(buf, 2), y0 + 64, buf, RED);
    }
}

typedef struct op_time { const char *op; double seconds; } op_time;

static int by_seconds(const void *a, const void *b) {
    double x = ((const op_time *)a)->seconds, y = ((const op_time *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Panel 2: one bar per op type, the slowest first, the rest summed into one row. */
static void draw_ops(canvas *c, op_time *ops, int n, int prof_runs, int top) {
    const int label_w = 20 * 12, x0 = 40 + label_w + 10, x1 = W - 260, row_h = 22;
    char title[64];
    snprintf(title, sizeof title, "TIME BY OP TYPE (MEDIAN OF %d RUNS: MS, SHARE)", prof_runs);
    text(c, 40, top, title, 2, INK);
    double total = 0;
    for (int i = 0; i < n; i++) total += ops[i].seconds;
    if (n == 0 || total <= 0) {
        text(c, 40, top + 40, "NO OP TIMES RECORDED", 2, INK);
        return;
    }
    qsort(ops, (size_t)n, sizeof *ops, by_seconds);
    char other[32];
    if (n > MAX_ROWS) {   /* fold the tail into the last row */
        for (int i = MAX_ROWS; i < n; i++) ops[MAX_ROWS - 1].seconds += ops[i].seconds;
        snprintf(other, sizeof other, "%d OTHER OPS", n - MAX_ROWS + 1);
        ops[MAX_ROWS - 1].op = other;
        n = MAX_ROWS;
    }
    double most = ops[0].seconds;
    for (int i = 0; i < n; i++) if (ops[i].seconds > most) most = ops[i].seconds;
    for (int i = 0; i < n; i++) {
        int y = top + 36 + i * row_h;
        char name[21], buf[64], ms[32];
        snprintf(name, sizeof name, "%s", ops[i].op);   /* cut to 20 characters */
        text(c, 40 + label_w - text_width(name, 2), y + 3, name, 2, INK);
        int w = (int)(ops[i].seconds / most * (x1 - x0));
        fill(c, x0, y, w > 1 ? w : 1, row_h - 4, ORANGE);
        fmt_ms(ms, sizeof ms, ops[i].seconds * 1e3);
        snprintf(buf, sizeof buf, "%s  %.1f%%", ms, 100.0 * ops[i].seconds / total);
        text(c, x0 + w + 8, y + 3, buf, 2, INK);
    }
    fill(c, x0 - 2, top + 32, 2, n * row_h + 2, INK);
}

static int cmp_seconds(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Seconds per op type spent since the plot's runs began, from the session's per-op counters
 * (KILN_PROFILE's, which it may already have been counting: `before` is subtracted), or from the
 * trace's node events when --profile traces the runs instead (runner.c). Entries keep their order
 * from call to call: both sources only append. */
typedef struct op_sampler {
    const kiln_session *s;
    struct kiln_op_profile before[sizeof ((kiln_session *)0)->prof / sizeof ((kiln_session *)0)->prof[0]];
    int n_before;
    size_t ev_before;
} op_sampler;

static int op_totals(const op_sampler *sm, op_time *ops, int cap) {
    const kiln_session *s = sm->s;
    int n = 0;
    if (!s->trace.path) {
        for (; n < s->n_prof && n < cap; n++)
            ops[n] = (op_time){s->prof[n].op, s->prof[n].seconds - (n < sm->n_before ? sm->before[n].seconds : 0)};
        return n;
    }
    for (size_t e = sm->ev_before; e < s->trace.n; e++) {
        const kiln_trace_event *ev = &s->trace.ev[e];
        if (!ev->op) continue;   /* the run's own event */
        int i = 0;
        while (i < n && strcmp(ops[i].op, ev->op)) i++;
        if (i == n) {
            if (n == cap) continue;
            ops[n++] = (op_time){ev->op, 0};
        }
        ops[i].seconds += ev->dur_us * 1e-6;
    }
    return n;
}

static int write_png(const char *path, const unsigned char *px) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!p || !info || setjmp(png_jmpbuf(p))) {   /* libpng reports errors by longjmp */
        png_destroy_write_struct(&p, &info);
        fclose(f);
        return -1;
    }
    png_init_io(p, f);
    png_set_IHDR(p, info, W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < H; y++) png_write_row(p, (png_const_bytep)(px + (size_t)y * W * 3));
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    return fclose(f) ? -1 : 0;
}
#endif

int bench_plot(const char *png, kiln_session *s, const char *model, const double *lat_ms, int runs,
               int ni, const char **names, const kiln_value *vals, int no, const int *idx, kiln_value *outs) {
#ifndef KILN_HAVE_PNG
    (void)s, (void)model, (void)lat_ms, (void)runs, (void)ni, (void)names, (void)vals, (void)no, (void)idx,
        (void)outs;
    fprintf(stderr, "kiln bench: --plot %s: this kiln was built without libpng (apt-get install libpng-dev, "
                    "then rebuild)\n", png);
    return 1;
#else
    fflush(stdout);   /* bench's report first, then ours on stderr */
    enum { CAP = sizeof s->prof / sizeof s->prof[0] };
    op_time prev[CAP], now[CAP], ops[CAP];
    double *per_run = calloc((size_t)PROFILED_RUNS * CAP, sizeof *per_run);   /* [run][op] seconds */
    if (!per_run) { fprintf(stderr, "kiln bench: out of memory\n"); return 1; }
    op_sampler sm = {s, {{0}}, s->n_prof, s->trace.n};
    memcpy(sm.before, s->prof, sizeof sm.before);
    int was = s->profile, n_prev = 0, n = 0;
    s->profile = 1;
    int prof_runs = runs < PROFILED_RUNS ? runs : PROFILED_RUNS;
    for (int r = 0; r < prof_runs; r++) {
        if (kiln_session_run_values_opts(s, &cli_opts.run, ni, names, vals, no, idx, outs)) {
            fprintf(stderr, "kiln: %s: %s\n", model, kiln_session_error(s));
            s->profile = was;
            free(per_run);
            return 1;
        }
        for (int k = 0; k < no; k++) kiln_value_release(&outs[k]);
        n = op_totals(&sm, now, CAP);
        for (int i = 0; i < n; i++) per_run[(size_t)r * CAP + i] = now[i].seconds - (i < n_prev ? prev[i].seconds : 0);
        memcpy(prev, now, sizeof now);
        n_prev = n;
    }
    s->profile = was;
    /* the median run of each op: a stall of the machine in one run does not move it */
    double col[PROFILED_RUNS];
    for (int i = 0; i < n; i++) {
        for (int r = 0; r < prof_runs; r++) col[r] = per_run[(size_t)r * CAP + i];
        qsort(col, (size_t)prof_runs, sizeof col[0], cmp_seconds);
        ops[i] = (op_time){now[i].op, col[prof_runs / 2]};
    }
    free(per_run);

    canvas c = {malloc((size_t)W * H * 3)};
    if (!c.px) { fprintf(stderr, "kiln bench: out of memory\n"); return 1; }
    fill(&c, 0, 0, W, H, WHITE);
    const char *base = strrchr(model, '/');
    char title[80];
    snprintf(title, sizeof title, "KILN BENCH  %s  (%d RUNS)", base ? base + 1 : model, runs);
    text(&c, 40, 16, title, 2, INK);
    draw_histogram(&c, lat_ms, runs, 56);
    draw_ops(&c, ops, n, prof_runs, 56 + 340);
    int rc = write_png(png, c.px);
    free(c.px);
    if (rc) { fprintf(stderr, "kiln bench: could not write %s\n", png); return 1; }
    fprintf(stderr, "kiln: plot written to %s\n", png);
    return 0;
#endif
}
