/* Sliding-window geometry shared by the convolution and pooling kernels (kernel, strides,
 * dilations, pads, auto_pad, output sizes), im2col/col2im, and the entry points of conv ops whose
 * family table lives in conv.c. */
#ifndef KILN_CONV_UTIL_H
#define KILN_CONV_UTIL_H

#include "ops/op.h"

#define KCONV_MAX_ND (KILN_MAX_RANK - 2)
/* Columns (output positions) per product when the weights are packed: enough that the packed
 * weights are streamed few times, few enough that a batch-1 map still splits over threads. */
#define KCONV_TILE_COLS 512

typedef struct kconv_geom {
    int nd;                         /* spatial rank */
    int64_t N, C, M, group;         /* batch, input channels, output channels, groups */
    int64_t in[KCONV_MAX_ND], out[KCONV_MAX_ND], k[KCONV_MAX_ND];
    int64_t stride[KCONV_MAX_ND], dil[KCONV_MAX_ND], pad_b[KCONV_MAX_ND], pad_e[KCONV_MAX_ND];
    int64_t in_size, out_size, k_size; /* products over the spatial dims */
} kconv_geom;

enum { KCONV_PAD_NOTSET, KCONV_PAD_SAME_UPPER, KCONV_PAD_SAME_LOWER, KCONV_PAD_VALID };

/* Reads strides, dilations (if use_dilations), pads and auto_pad for g->nd spatial dims with
 * g->k already set, checks them, and computes g->out from g->in (which may hold unknown dims:
 * the matching outputs are then unknown). ceil_mode: pooling's rounding up. */
kiln_status kconv_window(kiln_ctx *ctx, kconv_geom *g, int use_dilations, int ceil_mode);
/* auto_pad attribute as KCONV_PAD_*; fails on an unknown value. */
kiln_status kconv_auto_pad(kiln_ctx *ctx, int *mode);
void kconv_finish_sizes(kconv_geom *g);

/* Rows [Cg * k_size] x columns [p0, p1) of the im2col matrix of one image's channel block x
 * (Cg planes of in_size); dst row stride ld. Padding reads as zero. */
void kconv_im2col_f32(const kconv_geom *g, int64_t Cg, const float *x, int64_t p0, int64_t p1,
                      float *dst, int64_t ld);
void kconv_im2col_f64(const kconv_geom *g, int64_t Cg, const double *x, int64_t p0, int64_t p1,
                      double *dst, int64_t ld);
/* Rows [k0, k0 + kc) x columns [j0, j0 + nc) of the im2col matrix of x (one image's channel
 * block) whose column 0 is output position col0, written straight into the AVX-512 product's
 * panel layout (see kgemm_pack_b_fn) at panel columns [dcol, dcol + nc); columns from there up
 * to pad_to are zeroed (several images can share one set of panels). AVX-512 only. */
void kconv_im2col_panels_f32(const kconv_geom *g, const float *x, int64_t col0, int64_t k0,
                             int64_t kc, int64_t j0, int64_t nc, float *dst, int64_t dcol,
                             int64_t pad_to);
/* Adds columns of col [Mg * k_size, in_size] into the output planes [m0, m1) of y (transposed
 * convolution: g->in is the small input, g->out the large output). */
void kconv_col2im_f32(const kconv_geom *g, const float *col, int64_t m0, int64_t m1, float *y);
void kconv_col2im_f64(const kconv_geom *g, const double *col, int64_t m0, int64_t m1, double *y);

/* FusedConv's activation applied in place to n values. */
typedef struct kconv_act {
    int kind;
    float a, b;
} kconv_act;
enum { KACT_NONE, KACT_RELU, KACT_TANH, KACT_SIGMOID, KACT_LEAKY, KACT_CLIP, KACT_HSIGMOID,
       KACT_HSWISH };
void kconv_apply_act(const kconv_act *act, float *y, int64_t n);

/* Depthwise 2-D (or 1-D) convolution, one input channel per group (conv_depthwise.c), of the
 * whole batch: bias, residual z and activation (each may be NULL) applied to every plane while it
 * is still in cache; threads over planes, or over 16-channel blocks on small maps. */
int kconv_depthwise_ok(const kconv_geom *g);
kiln_status kconv_depthwise_run(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                                const float *bias, const float *z, const kconv_act *act, float *y);

/* Weights packed on first use and kept for later runs; concurrent runs may race to fill the
 * slot (compare-and-swap: the loser frees its copy). */
typedef _Atomic(float *) kconv_lazy_weights;

/* Other forms of a constant weight, each made on first use by the kernel that reads it. */
typedef struct kconv_lazy_forms {
    kconv_lazy_weights lanes; /* kconv_pack_lanes */
    kconv_lazy_weights wino;  /* kconv_winograd_pack */
} kconv_lazy_forms;

/* Float convolution of the whole batch (x, w, bias, y all float32; z: optional residual added
 * before the activation, same shape as y). w_packed: the weights as kconv_pack_weight left
 * them (a constant weight packed once), or NULL; forms: where a constant weight keeps its other
 * forms, or NULL (made per call). */
kiln_status kconv_run_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                          const float *bias, const float *z, const kconv_act *act,
                          const float *w_packed, kconv_lazy_forms *forms, float *y);
/* 1x1 convolution of a 1x1 map with weights packed by kconv_pack_weight, over the whole batch;
 * 0 when it does not apply (no packed weights, no AVX-512), 1 when y is written. */
int kconv_matvec_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                     const float *bias, const float *z, const kconv_act *act, float *y);
/* Direct (im2col-free) 2-D convolution on AVX-512 with weights packed by kconv_pack_weight;
 * kconv_direct_ok says when it applies and pays. */
int kconv_direct_ok(const kconv_geom *g);
kiln_status kconv_direct_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                             const float *bias, const float *z, const kconv_act *act, float *y);
/* Direct convolution with 16 output channels per vector (conv_direct.c), for small maps where
 * the positions' layouts leave lanes idle; kconv_lanes_ok says when it applies and pays. Weights
 * repacked by kconv_pack_lanes from kconv_pack_weight's panels into kconv_lanes_weight_size
 * floats (64-byte aligned). */
int kconv_lanes_ok(const kconv_geom *g);
int64_t kconv_lanes_weight_size(const kconv_geom *g);
void kconv_pack_lanes(const kconv_geom *g, const float *wpk, float *dst);
kiln_status kconv_lanes_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wl,
                            const float *bias, const float *z, const kconv_act *act, float *y);
/* 3x3 stride-1 convolution by Winograd F(4x4, 3x3) (conv_winograd.c): kconv_winograd_ok says
 * when it applies and pays; its weights (kconv_winograd_weight_size floats, 64-byte aligned) are
 * made by kconv_winograd_pack from kconv_pack_weight's panels. */
int kconv_winograd_ok(const kiln_ctx *ctx, const kconv_geom *g);
int64_t kconv_winograd_weight_size(const kconv_geom *g);
void kconv_winograd_pack(const kconv_geom *g, const float *wpk, float *dst);
kiln_status kconv_winograd_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wu,
                               const float *bias, const float *z, const kconv_act *act, float *y);
/* Whether the convolution goes through the matrix product (not the depthwise kernel), and the
 * packed form of its weights: kconv_packed_weight_size floats (0: no packing on this CPU). */
int kconv_uses_gemm(const kconv_geom *g);
int64_t kconv_packed_weight_size(const kconv_geom *g);
void kconv_pack_weight(const kconv_geom *g, const float *w, float *dst);
kiln_status kconv_run_f64(kiln_ctx *ctx, const kconv_geom *g, const double *x, const double *w,
                          const double *bias, double *y);
/* The float32 convolution with bfloat16 operands and float32 sums (kiln_options.cpu_bf16,
 * conv_bf16.c): w packed once by kconv_pack_weight_bf16 into kconv_bf16_weight_size uint16
 * values. Only where kconv_uses_gemm. */
int64_t kconv_bf16_weight_size(const kconv_geom *g);
void kconv_pack_weight_bf16(const kconv_geom *g, const float *w, uint16_t *dst);
kiln_status kconv_run_bf16(kiln_ctx *ctx, const kconv_geom *g, const float *x, const uint16_t *w,
                           const float *bias, const float *z, const kconv_act *act, float *y);

/* Cutting a convolution into parallel items (conv_plan.c): units independent blocks (images,
 * groups) of row_panels x col_units, split into nr row blocks x nc column tiles per unit, panels
 * shared out evenly. Costs are in units of one row panel x one column unit of col_weight:
 * last_row / last_col the weight of a partial last panel or unit (1: full); pack the extra cost
 * per column unit that every row block repeats, stream per row panel that every column tile
 * repeats, fixed per item. */
typedef struct kconv_plan_in {
    int64_t units, row_panels, col_units, nr_min, nr_max, nc_min;
    int64_t threads;
    double last_row, last_col, col_weight, pack, stream, fixed;
} kconv_plan_in;
typedef struct kconv_plan {
    int64_t nr, nc, items;
    double est, ideal; /* estimated run time and total work / threads, in cost units */
} kconv_plan;
kconv_plan kconv_plan_split(const kconv_plan_in *in);
/* Block b of n over P panels starts at panel b * P / n (blocks differ by at most one panel). */
static inline int64_t kconv_block_start(int64_t b, int64_t n, int64_t P) { return b * P / n; }
/* KILN_DEBUG_PARTITION set: each convolution prints how its work was cut (stderr), with the
 * balance the pool's schedule gets from item_cost(arg, item); repack: how many times over the
 * items pack (im2col or copy) the inputs, 1 where they are packed once. */
int kconv_debug_partition(void);
/* 1 when the environment variable `name` is set and not "0" (A/B switches such as
 * KILN_NO_CONV_LANES), read once into *cached (initialised to -1) */
int kconv_switched_off(const char *name, _Atomic int *cached);
void kconv_report_partition(const char *path, const kconv_geom *g, int nt, int64_t items,
                            int64_t grain, double (*item_cost)(const void *, int64_t),
                            const void *arg, double repack);

/* Conv's checks of X, W, B (shared with ConvInteger); *shape_known = 0 when the output cannot
 * be inferred yet (static inference with unknown ranks). */
/* The checks Conv and ConvTranspose share: group, ranks of X and W (fills g->group, g->nd);
 * *ranks_known is 0 when static inference does not know them yet. */
kiln_status kconv_check_ranks(kiln_ctx *ctx, const kiln_tensor *X, const kiln_tensor *W, kconv_geom *g,
                              int *ranks_known);
kiln_status kconv_check(kiln_ctx *ctx, const kiln_tensor *X, const kiln_tensor *W,
                        const kiln_tensor *B, kconv_geom *g, int *shape_known);
/* Init/fini that keep a float32 copy of a constant half-precision W (input 1), and the lookup. */
kiln_status kconv_init_weight(kiln_ctx *ctx);
void kconv_fini_weight(void *state);
const float *kconv_cached_weight(kiln_ctx *ctx, const kiln_tensor *W);

/* Entry points of ops in other conv files, listed in conv.c's table. */
kiln_status kconvt_infer(kiln_ctx *ctx);
kiln_status kconvt_compute(kiln_ctx *ctx);
kiln_status kdeform_infer(kiln_ctx *ctx);
kiln_status kdeform_compute(kiln_ctx *ctx);
kiln_status kconvint_infer(kiln_ctx *ctx);
kiln_status kconvint_compute(kiln_ctx *ctx);

const char *kconv_dims_str(int rank, const int64_t *dims, char *buf, size_t n);

#endif
