/* Reverse-mode differentiation over a kiln graph (autodiff.c) and the per-op gradient rules
 * (grad_rules.c). The builder appends gradient nodes to the graph it is given: ONNX ops where
 * they express the gradient directly, kiln-domain gradient kernels (src/cpu/kernels/grad_*.c)
 * where they would be slow or need shapes only known at run time. */
#ifndef KILN_AUTODIFF_H
#define KILN_AUTODIFF_H

#include "../core/graph.h"
#include "../opt/pattern.h"

typedef struct kiln_ad {
    kiln_model *m;
    kiln_graph *g;
    kiln_err *e;
    opt_ctx oc;            /* static types of the forward graph */
    int n_fwd;             /* values of the forward graph (before any gradient node) */
    int opset;             /* the model's ai.onnx opset */
    const char *prefix;    /* names of the nodes added: "<prefix>_<op>_<index>" */
    int *dtype;            /* per forward value: its element type (0 unknown) */
    unsigned char *active; /* per forward value: depends on a trainable parameter and reaches the loss */
    int *n_contrib, *cap_contrib;
    int **contrib;         /* per forward value: gradient contributions, summed when read */
} kiln_ad;

/* ---- graph building (autodiff.c) ---- */
/* A new value named after `base` (made unique); -1 when out of memory. */
int kiln_ad_value(kiln_ad *a, const char *base);
/* A new constant value holding t (taken over: released on failure); returns its index or -1. */
int kiln_ad_const(kiln_ad *a, const char *base, kiln_tensor *t);
/* Appends node domain:op reading ins and writing n_out values: outs[k] = -2 beforehand makes a
 * new value (written back into outs[k]), -1 leaves output k absent, >= 0 names the value. Attributes are taken over. Returns the
 * node's first output or -1 (out of memory, reported in a->e). */
int kiln_ad_node(kiln_ad *a, const char *domain, const char *op, const int *ins, int n_in, int *outs,
                 int n_out, kiln_attr *attrs, int n_attrs);
/* One-output shorthand. */
int kiln_ad_op1(kiln_ad *a, const char *domain, const char *op, const int *ins, int n_in, kiln_attr *attrs,
                int n_attrs);
/* A scalar constant of a float type. */
int kiln_ad_scalar(kiln_ad *a, int dtype, double v);
/* Attribute makers into a caller array (return 0 when out of memory). */
int kiln_ad_attr_int(kiln_attr *at, const char *name, int64_t v);
int kiln_ad_attr_float(kiln_attr *at, const char *name, float v);
int kiln_ad_attr_string(kiln_attr *at, const char *name, const char *s);
int kiln_ad_attr_ints(kiln_attr *at, const char *name, const int64_t *v, int n);
/* Deep copy of the attributes of n (the scalar and list kinds; others are refused with an error). */
kiln_status kiln_ad_copy_attrs(kiln_ad *a, const kiln_node *n, int extra, kiln_attr **out, int *count);
/* Element type of a forward value (0 unknown). */
int kiln_ad_dtype(const kiln_ad *a, int v);

/* ---- rules (grad_rules.c) ---- */
/* dy[k]: gradient of node output k (-1: none reaches it). need[i]: input i needs a gradient.
 * Fills dx[i] (pre-set to -1) for the needed inputs. Returns KILN_NOT_IMPLEMENTED with
 * no message when the op has no rule. */
typedef kiln_status (*kiln_grad_rule)(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need,
                                      int *dx);
/* The rule of node n's op, or NULL. */
kiln_grad_rule kiln_grad_rule_for(const kiln_node *n);
/* Ops whose outputs carry no gradient (shapes, comparisons, indices, rounding). */
int kiln_grad_blocks(const kiln_node *n);

/* ---- the walk (autodiff.c) ---- */
/* Differentiates value `loss` (a scalar) with respect to params (forward value indices), adding
 * the gradient nodes to a->g; grads[i] gets the gradient of params[i]. */
kiln_status kiln_ad_init(kiln_ad *a, kiln_model *m, kiln_err *e);
kiln_status kiln_ad_backward(kiln_ad *a, int loss, const int *params, int n_params, const int *frozen,
                             int n_frozen, int *grads);
void kiln_ad_free(kiln_ad *a);
/* expand_attention.c: rewrites com.microsoft Attention nodes that a parameter reaches into
 * standard ops (before kiln_ad_backward); refuses the forms it cannot express. */
kiln_status kiln_ad_expand_attention(kiln_ad *a, const int *params, int n_params);

#endif
