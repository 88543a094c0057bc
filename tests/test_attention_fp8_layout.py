"""The FP8 attention kernel's data movement (src/cuda/attention/flash_fp8.cuh), emulated lane by
lane with the fragment layouts of PTX's ldmatrix (.b16 on bytes) and mma.m16n8k32 (8-bit A/B, f32
C/D), for one 16-row x 64-key block: the Q.K^T accumulators must hold S = Q K^T where the C
layout says, and P packed from them into A registers, times V^T with the keys permuted by key_at
(the prologue's order), must give P V. This runs without a GPU; it checks the index arithmetic
(the expressions mirror the kernel's), not the hardware, which tests/gpu/test_attention_fp8.cu
does. The fp16-multiply variant (F16: each 8-bit register split into two f16x2 halves, one
m16n8k32 as two m16n8k16 over relabelled k) is checked the same way."""
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
    # F16 variant: lo/hi halves of a 4-byte register; m16n8k16 fp16 fragments (a0 row g k 2t..,
    # a1 row g+8, a2 row g k 8+2t.., a3 row g+8; b0 k 2t.. col g, b1 k 8+2t..)
    def lo(r): return r[0:2]
    def hi(r): return r[2:4]
    def mma16(acc, a, b0, b1):
        A = np.zeros((16, 16)); B = np.zeros((16, 8))
        for L in range(32):
            g, t = L >> 2, L & 3
            for e in range(2):
                A[g, 2*t+e] = a[L][0][e]; A[g+8, 2*t+e] = a[L][1][e]
                A[g, 8+2*t+e] = a[L][2][e]; A[g+8, 8+2*t+e] = a[L][3][e]
                B[2*t+e, g] = b0[L][e]; B[8+2*t+e, g] = b1[L][e]
        D = A @ B
        for L in range(32):
            g, t = L >> 2, L & 3
            acc[L][0] += D[g, 2*t]; acc[L][1] += D[g, 2*t+1]; acc[L][2] += D[g+8, 2*t]; acc[L][3] += D[g+8, 2*t+1]
    s16 = [[[0.0]*4 for _ in range(32)] for _ in range(NT)]
    for ks in range(HD // 32):
        a = ldsm_x4(Q, lambda L: (L & 15, (L >> 4) * 16 + ks * 32))
        a16 = [[lo(a[L][0]), hi(a[L][0]), lo(a[L][1]), hi(a[L][1]), lo(a[L][2]), hi(a[L][2]), lo(a[L][3]),
                hi(a[L][3])] for L in range(32)]
        for np_ in range(NT // 2):
            bk = ldsm_x4(K, lambda L: (np_ * 16 + (L & 7) + ((L >> 4) << 3), ((L >> 3) & 1) * 16 + ks * 32))
            for j in range(2):
                b16 = [[lo(bk[L][i]) if k % 2 == 0 else hi(bk[L][i]) for i in range(4) for k in range(2)]
                       for L in range(32)]
                mma16(s16[2*np_+j], [[a16[L][0], a16[L][2], a16[L][1], a16[L][3]] for L in range(32)],
                      [b16[L][4*j] for L in range(32)], [b16[L][4*j+1] for L in range(32)])
                mma16(s16[2*np_+j], [[a16[L][4], a16[L][6], a16[L][5], a16[L][7]] for L in range(32)],
                      [b16[L][4*j+2] for L in range(32)], [b16[L][4*j+3] for L in range(32)])
    assert s16 == acc_s
    o16 = [[[0.0]*4 for _ in range(32)] for _ in range(HD // 8)]
    for kk in range(BN // 32):
        a = [[[[s16[4*kk+2*j][L][0], s16[4*kk+2*j][L][1]], [s16[4*kk+2*j][L][2], s16[4*kk+2*j][L][3]],
               [s16[4*kk+2*j+1][L][0], s16[4*kk+2*j+1][L][1]], [s16[4*kk+2*j+1][L][2], s16[4*kk+2*j+1][L][3]]]
              for j in range(2)] for L in range(32)]
        for dp in range(HD // 16):
            bv = ldsm_x4(Vt, lambda L: (dp * 16 + (L & 7) + ((L >> 4) << 3), ((L >> 3) & 1) * 16 + kk * 32))
            for i in range(2):
                for j in range(2):
                    mma16(o16[2*dp+i], [a[L][j] for L in range(32)], [lo(bv[L][2*i+j]) for L in range(32)],
                          [hi(bv[L][2*i+j]) for L in range(32)])
    for d in range(HD // 8):
        for L in range(32):
            g, t = L >> 2, L & 3
            assert o16[d][L] == [O[g, 8*d+2*t], O[g, 8*d+2*t+1], O[g+8, 8*d+2*t], O[g+8, 8*d+2*t+1]], (d, L)
    for d in range(HD // 8):
        for L in range(32):
            g, t = L >> 2, L & 3
            assert acc_o[d][L] == [O[g, 8*d+2*t], O[g, 8*d+2*t+1], O[g+8, 8*d+2*t], O[g+8, 8*d+2*t+1]], (d, L)
    pass


def test_fp8_attention_wgmma_fragment_data_flow():
    """The wgmma variant (src/cuda/attention/flash_fp8_sm90.cuh) for warpgroup 1 of a BM = 128 tile:
    tiles stored as load_sw stores them (128-byte swizzle, 128-byte column blocks), read back
    through the kernel's descriptor arithmetic (start address, SBO 1024, the hardware's XOR of
    address bits 4-6 with bits 7-9), Q.K^T into the wgmma accumulator layout (PTX ISA / CUTLASS
    CLayout_64xN), P packed as pack_p_e4m3 does into the 8-bit A layout (ALayout_64x32), V^T in
    key_at order: the result must be P V in the accumulator layout."""
    rng = np.random.default_rng(1)
    HD, BN, BM, wg = 256, 128, 128, 1
    def key_at(p): return (p & 16) + (((p & 3) >> 1) << 3) + 2 * ((p & 15) >> 2) + (p & 1)
    Q = rng.integers(-3, 4, (BM, HD)).astype(np.float64)
    K = rng.integers(-3, 4, (BN, HD)).astype(np.float64)
    V = rng.integers(-3, 4, (BN, HD)).astype(np.float64)
    Vt = np.zeros((HD, BN))
    for pos in range(BN):
        Vt[:, pos] = V[(pos & ~31) + key_at(pos & 31), :]

    def store_sw(mat):  # load_sw: chunk c (16 bytes) of row r -> block c >> 3, chunk (c & 7) ^ (r & 7)
        R, W = mat.shape
        smem = np.full(R * 128 * ((W + 127) // 128), np.nan)
        for r in range(R):
            for byte in range(W):
                c = byte // 16
                smem[(c >> 3) * (R * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4) + byte % 16] = mat[r, byte]
        return smem
    def desc_read(smem, start, rows):  # K-major SW128 operand of rows x 32 bytes at start (SBO 1024)
        out = np.zeros((rows, 32))
        for i in range(rows):
            for j in range(32):
                a = start + (i // 8) * 1024 + (i % 8) * 128 + j
                a ^= ((a >> 7) & 7) << 4
                out[i, j] = smem[a]
        return out
    sQ, sK, sV = store_sw(Q), store_sw(K), store_sw(Vt)
    # Q.K^T, one m64nBNk32 per 32 head bytes, as issue_qk
    S = np.zeros((64, BN))
    for ks in range(HD // 32):
        A = desc_read(sQ, (ks >> 2) * (BM * 128) + wg * (64 * 128) + (ks & 3) * 32, 64)
        B = desc_read(sK, (ks >> 2) * (BN * 128) + (ks & 3) * 32, BN)
        S += A @ B.T
    assert (S == Q[64 * wg:64 * wg + 64] @ K.T).all()
    # accumulator layout: thread T (warp w, lane L) holds s[4j + 2h + e] = S[16w + L/4 + 8h, 8j + 2(L%4) + e]
    def c_layout(M, n):
        regs = np.zeros((128, n // 2))
        for T in range(128):
            w, L = T >> 5, T & 31
            for j in range(n // 8):
                for h in range(2):
                    for e in range(2):
                        regs[T, 4 * j + 2 * h + e] = M[16 * w + (L >> 2) + 8 * h, 8 * j + 2 * (L & 3) + e]
        return regs
    s = c_layout(S, BN)
    # pack_p_e4m3: register v1 + 2 v2 of step kk, byte v0 from s[16kk + 8v2 + 2v1 + (v0 & 1) + 4 (v0 >> 1)]
    O = np.zeros((64, HD))
    for kk in range(BN // 32):
        A = np.zeros((64, 32))
        for T in range(128):
            w, L = T >> 5, T & 31
            for v2 in range(2):
                for v1 in range(2):
                    a = 16 * kk + 8 * v2 + 2 * v1
                    byts = [s[T, a], s[T, a + 1], s[T, a + 4], s[T, a + 5]]
                    for v0 in range(4):  # ALayout_64x32: row 16w + L/4 + 8 v1, k 4 (L%4) + v0 + 16 v2
                        A[16 * w + (L >> 2) + 8 * v1, 4 * (L & 3) + v0 + 16 * v2] = byts[v0]
        B = desc_read(sV, (kk >> 2) * (HD * 128) + (kk & 3) * 32, HD)  # issue_pv
        O += A @ B.T
    assert (O == S @ V).all()
    assert (c_layout(O, HD) == c_layout(S @ V, HD)).all()


def test_fp8_ring_ex2_fma():
    """ex2_fma (src/cuda/attention/flash_fp8_sm90_ring.cuh), step by step in float32: the rounding
    by 1.5 * 2^23, the degree-3 fit and the exponent added by shifting the rounded float's bits
    must give 2^x to well under e4m3's rounding, and a normal float near 2^-126 for masked keys."""
    f32 = np.float32
    c = [f32(0.05286743491888046), f32(0.2421518862247467), f32(0.6935867667198181), f32(0.9999627470970154)]
    x = np.concatenate([np.linspace(-140, 12, 400001, dtype=np.float32), np.float32([-np.inf, 0, 8, -126])])
    xc = np.maximum(x, f32(-126))
    M = f32(12582912.0)
    j = xc + M
    f = xc - (j - M)
    assert np.abs(f).max() <= 0.5
    q = c[0] * f + c[1]
    q = q * f + c[2]
    q = q * f + c[3]
    bits = (q.view(np.uint32).astype(np.uint64) + (j.view(np.uint32).astype(np.uint64) << 23)) & 0xFFFFFFFF
    r = bits.astype(np.uint32).view(np.float32)
    live = x > -120
    assert np.abs(r[live] / np.exp2(x[live].astype(np.float64)) - 1).max() < 3e-4
    dead = x < -126
    assert (r[dead] > 0).all() and (r[dead] < 1.2e-38).all()
    assert np.isfinite(r).all()
