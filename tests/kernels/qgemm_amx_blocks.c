/* Driver for tests/test_qgemm_amx.py: the AMX-INT8 blocks of src/cpu/kernels/qgemm_amx.c, built
 * with -DKQG_AMX_EMULATE (scalar tiles) and AddressSanitizer, on packed operands allocated exactly
 * as qgemm.c promises (A: rows * K4 * 4 bytes plus 64 of slack; B: panels * K4 * 64 bytes, none),
 * every byte random, slack included. The reference reads the packed layouts as qgemm.h defines
 * them. Prints "ok" or the first difference; exits 1 on a difference. */
#include "../../src/cpu/kernels/qgemm_amx.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 2463534242u;
static uint8_t next_byte(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return (uint8_t)(rng >> 11);
}

static int check(int rows, int panels, int64_t K4) {
    int64_t lda = K4 * 4, ps = K4 * 64, ldc = 40; /* C rows wider than the block: stride honoured */
    uint8_t *a = malloc((size_t)(rows * lda + 64));
    int8_t *b = malloc((size_t)(panels * ps));
    int32_t *c = malloc(sizeof(int32_t) * (size_t)(rows * ldc));
    for (int64_t i = 0; i < rows * lda + 64; i++) a[i] = next_byte();
    for (int64_t i = 0; i < panels * ps; i++) b[i] = (int8_t)next_byte();
    for (int64_t i = 0; i < rows * ldc; i++) c[i] = 0x5a5a5a5a;
    kqg_amx_block(rows, panels, K4, a, lda, b, ps, c, ldc);
    int bad = 0;
    for (int m = 0; m < rows && !bad; m++)
        for (int n = 0; n < ldc && !bad; n++) {
            int32_t want = 0x5a5a5a5a; /* columns past the block's stay untouched */
            if (n < 16 * panels) {
                uint32_t s = 0;
                for (int64_t k = 0; k < K4 * 4; k++)
                    s += (uint32_t)((int32_t)a[m * lda + k] * b[(n / 16) * ps + (k / 4) * 64 + (n % 16) * 4 + k % 4]);
                want = (int32_t)s;
            }
            if (c[m * ldc + n] != want) {
                printf("rows %d panels %d K4 %lld: c[%d][%d] = %d, want %d\n", rows, panels, (long long)K4, m, n,
                       c[m * ldc + n], want);
                bad = 1;
            }
        }
    free(a);
    free(b);
    free(c);
    return bad;
}

int main(void) {
    static const int64_t k4s[] = {1, 5, 15, 16, 17, 32, 33, 100};
    int bad = 0;
    for (int r = 16; r <= 32; r += 16)
        for (int p = 1; p <= 2; p++)
            for (size_t i = 0; i < sizeof k4s / sizeof k4s[0]; i++) bad |= check(r, p, k4s[i]);
    if (!bad) printf("ok\n");
    return bad;
}
