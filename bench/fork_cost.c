/* The cost of one parallel-for on kiln's pool (src/cpu/threadpool.c), in microseconds: a job of
 * one item per thread, each item busy for ITEM_US, timed whole minus ITEM_US (the time it would
 * take if every thread started its item at once). Run back to back (workers spinning, as between
 * the nodes of a model) and after 1 ms idle (workers asleep on the condition variable, as after
 * a pause between runs). Items must take some time, or the caller finishes the job alone before
 * any worker joins and the figure says nothing. A node whose work is below a few times the
 * back-to-back figure gains little from forking.
 *   cc -O2 -Isrc bench/fork_cost.c -Lbuild -lkiln -Wl,-rpath,$PWD/build -o /tmp/fork_cost
 *   /tmp/fork_cost 1 2 4 8 16 */
#include "cpu/threadpool.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

#define ITEM_US 5.0

static void busy(void *arg, int64_t b, int64_t e) {
    (void)arg;
    for (int64_t i = b; i < e; i++) {
        double t0 = now_us();
        while (now_us() - t0 < ITEM_US) {}
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median of reps jobs, each timed alone */
static double job_us(kiln_threadpool *tp, int n, int reps, int idle_us) {
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        if (idle_us) {
            struct timespec ts = {0, idle_us * 1000L};
            nanosleep(&ts, NULL);
        }
        double t0 = now_us();
        kiln_threadpool_run(tp, n, 1, busy, NULL);
        t[r] = now_us() - t0 - ITEM_US;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp);
    double m = t[reps / 2];
    free(t);
    return m;
}

int main(int argc, char **argv) {
    printf("| threads | back to back (us) | after 1 ms idle (us) |\n|---|---|---|\n");
    for (int a = 1; a < argc; a++) {
        int nt = atoi(argv[a]);
        kiln_threadpool *tp = kiln_threadpool_create(nt);
        if (!tp) return 1;
        job_us(tp, nt, 1000, 0); /* warm-up: threads started and spinning */
        double hot = job_us(tp, nt, 5000, 0), cold = job_us(tp, nt, 300, 1000);
        printf("| %d | %.2f | %.2f |\n", nt, hot, cold);
        kiln_threadpool_destroy(tp);
    }
    return 0;
}
