#include "cuda_provider.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct kiln_cuda_provider {
    kiln_cuda_device_info info;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *ws;
    size_t ws_bytes;
    /* Outgrown workspaces stay allocated until the provider goes: a recorded CUDA graph may still
     * point at one. Growth at least doubles, so these hold less than the current buffer. */
    void *retired[48];
    int n_retired;
};

static _Thread_local char last_error[1024];

const char *kiln_cuda_last_error(void) { return last_error; }

kiln_status kiln_cuda_fail(kiln_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

kiln_status kiln_cuda_check(int cuda_err, const char *what) {
    if (cuda_err == cudaSuccess) return KILN_OK;
    cudaError_t e = (cudaError_t)cuda_err;
    kiln_status code = e == cudaErrorMemoryAllocation ? KILN_ERR_NO_MEMORY : KILN_ERR_RUNTIME;
    return kiln_cuda_fail(code, "%s: %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

const char *kiln_cublas_status_name(int s) {
    switch ((cublasStatus_t)s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

kiln_status kiln_cublas_check(int s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return KILN_OK;
    kiln_status code = s == CUBLAS_STATUS_ALLOC_FAILED ? KILN_ERR_NO_MEMORY
                       : s == CUBLAS_STATUS_NOT_SUPPORTED ? KILN_ERR_NOT_IMPLEMENTED
                                                          : KILN_ERR_RUNTIME;
    return kiln_cuda_fail(code, "%s: %s", what, kiln_cublas_status_name(s));
}

#define CK(call, what)                                                                              \
    do {                                                                                            \
        kiln_status st_ = kiln_cuda_check((int)(call), what);                                       \
        if (st_ != KILN_OK) return st_;                                                             \
    } while (0)

kiln_status kiln_cuda_provider_create(int device, kiln_cuda_provider **out) {
    *out = NULL;
    int count = 0;
    CK(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device < 0 || device >= count)
        return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "CUDA device %d requested, %d present", device, count);
    CK(cudaSetDevice(device), "cudaSetDevice");
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");

    kiln_cuda_provider *p = calloc(1, sizeof *p);
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_MEMORY, "out of host memory");
    p->info.device = device;
    p->info.cc_major = prop.major;
    p->info.cc_minor = prop.minor;
    p->info.sm_count = prop.multiProcessorCount;
    p->info.smem_per_block_optin = prop.sharedMemPerBlockOptin;
    p->info.l2_bytes = (size_t)prop.l2CacheSize;
    p->info.total_mem = prop.totalGlobalMem;
    snprintf(p->info.name, sizeof p->info.name, "%s", prop.name);

    /* a blocking stream: it waits for the legacy default stream, where torch and cupy queue the
     * work that fills device inputs handed to kiln, and that stream waits for it in turn */
    /* handles are stored only once created: a failed create (out of memory) may leave garbage in
     * its output, which destroy would then hand back to the runtime (seen under compute-sanitizer:
     * "invalid resource handle" from cudaStreamSynchronize on the failure path) */
    cudaStream_t stream = NULL;
    cublasHandle_t cublas = NULL;
    kiln_status st = kiln_cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamDefault),
                                     "cudaStreamCreateWithFlags");
    if (st == KILN_OK) {
        p->stream = stream;
        st = kiln_cublas_check(cublasCreate(&cublas), "cublasCreate");
        if (st == KILN_OK) {
            p->cublas = cublas;
            st = kiln_cublas_check(cublasSetStream(p->cublas, p->stream), "cublasSetStream");
        }
    }
    if (st != KILN_OK) {
        kiln_cuda_provider_destroy(p);
        return st;
    }
    *out = p;
    return KILN_OK;
}

void kiln_cuda_provider_destroy(kiln_cuda_provider *p) {
    if (!p) return;
    if (p->stream) cudaStreamSynchronize(p->stream);
    if (p->ws) cudaFree(p->ws);
    for (int i = 0; i < p->n_retired; i++) cudaFree(p->retired[i]);
    if (p->cublas) cublasDestroy(p->cublas);
    if (p->stream) cudaStreamDestroy(p->stream);
    free(p);
}

/* p is NULL for a provider opened for placement only (no device): the accessors then give what
 * makes the first CUDA call fail with the runtime's own error instead of crashing. */
static const kiln_cuda_device_info no_device_info;
const kiln_cuda_device_info *kiln_cuda_info(const kiln_cuda_provider *p) { return p ? &p->info : &no_device_info; }
void *kiln_cuda_stream(const kiln_cuda_provider *p) { return p ? p->stream : NULL; }
void *kiln_cuda_cublas(const kiln_cuda_provider *p) { return p ? p->cublas : NULL; }

kiln_status kiln_cuda_malloc(kiln_cuda_provider *p, size_t bytes, void **out) {
    (void)p;
    *out = NULL;
    if (bytes == 0) bytes = 1; /* a distinct, valid pointer even for empty tensors */
    char what[64];
    snprintf(what, sizeof what, "cudaMalloc(%zu bytes)", bytes);
    CK(cudaMalloc(out, bytes), what);
    return KILN_OK;
}

void kiln_cuda_free(kiln_cuda_provider *p, void *ptr) {
    (void)p;
    if (ptr) cudaFree(ptr);
}

kiln_status kiln_cuda_workspace(kiln_cuda_provider *p, size_t bytes, void **out) {
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "no CUDA device (placement only)");
    if (bytes <= p->ws_bytes && p->ws) {
        *out = p->ws;
        return KILN_OK;
    }
    if (bytes < 2 * p->ws_bytes) bytes = 2 * p->ws_bytes;
    void *fresh = NULL;
    kiln_status st = kiln_cuda_malloc(p, bytes, &fresh);
    if (st != KILN_OK) return st;
    if (p->ws) {
        if (p->n_retired < (int)(sizeof p->retired / sizeof p->retired[0])) {
            p->retired[p->n_retired++] = p->ws;
        } else { /* not reached with doubling growth; queued work may still read it */
            CK(cudaStreamSynchronize(p->stream), "cudaStreamSynchronize");
            cudaFree(p->ws);
        }
    }
    p->ws = fresh;
    p->ws_bytes = bytes;
    *out = p->ws;
    return KILN_OK;
}

kiln_status kiln_cuda_h2d(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes) {
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "no CUDA device (placement only)");
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, p->stream), "cudaMemcpyAsync H2D");
    return KILN_OK;
}

kiln_status kiln_cuda_d2h(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes) {
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "no CUDA device (placement only)");
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, p->stream), "cudaMemcpyAsync D2H");
    return KILN_OK;
}

kiln_status kiln_cuda_d2d(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes) {
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "no CUDA device (placement only)");
    CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, p->stream), "cudaMemcpyAsync D2D");
    return KILN_OK;
}

kiln_status kiln_cuda_h2d_sync(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes) {
    kiln_status st = kiln_cuda_h2d(p, dst, src, bytes);
    return st != KILN_OK ? st : kiln_cuda_sync(p);
}

kiln_status kiln_cuda_d2h_sync(kiln_cuda_provider *p, void *dst, const void *src, size_t bytes) {
    kiln_status st = kiln_cuda_d2h(p, dst, src, bytes);
    return st != KILN_OK ? st : kiln_cuda_sync(p);
}

kiln_status kiln_cuda_memset(kiln_cuda_provider *p, void *dst, int value, size_t bytes) {
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "no CUDA device (placement only)");
    CK(cudaMemsetAsync(dst, value, bytes, p->stream), "cudaMemsetAsync");
    return KILN_OK;
}

kiln_status kiln_cuda_sync(kiln_cuda_provider *p) {
    if (!p) return kiln_cuda_fail(KILN_ERR_NO_PROVIDER, "no CUDA device (placement only)");
    CK(cudaStreamSynchronize(p->stream), "cudaStreamSynchronize");
    return KILN_OK;
}
