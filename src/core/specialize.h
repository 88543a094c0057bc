/* Shape specialisation (specialize.c): children of a session with the symbolic dimensions of one
 * input shape fixed, opened on the second run of that shape and run in its place. */
#ifndef KILN_SPECIALIZE_H
#define KILN_SPECIALIZE_H

#include "session.h"

/* 1 when s's options ask for specialisation and its inputs have symbolic dimensions (at open,
 * before placement: the device-constant cache is made for such sessions). */
int kiln_spec_wanted(const kiln_session *s);
/* At the end of open: makes s's table, or says (verbose) why s cannot specialise.
 * init_overrides: the caller supplied initializers, which a child could not load again. */
void kiln_spec_init(kiln_session *s, int init_overrides);
/* Closes every child and frees the table (at close: no run is in flight). */
void kiln_spec_free(kiln_session *s);
/* The child to run this run's inputs (slots, by graph input) on, held for the run; NULL: run the
 * generic plan. May open the child now (the second run of a shape). */
kiln_session *kiln_spec_take(kiln_session *s, const kiln_value *slots);
/* Gives the child back after the run; failed: the child's run failed where the generic plan
 * then succeeded, so the shape is not specialised again. */
void kiln_spec_give(kiln_session *s, kiln_session *child, int failed);
/* Frees the idle memory of every child (kiln_session_release_memory). */
void kiln_spec_release_memory(kiln_session *s);

#endif
