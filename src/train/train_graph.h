/* Training artifacts from an inference model: the training and eval graphs (reverse-mode
 * differentiation over the ONNX graph, see autodiff.h). Contract: docs/training.md. */
#ifndef KILN_TRAIN_GRAPH_H
#define KILN_TRAIN_GRAPH_H

typedef struct {
    const char *const *requires_grad; int n_requires_grad;
    const char *const *frozen; int n_frozen;       /* named so they are refused as trainable and never differentiated */
    const char *loss;                              /* "mse", "cross_entropy", "bce_with_logits", "l1" */
    const char *output;                            /* model output the loss takes; NULL = the first */
} kiln_train_graph_opts;

/* Writes training_model.onnx, eval_model.onnx and inference_model.onnx into out_dir (which
   exists). Returns 0, or nonzero with kiln_last_error()-style message (use the project's status
   machinery) naming e.g. the node whose op has no gradient, or an unknown parameter name. */
int kiln_train_build_graphs(const char *model_path, const kiln_train_graph_opts *o, const char *out_dir);

#endif
