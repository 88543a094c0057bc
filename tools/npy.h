/* .npy and .npz files (numpy's formats) for the kiln command: read into and write from tensors. */
#ifndef KILN_TOOLS_NPY_H
#define KILN_TOOLS_NPY_H

#include "core/tensor.h"

/* Reads one .npy from memory into t (t owns its data). Fails with a message in err. */
int npy_parse(const void *bytes, size_t size, kiln_tensor *t, char *err, size_t errlen);
int npy_read_file(const char *path, kiln_tensor *t, char *err, size_t errlen);
int npy_write_file(const char *path, const kiln_tensor *t, char *err, size_t errlen);

typedef struct npz_entry {
    char *name;        /* without the .npy suffix */
    kiln_tensor t;
} npz_entry;

/* Reads every array of an .npz (stored or deflated members). */
int npz_read_file(const char *path, npz_entry **entries, int *count, char *err, size_t errlen);
void npz_free(npz_entry *entries, int count);

/* Whole file into memory (malloc); NULL on failure with errno set. */
void *read_whole_file(const char *path, size_t *size);

#endif
