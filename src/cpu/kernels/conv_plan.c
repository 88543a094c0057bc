/* How a convolution's work is cut into items for the thread pool, and a report of the cut
 * (KILN_DEBUG_PARTITION=1). The pool hands out items in index order to whichever thread is free,
 * so a run takes about ceil(items / threads) items of the largest size: 22 items for 16 threads
 * leave 10 threads idle through the second round, and one tile of 128 columns next to one of 68
 * makes every thread wait for the wide ones. The planner therefore splits row panels and column
 * panels evenly (block sizes differ by at most one panel) and picks the counts whose estimated
 * run time, extra packing included, is least. */
#include "conv_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* weight of blocks [b*P/n, (b+1)*P/n): the largest holds ceil(P/n) panels; the one holding the
 * last panel may be lighter (a partial panel), which only helps */
static double largest_block(int64_t P, int64_t n) { return (double)((P + n - 1) / n); }

static double estimate(const kconv_plan_in *in, int64_t nr, int64_t nc, double *total_out) {
    double rmax = largest_block(in->row_panels, nr), cmax = largest_block(in->col_units, nc);
    double rw = in->row_panels - 1 + in->last_row, cw = (in->col_units - 1 + in->last_col);
    double u = (double)in->units;
    /* work, plus what splitting repeats: each row block repacks its columns, each column tile
     * streams its rows' weights, each item has a fixed cost */
    double total = u * (rw * cw * in->col_weight + nr * in->pack * cw * in->col_weight +
                        nc * in->stream * rw + nr * nc * in->fixed);
    double smax = rmax * cmax * in->col_weight + in->pack * cmax * in->col_weight +
                  in->stream * rmax + in->fixed;
    int64_t items = in->units * nr * nc, nt = in->threads;
    double rounds = (double)((items + nt - 1) / nt) * smax;
    int even = in->row_panels % nr == 0 && in->col_units % nc == 0 && in->last_row == 1.0 &&
               in->last_col == 1.0;
    double graham = (total + (double)(nt - 1) * smax) / (double)nt;
    *total_out = total;
    return even || rounds < graham ? rounds : graham;
}

#define PLAN_CACHE 64
typedef struct plan_slot {
    kconv_plan_in in;
    kconv_plan out;
    int used;
} plan_slot;
static _Thread_local plan_slot plan_cache[PLAN_CACHE];

static unsigned plan_hash(const kconv_plan_in *in) {
    const unsigned char *p = (const unsigned char *)in;
    unsigned h = 2166136261u;
    for (size_t i = 0; i < sizeof *in; i++) h = (h ^ p[i]) * 16777619u;
    return h % PLAN_CACHE;
}

kconv_plan kconv_plan_split(const kconv_plan_in *in_arg) {
    kconv_plan_in in = *in_arg;
    kconv_plan best = {1, in.nc_min, 0, 0};
    if (in.nr_min < 1) in.nr_min = 1;
    if (in.nr_max > in.row_panels) in.nr_max = in.row_panels;
    if (in.nr_max < in.nr_min) in.nr_max = in.nr_min;
    if (in.nc_min < 1) in.nc_min = 1;
    if (in.nc_min > in.col_units) in.nc_min = in.col_units;
    if (in.threads < 1) in.threads = 1;
    best.nr = in.nr_min;
    best.nc = in.nc_min;
    if (in.threads == 1 || in.units <= 0 || in.row_panels <= 0 || in.col_units <= 0) {
        best.items = in.units * best.nr * best.nc;
        return best;
    }
    plan_slot *slot = &plan_cache[plan_hash(&in)];
    if (slot->used && !memcmp(&slot->in, &in, sizeof in)) return slot->out;
    double best_est = -1.0;
    int64_t cap = 16 * (int64_t)in.threads; /* beyond this many items, only overheads grow */
    for (int64_t nr = in.nr_min; nr <= in.nr_max; nr++) {
        int64_t prev_tile = -1;
        for (int64_t nc = in.nc_min; nc <= in.col_units; nc++) {
            int64_t items = in.units * nr * nc;
            if (items > cap && nc > in.nc_min) break;
            int64_t tile = (in.col_units + nc - 1) / nc;
            /* the same largest tile with more items never runs faster */
            if (tile == prev_tile) continue;
            prev_tile = tile;
            double total, est = estimate(&in, nr, nc, &total);
            /* a plan must beat the best by 1% to be worth its extra items */
            if (best_est < 0 || est < best_est * 0.99) {
                best_est = est;
                best.nr = nr;
                best.nc = nc;
                best.est = est;
                best.ideal = total / in.threads;
            }
        }
        if (in.units * nr * in.nc_min > cap) break;
    }
    best.items = in.units * best.nr * best.nc;
    slot->in = in;
    slot->out = best;
    slot->used = 1;
    return best;
}

int kconv_debug_partition(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        const char *e = getenv("KILN_DEBUG_PARTITION");
        cached = e && *e && strcmp(e, "0") ? 1 : 0;
    }
    return cached;
}

/* Replays the pool's schedule (chunks of grain items in index order, each to the thread that is
 * free first) with each item's cost from item_cost, and prints one line. */
void kconv_report_partition(const char *path, const kconv_geom *g, int nt, int64_t items,
                            int64_t grain, double (*item_cost)(const void *, int64_t),
                            const void *arg, double repack) {
    if (items <= 0) return;
    if (grain < 1) grain = 1;
    if (nt < 1) nt = 1;
    double *busy = calloc((size_t)nt, sizeof(double));
    if (!busy) return;
    double total = 0, lo = -1, hi = 0;
    for (int64_t i0 = 0; i0 < items; i0 += grain) {
        double c = 0;
        for (int64_t i = i0; i < i0 + grain && i < items; i++) {
            double v = item_cost(arg, i);
            c += v;
            if (lo < 0 || v < lo) lo = v;
            if (v > hi) hi = v;
        }
        int t = 0;
        for (int k = 1; k < nt; k++)
            if (busy[k] < busy[t]) t = k;
        busy[t] += c;
        total += c;
    }
    double span = 0;
    for (int k = 0; k < nt; k++)
        if (busy[k] > span) span = busy[k];
    free(busy);
    char sx[64] = "", sy[64] = "", sk[64] = "";
    for (int d = 0; d < g->nd; d++) {
        size_t a = strlen(sx), b = strlen(sy), c = strlen(sk);
        snprintf(sx + a, sizeof sx - a, "%s%lld", d ? "x" : "", (long long)g->in[d]);
        snprintf(sy + b, sizeof sy - b, "%s%lld", d ? "x" : "", (long long)g->out[d]);
        snprintf(sk + c, sizeof sk - c, "%s%llds%lld", d ? "x" : "", (long long)g->k[d],
                 (long long)g->stride[d]);
    }
    fprintf(stderr,
            "kiln-partition path=%s N=%lld C=%lld in=%s M=%lld out=%s k=%s group=%lld threads=%d "
            "items=%lld grain=%lld per_thread=%.1f item_mmac_min=%.3f item_mmac_max=%.3f "
            "balance=%.3f repack=%.2f\n",
            path, (long long)g->N, (long long)g->C, sx, (long long)g->M, sy, sk,
            (long long)g->group, nt, (long long)items, (long long)grain, (double)items / nt,
            lo / 1e6, hi / 1e6, span > 0 ? total / nt / span : 1.0, repack);
}
