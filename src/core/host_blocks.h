/* A small cache of large host blocks that outputs and intermediate values handed back, for the
 * next allocation of about the same size. A fresh large malloc is mmap'd pages that fault on first
 * write, and glibc gives large blocks back to the system when they are freed: a device-to-host
 * copy of 51 MB took 20 to 35 ms into fresh pages against 4 ms into reused ones
 * (scripts/gpu/host_io_probe.py, H100 host), and a CPU model with 24 outputs of 786 KB ran in 18.6 ms
 * against onnxruntime's 1.05 ms (its CPU arena reuses them), 0.98 ms with this cache
 * (bench/kiln_ab.py, 2-core VM). */
#ifndef KILN_HOST_BLOCKS_H
#define KILN_HOST_BLOCKS_H

#include <stddef.h>

/* A cached block of at least bytes and at most twice that, or NULL (then malloc). */
void *kiln_host_block_take(size_t bytes);
/* Keeps block p (from malloc) for a later take: 1, or 0 when the caller frees it. */
int kiln_host_block_give(void *p);
/* Frees every cached block (kiln_session_release_memory). */
void kiln_host_blocks_drop(void);

#endif
