/* Graph capture and replay of a signature's device work (capture.c). */
#ifndef KILN_CAPTURE_H
#define KILN_CAPTURE_H

#include "session.h"

typedef struct kiln_capture {
    kiln_provider *dev;
    void *graph;            /* the provider's recording; NULL until recorded */
    int failed;             /* recording is not possible for this signature */
    int n_in, n_out;
    void **in_stage;        /* fixed device buffers the inputs are copied into before each replay */
    kiln_tensor *out_stage; /* fixed device buffers of the graph outputs (types from a planned run) */
} kiln_capture;

/* At open: fails, naming the node, unless every node runs on a device that can record. */
kiln_status kiln_capture_check(kiln_session *s, kiln_err *e);
/* After a planned run: remembers the graph outputs' types (outs[i] for graph output i). */
void kiln_capture_note_outputs(kiln_session *s, kiln_plan *p, const kiln_value *const *outs, int n);
/* Runs signature p from its recording (recording it first, in the arena set the run holds, when
 * it can). *done = 0: the run must go the normal way. Runs of a device session come one at a
 * time (session.c's dev_mu), so the plan's one arena set is the one every replay finds. */
kiln_status kiln_capture_run(kiln_session *s, kiln_plan *p, kiln_arena_set *arena, kiln_value *slots, int n_out,
                             const int *out_idx, kiln_value *outputs, int *done, kiln_err *e);
void kiln_capture_free(kiln_plan *p);

#endif
