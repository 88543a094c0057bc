/* kiln bench --plot: a latency histogram and a per-op time breakdown in one PNG. */
#ifndef KILN_TOOLS_PLOT_H
#define KILN_TOOLS_PLOT_H

#include "cli.h"

enum { PLOT_WIDTH = 960, PLOT_HEIGHT = 720 };

/* Writes `png`: the histogram of lat_ms (runs latencies in milliseconds, sorted ascending) and the
 * time per op type (each op's median over a few more runs of the same inputs with per-op timing
 * on, so the timed runs above stay untouched by it). Returns 0, or 1 after printing why (no libpng
 * in this build, a failed run, an unwritable file). */
int bench_plot(const char *png, kiln_session *s, const char *model, const double *lat_ms, int runs,
               int ni, const char **names, const kiln_value *vals, int no, const int *idx, kiln_value *outs);

#endif
