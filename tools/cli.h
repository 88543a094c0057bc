/* Shared pieces of the kiln command's subcommands. */
#ifndef KILN_TOOLS_CLI_H
#define KILN_TOOLS_CLI_H

#include "core/session.h"
#include "npy.h"

int cmd_run(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_test(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* "--dim NAME=N" bindings for symbolic dimensions when kiln makes inputs itself. */
typedef struct dim_binding { const char *name; int64_t value; } dim_binding;

/* Opens MODEL with the session options in cli_opts, or prints the error; returns NULL on failure. */
kiln_session *cli_open(const char *path, int threads, int allow_missing, int verbose);
/* "cuda,cpu" -> KILN_PROVIDER_CUDA | KILN_PROVIDER_CPU; 0 (after printing why) on an unknown name. */
unsigned cli_parse_providers(const char *list);

/* Session options shared by run, info and bench: --providers LIST, --free-dim NAME=N (repeatable:
 * fixes a symbolic dimension), --cuda-graph (graph capture), --fp16 (run float32 in float16),
 * --memory-limit MB (a run's intermediate values), --timeout MS (each run; cli_opts.run),
 * --bf16 (float32 products in bfloat16 on the CPU), --no-winograd (3x3 convolutions sum directly),
 * --[no-]specialize (shape-specialised children; kiln_options.specialize). */
typedef struct cli_session_opts {
    unsigned providers;
    int graph_capture, float16;
    int specialize;           /* --specialize 1, --no-specialize -1, else 0 (auto) */
    int bf16;                 /* --bf16: kiln_options.cpu_bf16 */
    int no_winograd;          /* --no-winograd: kiln_options.cpu_winograd = -1 */
    char dims[1024];
    size_t memory_limit;      /* --memory-limit MB */
    kiln_run_options run;     /* --timeout MS */
} cli_session_opts;
extern cli_session_opts cli_opts;
/* At argv[*i]: 1 when it was a session option (consumed, *i advanced past its value), 0 when it is
 * not one, -1 on a bad value (the reason printed). */
int cli_parse_session_opt(int argc, char **argv, int *i);
/* Makes an input tensor for model input i from its declared type: symbolic dims from `dims`
 * (default 1), floats uniform in [-1, 1), integers in [0, 2), bools random. */
int cli_synthetic_input(kiln_session *s, size_t i, const dim_binding *dims, int n_dims, unsigned *seed,
                        kiln_tensor *t);
void cli_print_summary(const char *name, const kiln_value *v);
double cli_now(void);
/* kiln bench's model-independent lines: one parallel-for's cost on s's pool, the runtime's cost
 * per node (bench_overhead.c). */
void cli_print_overheads(kiln_session *s, int threads);

typedef struct cli_feed { char *name; kiln_value v; } cli_feed;
/* Reads test_data_set-style input_K.pb files of folder dir as feeds for the model's inputs. */
int cli_load_pb_inputs(kiln_session *s, const char *dir, cli_feed **feeds, int *n);

#endif
