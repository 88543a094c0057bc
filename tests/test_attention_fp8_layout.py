"""The FP8 attention kernel's data movement (src/cuda/attention/flash_fp8.cuh), emulated lane by
lane with the fragment layouts of PTX's ldmatrix (.b16 on bytes) and mma.m16n8k32 (8-bit A/B, f32
C/D), for one 16-row x 64-key block: the Q.K^T accumulators must hold S = Q K^T where the C
layout says, and P packed from them into A registers, times V^T with the keys permuted by key_at
(the prologue's order), must give P V. This runs without a GPU; it checks the index arithmetic
(the expressions mirror the kernel's), not the hardware, which tests/gpu/test_attention_fp8.cu
does."""
import numpy as np


def test_fp8_attention_fragment_data_flow():
    rng = np.random.default_rng(0)
    BN, HD = 64, 64
    def key_at(p): return (p & 16) + (((p & 3) >> 1) << 3) + 2 * ((p & 15) >> 2) + (p & 1)
    assert sorted(key_at(p) for p in range(32)) == list(range(32))
    Q = rng.integers(-3, 4, (16, HD)).astype(np.float64)
    K = rng.integers(-3, 4, (BN, HD)).astype(np.float64)
    V = rng.integers(-3, 4, (BN, HD)).astype(np.float64)
    # transposer: Vt[d][pos] = V[(pos & ~31) + key_at(pos & 31)][d]
    Vt = np.zeros((HD, BN))
    for pos in range(BN):
        Vt[:, pos] = V[(pos & ~31) + key_at(pos & 31), :]
    def ldsm_x4(mem, lane_addr):  # mem: 2-D byte array; lane_addr(lane) -> (row, bytecol)
        regs = [[None]*4 for _ in range(32)]
        for i in range(4):
            for T in range(32):
                r, c = lane_addr(8 * i + T // 4)
                regs[T][i] = [mem[r, c + 4 * (T % 4) + j] for j in range(4)]
        return regs
    def mma(acc, a, b0, b1):  # per lane fragments -> D += A B
        A = np.zeros((16, 32)); B = np.zeros((32, 8))
        for L in range(32):
            g, t = L >> 2, L & 3
            for j in range(4):
                A[g, 4*t+j] = a[L][0][j]; A[g+8, 4*t+j] = a[L][1][j]
                A[g, 16+4*t+j] = a[L][2][j]; A[g+8, 16+4*t+j] = a[L][3][j]
                B[4*t+j, g] = b0[L][j]; B[16+4*t+j, g] = b1[L][j]
        D = A @ B
        for L in range(32):
            g, t = L >> 2, L & 3
            acc[L][0] += D[g, 2*t]; acc[L][1] += D[g, 2*t+1]; acc[L][2] += D[g+8, 2*t]; acc[L][3] += D[g+8, 2*t+1]
    NT = BN // 8
    acc_s = [[[0.0]*4 for _ in range(32)] for _ in range(NT)]
    for ks in range(HD // 32):
        a = ldsm_x4(Q, lambda L: (L & 15, (L >> 4) * 16 + ks * 32))
        for np_ in range(NT // 2):
            bk = ldsm_x4(K, lambda L: (np_ * 16 + (L & 7) + ((L >> 4) << 3), ((L >> 3) & 1) * 16 + ks * 32))
            mma(acc_s[2*np_], a, [bk[L][0] for L in range(32)], [bk[L][1] for L in range(32)])
            mma(acc_s[2*np_+1], a, [bk[L][2] for L in range(32)], [bk[L][3] for L in range(32)])
    S = Q @ K.T
    for nt in range(NT):
        for L in range(32):
            g, t = L >> 2, L & 3
            assert acc_s[nt][L] == [S[g, 8*nt+2*t], S[g, 8*nt+2*t+1], S[g+8, 8*nt+2*t], S[g+8, 8*nt+2*t+1]]
    P = S  # any values: check P.V
    acc_o = [[[0.0]*4 for _ in range(32)] for _ in range(HD // 8)]
    for kk in range(BN // 32):
        a = []
        for L in range(32):
            s0, s1, s2, s3 = (acc_s[4*kk+i][L] for i in range(4))
            a.append([[s0[0], s0[1], s1[0], s1[1]], [s0[2], s0[3], s1[2], s1[3]],
                      [s2[0], s2[1], s3[0], s3[1]], [s2[2], s2[3], s3[2], s3[3]]])
        for dp in range(HD // 16):
            bv = ldsm_x4(Vt, lambda L: (dp * 16 + (L & 7) + ((L >> 4) << 3), ((L >> 3) & 1) * 16 + kk * 32))
            mma(acc_o[2*dp], a, [bv[L][0] for L in range(32)], [bv[L][1] for L in range(32)])
            mma(acc_o[2*dp+1], a, [bv[L][2] for L in range(32)], [bv[L][3] for L in range(32)])
    O = P @ V
    for d in range(HD // 8):
        for L in range(32):
            g, t = L >> 2, L & 3
            assert acc_o[d][L] == [O[g, 8*d+2*t], O[g, 8*d+2*t+1], O[g+8, 8*d+2*t], O[g+8, 8*d+2*t+1]], (d, L)
    pass
