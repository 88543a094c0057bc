// What the CUDA test programs share: a checked CUDA call and a seeded generator of test values
// (xorshift, so every run and every machine draws the same cases). A file defines
// GPU_TEST_SEED before including this to get its own stream.
#pragma once

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_check.h"

#ifndef GPU_TEST_SEED
#define GPU_TEST_SEED 0x9E3779B97F4A7C15ull
#endif
static uint64_t rng_state = GPU_TEST_SEED;
// uniform in (0, 1)
static double urand() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
// standard normal (Box-Muller)
static float nrand() { return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand())); }
