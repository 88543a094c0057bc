/* Opening providers. A provider library is found, in order, in the folder named by
 * KILN_PROVIDER_PATH (one there that fails to load is final), in the folder libkiln itself was
 * loaded from, and on the loader's path. It
 * must export kiln_provider_abi() returning KILN_PROVIDER_ABI and the entry KILN_PROVIDER_ENTRY.
 * Libraries stay loaded once opened (unloading the CUDA runtime while its threads live is unsafe). */
#include "registry.h"
#include "../cpu/cpu_provider.h"
#include "../cpu/kernels/gemm_bf16.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct known_provider {
    unsigned bit;          /* KILN_PROVIDER_* */
    const char *ort_name;
    const char *library;
    const char *label;     /* for messages */
    const char *deps_hint; /* where the libraries it needs come from, when one of them is missing */
} known_provider;

static const known_provider KNOWN[] = {
    {KILN_PROVIDER_CUDA, "CUDAExecutionProvider", "libkiln_cuda.so", "CUDA",
     "the CUDA runtime, cuBLAS and cuDNN come from the CUDA toolkit (on LD_LIBRARY_PATH) or from pip: "
     "pip install nvidia-cuda-runtime nvidia-cublas nvidia-cudnn-cu13 (kiln[cuda])"},
};
enum { N_KNOWN = sizeof KNOWN / sizeof KNOWN[0] };

int kiln_providers_known(const char **names, int max) {
    int n = 0;
    for (int i = 0; i < N_KNOWN; i++)
        if (n < max) names[n++] = KNOWN[i].ort_name;
    if (n < max) names[n++] = "CPUExecutionProvider";
    return n;
}

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;

/* dlopen from a folder, or by bare name when dir is NULL; NULL with the loader's message. The
 * message of a library that exists but failed (a missing dependency) is kept over later attempts'
 * "not found", which would hide it. */
static void *open_in(const char *dir, const char *lib, char *why, size_t cap) {
    char path[4096];
    if (dir) snprintf(path, sizeof path, "%s/%s", dir, lib);
    else snprintf(path, sizeof path, "%s", lib);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *m = dlerror();
        if (!why[0] || (dir && access(path, F_OK) == 0)) snprintf(why, cap, "%s", m ? m : "dlopen failed");
    }
    return h;
}

static void *load_library(const char *lib, char *why, size_t cap) {
    const char *env = getenv("KILN_PROVIDER_PATH");
    void *h = NULL;
    if (env && env[0]) {
        if ((h = open_in(env, lib, why, cap))) return h;
        /* a library that is there but fails (a missing dependency) is the answer, not a reason to
         * take another copy from elsewhere */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", env, lib);
        if (access(path, F_OK) == 0) return NULL;
    }
    Dl_info info;
    if (dladdr((void *)&kiln_providers_open, &info) && info.dli_fname) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = 0;
            if ((h = open_in(dir, lib, why, cap))) return h;
        }
    }
    return open_in(NULL, lib, why, cap);
}

static kiln_status open_library_provider(const known_provider *k, const kiln_options *opt, int index,
                                         kiln_provider **out, kiln_err *e) {
    char why[1024] = "";
    pthread_mutex_lock(&load_mu);
    void *h = load_library(k->library, why, sizeof why);
    pthread_mutex_unlock(&load_mu);
    if (!h)
        return kiln_fail(e, KILN_ERR_NO_PROVIDER, "the %s provider library %s could not be loaded: %s%s%s",
                         k->label, k->library, why, strstr(why, k->library) ? "" : "; ",
                         strstr(why, k->library) ? "" : k->deps_hint);
    int (*abi)(void) = (int (*)(void))dlsym(h, "kiln_provider_abi");
    kiln_provider_open_fn entry = (kiln_provider_open_fn)dlsym(h, KILN_PROVIDER_ENTRY);
    if (!abi || !entry)
        return kiln_fail(e, KILN_ERR_NO_PROVIDER, "%s is not a kiln provider library (no %s)", k->library,
                         !abi ? "kiln_provider_abi" : KILN_PROVIDER_ENTRY);
    if (abi() != KILN_PROVIDER_ABI)
        return kiln_fail(e, KILN_ERR_NO_PROVIDER, "%s was built for provider interface %d, this libkiln has %d",
                         k->library, abi(), KILN_PROVIDER_ABI);
    kiln_provider_config cfg = {0, opt->verbose};
    kiln_status st = entry(&cfg, out, e);
    if (st) {
        kiln_err_prefix(e, "the %s provider could not start", k->label);
        return st;
    }
    (*out)->index = index;
    (*out)->verbose = opt->verbose;
    return KILN_OK;
}

kiln_status kiln_providers_open(const kiln_options *opt, kiln_provider_set *set, kiln_err *e) {
    memset(set, 0, sizeof *set);
    kiln_cpu_provider *cpu;
    KILN_TRY(kiln_cpu_provider_open(opt->threads, &cpu, e));
    set->ep[0] = &cpu->base;
    set->n = 1;
    cpu->bf16 = opt->cpu_bf16 && kbf16_available();
    cpu->no_winograd = opt->cpu_winograd < 0;
    set->tp = cpu->tp;
    set->threads = cpu->threads;
    unsigned unknown = opt->providers & ~(unsigned)KILN_PROVIDER_CPU;
    for (int i = 0; i < N_KNOWN; i++) unknown &= ~KNOWN[i].bit;
    if (unknown) {
        kiln_providers_close(set);
        return kiln_fail(e, KILN_ERR_NO_PROVIDER, "unknown execution provider bits 0x%x", unknown);
    }
    for (int i = 0; i < N_KNOWN; i++) {
        if (!(opt->providers & KNOWN[i].bit)) continue;
        kiln_provider *p = NULL;
        kiln_err pe = {0};
        if (open_library_provider(&KNOWN[i], opt, set->n, &p, &pe) == KILN_OK) {
            set->ep[set->n++] = p;
            continue;
        }
        if (!(opt->providers & KILN_PROVIDER_CPU)) {
            *e = pe;
            kiln_providers_close(set);
            return e->code;
        }
        snprintf(set->warning, sizeof set->warning, "%s; falling back to CPUExecutionProvider", pe.msg);
    }
    if (opt->cpu_bf16 && !cpu->bf16) {
        size_t l = strlen(set->warning);
        snprintf(set->warning + l, sizeof set->warning - l,
                 "%scpu_bf16: this CPU has no AVX512-BF16; computing in float32", l ? "; " : "");
    }
    return KILN_OK;
}

void kiln_providers_close(kiln_provider_set *set) {
    /* the others first: their buffers may be referenced by nothing on the CPU side */
    for (int i = set->n - 1; i >= 0; i--)
        if (set->ep[i]) set->ep[i]->vt->destroy(set->ep[i]);
    set->n = 0;
}

int kiln_providers_each_kernel(void (*fn)(void *arg, const char *provider, const kiln_kernel *k), void *arg) {
    int listed = 0;
    for (int i = 0; i < N_KNOWN; i++) {
        char why[1024] = "";
        pthread_mutex_lock(&load_mu);
        void *h = load_library(KNOWN[i].library, why, sizeof why);
        pthread_mutex_unlock(&load_mu);
        if (!h) continue;
        const kiln_kernel *const *(*tables)(void) = (const kiln_kernel *const *(*)(void))dlsym(h, "kiln_provider_kernels");
        if (!tables) continue;
        for (const kiln_kernel *const *t = tables(); *t; t++)
            for (const kiln_kernel *k = *t; k->name; k++) fn(arg, KNOWN[i].ort_name, k);
        listed++;
    }
    return listed;
}
