/* The C side of what kiln.onnxruntime offers Python: model metadata, caller-supplied initializers,
 * the optimised model written as ONNX, per-run options with a terminate flag, profiling with its
 * start time, and values in device memory. Usage: example_session_features [MODEL [OUT_DIR]];
 * without arguments it uses the bundled examples/models/tiny_mlp.onnx (x: float32[1, 4]) and
 * writes into the current folder. */
#include "kiln.h"
#include <stdio.h>
#include <string.h>

static int run_once(kiln_session *s, const kiln_run_options *ro, float *y0) {
    float x[4] = {0.5f, -1.0f, 2.0f, 0.25f};
    int64_t dims[2] = {1, 4};
    kiln_tensor_desc in = {KILN_DTYPE_FLOAT, 2, dims, x, KILN_MEMORY_HOST};
    const char *name = "x";
    kiln_value *y;
    kiln_status st = kiln_run_with_options(s, ro, 1, &name, &in, 0, NULL, &y);
    if (st != KILN_OK) return (int)st;
    *y0 = ((const float *)kiln_value_data(y))[0];
    kiln_value_free(y);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "examples/models/tiny_mlp.onnx";
    const char *dir = argc > 2 ? argv[2] : ".";
    char opt_path[1024], trace_path[1024];
    snprintf(opt_path, sizeof opt_path, "%s/tiny_mlp.optimized.onnx", dir);
    snprintf(trace_path, sizeof trace_path, "%s/tiny_mlp.trace.json", dir);

    /* 1. open with a replacement for the bias b2 (three zeros), writing the optimised model */
    float b2[3] = {0, 0, 0};
    int64_t b2_dims[1] = {3};
    const char *init_names[1] = {"b2"};
    kiln_tensor_desc inits[1] = {{KILN_DTYPE_FLOAT, 1, b2_dims, b2, KILN_MEMORY_HOST}};
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = 1;
    opt.n_initializers = 1;
    opt.initializer_names = init_names;
    opt.initializers = inits;
    opt.optimized_model_path = opt_path;
    kiln_session *s;
    if (kiln_session_open(path, &opt, &s) != KILN_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, kiln_last_error());
        return 1;
    }
    printf("optimised model written to %s\n", opt_path);

    /* 2. what the file says about itself */
    kiln_model_metadata md;
    kiln_session_model_metadata(s, &md);
    printf("producer '%s', graph '%s', version %lld, %zu custom entries\n", md.producer_name, md.graph_name,
           (long long)md.version, md.n_custom);
    for (size_t i = 0; i < md.n_custom; i++) printf("  %s = %s\n", md.custom_keys[i], md.custom_values[i]);

    /* 3. a profiled run with per-run options */
    kiln_session_start_profiling(s, trace_path);
    long long start_ns = (long long)kiln_session_profiling_start_ns(s);
    volatile int terminate = 0;
    kiln_run_options ro;
    memset(&ro, 0, sizeof ro);
    ro.terminate = &terminate;
    ro.timeout_ms = 10000;
    float y0;
    if (run_once(s, &ro, &y0)) {
        fprintf(stderr, "run failed: %s\n", kiln_session_error(s));
        kiln_session_close(s);
        return 1;
    }
    const char *written = kiln_session_end_profiling(s);
    printf("run: y[0] = %.6f; profiling started at %lld ns, trace in %s\n", y0, start_ns, written ? written : "?");

    /* 4. the terminate flag: set (from any thread; here before the run) it stops the run */
    terminate = 1;
    int st = run_once(s, &ro, &y0);
    printf("with terminate set: %s (%s)\n", kiln_status_name((kiln_status)st), kiln_session_error(s));
    if (st != KILN_ERR_CANCELLED) return 1;

    /* 5. a value in device memory: only a session with a device provider has one */
    float h[2] = {1, 2};
    int64_t hd[1] = {2};
    kiln_tensor_desc host = {KILN_DTYPE_FLOAT, 1, hd, h, KILN_MEMORY_HOST};
    kiln_value *dev;
    if (kiln_value_to_device(s, &host, &dev) == KILN_OK) {
        printf("device value: memory %d\n", (int)kiln_value_memory(dev));
        kiln_value_free(dev);
    } else {
        printf("no device value on this session: %s\n", kiln_last_error());
    }
    kiln_session_close(s);

    /* 6. the optimised model opens like any other and gives the same result */
    kiln_session *s2;
    float y1;
    if (kiln_session_open(opt_path, NULL, &s2) != KILN_OK || run_once(s2, NULL, &y1)) {
        fprintf(stderr, "the optimised model does not run: %s\n", kiln_last_error());
        return 1;
    }
    printf("optimised model: y[0] = %.6f\n", y1);
    kiln_session_close(s2);
    return y0 == y1 ? 0 : 1;
}
