/* Signal dispositions as a program sees them: SIG_DFL where nothing was installed (the
 * preload's flush handler must not show), its own handler runs when it installs one, and
 * after it asks for SIG_DFL again a raised SIGINT kills it. Allocations made right before
 * the signal must be in the capture. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static volatile sig_atomic_t got;
static void on_int(int sig) { got = sig; }

__attribute__((noinline)) void *before_signal(size_t n) {
    return malloc(n); /* SITE before */
}

static const char *yes(int c) { return c ? "yes" : "no"; }

int main(void) {
    struct sigaction sa, old;
    sigaction(SIGINT, NULL, &old);
    printf("SIGINT default: %s\n", yes(old.sa_handler == SIG_DFL));
    void (*prev)(int) = signal(SIGTERM, SIG_DFL);
    printf("SIGTERM default: %s\n", yes(prev == SIG_DFL));

    sa.sa_handler = on_int;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, &old);
    printf("before own handler: %s\n", yes(old.sa_handler == SIG_DFL));
    raise(SIGINT);
    printf("own handler ran: %s\n", yes(got == SIGINT));

    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, &old);
    printf("own handler given back: %s\n", yes(old.sa_handler == on_int));
    sigaction(SIGINT, NULL, &old);
    printf("SIGINT default again: %s\n", yes(old.sa_handler == SIG_DFL));

    void *keep[20];
    for (int i = 0; i < 20; i++)
        keep[i] = before_signal(500 + i);
    printf("raising SIGINT\n");
    fflush(stdout);
    raise(SIGINT);
    printf("survived SIGINT %p\n", keep[0]);
    return 0;
}
