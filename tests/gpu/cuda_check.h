// CUDA_OK: a checked CUDA runtime call for the CUDA test and benchmark programs (tests/gpu,
// bench/attention); on failure it names the call and the file and line, and exits with 2.
#pragma once

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_OK(x)                                                                                  \
    do {                                                                                            \
        cudaError_t e_ = (x);                                                                       \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
            exit(2);                                                                                \
        }                                                                                           \
    } while (0)
