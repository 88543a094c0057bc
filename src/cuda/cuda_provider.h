/* The CUDA provider's host-side base: one device, one stream, one cuBLAS handle, a grow-only
 * workspace, and the error strings every CUDA entry point reports through.
 *
 * Kept free of the CPU runtime's .c files (it includes only kiln.h for kiln_status and the
 * dtype numbers) so that the standalone GPU test driver and benchmark can build it with nvcc and a
 * C compiler alone, on a machine that has no OpenBLAS. Errors: every function returns a
 * kiln_status; the message of the last failure on the calling thread is kiln_cuda_last_error(). */
#ifndef KILN_CUDA_PROVIDER_H
#define KILN_CUDA_PROVIDER_H

#include "kiln.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_cuda_provider kiln_cuda_provider;

typedef struct kiln_cuda_device_info {
    int device;
    int cc_major, cc_minor;
    int sm_count;
    size_t smem_per_block_optin; /* the most dynamic shared memory one block may ask for */
    size_t l2_bytes;
    size_t total_mem;
    char name[256];
} kiln_cuda_device_info;

/* Creates a provider on `device` with its own stream (ordered with the legacy default stream)
 * and cuBLAS handle. */
kiln_status kiln_cuda_provider_create(int device, kiln_cuda_provider **out);
void kiln_cuda_provider_destroy(kiln_cuda_provider *p);

const kiln_cuda_device_info *kiln_cuda_info(const kiln_cuda_provider *p);
/* The stream every kernel of this provider runs on (a cudaStream_t). */
void *kiln_cuda_stream(const kiln_cuda_provider *p);
/* The cuBLAS handle (a cublasHandle_t) bound to that stream. */
void *kiln_cuda_cublas(const kiln_cuda_provider *p);

/* Device memory. */
kiln_status kiln_cuda_malloc(kiln_cuda_provider *p, size_t bytes, void **out);
void kiln_cuda_free(kiln_cuda_provider *p, void *ptr);
/* Scratch memory of at least `bytes`, valid until the next call of kiln_cuda_workspace on this
 * provider. Grows (at least doubling; an outgrown buffer is kept until the provider goes, since
 * recorded graphs may use it), never shrinks. */
kiln_status kiln_cuda_workspace(kiln_cuda_provider *p, size_t bytes, void **out);

/* Copies on the provider's stream. The _sync variants wait for the stream afterwards. */
kiln_status kiln_cuda_h2d(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes);
kiln_status kiln_cuda_d2h(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes);
kiln_status kiln_cuda_d2d(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes);
kiln_status kiln_cuda_h2d_sync(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes);
kiln_status kiln_cuda_d2h_sync(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes);
kiln_status kiln_cuda_memset(kiln_cuda_provider *p, void *dst, int value, size_t bytes);
kiln_status kiln_cuda_sync(kiln_cuda_provider *p);

/* Message of the last failure on this thread ("" when none). */
const char *kiln_cuda_last_error(void);
/* Records a failure message (printf-style) and returns code; used by all CUDA sources. */
kiln_status kiln_cuda_fail(kiln_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Turns a cudaError_t (as int) into a status, recording "what: cudaErrorName: description". */
kiln_status kiln_cuda_check(int cuda_err, const char *what);
/* Same for a cublasStatus_t. */
kiln_status kiln_cublas_check(int cublas_status, const char *what);
const char *kiln_cublas_status_name(int cublas_status);

#ifdef __cplusplus
}
#endif

#endif
