// Random inputs and timing shared by the attention benchmarks; timing follows ../shared/bench/sdpa_peers.py's
// median_seconds, so kiln's numbers and the PyTorch peers' are taken the same way.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#include "../../tests/gpu/cuda_check.h"

// Standard-normal-ish values (sum of four uniforms, rescaled), never zero-filled buffers.
__global__ void fill_random(uint16_t *p, size_t n, uint32_t seed, int bf16) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 0x9E3779B1u ^ seed;
        float s = 0.f;
        for (int r = 0; r < 4; ++r) {
            x ^= x >> 16;
            x *= 0x7feb352du;
            x ^= x >> 15;
            x *= 0x846ca68bu;
            x ^= x >> 16;
            s += (x >> 8) * (1.f / 16777216.f);
        }
        float v = (s - 2.f) * 1.7320508f;
        uint32_t bits = __float_as_uint(v);
        if (bf16)
            p[i] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1)) >> 16);
        else
            p[i] = __half_as_ushort(__float2half_rn(v));
    }
}

// Events go on kiln's stream: it is a non-blocking stream, so events on the legacy default stream
// would not order with its work and would time nothing.
static cudaStream_t g_stream;

template <typename F> static double median_seconds(F fn, int blocks = 15, double block_ms = 2.0, int warmup = 10) {
    for (int i = 0; i < warmup; ++i) fn();
    CUDA_OK(cudaDeviceSynchronize());
    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    CUDA_OK(cudaEventRecord(a, g_stream));
    fn();
    CUDA_OK(cudaEventRecord(b, g_stream));
    CUDA_OK(cudaEventSynchronize(b));
    float one;
    CUDA_OK(cudaEventElapsedTime(&one, a, b));
    int k = std::max(1, (int)(block_ms / std::max((double)one, 1e-3)));
    std::vector<cudaEvent_t> ev(2 * blocks);
    for (auto &e : ev) CUDA_OK(cudaEventCreate(&e));
    for (int i = 0; i < blocks; ++i) {
        CUDA_OK(cudaEventRecord(ev[2 * i], g_stream));
        for (int j = 0; j < k; ++j) fn();
        CUDA_OK(cudaEventRecord(ev[2 * i + 1], g_stream));
    }
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> t(blocks);
    for (int i = 0; i < blocks; ++i) CUDA_OK(cudaEventElapsedTime(&t[i], ev[2 * i], ev[2 * i + 1]));
    for (auto &e : ev) cudaEventDestroy(e);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    std::sort(t.begin(), t.end());
    return t[blocks / 2] / k / 1e3;
}

