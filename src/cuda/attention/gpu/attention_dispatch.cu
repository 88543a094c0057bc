// Kernel selection for fused attention and the MultiHeadAttention format front end.
#include "../attention_internal.h"
#include "../flash_fwd.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KILN_TRY_CUDA_ST(x)                                                                         \
    do {                                                                                            \
        kiln_status st_ = (x);                                                                      \
        if (st_ != KILN_OK) return st_;                                                             \
    } while (0)

namespace {

int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

kiln_attn_env g_env;
bool g_env_ready = false;

int flash_variants(int hd, const kiln_flash::Variant **out) {
    switch (hd) {
    case 16: return kiln_flash::variants_hd16(out);
    case 32: return kiln_flash::variants_hd32(out);
    case 48: return kiln_flash::variants_hd48(out);
    case 64: return kiln_flash::variants_hd64(out);
    case 80: return kiln_flash::variants_hd80(out);
    case 96: return kiln_flash::variants_hd96(out);
    case 128: return kiln_flash::variants_hd128(out);
    case 160: return kiln_flash::variants_hd160(out);
    case 192: return kiln_flash::variants_hd192(out);
    case 256: return kiln_flash::variants_hd256(out);
    default: *out = nullptr; return 0;
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }
bool mult8(int64_t s) { return (s & 7) == 0; }
bool view_ok(const kiln_cuda_view &v) { return aligned16(v.p) && mult8(v.sb) && mult8(v.sn) && mult8(v.ss); }

const char *dtype_name(int dt) {
    return dt == KILN_DTYPE_FLOAT16 ? "fp16" : dt == KILN_DTYPE_BFLOAT16 ? "bf16" : "?";
}

float resolve_scale(const kiln_cuda_sdpa *d) { return d->scale != 0.f ? d->scale : 1.f / sqrtf((float)d->H); }

// Why the mma.sync flash kernel cannot run d ("" when it can).
const char *flash_blocker(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d) {
    const kiln_cuda_device_info *info = kiln_cuda_info(p);
    if (info->cc_major < 8) return "compute capability < 8.0";
    if (d->dtype != KILN_DTYPE_FLOAT16 && d->dtype != KILN_DTYPE_BFLOAT16) return "dtype";
    if (d->H % 8 != 0) return "head size not a multiple of 8";
    if (d->H > 256) return "head size > 256";
    if (d->H != d->Hv) return "H != H_v";
    if (d->bias && d->cu_seqlens_q) return "additive bias with packed batches";
    float s = resolve_scale(d);
    if (!(s > 0.f) || isinf(s)) return "scale <= 0";
    if (!view_ok(d->q) || !view_ok(d->k) || !view_ok(d->v) || !aligned16(d->out) || !mult8(d->o_sb) ||
        !mult8(d->o_sn) || !mult8(d->o_ss))
        return "pointers or strides not 16-byte aligned";
    if (d->N > 65535 || d->B > 65535) return "grid too large";
    return "";
}

} // namespace

extern "C" const kiln_attn_env *kiln_attn_env_get(void) {
    // Benign race: every thread computes the same values.
    if (!g_env_ready) {
        kiln_attn_env e;
        e.disable_flash = env_flag("KILN_DISABLE_FLASH_ATTENTION");
        e.disable_sm90 = env_flag("KILN_DISABLE_SM90_ATTENTION");
        e.enable_sm90 = env_flag("KILN_ENABLE_SM90_ATTENTION");
        e.force_unfused = env_flag("KILN_FORCE_UNFUSED_ATTENTION");
        e.verbose = env_flag("KILN_ATTENTION_VERBOSE");
        // The split-KV decode kernel is the default for one-token queries since its first GPU run
        // (2026-12-06, H100: the attention-op and ONNX-attention tests); KILN_DISABLE_DECODE_ATTENTION=1
        // sends them to the flash kernels instead.
        e.disable_decode = env_flag("KILN_DISABLE_DECODE_ATTENTION");
        const char *dk = getenv("KILN_DECODE_KERNEL");
        e.decode_kernel = dk && !strcmp(dk, "simt") ? 1 : dk && !strcmp(dk, "mma") ? 2 : 0;
        const char *sk = getenv("KILN_DECODE_STREAMK");
        e.decode_streamk = sk && sk[0] ? atoi(sk) != 0 : -1;
        const char *ws = getenv("KILN_UNFUSED_WORKSPACE_MB");
        long mb = ws ? atol(ws) : 0;
        e.unfused_ws_bytes = (size_t)(mb > 0 ? mb : 4096) << 20;
        g_env = e;
        g_env_ready = true;
    }
    return &g_env;
}

extern "C" int kiln_cuda_pad_head(int H) {
    static const int hds[] = {16, 32, 48, 64, 80, 96, 128, 160, 192, 256};
    for (int hd : hds)
        if (H <= hd) return hd;
    return 0;
}

extern "C" int kiln_cuda_flash_variants(int H) {
    const kiln_flash::Variant *v;
    return flash_variants(kiln_cuda_pad_head(H), &v);
}

extern "C" void kiln_cuda_attention_select(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d,
                                           const kiln_cuda_attn_opts *opts, kiln_cuda_attn_choice *out) {
    const kiln_attn_env *env = kiln_attn_env_get();
    memset(out, 0, sizeof *out);
    const kiln_cuda_attn_kernel force = opts ? opts->force : KILN_ATTN_KERNEL_NONE;
    // Tile variants apply to forced kernels only; normal selection (-1) takes each head size's
    // default tile, which for the Hopper kernel may depend on the shape.
    const int variant = opts && force != KILN_ATTN_KERNEL_NONE ? opts->flash_variant : -1;
    const char *why = "";
    const char *blk = flash_blocker(p, d);
    char sm90_why[96] = "";
    if (force == KILN_ATTN_KERNEL_UNFUSED) {
        why = "forced";
    } else if (force == KILN_ATTN_KERNEL_NONE && env->force_unfused) {
        why = "KILN_FORCE_UNFUSED_ATTENTION";
    } else if (blk[0]) {
        why = blk;
    } else if (force == KILN_ATTN_KERNEL_NONE && env->disable_flash) {
        why = "KILN_DISABLE_FLASH_ATTENTION";
    } else {
        const char *dec = kiln_cuda_decode_blocker(d);
        int splits = 0, kind = 0;
        if (!dec[0] && (force == KILN_ATTN_KERNEL_DECODE || (force == KILN_ATTN_KERNEL_NONE && !env->disable_decode)))
            splits = kiln_cuda_decode_splits(p, d, &kind);
        if (splits > 0) {
            out->kernel = KILN_ATTN_KERNEL_DECODE;
            snprintf(out->name, sizeof out->name, "decode_splitkv%s<%s,hd%d,%s%d>", kind ? "_mma" : "",
                     dtype_name(d->dtype), d->H, kind == 2 ? "streamk" : "splits", splits);
            return;
        }
        if (force == KILN_ATTN_KERNEL_FLASH_SM90 || (force == KILN_ATTN_KERNEL_NONE && !env->disable_sm90)) {
            char name[96];
            if (kiln_cuda_sm90_supports(p, d, force == KILN_ATTN_KERNEL_FLASH_SM90, variant, name, sizeof name)) {
                out->kernel = KILN_ATTN_KERNEL_FLASH_SM90;
                out->variant = kiln_cuda_sm90_resolve_variant(d, variant);
                snprintf(out->name, sizeof out->name, "%s", name);
                return;
            }
            snprintf(sm90_why, sizeof sm90_why, "%s", name);
        }
        const kiln_flash::Variant *vs;
        const int hd = kiln_cuda_pad_head(d->H), n = flash_variants(hd, &vs);
        const int vi = variant > 0 && variant < n ? variant : 0;
        out->kernel = KILN_ATTN_KERNEL_FLASH;
        out->variant = vi;
        snprintf(out->name, sizeof out->name, "flash_fwd<%s,hd%d,%s>", dtype_name(d->dtype), hd, vs[vi].name);
        snprintf(out->why, sizeof out->why, "%s", sm90_why);
        return;
    }
    out->kernel = KILN_ATTN_KERNEL_UNFUSED;
    snprintf(out->name, sizeof out->name, "unfused<%s,cublas>", dtype_name(d->dtype));
    snprintf(out->why, sizeof out->why, "%s", why);
}

static kiln_status check_sdpa(const kiln_cuda_sdpa *d) {
    if (d->dtype != KILN_DTYPE_FLOAT16 && d->dtype != KILN_DTYPE_BFLOAT16)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "attention: dtype %d not supported on CUDA (fp16, bf16)",
                              d->dtype);
    if (d->B < 0 || d->N <= 0 || d->S < 0 || d->T < 0 || d->H <= 0 || d->Hv <= 0)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "attention: bad sizes B=%d N=%d S=%d T=%d H=%d Hv=%d",
                              d->B, d->N, d->S, d->T, d->H, d->Hv);
    int nkv = d->N_kv ? d->N_kv : d->N;
    if (nkv <= 0 || d->N % nkv != 0)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "attention: %d query heads not a multiple of %d kv heads",
                              d->N, nkv);
    if (!d->q.p || !d->k.p || !d->v.p || !d->out)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "attention: missing q, k, v or out pointer");
    return KILN_OK;
}

extern "C" kiln_status kiln_cuda_attention(kiln_cuda_provider *p, const kiln_cuda_sdpa *d_in,
                                           const kiln_cuda_attn_opts *opts, kiln_cuda_attn_choice *chosen) {
    kiln_status st = check_sdpa(d_in);
    if (st != KILN_OK) return st;
    kiln_cuda_sdpa d = *d_in;
    if (!d.N_kv) d.N_kv = d.N;
    if (d.cu_seqlens_q && !d.cu_seqlens_k) d.cu_seqlens_k = d.cu_seqlens_q;
    if (!d.cu_seqlens_q && d.cu_seqlens_k)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "attention: cu_seqlens_k without cu_seqlens_q");

    kiln_cuda_attn_choice c;
    kiln_cuda_attention_select(p, &d, opts, &c);
    if (chosen) *chosen = c;
    const kiln_attn_env *env = kiln_attn_env_get();
    if (env->verbose)
        fprintf(stderr, "kiln attention: %s B=%d S=%d T=%d N=%d/%d H=%d Hv=%d causal=%d%s%s%s%s%s%s\n", c.name, d.B,
                d.S, d.T, d.N, d.N_kv, d.H, d.Hv, d.causal, d.key_lens ? " key_lens" : "",
                d.cu_seqlens_q ? " varlen" : "", d.bias ? " bias" : "", c.why[0] ? " (passed over: " : "",
                c.why[0] ? c.why : "", c.why[0] ? ")" : "");
    if (d.B == 0 || d.S == 0) return KILN_OK;
    const float scale = resolve_scale(&d); // every kernel writes zero rows when no key is visible

    if (c.kernel == KILN_ATTN_KERNEL_UNFUSED) return kiln_cuda_attention_unfused(p, &d, scale);

    kiln_flash::Params fp;
    fp.q = d.q.p;
    fp.k = d.k.p;
    fp.v = d.v.p;
    fp.o = d.out;
    fp.q_sb = d.q.sb, fp.q_sn = d.q.sn, fp.q_ss = d.q.ss;
    fp.k_sb = d.k.sb, fp.k_sn = d.k.sn, fp.k_ss = d.k.ss;
    fp.v_sb = d.v.sb, fp.v_sn = d.v.sn, fp.v_ss = d.v.ss;
    fp.o_sb = d.o_sb, fp.o_sn = d.o_sn, fp.o_ss = d.o_ss;
    fp.cu_q = d.cu_seqlens_q;
    fp.cu_k = d.cu_seqlens_k;
    fp.key_lens = d.key_lens;
    fp.B = d.B, fp.N = d.N, fp.kv_group = d.N / d.N_kv;
    fp.S = d.S, fp.T = d.T, fp.H = d.H;
    fp.scale_log2 = scale * 1.4426950408889634f;
    fp.causal = d.causal;
    fp.bias = d.bias;
    fp.bias_sb = d.bias_sb, fp.bias_sn = d.bias_sn, fp.bias_ss = d.bias_ss;
    fp.inv_scale = 1.f / scale;
    const int variant = opts && opts->force != KILN_ATTN_KERNEL_NONE ? opts->flash_variant : 0;
    if (c.kernel == KILN_ATTN_KERNEL_DECODE) return kiln_cuda_run_decode(p, &d, fp, c.name);
    if (c.kernel == KILN_ATTN_KERNEL_FLASH_SM90) return kiln_cuda_run_sm90(p, fp, d.dtype, c.variant, c.name);
    const kiln_flash::Variant *vs;
    int n = flash_variants(kiln_cuda_pad_head(d.H), &vs);
    int vi = variant > 0 && variant < n ? variant : 0;
    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(p);
    cudaError_t e = d.dtype == KILN_DTYPE_FLOAT16 ? vs[vi].fp16(fp, stream) : vs[vi].bf16(fp, stream);
    return kiln_cuda_check(e, c.name);
}

// ---------------------------------------------------------------------------------------------
// Small copy kernels: KV-cache append and zero rows.

namespace {

// One warp per (b, n, l) row; 16-byte moves when the row allows, 2-byte otherwise.
__global__ void copy_rows_kernel(uint16_t *dst, int64_t dst_rows, int64_t row0, const uint16_t *src, int64_t sb,
                                 int64_t sn, int64_t ss, int B, int N, int L, int H, int vec) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= (int64_t)B * N * L) return;
    const int l = (int)(row % L);
    const int64_t bn = row / L;
    const int n = (int)(bn % N), b = (int)(bn / N);
    const uint16_t *s = src + b * sb + n * sn + l * ss;
    uint16_t *t = dst + (bn * dst_rows + row0 + l) * H;
    if (vec) {
        for (int c = lane; c < H / 8; c += 32)
            reinterpret_cast<uint4 *>(t)[c] = reinterpret_cast<const uint4 *>(s)[c];
    } else {
        for (int h = lane; h < H; h += 32) t[h] = s[h];
    }
}

__global__ void zero_rows_kernel(uint16_t *out, int64_t sb, int64_t sn, int64_t ss, int B, int N, int S, int Hv) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= (int64_t)B * N * S) return;
    const int s = (int)(row % S);
    const int64_t bn = row / S;
    const int n = (int)(bn % N), b = (int)(bn / N);
    uint16_t *t = out + b * sb + n * sn + s * ss;
    for (int h = lane; h < Hv; h += 32) t[h] = 0;
}

} // namespace

extern "C" kiln_status kiln_cuda_copy_bnsh(kiln_cuda_provider *p, int dtype, void *dst, int64_t dst_rows,
                                           int64_t row0, const kiln_cuda_view *src, int B, int N, int L, int H) {
    (void)dtype; // fp16 and bf16 are both moved as 16-bit words
    int64_t rows = (int64_t)B * N * L;
    if (rows == 0) return KILN_OK;
    int vec = H % 8 == 0 && aligned16(dst) && aligned16(src->p) && mult8(src->sb) && mult8(src->sn) &&
              mult8(src->ss) && mult8(dst_rows * H);
    int64_t blocks = (rows + 7) / 8;
    copy_rows_kernel<<<(unsigned)blocks, 256, 0, (cudaStream_t)kiln_cuda_stream(p)>>>(
        (uint16_t *)dst, dst_rows, row0, (const uint16_t *)src->p, src->sb, src->sn, src->ss, B, N, L, H, vec);
    return kiln_cuda_check(cudaGetLastError(), "copy_rows_kernel");
}

extern "C" kiln_status kiln_cuda_zero_rows(kiln_cuda_provider *p, void *out, int64_t sb, int64_t sn, int64_t ss,
                                           int B, int N, int S, int Hv) {
    int64_t rows = (int64_t)B * N * S;
    if (rows == 0) return KILN_OK;
    zero_rows_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, (cudaStream_t)kiln_cuda_stream(p)>>>(
        (uint16_t *)out, sb, sn, ss, B, N, S, Hv);
    return kiln_cuda_check(cudaGetLastError(), "zero_rows_kernel");
}

// ---------------------------------------------------------------------------------------------
// MultiHeadAttention formats.

extern "C" kiln_status kiln_cuda_mha_forward(kiln_cuda_provider *p, const kiln_cuda_mha_args *a,
                                             const kiln_cuda_attn_opts *opts, kiln_cuda_attn_choice *chosen) {
    const int B = a->B, S = a->S, N = a->N, H = a->H, Hv = a->Hv ? a->Hv : a->H;
    int L = a->format == KILN_MHA_QKV ? a->S : a->L;
    if (B < 0 || S < 0 || L < 0 || N <= 0 || H <= 0)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: bad sizes B=%d S=%d L=%d N=%d H=%d",
                              B, S, L, N, H);
    if ((a->format == KILN_MHA_Q_KV || a->format == KILN_MHA_QKV) && Hv != H)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: packed formats need H_v == H");
    if (a->cu_seqlens && (a->format == KILN_MHA_Q_K_V_BNSH || a->past_key || a->present_key))
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT,
                              "MultiHeadAttention: packed batches take no BNSH key/value and no KV cache");
    if ((a->past_key != nullptr) != (a->past_value != nullptr) ||
        (a->present_key != nullptr) != (a->present_value != nullptr))
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: past/present key and value go together");
    if (a->past_key && !a->present_key)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: past given but present not requested");

    kiln_cuda_sdpa d;
    memset(&d, 0, sizeof d);
    d.dtype = a->dtype;
    d.B = B, d.N = N, d.N_kv = N, d.S = S, d.T = L, d.H = H, d.Hv = Hv;
    d.scale = a->scale;
    d.causal = a->causal;
    const int64_t es = 2; // fp16 / bf16
    const char *q = (const char *)a->q;
    switch (a->format) {
    case KILN_MHA_Q_K_V:
    case KILN_MHA_Q_K_V_BNSH:
        d.q = {q, (int64_t)S * N * H, H, (int64_t)N * H};
        if (a->format == KILN_MHA_Q_K_V) {
            d.k = {a->k, (int64_t)L * N * H, H, (int64_t)N * H};
            d.v = {a->v, (int64_t)L * N * Hv, Hv, (int64_t)N * Hv};
        } else {
            d.k = {a->k, (int64_t)N * L * H, (int64_t)L * H, H};
            d.v = {a->v, (int64_t)N * L * Hv, (int64_t)L * Hv, Hv};
        }
        break;
    case KILN_MHA_Q_KV: {
        const char *kv = (const char *)a->k;
        d.q = {q, (int64_t)S * N * H, H, (int64_t)N * H};
        d.k = {kv, (int64_t)L * N * 2 * H, 2 * H, (int64_t)N * 2 * H};
        d.v = {kv + H * es, (int64_t)L * N * 2 * H, 2 * H, (int64_t)N * 2 * H};
        break;
    }
    case KILN_MHA_QKV:
        d.q = {q, (int64_t)S * N * 3 * H, 3 * H, (int64_t)N * 3 * H};
        d.k = {q + H * es, (int64_t)S * N * 3 * H, 3 * H, (int64_t)N * 3 * H};
        d.v = {q + 2 * H * es, (int64_t)S * N * 3 * H, 3 * H, (int64_t)N * 3 * H};
        break;
    default:
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: unknown format %d", a->format);
    }
    if (!d.k.p || !d.v.p)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: key/value missing for format %d",
                              a->format);
    d.out = a->out;
    d.o_sb = (int64_t)S * N * Hv, d.o_sn = Hv, d.o_ss = (int64_t)N * Hv;
    d.key_lens = a->key_lens;
    d.cu_seqlens_q = d.cu_seqlens_k = a->cu_seqlens;

    if (a->present_key) {
        const int P = a->past_key ? a->P : 0, T = P + L;
        if (P < 0) return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "MultiHeadAttention: past length %d", P);
        if (a->past_key && P > 0 && a->past_key != a->present_key) {
            kiln_cuda_view pk = {a->past_key, (int64_t)N * P * H, (int64_t)P * H, H};
            kiln_cuda_view pv = {a->past_value, (int64_t)N * P * Hv, (int64_t)P * Hv, Hv};
            KILN_TRY_CUDA_ST(kiln_cuda_copy_bnsh(p, a->dtype, a->present_key, T, 0, &pk, B, N, P, H));
            KILN_TRY_CUDA_ST(kiln_cuda_copy_bnsh(p, a->dtype, a->present_value, T, 0, &pv, B, N, P, Hv));
        }
        KILN_TRY_CUDA_ST(kiln_cuda_copy_bnsh(p, a->dtype, a->present_key, T, P, &d.k, B, N, L, H));
        KILN_TRY_CUDA_ST(kiln_cuda_copy_bnsh(p, a->dtype, a->present_value, T, P, &d.v, B, N, L, Hv));
        if (a->past_key) {
            // Attend over the whole cache, read where it now lives.
            d.T = T;
            d.k = {a->present_key, (int64_t)N * T * H, (int64_t)T * H, H};
            d.v = {a->present_value, (int64_t)N * T * Hv, (int64_t)T * Hv, Hv};
        }
    }
    if (a->bias) {
        d.bias = a->bias;
        d.bias_ss = d.T;
        d.bias_sn = (int64_t)S * d.T;
        d.bias_sb = a->bias_batch_broadcast ? 0 : (int64_t)N * S * d.T;
    }
    return kiln_cuda_attention(p, &d, opts, chosen);
}
