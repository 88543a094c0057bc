/* kiln train-artifacts: training artifacts from an inference model (kiln_train_artifacts). */
#include "kiln.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int cmd_train_artifacts(int argc, char **argv);

static void train_usage(void) {
    fputs("usage: kiln train-artifacts MODEL --requires-grad NAME... [--frozen NAME...]\n"
          "                            --loss mse|cross_entropy|bce_with_logits|l1 --optimizer adamw|sgd\n"
          "                            [--output NAME] OUT_DIR\n"
          "  writes training_model.onnx, eval_model.onnx, inference_model.onnx and checkpoint.kckpt into\n"
          "  OUT_DIR (made if missing); --output names the model output the loss takes (default: the first)\n",
          stderr);
}

int cmd_train_artifacts(int argc, char **argv) {
    /* argv[0] is "train-artifacts"; MODEL first, OUT_DIR last, name lists run to the next option */
    if (argc < 3 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        train_usage();
        return argc < 3 ? 2 : 0;
    }
    const char *model = argv[1], *out_dir = argv[argc - 1];
    const char **rg = calloc((size_t)argc, sizeof *rg), **fz = calloc((size_t)argc, sizeof *fz);
    if (!rg || !fz) return 1;
    kiln_train_artifacts_options o = {rg, 0, fz, 0, NULL, NULL, NULL};
    int rc = 2;
    for (int i = 2; i < argc - 1; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--requires-grad") || !strcmp(a, "--frozen")) {
            int frozen = a[2] == 'f';
            int start = i;
            while (i + 1 < argc - 1 && strncmp(argv[i + 1], "--", 2)) {
                if (frozen) fz[o.n_frozen++] = argv[++i];
                else rg[o.n_requires_grad++] = argv[++i];
            }
            if (i == start) {
                fprintf(stderr, "kiln train-artifacts: %s needs at least one name\n", a);
                goto done;
            }
        } else if (!strcmp(a, "--loss") || !strcmp(a, "--optimizer") || !strcmp(a, "--output")) {
            if (i + 1 >= argc - 1) {
                fprintf(stderr, "kiln train-artifacts: %s needs a value\n", a);
                goto done;
            }
            const char *v = argv[++i];
            if (a[2] == 'l') o.loss = v;
            else if (a[3] == 'p') o.optimizer = v;
            else o.output = v;
        } else {
            fprintf(stderr, "kiln train-artifacts: unexpected argument '%s'\n", a);
            train_usage();
            goto done;
        }
    }
    if (!o.n_requires_grad || !o.loss || !o.optimizer || !strncmp(out_dir, "--", 2)) {
        fprintf(stderr, "kiln train-artifacts: --requires-grad, --loss, --optimizer and OUT_DIR are required\n");
        train_usage();
        goto done;
    }
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "kiln train-artifacts: cannot make '%s': %s\n", out_dir, strerror(errno));
        rc = 1;
        goto done;
    }
    if (kiln_train_artifacts(model, &o, out_dir) != KILN_OK) {
        fprintf(stderr, "kiln train-artifacts: %s\n", kiln_last_error());
        rc = 1;
        goto done;
    }
    printf("wrote %s/{training_model.onnx, eval_model.onnx, inference_model.onnx, checkpoint.kckpt}: "
           "%zu trainable parameter(s), loss %s, optimizer %s\n", out_dir, o.n_requires_grad, o.loss, o.optimizer);
    rc = 0;
done:
    free(rg);
    free(fz);
    return rc;
}
