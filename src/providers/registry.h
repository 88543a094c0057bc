/* The providers a session can ask for, and how each is opened: the CPU is built in; the others
 * are shared libraries loaded only when a session asks for them. */
#ifndef KILN_PROVIDERS_REGISTRY_H
#define KILN_PROVIDERS_REGISTRY_H

#include "../core/provider.h"
#include "kiln.h"

enum { KILN_MAX_PROVIDERS = 4 };

typedef struct kiln_provider_set {
    kiln_provider *ep[KILN_MAX_PROVIDERS]; /* [0] is the CPU, then the others in preference order */
    int n;
    struct kiln_threadpool *tp;            /* the CPU provider's pool */
    int threads;
    char warning[512];                      /* set when a requested provider fell back to the CPU */
} kiln_provider_set;

/* Opens the CPU provider and those opt->providers asks for. A provider that cannot start is an
 * error when the CPU was not also asked for (KILN_PROVIDER_CPU bit unset); otherwise it is left out
 * and `warning` says why, as ONNX Runtime falls back. */
kiln_status kiln_providers_open(const kiln_options *opt, kiln_provider_set *set, kiln_err *e);
void kiln_providers_close(kiln_provider_set *set);

/* Calls fn for every kernel of every provider library that loads here (no device needed), with
 * the provider's ONNX Runtime name; returns the number of libraries listed. */
int kiln_providers_each_kernel(void (*fn)(void *arg, const char *provider, const kiln_kernel *k), void *arg);

/* ONNX Runtime's names of the providers this build can load, for get_available_providers(). */
int kiln_providers_known(const char **names, int max);

#endif
