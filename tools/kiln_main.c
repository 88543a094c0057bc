/* The kiln command: run, info, test and bench over ONNX models. */
#include "cli.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

static void usage(void) {
    fputs("kiln " KILN_VERSION " - an ONNX inference runtime\n"
          "usage:\n"
          "  kiln run MODEL [--input NAME=FILE.npy ...] [--inputs FILE.npz] [--test-data DIR]\n"
          "                 [--output-dir DIR] [--threads N] [--verbose]\n"
          "  kiln info MODEL [--dim NAME=N ...]\n"
          "  kiln test DIR... [--expect-fail FILE] [--write-failures FILE] [--rtol X] [--atol X] [--quiet]\n"
          "  kiln bench MODEL [--threads N] [--runs N] [--warmup N] [--inputs FILE.npz] [--dim NAME=N ...]\n",
          stderr);
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
    fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
