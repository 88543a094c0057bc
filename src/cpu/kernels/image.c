/* The image family table: GridSample, AffineGrid (image_grid.c) and RoiAlign (image_roialign.c). */
#include "image_kernels.h"
#include <stdlib.h>

static void free_state(void *state) { free(state); }

const kiln_op kiln_ops_image[] = {
    {"", "GridSample", 16, 0, kiln_grid_sample_init, kiln_grid_sample_infer, kiln_grid_sample_compute,
     free_state},
    {"", "AffineGrid", 20, 0, NULL, kiln_affine_grid_infer, kiln_affine_grid_compute, NULL},
    {"", "RoiAlign", 10, 0, NULL, kiln_roi_align_infer, kiln_roi_align_compute, NULL},
    {0},
};
