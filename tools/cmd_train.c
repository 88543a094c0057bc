/* kiln train-artifacts (training artifacts from an inference model, kiln_train_artifacts) and kiln train
 * (a training loop over arrays of an .npz). */
#include "kiln.h"
#include "npy.h"
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

/* ---- kiln train: a training loop over arrays of an .npz ---- */

int cmd_train(int argc, char **argv);

static void train_loop_usage(void) {
    fputs("usage: kiln train ART_DIR --inputs FILE.npz [--steps N] [--batch B] [--lr X] [--threads N]\n"
          "                  [--save CKPT] [--export MODEL.onnx]\n"
          "  trains the artifacts in ART_DIR (kiln train-artifacts): each step takes the next B rows of every\n"
          "  array of FILE.npz (named as the training model's inputs, e.g. x and labels; all rows when --batch\n"
          "  is not given), runs a train step and an optimizer step, and prints the loss. The checkpoint is\n"
          "  written back to ART_DIR/checkpoint.kckpt (or CKPT); --export writes the trained inference model.\n",
          stderr);
}

int cmd_train(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        train_loop_usage();
        return argc < 2 ? 2 : 0;
    }
    const char *dir = argv[1], *npz = NULL, *save = NULL, *export_path = NULL;
    long steps = 10, batch = 0, threads = 0;
    double lr = -1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        char *end = NULL;
        if (!strcmp(a, "--inputs") && more) npz = argv[++i];
        else if (!strcmp(a, "--save") && more) save = argv[++i];
        else if (!strcmp(a, "--export") && more) export_path = argv[++i];
        else if (!strcmp(a, "--lr") && more) {
            lr = strtod(argv[++i], &end);
            if (*end || lr < 0) return fprintf(stderr, "kiln train: bad --lr '%s'\n", argv[i]), 2;
        } else if ((!strcmp(a, "--steps") || !strcmp(a, "--batch") || !strcmp(a, "--threads")) && more) {
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 100000000) return fprintf(stderr, "kiln train: bad %s '%s'\n", a, argv[i]), 2;
            *(a[2] == 's' ? &steps : a[2] == 'b' ? &batch : &threads) = v;
        } else {
            fprintf(stderr, "kiln train: unexpected argument '%s'\n", a);
            train_loop_usage();
            return 2;
        }
    }
    if (!npz) {
        fprintf(stderr, "kiln train: --inputs FILE.npz is required\n");
        train_loop_usage();
        return 2;
    }
    char path[3][4096];
    snprintf(path[0], sizeof path[0], "%s/checkpoint.kckpt", dir);
    snprintf(path[1], sizeof path[1], "%s/training_model.onnx", dir);
    snprintf(path[2], sizeof path[2], "%s/eval_model.onnx", dir);
    npz_entry *ents = NULL;
    int ne = 0, rc = 1;
    char err[512];
    kiln_checkpoint *ck = NULL;
    kiln_train_module *m = NULL;
    kiln_optimizer *o = NULL;
    const char **names = NULL;
    kiln_tensor_desc *descs = NULL;
    if (npz_read_file(npz, &ents, &ne, err, sizeof err)) {
        fprintf(stderr, "kiln train: %s: %s\n", npz, err);
        return 1;
    }
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = (int)threads;
    if (kiln_checkpoint_load(path[0], &ck) || kiln_train_module_open(path[1], NULL, ck, &opt, &m) ||
        kiln_optimizer_open(m, &o) || (lr >= 0 && kiln_optimizer_set_lr(o, lr))) {
        fprintf(stderr, "kiln train: %s\n", kiln_last_error());
        goto done;
    }
    /* every array must hold the same number of rows: a step takes rows [b*B, (b+1)*B) of each */
    int64_t rows = -1;
    for (int i = 0; i < ne; i++) {
        if (ents[i].t.rank < 1) {
            fprintf(stderr, "kiln train: array '%s' has no rows (rank 0)\n", ents[i].name);
            goto done;
        }
        if (rows >= 0 && ents[i].t.dims[0] != rows) {
            fprintf(stderr, "kiln train: array '%s' has %lld rows, another has %lld\n", ents[i].name,
                    (long long)ents[i].t.dims[0], (long long)rows);
            goto done;
        }
        rows = ents[i].t.dims[0];
    }
    if (rows <= 0 || (batch && batch > rows)) {
        fprintf(stderr, "kiln train: %lld rows in %s, fewer than a batch of %ld\n", (long long)rows, npz, batch);
        goto done;
    }
    if (!batch) batch = (long)rows;
    int64_t n_batches = rows / batch;
    names = calloc((size_t)ne, sizeof *names);
    descs = calloc((size_t)ne, sizeof *descs);
    int64_t (*dims)[KILN_MAX_RANK] = calloc((size_t)ne, sizeof *dims);
    if (!names || !descs || !dims) {
        free(dims);
        goto done;
    }
    for (long s = 0; s < steps; s++) {
        int64_t b = s % n_batches;
        for (int i = 0; i < ne; i++) {
            const kiln_tensor *t = &ents[i].t;
            size_t row_bytes = kiln_tensor_nbytes(t) / (size_t)t->dims[0];
            memcpy(dims[i], t->dims, sizeof dims[i]);
            dims[i][0] = batch;
            names[i] = ents[i].name;
            descs[i] = (kiln_tensor_desc){(kiln_dtype)t->dtype, t->rank, dims[i],
                                          (const char *)t->data + (size_t)(b * batch) * row_bytes, KILN_MEMORY_HOST};
        }
        float loss;
        if (kiln_train_step(m, (size_t)ne, names, descs, &loss) || kiln_optimizer_step(o)) {
            fprintf(stderr, "kiln train: step %ld: %s\n", s + 1, kiln_last_error());
            free(dims);
            goto done;
        }
        kiln_train_module_lazy_reset_grad(m);
        printf("step %ld loss %.6g lr %.3g\n", s + 1, loss, kiln_optimizer_get_lr(o));
    }
    free(dims);
    if (kiln_checkpoint_save(ck, save ? save : path[0]) ||
        (export_path && kiln_train_module_export(m, export_path, 0, NULL))) {
        fprintf(stderr, "kiln train: %s\n", kiln_last_error());
        goto done;
    }
    printf("wrote %s%s%s\n", save ? save : path[0], export_path ? " and " : "", export_path ? export_path : "");
    rc = 0;
done:
    free(names);
    free(descs);
    kiln_optimizer_close(o);
    kiln_train_module_close(m);
    kiln_checkpoint_free(ck);
    npz_free(ents, ne);
    return rc;
}
