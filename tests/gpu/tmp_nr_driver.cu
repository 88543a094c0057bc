// TEMPORARY standalone check of the norm/reduce launchers against host references.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/kernels/norm.h"
#include "cuda/kernels/reduce.h"

static std::mt19937_64 rng(1234);
static int failures = 0, checks = 0;
static kiln_cuda_provider *prov;
static cudaStream_t stream;

static float round_to(int dt, float v) {
    if (dt == KILN_DTYPE_FLOAT16) return __half2float(__float2half(v));
    if (dt == KILN_DTYPE_BFLOAT16) return __bfloat162float(__float2bfloat16(v));
    return v;
}
static size_t esize(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_INT32 ? 4 : dt == KILN_DTYPE_INT64 ? 8 : 2;
}
static const char *dname(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return "f32";
    case KILN_DTYPE_FLOAT16: return "f16";
    case KILN_DTYPE_BFLOAT16: return "bf16";
    case KILN_DTYPE_INT32: return "i32";
    case KILN_DTYPE_INT64: return "i64";
    }
    return "?";
}
static double tol_of(int dt) { return dt == KILN_DTYPE_FLOAT ? 2e-5 : dt == KILN_DTYPE_FLOAT16 ? 4e-3 : 3e-2; }

struct Buf {
    int dt;
    size_t n;
    std::vector<double> h; // values as the dtype holds them
    void *d = nullptr;
    Buf(int dt_, size_t n_) : dt(dt_), n(n_), h(n_) {}
    void upload() {
        std::vector<char> raw(n * esize(dt) + 1);
        for (size_t i = 0; i < n; i++) {
            char *p = raw.data() + i * esize(dt);
            if (dt == KILN_DTYPE_FLOAT) { float v = (float)h[i]; memcpy(p, &v, 4); }
            else if (dt == KILN_DTYPE_FLOAT16) { __half v = __float2half((float)h[i]); memcpy(p, &v, 2); }
            else if (dt == KILN_DTYPE_BFLOAT16) { __nv_bfloat16 v = __float2bfloat16((float)h[i]); memcpy(p, &v, 2); }
            else if (dt == KILN_DTYPE_INT32) { int32_t v = (int32_t)h[i]; memcpy(p, &v, 4); }
            else { int64_t v = (int64_t)h[i]; memcpy(p, &v, 8); }
        }
        cudaMalloc(&d, raw.size());
        cudaMemcpy(d, raw.data(), n * esize(dt), cudaMemcpyHostToDevice);
        cudaDeviceSynchronize();
    }
    void alloc() {
        cudaMalloc(&d, n * esize(dt) + 1);
        cudaMemset(d, 0xff, n * esize(dt) + 1);
        cudaDeviceSynchronize();
    }
    std::vector<double> download() {
        cudaStreamSynchronize(stream);
        std::vector<char> raw(n * esize(dt) + 1);
        cudaMemcpy(raw.data(), d, n * esize(dt), cudaMemcpyDeviceToHost);
        std::vector<double> out(n);
        for (size_t i = 0; i < n; i++) {
            char *p = raw.data() + i * esize(dt);
            if (dt == KILN_DTYPE_FLOAT) { float v; memcpy(&v, p, 4); out[i] = v; }
            else if (dt == KILN_DTYPE_FLOAT16) { __half v; memcpy(&v, p, 2); out[i] = __half2float(v); }
            else if (dt == KILN_DTYPE_BFLOAT16) { __nv_bfloat16 v; memcpy(&v, p, 2); out[i] = __bfloat162float(v); }
            else if (dt == KILN_DTYPE_INT32) { int32_t v; memcpy(&v, p, 4); out[i] = v; }
            else { int64_t v; memcpy(&v, p, 8); out[i] = (double)v; }
        }
        return out;
    }
    ~Buf() { if (d) cudaFree(d); }
    void fill(double lo, double hi) {
        std::uniform_real_distribution<double> u(lo, hi);
        for (auto &v : h) v = round_to(dt, (float)u(rng));
    }
};

static void compare(const std::string &what, const std::vector<double> &got, const std::vector<double> &want,
                    double tol, bool exact = false) {
    checks++;
    double scale = 1e-6, err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < want.size(); i++) {
        if (std::isfinite(want[i])) scale = std::max(scale, std::fabs(want[i]));
    }
    for (size_t i = 0; i < want.size(); i++) {
        double e;
        if (std::isnan(want[i]) || std::isnan(got[i])) e = (std::isnan(want[i]) && std::isnan(got[i])) ? 0 : INFINITY;
        else if (std::isinf(want[i]) || std::isinf(got[i])) e = want[i] == got[i] ? 0 : INFINITY;
        else e = std::fabs(got[i] - want[i]);
        if (e > err) { err = e; worst = i; }
    }
    bool ok = exact ? err == 0 : err <= tol * scale;
    if (!ok) {
        failures++;
        printf("FAIL %s: err %.3g (scale %.3g) at %zu: got %.8g want %.8g\n", what.c_str(), err, scale, worst,
               worst < got.size() ? got[worst] : 0.0, worst < want.size() ? want[worst] : 0.0);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) { printf("CUDA error after %s: %s\n", what.c_str(), cudaGetErrorString(e)); failures++; }
}

static void status(kiln_status s, const std::string &what) {
    if (s != KILN_OK) { failures++; printf("FAIL %s: status %d: %s\n", what.c_str(), s, kiln_cuda_last_error()); }
}

// ---------------- layer norm ----------------
static void test_ln(int dt, int64_t rows, int64_t n, int skip_mode, bool bias, bool beta, bool simplified,
                    bool want_sum, bool rowwise_gamma, int unalign = 0) {
    char name[200];
    snprintf(name, sizeof name, "ln %s rows=%lld n=%lld skip=%d bias=%d beta=%d simp=%d sum=%d roww=%d ua=%d", dname(dt),
             (long long)rows, (long long)n, skip_mode, bias, beta, simplified, want_sum, rowwise_gamma, unalign);
    int64_t skip_rows = skip_mode == 1 ? rows : skip_mode == 2 ? 1 : 0;
    if (skip_mode == 2 && rows % 3 == 0) skip_rows = 3;
    Buf x(dt, rows * n + unalign), sk(dt, std::max<int64_t>(skip_rows * n, 1)), bi(dt, n),
        g(dt, rowwise_gamma ? rows * n : n), b(dt, n);
    x.fill(-2, 3); sk.fill(-1, 1); bi.fill(-0.5, 0.5); g.fill(0.5, 1.5); b.fill(-1, 1);
    x.upload(); sk.upload(); bi.upload(); g.upload(); b.upload();
    Buf y(dt, rows * n + unalign), sum(dt, rows * n), mean(KILN_DTYPE_FLOAT, rows), inv(KILN_DTYPE_FLOAT, rows);
    y.alloc(); sum.alloc(); mean.alloc(); inv.alloc();
    kiln_cuda_ln_args a;
    memset(&a, 0, sizeof a);
    a.dtype = dt; a.simplified = simplified; a.rows = rows; a.n = n; a.eps = 1e-5f;
    a.x = (char *)x.d + unalign * esize(dt);
    if (skip_mode) { a.skip = sk.d; a.skip_rows = skip_rows; }
    if (skip_mode && bias) a.bias = bi.d;
    a.gamma = g.d; a.gamma_row_stride = rowwise_gamma ? n : 0;
    if (beta) a.beta = b.d;
    a.y = (char *)y.d + unalign * esize(dt);
    if (want_sum && skip_mode) a.sum = sum.d;
    a.mean = (float *)mean.d; a.inv = (float *)inv.d;
    status(kiln_cuda_layer_norm(stream, &a), name);
    std::vector<double> ry(rows * n + unalign, 0), rs(rows * n), rm(rows), ri(rows);
    for (int64_t r = 0; r < rows; r++) {
        std::vector<float> s(n);
        for (int64_t j = 0; j < n; j++) {
            float v = (float)x.h[unalign + r * n + j];
            if (skip_mode) { v += (float)sk.h[(r % skip_rows) * n + j]; if (bias) v += (float)bi.h[j]; }
            s[j] = v;
            rs[r * n + j] = round_to(dt, v);
        }
        double m = 0, q = 0;
        if (!simplified) { for (auto v : s) m += v; m /= n; }
        for (auto v : s) q += (v - m) * (v - m);
        double iv = 1.0 / std::sqrt(q / n + 1e-5);
        rm[r] = m; ri[r] = iv;
        for (int64_t j = 0; j < n; j++)
            ry[unalign + r * n + j] = (s[j] - m) * iv * g.h[rowwise_gamma ? r * n + j : j] + (beta ? b.h[j] : 0);
    }
    std::vector<double> gy = y.download();
    if (unalign) gy[0] = 0;
    compare(std::string(name) + " y", gy, ry, tol_of(dt) * 2);
    if (want_sum && skip_mode) compare(std::string(name) + " sum", sum.download(), rs, tol_of(dt));
    compare(std::string(name) + " mean", mean.download(), rm, 1e-4);
    compare(std::string(name) + " inv", inv.download(), ri, 1e-4);
}

// ---------------- softmax ----------------
static void test_softmax(int dt, int kind, int64_t outer, int64_t n, int64_t inner, int unalign = 0) {
    char name[160];
    snprintf(name, sizeof name, "softmax %s kind=%d %lldx%lldx%lld ua=%d", dname(dt), kind, (long long)outer,
             (long long)n, (long long)inner, unalign);
    int64_t tot = outer * n * inner;
    Buf x(dt, tot + unalign), y(dt, tot + unalign);
    x.fill(-4, 4);
    if (tot > 10 && kind != 2) x.h[unalign + 3] = -INFINITY;
    x.upload(); y.alloc();
    status(kiln_cuda_softmax(stream, kind, dt, (char *)x.d + unalign * esize(dt), (char *)y.d + unalign * esize(dt),
                             outer, n, inner), name);
    std::vector<double> ref(tot + unalign, 0);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            auto at = [&](int64_t k) { return unalign + (o * n + k) * inner + j; };
            double m = -INFINITY; int64_t bi = 0;
            for (int64_t k = 0; k < n; k++) if (x.h[at(k)] > m) { m = x.h[at(k)]; bi = k; }
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += std::exp(x.h[at(k)] - m);
            for (int64_t k = 0; k < n; k++) {
                double v = x.h[at(k)];
                ref[at(k)] = kind == 0 ? std::exp(v - m) / s : kind == 1 ? (v - m) - std::log(s) : (k == bi ? 1 : 0);
            }
        }
    std::vector<double> got = y.download();
    if (unalign) got[0] = 0;
    if (kind == 1) { // -inf input gives -inf output: compare finite part
        for (size_t i = 0; i < ref.size(); i++) if (std::isinf(ref[i]) && std::isinf(got[i])) got[i] = ref[i];
    }
    compare(name, got, ref, tol_of(dt) * 2, kind == 2);
}

// ---------------- group / batch norm ----------------
static void test_gn(int dt, int pdt, int64_t batch, int64_t ch, int64_t groups, int64_t inner, bool per_group) {
    char name[160];
    snprintf(name, sizeof name, "groupnorm %s/%s N=%lld C=%lld G=%lld inner=%lld pg=%d", dname(dt), dname(pdt),
             (long long)batch, (long long)ch, (long long)groups, (long long)inner, per_group);
    int64_t tot = batch * ch * inner, np = per_group ? groups : ch, cpg = ch / groups;
    Buf x(dt, tot), y(dt, tot), sc(pdt, np), bi(pdt, np);
    x.fill(-1, 5); sc.fill(0.5, 2); bi.fill(-1, 1);
    x.upload(); y.alloc(); sc.upload(); bi.upload();
    kiln_cuda_gn_args a;
    memset(&a, 0, sizeof a);
    a.dtype = dt; a.scale_dtype = pdt; a.bias_dtype = pdt;
    a.batch = batch; a.channels = ch; a.groups = groups; a.inner = inner; a.param_div = per_group ? cpg : 1;
    a.eps = 1e-5f; a.x = x.d; a.scale = sc.d; a.bias = bi.d; a.y = y.d;
    status(kiln_cuda_group_norm(prov, &a), name);
    std::vector<double> ref(tot);
    int64_t len = cpg * inner;
    for (int64_t r = 0; r < batch * groups; r++) {
        double m = 0, q = 0;
        for (int64_t j = 0; j < len; j++) m += x.h[r * len + j];
        m /= len;
        for (int64_t j = 0; j < len; j++) q += (x.h[r * len + j] - m) * (x.h[r * len + j] - m);
        double iv = 1 / std::sqrt(q / len + 1e-5);
        for (int64_t j = 0; j < len; j++) {
            int64_t c = (r % groups) * cpg + j / inner, p = per_group ? c / cpg : c;
            ref[r * len + j] = (x.h[r * len + j] - m) * iv * sc.h[p] + bi.h[p];
        }
    }
    compare(name, y.download(), ref, tol_of(dt) * 2);
}

static void test_bn(int dt, int pdt, int64_t batch, int64_t ch, int64_t inner) {
    char name[160];
    snprintf(name, sizeof name, "batchnorm %s/%s N=%lld C=%lld inner=%lld", dname(dt), dname(pdt), (long long)batch,
             (long long)ch, (long long)inner);
    int64_t tot = batch * ch * inner;
    Buf x(dt, tot), y(dt, tot), sc(pdt, ch), bi(pdt, ch), mn(pdt, ch), vr(pdt, ch);
    x.fill(-1, 5); sc.fill(0.5, 2); bi.fill(-1, 1); mn.fill(0, 2); vr.fill(0.5, 3);
    x.upload(); y.alloc(); sc.upload(); bi.upload(); mn.upload(); vr.upload();
    kiln_cuda_bn_args a;
    memset(&a, 0, sizeof a);
    a.dtype = dt; a.scale_dtype = a.bias_dtype = a.mean_dtype = a.var_dtype = pdt;
    a.batch = batch; a.channels = ch; a.inner = inner; a.eps = 1e-5f;
    a.x = x.d; a.y = y.d; a.scale = sc.d; a.bias = bi.d; a.mean = mn.d; a.var = vr.d;
    status(kiln_cuda_batch_norm(stream, &a), name);
    std::vector<double> ref(tot);
    for (int64_t i = 0; i < tot; i++) {
        int64_t c = (i / inner) % ch;
        ref[i] = (x.h[i] - mn.h[c]) * sc.h[c] / std::sqrt(vr.h[c] + 1e-5) + bi.h[c];
    }
    compare(name, y.download(), ref, tol_of(dt) * 2);
}

// ---------------- reduce ----------------
static void test_reduce(int dt, int kind, std::vector<int64_t> dims, std::vector<int> red, int last = 0) {
    std::string dstr;
    for (size_t i = 0; i < dims.size(); i++) dstr += std::to_string(dims[i]) + (red[i] ? "r," : ",");
    char name[200];
    snprintf(name, sizeof name, "reduce %s kind=%d [%s] last=%d", dname(dt), kind, dstr.c_str(), last);
    int rank = (int)dims.size();
    int64_t tot = 1, outs = 1, r = 1;
    for (int i = 0; i < rank; i++) { tot *= dims[i]; if (red[i]) r *= dims[i]; else outs *= dims[i]; }
    bool isint = dt == KILN_DTYPE_INT32 || dt == KILN_DTYPE_INT64;
    bool arg = kind >= KILN_CUDA_RK_ARGMAX;
    Buf x(dt, std::max<int64_t>(tot, 1)), y(arg ? KILN_DTYPE_INT64 : dt, std::max<int64_t>(outs, 1));
    if (isint) {
        std::uniform_int_distribution<int> u(kind == KILN_CUDA_RK_PROD ? -3 : -1000, kind == KILN_CUDA_RK_PROD ? 3 : 1000);
        for (auto &v : x.h) v = u(rng);
        if (kind == KILN_CUDA_RK_SUM && dt == KILN_DTYPE_INT64) x.h[0] = 9.0e18; // wraps
    } else if (kind == KILN_CUDA_RK_PROD) x.fill(0.97, 1.03);
    else if (kind == KILN_CUDA_RK_LOGSUM) x.fill(0.1, 1);
    else x.fill(-3, 3);
    if (arg && !isint && tot > 20) { x.h[5] = NAN; x.h[7] = x.h[8]; }
    x.upload(); y.alloc();
    kiln_cuda_reduce_args a;
    memset(&a, 0, sizeof a);
    a.kind = kind; a.dtype = dt; a.select_last = last; a.rank = rank;
    for (int i = 0; i < rank; i++) { a.dims[i] = dims[i]; a.reduced[i] = red[i]; }
    a.x = x.d; a.y = y.d;
    status(kiln_cuda_reduce(prov, &a), name);
    if (outs == 0) return;
    // output index of each input element
    std::vector<double> acc(outs), acc2(outs), mx(outs, -INFINITY), mn(outs, INFINITY);
    std::vector<long long> iacc(outs, kind == KILN_CUDA_RK_PROD ? 1 : 0), best(outs, -1);
    std::vector<double> bestv(outs);
    std::vector<bool> first_nan(outs, false);
    if (kind == KILN_CUDA_RK_PROD) for (auto &v : acc) v = 1;
    std::vector<int64_t> idx(rank, 0);
    std::vector<int64_t> ostride(rank, 0);
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) if (!red[i]) { ostride[i] = s; s *= dims[i]; }
    int axis = -1;
    for (int i = 0; i < rank; i++) if (red[i]) axis = i;
    std::vector<double> vals(tot);
    for (int64_t t = 0; t < tot; t++) {
        int64_t o = 0;
        for (int i = 0; i < rank; i++) o += idx[i] * ostride[i];
        double v = x.h[t];
        vals[t] = v;
        long long iv = (long long)(int64_t)x.h[t];
        if (dt == KILN_DTYPE_INT64 && x.h[t] == 9.0e18) iv = 9000000000000000000LL;
        acc[o] += kind == KILN_CUDA_RK_L1 ? std::fabs(v) : (kind == KILN_CUDA_RK_SUMSQ || kind == KILN_CUDA_RK_L2) ? v * v : v;
        if (isint) iacc[o] = kind == KILN_CUDA_RK_PROD ? (long long)((unsigned long long)iacc[o] * (unsigned long long)iv)
                                                      : (long long)((unsigned long long)iacc[o] + (unsigned long long)iv);
        mx[o] = std::max(mx[o], v); mn[o] = std::min(mn[o], v);
        if (arg) {
            int64_t k = idx[axis];
            bool isnan_ = std::isnan(v);
            if (k == 0) { best[o] = 0; bestv[o] = v; first_nan[o] = isnan_; }
            else if (!first_nan[o] && !isnan_) {
                bool better = kind == KILN_CUDA_RK_ARGMAX ? (last ? v >= bestv[o] : v > bestv[o]) : (last ? v <= bestv[o] : v < bestv[o]);
                if (better) { best[o] = k; bestv[o] = v; }
            }
        }
        for (int i = rank - 1; i >= 0; i--) { if (++idx[i] < dims[i]) break; idx[i] = 0; }
    }
    if (kind == KILN_CUDA_RK_PROD && !isint) {
        for (auto &v : acc) v = 1;
        std::fill(idx.begin(), idx.end(), 0);
        for (int64_t t = 0; t < tot; t++) {
            int64_t o = 0;
            for (int i = 0; i < rank; i++) o += idx[i] * ostride[i];
            acc[o] *= vals[t];
            for (int i = rank - 1; i >= 0; i--) { if (++idx[i] < dims[i]) break; idx[i] = 0; }
        }
    }
    if (kind == KILN_CUDA_RK_LOGSUMEXP) {
        std::fill(idx.begin(), idx.end(), 0);
        for (int64_t t = 0; t < tot; t++) {
            int64_t o = 0;
            for (int i = 0; i < rank; i++) o += idx[i] * ostride[i];
            acc2[o] += std::exp(vals[t] - mx[o]);
            for (int i = rank - 1; i >= 0; i--) { if (++idx[i] < dims[i]) break; idx[i] = 0; }
        }
    }
    std::vector<double> ref(outs);
    for (int64_t o = 0; o < outs; o++) {
        switch (kind) {
        case KILN_CUDA_RK_SUM: ref[o] = isint ? (double)(dt == KILN_DTYPE_INT32 ? (int32_t)iacc[o] : iacc[o]) : acc[o]; break;
        case KILN_CUDA_RK_MEAN: ref[o] = r ? acc[o] / r : NAN; break;
        case KILN_CUDA_RK_MAX: ref[o] = isint && r == 0 ? (dt == KILN_DTYPE_INT32 ? -2147483648.0 : -9.223372036854775808e18) : mx[o]; break;
        case KILN_CUDA_RK_MIN: ref[o] = isint && r == 0 ? (dt == KILN_DTYPE_INT32 ? 2147483647.0 : 9.223372036854775807e18) : mn[o]; break;
        case KILN_CUDA_RK_PROD: ref[o] = isint ? (double)(dt == KILN_DTYPE_INT32 ? (int32_t)iacc[o] : iacc[o]) : acc[o]; break;
        case KILN_CUDA_RK_L1: case KILN_CUDA_RK_SUMSQ: ref[o] = acc[o]; break;
        case KILN_CUDA_RK_L2: ref[o] = std::sqrt(acc[o]); break;
        case KILN_CUDA_RK_LOGSUM: ref[o] = std::log(acc[o]); break;
        case KILN_CUDA_RK_LOGSUMEXP: ref[o] = r ? mx[o] + std::log(acc2[o]) : -INFINITY; break;
        default: ref[o] = (double)best[o];
        }
    }
    if (!isint && !arg)
        for (auto &v : ref) v = round_to(dt, (float)v);
    std::vector<double> got = y.download();
    got.resize(outs);
    double tol = isint || arg ? 0 : tol_of(dt) * (dt == KILN_DTYPE_FLOAT ? 5 : 1);
    if (!isint && (kind == KILN_CUDA_RK_SUM || kind == KILN_CUDA_RK_MEAN)) {
        // sums of signed values: compare against the sum of |x| scale
        double sa = 0;
        for (auto v : vals) sa = std::max(sa, std::fabs(v));
        tol *= std::max(1.0, std::sqrt((double)r) * sa / 3);
    }
    compare(name, got, ref, tol, isint || arg);
}


template <typename F> static void bench(const char *name, double bytes, F f) {
    f();
    cudaEvent_t a, b;
    cudaEventCreate(&a); cudaEventCreate(&b);
    cudaEventRecord(a, stream);
    for (int i = 0; i < 20; i++) f();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    ms /= 20;
    printf("BENCH %-40s %8.1f us %7.0f GB/s\n", name, ms * 1e3, bytes / (ms * 1e-3) / 1e9);
}

static void benches() {
    const int H = KILN_DTYPE_FLOAT16, F = KILN_DTYPE_FLOAT;
    {   // BERT-base LN with skip, f16, 16k rows x 768
        int64_t rows = 16384, n = 768;
        Buf x(H, rows * n), k(H, rows * n), g(H, n), b(H, n), y(H, rows * n);
        x.alloc(); k.alloc(); g.alloc(); b.alloc(); y.alloc();
        kiln_cuda_ln_args a; memset(&a, 0, sizeof a);
        a.dtype = H; a.rows = rows; a.n = n; a.eps = 1e-5f; a.x = x.d; a.skip = k.d; a.skip_rows = rows;
        a.gamma = g.d; a.beta = b.d; a.y = y.d;
        bench("skipLN f16 16384x768", 3.0 * rows * n * 2, [&] { kiln_cuda_layer_norm(stream, &a); });
        a.skip = nullptr;
        bench("LN f16 16384x768", 2.0 * rows * n * 2, [&] { kiln_cuda_layer_norm(stream, &a); });
        a.dtype = F; a.rows = rows / 2;
        bench("LN f32 8192x768", 2.0 * rows / 2 * n * 4, [&] { kiln_cuda_layer_norm(stream, &a); });
        a.dtype = H; a.rows = 2048; a.n = 4096; a.simplified = 1; a.beta = nullptr;
        bench("RMS f16 2048x4096", 2.0 * 2048 * 4096 * 2, [&] { kiln_cuda_layer_norm(stream, &a); });
        bench("softmax f16 98304x128", 2.0 * 98304 * 128 * 2,
              [&] { kiln_cuda_softmax(stream, 0, H, x.d, y.d, 98304, 128, 1); });
        bench("softmax f16 3072x4096", 2.0 * 3072 * 4096 * 2,
              [&] { kiln_cuda_softmax(stream, 0, H, x.d, y.d, 3072, 4096, 1); });
        bench("softmax f16 64x32x4096 (axis 1)", 2.0 * 64 * 32 * 4096 * 2,
              [&] { kiln_cuda_softmax(stream, 0, H, x.d, y.d, 64, 32, 4096); });
        kiln_cuda_gn_args gn; memset(&gn, 0, sizeof gn);
        gn.dtype = H; gn.scale_dtype = gn.bias_dtype = H; gn.batch = 2; gn.channels = 320; gn.groups = 32;
        gn.inner = 64 * 64; gn.param_div = 1; gn.eps = 1e-5f; gn.x = x.d; gn.scale = g.d; gn.bias = b.d; gn.y = y.d;
        bench("groupnorm f16 2x320x64x64", 2.0 * 2 * 320 * 4096 * 2, [&] { kiln_cuda_group_norm(prov, &gn); });
        kiln_cuda_reduce_args r; memset(&r, 0, sizeof r);
        r.kind = KILN_CUDA_RK_SUM; r.dtype = H; r.rank = 2; r.dims[0] = 16384; r.dims[1] = 768; r.reduced[1] = 1;
        r.x = x.d; r.y = y.d;
        bench("reduce sum f16 rows 16384x768", 16384.0 * 768 * 2, [&] { kiln_cuda_reduce(prov, &r); });
        r.reduced[1] = 0; r.reduced[0] = 1;
        bench("reduce sum f16 cols 16384x768", 16384.0 * 768 * 2, [&] { kiln_cuda_reduce(prov, &r); });
        r.reduced[1] = 1;
        bench("reduce sum f16 all 16384x768", 16384.0 * 768 * 2, [&] { kiln_cuda_reduce(prov, &r); });
        r.kind = KILN_CUDA_RK_ARGMAX; r.reduced[0] = 0; r.dims[0] = 256; r.dims[1] = 32000;
        bench("argmax f16 256x32000", 256.0 * 32000 * 2, [&] { kiln_cuda_reduce(prov, &r); });
        r.kind = KILN_CUDA_RK_MEAN; r.rank = 4; r.dims[0] = 60; r.dims[1] = 256; r.dims[2] = 28; r.dims[3] = 28;
        r.reduced[0] = 1; r.reduced[1] = 0; r.reduced[2] = 1; r.reduced[3] = 1;
        bench("reduce mean f16 general 60x256x28x28", 60.0 * 256 * 784 * 2, [&] { kiln_cuda_reduce(prov, &r); });
    }
}

int main() {
    if (kiln_cuda_provider_create(0, &prov) != KILN_OK) { printf("no provider: %s\n", kiln_cuda_last_error()); return 1; }
    stream = (cudaStream_t)kiln_cuda_stream(prov);
    const int F = KILN_DTYPE_FLOAT, H = KILN_DTYPE_FLOAT16, B = KILN_DTYPE_BFLOAT16;
    int fts[] = {F, H, B};
    for (int dt : fts) {
        if (getenv("ONLY_REDUCE")) break;
        for (int64_t n : {1, 7, 64, 100, 768, 1000, 1024, 1030, 4096, 5000, 20000}) {
            test_ln(dt, 37, n, 0, false, true, false, false, false);
            test_ln(dt, 6, n, 1, true, true, false, true, false);
            test_ln(dt, 6, n, 2, false, false, true, true, false);
            test_ln(dt, 5, n, 0, false, false, true, false, true);
        }
        test_ln(dt, 4096, 768, 1, true, true, false, true, false);
        test_ln(dt, 3, 768, 0, false, true, false, false, false, 1);
        test_ln(dt, 3, 2048, 2, true, true, false, true, false, 1);
        for (int kind = 0; kind < 3; kind++) {
            for (int64_t n : {1, 5, 32, 100, 1000, 1024, 1500, 8192, 30000}) {
                test_softmax(dt, kind, 7, n, 1);
                test_softmax(dt, kind, 3, n, 5);
            }
            test_softmax(dt, kind, 4, 128, 1, 1);
            test_softmax(dt, kind, 2, 3000, 1, 1);
            test_softmax(dt, kind, 1, 7, 100000);
        }
        for (int pdt : fts) {
            test_gn(dt, pdt, 2, 64, 32, 64 * 64, true);
            test_gn(dt, pdt, 3, 6, 6, 7, false);
            test_bn(dt, pdt, 2, 16, 33 * 33);
            test_bn(dt, pdt, 5, 7, 1);
        }
        test_gn(dt, F, 1, 320, 32, 96 * 96, false);
        test_gn(dt, F, 2, 8, 2, 1, true);
        test_gn(dt, F, 64, 256, 256, 9, false);
        test_bn(dt, F, 3, 100, 256);
        test_bn(dt, F, 3, 100, 257);
    }
    std::vector<std::pair<std::vector<int64_t>, std::vector<int>>> shapes = {
        {{7, 13}, {0, 1}}, {{7, 13}, {1, 0}}, {{7, 13}, {1, 1}}, {{5, 1, 8, 9}, {0, 1, 1, 0}},
        {{5, 6, 8, 9}, {1, 0, 1, 0}}, {{5, 6, 8, 9}, {0, 1, 0, 1}}, {{5, 6, 8, 9}, {1, 0, 0, 1}},
        {{3, 1 << 20}, {0, 1}}, {{1 << 20, 3}, {1, 0}}, {{4096, 4096}, {1, 0}}, {{4096, 2}, {0, 1}},
        {{2, 3000, 4}, {0, 1, 0}}, {{1, 1, 1}, {1, 0, 1}}, {{4, 5}, {0, 0}}, {{4, 0, 3}, {0, 1, 0}},
        {{4, 0, 3}, {1, 0, 0}}, {{64, 2048}, {0, 1}}, {{2, 3, 4, 5, 6}, {1, 0, 1, 0, 1}},
        {{300, 200, 3}, {1, 0, 1}}, {{1, 2, 3000, 70}, {0, 1, 0, 1}}, {{1000, 1000}, {1, 1}}, {{5}, {1}}, {{6, 32, 300}, {1, 0, 1}}, {{4, 5, 6, 200}, {1, 1, 0, 1}}};
    for (int dt : fts)
        for (int kind = 0; kind <= KILN_CUDA_RK_SUMSQ; kind++)
            for (auto &sh : shapes) test_reduce(dt, kind, sh.first, sh.second);
    int its[] = {KILN_DTYPE_INT32, KILN_DTYPE_INT64};
    for (int dt : its)
        for (int kind : {(int)KILN_CUDA_RK_SUM, (int)KILN_CUDA_RK_MAX, (int)KILN_CUDA_RK_MIN, (int)KILN_CUDA_RK_PROD})
            for (auto &sh : shapes) test_reduce(dt, kind, sh.first, sh.second);
    std::vector<std::pair<std::vector<int64_t>, std::vector<int>>> ashapes = {
        {{7, 13}, {0, 1}}, {{7, 13}, {1, 0}}, {{5, 6, 8}, {0, 1, 0}}, {{3, 1 << 20}, {0, 1}}, {{1 << 18, 5}, {1, 0}},
        {{1, 9}, {1, 0}}, {{64, 3000}, {0, 1}}, {{3, 700, 9}, {0, 1, 0}}};
    for (int dt : {F, H, B, (int)KILN_DTYPE_INT32, (int)KILN_DTYPE_INT64})
        for (int kind : {(int)KILN_CUDA_RK_ARGMAX, (int)KILN_CUDA_RK_ARGMIN})
            for (int last = 0; last < 2; last++)
                for (auto &sh : ashapes) test_reduce(dt, kind, sh.first, sh.second, last);
    if (!getenv("ONLY_REDUCE")) benches();
    cudaError_t e = cudaDeviceSynchronize();
    printf("%d checks, %d failures, sync: %s\n", checks, failures, cudaGetErrorString(e));
    return failures != 0;
}
