/* The kiln command: run, info, test, bench and convert over ONNX models. */
#include "cli.h"
#include "providers/registry.h"
#include "ops/op.h"
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int cmd_convert(int argc, char **argv); /* cmd_convert.c */
int cmd_train_artifacts(int argc, char **argv); /* cmd_train.c */
int cmd_train(int argc, char **argv);           /* cmd_train.c */

static void usage(void) {
    fputs("kiln " KILN_VERSION " - an ONNX inference runtime\n"
          "usage:\n"
          "  kiln run MODEL [--input NAME=FILE.npy ...] [--inputs FILE.npz] [--test-data DIR]\n"
          "                 [--output-dir DIR] [--threads N] [--profile TRACE.json] [--verbose] [SESSION]\n"
          "  kiln info MODEL [--dim NAME=N ...] [SESSION]\n"
          "  kiln test DIR... [--expect-fail FILE] [--write-failures FILE] [--rtol X] [--atol X] [--quiet]\n"
          "  kiln bench MODEL [--threads N] [--runs N] [--warmup N] [--inputs FILE.npz] [--dim NAME=N ...]\n"
          "                   [--profile TRACE.json] [--plot FILE.png] [SESSION]\n"
          "  kiln convert MODEL OUT.onnx [--fp16] [--optimize] [--verbose]\n"
          "                  (writes the model back as ONNX: --fp16 computes in float16 with float32\n"
          "                   inputs/outputs, --optimize applies kiln's fusions)\n"
          "  kiln ops          (every operator kiln has a kernel for: domain, name, first opset, provider)\n"
          "  kiln train-artifacts MODEL --requires-grad NAME... [--frozen NAME...] --loss mse|cross_entropy|\n"
          "                  bce_with_logits|l1 --optimizer adamw|sgd [--output NAME] OUT_DIR\n"
          "                  (training, eval and inference models and the checkpoint; docs/training.md)\n"
          "  kiln train ART_DIR --inputs FILE.npz [--steps N] [--batch B] [--lr X] [--threads N]\n"
          "                  [--save CKPT] [--export MODEL.onnx]  (a training loop over the arrays' rows)\n"
          "SESSION options: --providers cuda[,cpu] (cuda alone: fail without a GPU; with cpu: fall back)\n"
          "                 --free-dim NAME=N (fix a symbolic dimension; repeatable)\n"
          "                 --cuda-graph (record and replay each input shape's device work; fail if the\n"
          "                  model cannot be recorded)  --no-cuda-graph (default: record when safe)\n"
          "                 --fp16 (run a float32 model in float16, float32 inputs and outputs)\n"
          "                 --bf16 (CPU: float32 MatMul/Gemm/Conv in bfloat16 with float32 sums)\n"
          "                 --no-winograd (CPU: 3x3 convolutions sum their taps directly)\n"
          "                 --memory-limit MB (intermediate values of a run)  --timeout MS (per run)\n"
          "                 --specialize / --no-specialize (a session per input shape seen twice, its\n"
          "                  symbolic dims fixed; default: on with a device provider)\n",
          stderr);
}

static int cmp_op(const void *a, const void *b) {
    const kiln_op *x = *(const kiln_op *const *)a, *y = *(const kiln_op *const *)b;
    int c = strcmp(x->domain ? x->domain : "", y->domain ? y->domain : "");
    if (!c) c = strcmp(x->name, y->name);
    if (!c) c = x->since - y->since;
    return c;
}

static void print_kernel(void *arg, const char *provider, const kiln_kernel *k) {
    (void)arg;
    printf("%s\t%s\t%d\t%s\n", k->domain && k->domain[0] ? k->domain : "ai.onnx", k->name, k->since,
           strcmp(provider, "CUDAExecutionProvider") ? provider : "cuda");
}

static int cmd_ops(void) {
    int n = kiln_list_ops(NULL, 0);
    const kiln_op **ops = malloc((size_t)(n ? n : 1) * sizeof *ops);
    if (!ops) return 1;
    kiln_list_ops(ops, n);
    qsort(ops, (size_t)n, sizeof *ops, cmp_op);
    for (int i = 0; i < n; i++)
        printf("%s\t%s\t%d\tcpu\n", ops[i]->domain && ops[i]->domain[0] ? ops[i]->domain : "ai.onnx", ops[i]->name,
               ops[i]->since);
    free(ops);
    kiln_providers_each_kernel(print_kernel, NULL);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        puts(KILN_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "test")) return cmd_test(argc - 1, argv + 1);
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(argv[1], "convert")) return cmd_convert(argc - 1, argv + 1);
    if (!strcmp(argv[1], "ops")) return cmd_ops();
    if (!strcmp(argv[1], "train-artifacts")) return cmd_train_artifacts(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return cmd_train(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
