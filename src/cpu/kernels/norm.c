/* The norm family table: layer / RMS / skip normalisations (norm_layer.c), batch, instance and
 * group normalisation (norm_batch.c), Lp, mean-variance and local-response normalisation
 * (norm_misc.c), Dropout (norm_dropout.c). */
#include "norm_impl.h"

#define OP(dom, name, since, fn) {dom, name, since, 0, NULL, fn##_infer, fn##_compute, NULL}

const kiln_op kiln_ops_norm[] = {
    /* LayerNormalization became an ONNX op in 17; onnxruntime serves the same op under the
     * default domain for earlier opsets, as it does SimplifiedLayerNormalization. */
    OP("", "LayerNormalization", 1, kiln_layernorm),
    OP("com.microsoft", "LayerNormalization", 1, kiln_layernorm),
    OP("", "SimplifiedLayerNormalization", 1, kiln_simplified_ln),
    OP("com.microsoft", "SimplifiedLayerNormalization", 1, kiln_simplified_ln),
    OP("", "RMSNormalization", 23, kiln_rmsnorm),
    OP("com.microsoft", "SkipLayerNormalization", 1, kiln_skip_ln),
    OP("com.microsoft", "SkipSimplifiedLayerNormalization", 1, kiln_skip_simplified_ln),
    OP("", "BatchNormalization", 1, kiln_batchnorm),
    OP("", "InstanceNormalization", 1, kiln_instancenorm),
    OP("", "GroupNormalization", 18, kiln_groupnorm),
    OP("", "LpNormalization", 1, kiln_lpnorm),
    OP("", "MeanVarianceNormalization", 9, kiln_mvn),
    OP("", "LRN", 1, kiln_lrn),
    OP("", "Dropout", 1, kiln_dropout),
    {0}};
