/* The "tensor" kernel family: shape relabelling, data movement and data-dependent selection.
 * One entry per op; each kernel picks per-version behaviour from ctx->opset. */
#include "cpu/kernels/tensor_ops.h"

#define TK_OP(name, since, flags, fn) {"", name, since, flags, NULL, kiln_tk_##fn##_infer, kiln_tk_##fn##_compute, NULL}

const kiln_op kiln_ops_tensor[] = {
    TK_OP("Reshape", 1, KILN_OP_ALIAS, reshape),
    TK_OP("Flatten", 1, KILN_OP_ALIAS, flatten),
    TK_OP("Squeeze", 1, KILN_OP_ALIAS, squeeze),
    TK_OP("Unsqueeze", 1, KILN_OP_ALIAS, unsqueeze),
    TK_OP("Identity", 1, KILN_OP_ALIAS, identity),
    TK_OP("Transpose", 1, 0, transpose),
    TK_OP("Concat", 1, 0, concat),
    TK_OP("Split", 1, 0, split),
    TK_OP("Slice", 1, 0, slice),
    TK_OP("Expand", 8, 0, expand),
    TK_OP("Tile", 1, 0, tile),
    TK_OP("Trilu", 14, 0, trilu),
    TK_OP("EyeLike", 9, 0, eyelike),
    TK_OP("DepthToSpace", 1, 0, depth_to_space),
    TK_OP("SpaceToDepth", 1, 0, space_to_depth),
    TK_OP("ReverseSequence", 10, 0, reverse_sequence),
    TK_OP("NonZero", 9, KILN_OP_DYNAMIC, nonzero),
    TK_OP("Unique", 11, KILN_OP_DYNAMIC, unique),
    TK_OP("Compress", 9, KILN_OP_DYNAMIC, compress),
    TK_OP("Col2Im", 18, 0, col2im),
    {0},
};
