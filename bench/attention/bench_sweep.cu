// Attention sweep benchmark (issue 13): kiln's fused attention over the shapes users run, read
// from sweep_shapes.csv (see sweep_shapes.py): separate query and key lengths, grouped K/V heads,
// causal and padding masks (per-batch key lengths), decoding against a KV cache.
//
// Per shape, in one process: inputs in the operators' layouts (Q and the output (B, Sq, Nq, H); K/V
// (B, Nkv, Skv, H) for a KV cache, else (B, Skv, Nkv, H)), read in place through
// kiln_cuda_attention; the output poisoned (NaN) with a guard behind it; one call checked against
// a float32 reference kernel on sampled rows, the whole output for leftover poison and the guard;
// then timed (median_seconds, bench_timing.h). When the default is the split-KV decode kernel,
// the mma.sync flash kernel is checked and timed too, forced, to show what the split buys.
//
//   bench_sweep --shapes FILE [--dtype fp16|bf16] [--json FILE] [--ids 1,2,...] [--check-only]
//               [--variants SUBSTR [--variant-heads 96,192,...]]
//
// One JSON object per line (per shape) goes to --json; a line per shape to stdout. Exit status 1
// when any shape failed its check (the rest still run). --variants: also check and time, forced,
// every Hopper tile variant of the shape's head size whose name contains SUBSTR ("" = all),
// limited to the (padded) head sizes of --variant-heads when given; one more line and JSON object
// per variant, the object with "variant" set (sweep_report.py reads only the default's).
#include "cuda/attention/attention_dispatch.h"
#include "cuda/attention/attention_internal.h" // kiln_cuda_pad_head

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include "bench_timing.h"

namespace {

struct Shape {
    int id = 0;
    std::string kind, layout;
    int B = 0, Sq = 0, Skv = 0, Nq = 0, Nkv = 0, H = 0, causal = 0;
    std::vector<int> lens;
};

std::vector<Shape> read_shapes(const char *path) {
    std::vector<Shape> out;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || !strncmp(line, "id,", 3)) continue;
        Shape s;
        char kind[32], layout[32];
        int pos = 0;
        if (sscanf(line, "%d,%31[^,],%d,%d,%d,%d,%d,%d,%d,%31[^,],%n", &s.id, kind, &s.B, &s.Sq, &s.Skv, &s.Nq, &s.Nkv,
                   &s.H, &s.causal, layout, &pos) < 10 || pos == 0) {
            fprintf(stderr, "bad shape line: %s", line);
            exit(2);
        }
        s.kind = kind, s.layout = layout;
        for (char *p = line + pos; *p && *p != '\n';) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            s.lens.push_back((int)v);
            p = *end == ':' ? end + 1 : end;
        }
        if (!s.lens.empty() && (int)s.lens.size() != s.B) {
            fprintf(stderr, "shape %d: %zu key lengths for batch %d\n", s.id, s.lens.size(), s.B);
            exit(2);
        }
        out.push_back(s);
    }
    fclose(f);
    return out;
}

__device__ __forceinline__ float ld(const uint16_t *p, int bf16) {
    const uint16_t b = *p;
    return bf16 ? __uint_as_float((uint32_t)b << 16) : __half2float(__ushort_as_half(b));
}

// float32 reference for sampled rows: one block per row (b, n, s); scores in global scratch.
// Semantics of attention_dispatch.h: key_lens <= 0 means all keys; causal bottom-right; a row
// that sees no key is zero.
__global__ void ref_rows(const int *rows, int nrows, kiln_cuda_sdpa d, const int *key_lens, float *scores,
                         float *ref, int bf16) {
    const int r = blockIdx.x;
    if (r >= nrows) return;
    const int b = rows[3 * r], n = rows[3 * r + 1], s = rows[3 * r + 2];
    const int nk = n / (d.N / d.N_kv);
    const uint16_t *q = (const uint16_t *)d.q.p + b * d.q.sb + n * d.q.sn + s * d.q.ss;
    const uint16_t *k = (const uint16_t *)d.k.p + b * d.k.sb + nk * d.k.sn;
    const uint16_t *v = (const uint16_t *)d.v.p + b * d.v.sb + nk * d.v.sn;
    int lim = d.T;
    if (key_lens && key_lens[b] > 0 && key_lens[b] < lim) lim = key_lens[b];
    if (d.causal) lim = min(lim, s + d.T - d.S + 1);
    float *sc = scores + (size_t)r * d.T;
    const float scale = d.scale != 0.f ? d.scale : rsqrtf((float)d.H);
    for (int j = threadIdx.x; j < lim; j += blockDim.x) {
        float acc = 0.f;
        for (int h = 0; h < d.H; ++h) acc += ld(q + h, bf16) * ld(k + (int64_t)j * d.k.ss + h, bf16);
        sc[j] = acc * scale;
    }
    __syncthreads();
    __shared__ float red[2];
    if (threadIdx.x == 0) {
        float m = -INFINITY;
        for (int j = 0; j < lim; ++j) m = fmaxf(m, sc[j]);
        double sum = 0;
        for (int j = 0; j < lim; ++j) sum += exp((double)sc[j] - m);
        red[0] = m, red[1] = (float)sum;
    }
    __syncthreads();
    const float m = red[0], inv = red[1] > 0.f ? 1.f / red[1] : 0.f;
    for (int h = threadIdx.x; h < d.Hv; h += blockDim.x) {
        double acc = 0;
        for (int j = 0; j < lim; ++j) acc += (double)expf(sc[j] - m) * ld(v + (int64_t)j * d.v.ss + h, bf16);
        ref[(size_t)r * d.Hv + h] = lim > 0 ? (float)(acc * inv) : 0.f;
    }
}

float host_ld(uint16_t b, int bf16) {
    if (bf16) {
        uint32_t u = (uint32_t)b << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    __half h;
    memcpy(&h, &b, 2);
    return __half2float(h);
}

struct Check {
    double err = 0;   // max |kiln − ref| / max(1, max |ref|) over sampled rows
    size_t nan = 0;   // non-finite outputs anywhere (poison left or NaN computed)
    size_t guard = 0; // guard words changed behind the output
};

} // namespace

int main(int argc, char **argv) {
    const char *shapes_path = nullptr, *json = nullptr;
    std::string dtype = "fp16", ids;
    bool check_only = false, variants = false;
    std::string var_only, var_heads;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--shapes" && i + 1 < argc) shapes_path = argv[++i];
        else if (a == "--dtype" && i + 1 < argc) dtype = argv[++i];
        else if (a == "--json" && i + 1 < argc) json = argv[++i];
        else if (a == "--ids" && i + 1 < argc) ids = std::string(",") + argv[++i] + ",";
        else if (a == "--check-only") check_only = true;
        else if (a == "--variants" && i + 1 < argc) variants = true, var_only = argv[++i];
        else if (a == "--variant-heads" && i + 1 < argc) var_heads = std::string(",") + argv[++i] + ",";
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!shapes_path || (dtype != "fp16" && dtype != "bf16")) {
        fprintf(stderr, "usage: bench_sweep --shapes FILE [--dtype fp16|bf16] [--json FILE] [--ids a,b] [--check-only] "
                        "[--variants SUBSTR [--variant-heads a,b]]\n");
        return 2;
    }
    const int bf16 = dtype == "bf16";
    std::vector<Shape> shapes = read_shapes(shapes_path);
    kiln_cuda_provider *prov;
    if (kiln_cuda_provider_create(0, &prov) != KILN_OK) {
        fprintf(stderr, "provider: %s\n", kiln_cuda_last_error());
        return 2;
    }
    const kiln_cuda_device_info *info = kiln_cuda_info(prov);
    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(prov);
    g_stream = stream;
    printf("# kiln attention sweep: %s (%d SMs), %s, %zu shapes\n", info->name, info->sm_count, dtype.c_str(),
           shapes.size());
    printf("%-4s %-7s %-44s %-9s %-8s %-34s %9s %9s %s\n", "id", "kind", "B,Sq,Skv,Nq,Nkv,H,causal,pad", "err", "check",
           "kernel", "ms", "flash_ms", "");
    FILE *jf = json ? fopen(json, "w") : nullptr;
    if (json && !jf) {
        fprintf(stderr, "cannot write %s\n", json);
        return 2;
    }
    // The bandwidth decode is measured against: a device-to-device copy of 2 GiB (read + write).
    double copy_gbs = 0;
    if (!check_only) {
        const size_t cb = (size_t)2 << 30;
        void *a, *b;
        CUDA_OK(cudaMalloc(&a, cb));
        CUDA_OK(cudaMalloc(&b, cb));
        CUDA_OK(cudaMemsetAsync(a, 1, cb, stream));
        const double t = median_seconds([&] { CUDA_OK(cudaMemcpyAsync(b, a, cb, cudaMemcpyDeviceToDevice, stream)); },
                                        7, 2.0, 2);
        copy_gbs = 2.0 * cb / t / 1e9;
        CUDA_OK(cudaFree(a));
        CUDA_OK(cudaFree(b));
        printf("# device copy bandwidth %.0f GB/s (read + write)\n", copy_gbs);
    }
    if (jf) fprintf(jf, "{\"device\": \"%s\", \"sm_count\": %d, \"dtype\": \"%s\", \"copy_gbs\": %.1f}\n", info->name,
                    info->sm_count, dtype.c_str(), copy_gbs);
    const double tol = bf16 ? 3e-2 : 6e-3;
    int failed = 0;
    for (const Shape &sh : shapes) {
        if (!ids.empty() && ids.find("," + std::to_string(sh.id) + ",") == std::string::npos) continue;
        const int B = sh.B, Sq = sh.Sq, T = sh.Skv, Nq = sh.Nq, Nkv = sh.Nkv, H = sh.H;
        const bool bnsh = sh.layout == "bnsh";
        const size_t nq = (size_t)B * Sq * Nq * H, nkv = (size_t)B * T * Nkv * H, guard = 4096;
        std::vector<void *> bufs;
        auto alloc = [&](size_t bytes) {
            void *p;
            CUDA_OK(cudaMalloc(&p, bytes));
            bufs.push_back(p);
            return p;
        };
        uint16_t *dq = (uint16_t *)alloc(nq * 2), *dk = (uint16_t *)alloc(nkv * 2), *dv = (uint16_t *)alloc(nkv * 2);
        uint16_t *dout = (uint16_t *)alloc((nq + guard) * 2);
        fill_random<<<1024, 256, 0, stream>>>(dq, nq, 0x1000u + sh.id, bf16);
        fill_random<<<1024, 256, 0, stream>>>(dk, nkv, 0x2000u + sh.id, bf16);
        fill_random<<<1024, 256, 0, stream>>>(dv, nkv, 0x3000u + sh.id, bf16);
        CUDA_OK(cudaGetLastError());
        int32_t *dlens = nullptr;
        if (!sh.lens.empty()) {
            dlens = (int32_t *)alloc(B * sizeof(int32_t));
            CUDA_OK(cudaMemcpy(dlens, sh.lens.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice));
        }

        kiln_cuda_sdpa d;
        memset(&d, 0, sizeof d);
        d.dtype = bf16 ? KILN_DTYPE_BFLOAT16 : KILN_DTYPE_FLOAT16;
        d.B = B, d.N = Nq, d.N_kv = Nkv, d.S = Sq, d.T = T, d.H = H, d.Hv = H;
        d.causal = sh.causal;
        d.q = {dq, (int64_t)Sq * Nq * H, H, (int64_t)Nq * H};
        if (bnsh) {
            d.k = {dk, (int64_t)Nkv * T * H, (int64_t)T * H, H};
            d.v = {dv, (int64_t)Nkv * T * H, (int64_t)T * H, H};
        } else {
            d.k = {dk, (int64_t)T * Nkv * H, H, (int64_t)Nkv * H};
            d.v = {dv, (int64_t)T * Nkv * H, H, (int64_t)Nkv * H};
        }
        d.out = dout;
        d.o_sb = (int64_t)Sq * Nq * H, d.o_sn = H, d.o_ss = (int64_t)Nq * H;
        d.key_lens = dlens;

        // Sampled rows: first, last, the shortest-padded batch's last row, the rest drawn.
        std::vector<int> rows;
        auto add_row = [&](int b, int n, int s) { rows.push_back(b), rows.push_back(n), rows.push_back(s); };
        add_row(0, 0, 0);
        add_row(B - 1, Nq - 1, Sq - 1);
        if (!sh.lens.empty()) {
            int bm = 0;
            for (int b = 1; b < B; ++b)
                if (sh.lens[b] < sh.lens[bm]) bm = b;
            add_row(bm, Nq / 2, Sq - 1);
        }
        uint32_t x = 0x9E3779B9u ^ (uint32_t)sh.id;
        const int nrows_target = (int64_t)B * Nq * Sq < 32 ? (int)((int64_t)B * Nq * Sq) : 32;
        while ((int)rows.size() / 3 < nrows_target) {
            x = x * 1664525u + 1013904223u;
            const int b = (int)((x >> 8) % B);
            x = x * 1664525u + 1013904223u;
            const int n = (int)((x >> 8) % Nq);
            x = x * 1664525u + 1013904223u;
            add_row(b, n, (int)((x >> 8) % Sq));
        }
        const int nrows = (int)rows.size() / 3;
        int *drows = (int *)alloc(rows.size() * sizeof(int));
        CUDA_OK(cudaMemcpy(drows, rows.data(), rows.size() * sizeof(int), cudaMemcpyHostToDevice));
        float *dscores = (float *)alloc((size_t)nrows * T * sizeof(float));
        float *dref = (float *)alloc((size_t)nrows * H * sizeof(float));
        CUDA_OK(cudaStreamSynchronize(stream));
        ref_rows<<<nrows, 256, 0, stream>>>(drows, nrows, d, dlens, dscores, dref, bf16);
        CUDA_OK(cudaGetLastError());
        std::vector<float> ref((size_t)nrows * H);
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaMemcpy(ref.data(), dref, ref.size() * 4, cudaMemcpyDeviceToHost));

        // One checked call of the kernel `force` picks (NONE = kiln's default).
        std::vector<uint16_t> host(nq + guard);
        auto run_checked = [&](kiln_cuda_attn_kernel force, kiln_cuda_attn_choice *ch, Check *c,
                               int variant = 0) -> bool {
            CUDA_OK(cudaMemsetAsync(dout, 0xFF, nq * 2, stream)); // NaN in fp16 and bf16
            CUDA_OK(cudaMemsetAsync(dout + nq, 0x5A, guard * 2, stream));
            kiln_cuda_attn_opts o = {force, variant};
            if (kiln_cuda_attention(prov, &d, &o, ch) != KILN_OK || kiln_cuda_sync(prov) != KILN_OK) {
                printf("%-4d %-7s kiln error: %s\n", sh.id, sh.kind.c_str(), kiln_cuda_last_error());
                return false;
            }
            CUDA_OK(cudaMemcpy(host.data(), dout, host.size() * 2, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < nq; ++i) c->nan += !isfinite(host_ld(host[i], bf16));
            for (size_t i = 0; i < guard; ++i) c->guard += host[nq + i] != 0x5A5A;
            double num = 0, den = 1;
            for (int r = 0; r < nrows; ++r) {
                const int b = rows[3 * r], n = rows[3 * r + 1], s = rows[3 * r + 2];
                const size_t o0 = (size_t)b * d.o_sb + (size_t)n * d.o_sn + (size_t)s * d.o_ss;
                for (int h = 0; h < H; ++h) {
                    const double rv = ref[(size_t)r * H + h], kv = host_ld(host[o0 + h], bf16);
                    if (isfinite(kv)) num = fmax(num, fabs(kv - rv));
                    den = fmax(den, fabs(rv));
                }
            }
            c->err = num / den;
            return true;
        };
        kiln_cuda_attn_choice ch, chf;
        Check ck, ckf;
        bool ok = run_checked(KILN_ATTN_KERNEL_NONE, &ch, &ck);
        bool pass = ok && ck.err <= tol && !ck.nan && !ck.guard;
        const bool decode = ok && ch.kernel == KILN_ATTN_KERNEL_DECODE;
        bool okf = false, passf = true;
        if (decode) {
            okf = run_checked(KILN_ATTN_KERNEL_FLASH, &chf, &ckf) && chf.kernel == KILN_ATTN_KERNEL_FLASH;
            passf = okf && ckf.err <= tol && !ckf.nan && !ckf.guard;
        }
        double ms = -1, ms_flash = -1;
        if (ok && !check_only) {
            ms = 1e3 * median_seconds([&] {
                if (kiln_cuda_attention(prov, &d, nullptr, nullptr) != KILN_OK) {
                    fprintf(stderr, "kiln failed while timing: %s\n", kiln_cuda_last_error());
                    exit(1);
                }
            });
            if (okf) {
                kiln_cuda_attn_opts o = {KILN_ATTN_KERNEL_FLASH, 0};
                ms_flash = 1e3 * median_seconds([&] {
                    if (kiln_cuda_attention(prov, &d, &o, nullptr) != KILN_OK) {
                        fprintf(stderr, "kiln (flash) failed while timing: %s\n", kiln_cuda_last_error());
                        exit(1);
                    }
                });
            }
        }
        failed += !pass || !passf;
        char shp[64];
        snprintf(shp, sizeof shp, "%d,%d,%d,%d,%d,%d,%d,%d", B, Sq, T, Nq, Nkv, H, sh.causal, !sh.lens.empty());
        printf("%-4d %-7s %-44s %-9.2e %-8s %-34s %9.4f %9.4f", sh.id, sh.kind.c_str(), shp, ck.err,
               pass ? "ok" : "FAIL", ok ? ch.name : "error", ms, ms_flash);
        if (ck.nan || ck.guard) printf(" nan=%zu guard=%zu", ck.nan, ck.guard);
        if (decode) printf(" flash_err=%.2e%s", ckf.err, passf ? "" : " FLASH_FAIL");
        printf("\n");
        fflush(stdout);
        if (jf) {
            fprintf(jf,
                    "{\"id\": %d, \"dtype\": \"%s\", \"kernel\": \"%s\", \"splits\": %d, \"ms\": %.6f, \"ok\": %s, "
                    "\"err\": %.3e, \"nan\": %zu, \"guard\": %zu, \"flash_kernel\": \"%s\", \"flash_ms\": %.6f, "
                    "\"flash_ok\": %s, \"flash_err\": %.3e}\n",
                    sh.id, dtype.c_str(), ok ? ch.name : "error",
                    decode ? kiln_cuda_decode_splits(prov, &d, nullptr) : 0, ms, pass ? "true" : "false", ck.err, ck.nan,
                    ck.guard, okf ? chf.name : "", ms_flash, passf ? "true" : "false", ckf.err);
            fflush(jf);
        }
        // The Hopper tile variants, forced (the default's own tile included, so each variant's
        // row is timed the same way).
        const int nvar = kiln_cuda_sm90_variants(H);
        const bool heads_ok =
            var_heads.empty() || var_heads.find("," + std::to_string(kiln_cuda_pad_head(H)) + ",") != std::string::npos;
        for (int v = 0; variants && heads_ok && ok && !decode && v < nvar; ++v) {
            const char *vn = kiln_cuda_sm90_variant_name(H, v);
            if (!vn || !strstr(vn, var_only.c_str())) continue;
            kiln_cuda_attn_choice chv;
            Check ckv;
            const bool okv = run_checked(KILN_ATTN_KERNEL_FLASH_SM90, &chv, &ckv, v) &&
                             chv.kernel == KILN_ATTN_KERNEL_FLASH_SM90;
            const bool passv = okv && ckv.err <= tol && !ckv.nan && !ckv.guard;
            double msv = -1;
            if (okv && !check_only) {
                kiln_cuda_attn_opts o = {KILN_ATTN_KERNEL_FLASH_SM90, v};
                msv = 1e3 * median_seconds([&] {
                    if (kiln_cuda_attention(prov, &d, &o, nullptr) != KILN_OK) {
                        fprintf(stderr, "kiln (variant %s) failed while timing: %s\n", vn, kiln_cuda_last_error());
                        exit(1);
                    }
                });
            }
            failed += !passv;
            printf("%-4d %-7s %-44s %-9.2e %-8s %-34s %9.4f %9s variant\n", sh.id, sh.kind.c_str(), shp, ckv.err,
                   passv ? "ok" : "FAIL", okv ? chv.name : "error", msv, "");
            fflush(stdout);
            if (jf) {
                fprintf(jf,
                        "{\"id\": %d, \"dtype\": \"%s\", \"variant\": \"%s\", \"kernel\": \"%s\", \"ms\": %.6f, "
                        "\"ok\": %s, \"err\": %.3e, \"nan\": %zu, \"guard\": %zu}\n",
                        sh.id, dtype.c_str(), vn, okv ? chv.name : "error", msv, passv ? "true" : "false", ckv.err,
                        ckv.nan, ckv.guard);
                fflush(jf);
            }
        }
        CUDA_OK(cudaDeviceSynchronize());
        for (void *p : bufs) CUDA_OK(cudaFree(p));
    }
    if (jf) fclose(jf);
    printf("# %d shape(s) failed the check\n", failed);
    kiln_cuda_provider_destroy(prov);
    return failed ? 1 : 0;
}
