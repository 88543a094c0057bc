/* Provider-independent helpers of the provider interface (core/provider.h). */
#include "provider.h"

#include <string.h>

static int same_domain(const char *a, const char *b) {
    if (!a || !strcmp(a, "ai.onnx")) a = "";
    if (!b || !strcmp(b, "ai.onnx")) b = "";
    return !strcmp(a, b);
}

const kiln_kernel *kiln_kernel_find(const kiln_kernel *const *tables, const char *domain,
                                    const char *name, int opset) {
    const kiln_kernel *best = NULL;
    for (int t = 0; tables[t]; t++)
        for (const kiln_kernel *k = tables[t]; k->name; k++) {
            if (strcmp(k->name, name) || !same_domain(k->domain, domain) || k->since > opset) continue;
            if (!best || k->since > best->since) best = k;
        }
    return best;
}
