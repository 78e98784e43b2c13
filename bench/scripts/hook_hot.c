/* A hot malloc/free loop for counting the instructions of one call (hook_instructions.sh).
 * 64 live blocks of 16..271 bytes, the oldest replaced each step: glibc stays on its tcache
 * fast paths, so what a preload adds stands out. The two call sites are functions of their
 * own (each a tail call), so that a debugger can stop at a call and count until main. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void *alloc_site(size_t n) { return malloc(n); }
__attribute__((noinline)) void free_site(void *p) { free(p); }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    void *live[64] = {0};
    unsigned x = 1;
    for (long i = 0; i < n; i++) {
        x = x * 1103515245 + 12345;
        int k = i & 63;
        free_site(live[k]);
        live[k] = alloc_site(16 + (x >> 24));
        *(volatile char *)live[k] = 1;
    }
    printf("%ld steps\n", n);
    return 0;
}
