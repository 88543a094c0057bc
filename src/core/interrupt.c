/* Ctrl-C during a run (kiln_sigint_chain / kiln_sigint_redirect in kiln.h). A binding such as
 * Python's cannot run its own SIGINT handling while kiln computes with the interpreter lock
 * released, so kiln's handler sets the terminate flag of the run in progress and then calls the
 * handler that was installed before it (Python's records the signal and raises KeyboardInterrupt
 * once the run has returned). The handler stays installed between runs, where it only chains:
 * swapping handlers around every run would cost two system calls per run (about 0.3 us, a sixth of
 * a small model's Python run). */
#include "kiln.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>

static volatile int *_Atomic target;     /* the flag SIGINT sets; NULL: none */
static struct sigaction previous;        /* what kiln's handler chains to */
static pthread_mutex_t chain_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_sigint(int sig, siginfo_t *info, void *uctx) {
    volatile int *flag = atomic_load(&target);
    if (flag) *flag = 1;
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(sig, info, uctx);
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
    }
}

static int is_ours(const struct sigaction *a) {
    return (a->sa_flags & SA_SIGINFO) && a->sa_sigaction == on_sigint;
}

int kiln_sigint_chain(void) {
    pthread_mutex_lock(&chain_mu);
    struct sigaction now;
    int ok = sigaction(SIGINT, NULL, &now) == 0;
    if (ok && !is_ours(&now)) {
        /* ignored: the program wants Ctrl-C ignored; default: it ends the process anyway */
        ok = (now.sa_flags & SA_SIGINFO) || (now.sa_handler != SIG_DFL && now.sa_handler != SIG_IGN);
        if (ok) {
            previous = now; /* not installed yet, so no handler reads it meanwhile */
            struct sigaction act = now;
            act.sa_sigaction = on_sigint;
            act.sa_flags = (now.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
            ok = sigaction(SIGINT, &act, NULL) == 0;
        }
    }
    pthread_mutex_unlock(&chain_mu);
    return ok;
}

volatile int *kiln_sigint_redirect(volatile int *flag) { return atomic_exchange(&target, flag); }
