/* libFuzzer target over the model loader: any bytes must load or fail with a status, never crash,
 * leak or read out of bounds. Models that load are also planned (kernels bound, static inference,
 * constant folding), and test-data protos are parsed in the three kinds. */
#include "kiln.h"
#include "core/graph.h"
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = 1;
    kiln_session *s = NULL;
    if (kiln_session_open_bytes(data, size, &opt, &s) == KILN_OK) {
        kiln_io_info info;
        for (size_t i = 0; i < kiln_session_input_count(s); i++) kiln_session_input_info(s, i, &info);
        kiln_session_close(s);
    }
    for (int kind = 0; kind < 3; kind++) {
        kiln_value v;
        kiln_err e;
        char *name = NULL;
        if (kiln_parse_value_proto(data, size, kind, &v, &name, &e) == KILN_OK) {
            kiln_value_release(&v);
            free(name);
        }
    }
    return 0;
}
