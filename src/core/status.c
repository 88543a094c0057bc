#include "status.h"
#include <stdio.h>
#include <string.h>

static _Thread_local kiln_err last_error;

kiln_status kiln_fail(kiln_err *e, kiln_status code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

void kiln_err_prefix(kiln_err *e, const char *fmt, ...) {
    if (!e) return;
    char prefix[512], old[KILN_ERR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s: %s", prefix, old);
}

void kiln_set_last_error(const kiln_err *e) { last_error = *e; }

const char *kiln_last_error(void) { return last_error.msg; }

kiln_status kiln_last_status(void) { return last_error.code; }

const char *kiln_status_name(kiln_status st) {
    switch (st) {
    case KILN_OK: return "ok";
    case KILN_ERR_INVALID_ARGUMENT: return "invalid argument";
    case KILN_ERR_INVALID_MODEL: return "invalid model";
    case KILN_ERR_NOT_IMPLEMENTED: return "not implemented";
    case KILN_ERR_NO_MEMORY: return "out of memory";
    case KILN_ERR_IO: return "i/o error";
    case KILN_ERR_RUNTIME: return "runtime error";
    case KILN_ERR_NO_PROVIDER: return "provider unavailable";
    case KILN_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}
