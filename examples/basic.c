/* The smallest complete use of kiln's C API: open a model, describe it, run it on one input,
 * print the output. Usage: example_basic [MODEL]; without MODEL it runs the bundled
 * examples/models/tiny_mlp.onnx (input x: float32[1, 4]). */
#include "kiln.h"
#include <stdio.h>

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "examples/models/tiny_mlp.onnx";
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = 1;
    kiln_session *s;
    if (kiln_session_open(path, &opt, &s) != KILN_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, kiln_last_error());
        return 1;
    }
    kiln_io_info in, out;
    kiln_session_input_info(s, 0, &in);
    kiln_session_output_info(s, 0, &out);
    printf("model %s: input '%s' (%s), output '%s' (%s)\n", path, in.name, kiln_dtype_name(in.dtype), out.name,
           kiln_dtype_name(out.dtype));

    float x[4] = {0.5f, -1.0f, 2.0f, 0.25f};
    int64_t dims[2] = {1, 4};
    kiln_tensor_desc desc = {KILN_DTYPE_FLOAT, 2, dims, x};
    kiln_value *y;
    if (kiln_run(s, 1, &in.name, &desc, 0, NULL, &y) != KILN_OK) {
        fprintf(stderr, "run failed: %s\n", kiln_session_error(s));
        kiln_session_close(s);
        return 1;
    }
    const float *v = kiln_value_data(y);
    const int64_t *od = kiln_value_dims(y);
    printf("%s: shape [%lld, %lld] =", out.name, (long long)od[0], (long long)od[1]);
    for (int64_t i = 0; i < od[0] * od[1]; i++) printf(" %.6f", v[i]);
    printf("\n");
    kiln_value_free(y);
    kiln_session_close(s);
    return 0;
}
