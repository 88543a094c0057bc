// Device helpers shared by the data-movement kernels (data.cu, data_index.cu, data_resize.cu):
// element "units" (data movement only cares about an element's size, so every type of 1, 2, 4, 8
// or 16 bytes moves as one unsigned type of that size), fast 32-bit division for index math, and
// the launch shape of a grid-stride loop.
#ifndef KILN_CUDA_DATA_COMMON_CUH
#define KILN_CUDA_DATA_COMMON_CUH

#include "../cuda_provider.h"
#include "data.h"

#include <cuda_runtime.h>
#include <stdint.h>

namespace kiln_data {

constexpr int kThreads = 256;

// Grid-stride loops: enough blocks to fill the GPU many times over, capped so huge tensors loop.
static inline unsigned grid_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b < 1) b = 1;
    if (b > (1 << 18)) b = 1 << 18;
    return (unsigned)b;
}

template <typename T> struct Tag { using type = T; };

// Calls f(Tag<U>()) with U the unsigned type of `bytes` bytes (1, 2, 4, 8 or 16).
template <typename F> static kiln_status with_unit(size_t bytes, F f) {
    switch (bytes) {
    case 1: f(Tag<uint8_t>()); return KILN_OK;
    case 2: f(Tag<uint16_t>()); return KILN_OK;
    case 4: f(Tag<uint32_t>()); return KILN_OK;
    case 8: f(Tag<uint2>()); return KILN_OK;
    case 16: f(Tag<uint4>()); return KILN_OK;
    default:
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "element size %zu is not supported on CUDA", bytes);
    }
}

// The widest unit (16 bytes at most) that divides every byte count in `sizes` and every address
// in `ptrs`: runs of elements whose lengths and addresses allow it move 16 bytes per thread.
static inline size_t widest_unit(size_t elem, int n_sizes, const int64_t *byte_sizes, int n_ptrs,
                                 const void *const *ptrs) {
    size_t u = 16;
    while (u > elem) {
        int ok = 1;
        for (int i = 0; i < n_sizes && ok; i++) ok = byte_sizes[i] % (int64_t)u == 0;
        for (int i = 0; i < n_ptrs && ok; i++) ok = ptrs[i] == nullptr || (uintptr_t)ptrs[i] % u == 0;
        if (ok) break;
        u >>= 1;
    }
    return u < elem ? elem : u;
}

// Division by a run-time constant for numerators below 2^31: q = (umulhi(n, m) + n) >> s.
struct FastDiv {
    uint32_t d, m, s;
};

static inline FastDiv make_fastdiv(int64_t d) {
    FastDiv f;
    f.d = (uint32_t)d;
    uint32_t s = 0;
    while ((1ull << s) < (uint64_t)d) s++;
    f.s = s;
    f.m = (uint32_t)(((1ull << 32) * ((1ull << s) - (uint64_t)d)) / (uint64_t)d + 1);
    return f;
}

// Index arithmetic in 32 bits (FastDiv) when every index and offset fits, else in 64 bits. The
// kernels are templated on one of these two so the common case avoids 64-bit division.
struct Ix32 {
    using T = uint32_t;
    using S = int32_t; // signed offsets (negative strides)
    struct Div {
        FastDiv f;
        __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, f.m) + n) >> f.s; }
        __device__ __forceinline__ uint32_t d() const { return f.d; }
    };
    static Div make(int64_t d) { return Div{make_fastdiv(d < 1 ? 1 : d)}; }
};

struct Ix64 {
    using T = int64_t;
    using S = int64_t;
    struct Div {
        int64_t v;
        __device__ __forceinline__ int64_t div(int64_t n) const { return n / v; }
        __device__ __forceinline__ int64_t d() const { return v; }
    };
    static Div make(int64_t d) { return Div{d < 1 ? 1 : d}; }
};

// Whether values up to `n` (exclusive) are safe for the 32-bit path.
static inline bool fits32(int64_t n) { return n >= 0 && n < ((int64_t)1 << 31) - 1; }

static inline kiln_status launched(const char *what) { return kiln_cuda_check((int)cudaGetLastError(), what); }

} // namespace kiln_data

#endif
