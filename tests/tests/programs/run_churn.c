/* Allocation churn for overhead figures: argv[1] rounds of allocating and freeing blocks of
 * varied sizes a few calls deep, with a working set kept live. */
#include <stdio.h>
#include <stdlib.h>

#define LIVE 4096

static void *live[LIVE];

__attribute__((noinline)) void *leaf(size_t n) {
    void *p = malloc(n); /* SITE churn */
    if (p)
        *(char *)p = 1;
    return p;
}
__attribute__((noinline)) void *mid(size_t n) { return leaf(n) ; }
__attribute__((noinline)) void *top(size_t n) { return mid(n + 1) ; }

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 1000000;
    unsigned x = 12345;
    for (long i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        unsigned slot = x % LIVE;
        free(live[slot]);
        live[slot] = top(16 + x % 300);
    }
    for (int i = 0; i < LIVE; i++)
        free(live[i]);
    printf("done %ld\n", rounds);
    return 0;
}
