/* Runs a model with one float input "x" of shape [1, W] and output "y" N times on 1 thread: a
 * deterministic per-node measure under callgrind (instructions, not wall time), e.g.
 *   python3 -c "import sys; sys.path.insert(0, 'bench'); import small_graphs as s, onnx; onnx.save(s.chain_model(), '/tmp/chain.onnx')"
 *   cc -O2 -Iinclude bench/chain_driver.c -Lbuild -lkiln -Wl,-rpath,$PWD/build -o /tmp/chain_driver
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/chain_driver /tmp/chain.onnx 101 16
 * (instructions of 101 runs minus those of 1 run) / 100 / nodes = instructions per node. */
#include "kiln.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: chain_driver MODEL RUNS WIDTH\n"); return 2; }
    kiln_options o;
    kiln_options_init(&o);
    o.threads = 1;
    kiln_session *s;
    if (kiln_session_open(argv[1], &o, &s)) { fprintf(stderr, "%s\n", kiln_last_error()); return 1; }
    int runs = atoi(argv[2]), w = atoi(argv[3]);
    float *x = calloc((size_t)(w > 0 ? w : 1), sizeof *x);
    int64_t d[2] = {1, w};
    kiln_tensor_desc in = {KILN_DTYPE_FLOAT, 2, d, x, 0};
    const char *names[1] = {"x"}, *outs[1] = {"y"};
    for (int r = 0; r < runs; r++) {
        kiln_value *out[1];
        if (kiln_run(s, 1, names, &in, 1, outs, out)) { fprintf(stderr, "%s\n", kiln_last_error()); return 1; }
        kiln_value_free(out[0]);
    }
    kiln_session_close(s);
    free(x);
    return 0;
}
