/* Error reporting inside kiln: a status code plus a message buffer. A failing function fills the
 * buffer with kiln_fail() and returns the code; callers higher up may prefix context (the node). */
#ifndef KILN_STATUS_H
#define KILN_STATUS_H

#include "kiln.h"
#include <stdarg.h>

#define KILN_ERR_MSG_LEN 1024

typedef struct kiln_err {
    kiln_status code;
    char msg[KILN_ERR_MSG_LEN];
} kiln_err;

#if defined(__GNUC__)
#define KILN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KILN_PRINTF(a, b)
#endif

/* Sets e (if not NULL) and returns code. */
kiln_status kiln_fail(kiln_err *e, kiln_status code, const char *fmt, ...) KILN_PRINTF(3, 4);
/* Puts "prefix: " in front of the message already in e. */
void kiln_err_prefix(kiln_err *e, const char *fmt, ...) KILN_PRINTF(2, 3);
/* Records the thread's last error (what kiln_last_error returns). */
void kiln_set_last_error(const kiln_err *e);

#define KILN_TRY(expr)                                                                              \
    do {                                                                                            \
        kiln_status kiln_try_st_ = (expr);                                                          \
        if (kiln_try_st_ != KILN_OK) return kiln_try_st_;                                           \
    } while (0)

#endif
