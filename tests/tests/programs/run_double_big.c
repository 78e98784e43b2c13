/* A block over 512 bytes (glibc's memory under the debug hooks) freed twice, with 20 MB of
 * frees between: the block has left the quarantine, and glibc has written its large-bin
 * links into the first 32 bytes of its chunk, where the debug header used to start.
 * `fence`, live, keeps the chunk from merging into the top of glibc's heap; the blocks freed
 * between are pymalloc's (200 bytes), so glibc hands out nothing in its place; the next
 * malloc glibc serves (`__libc_malloc`, which the preload does not see, and bigger) sorts
 * the chunk into its large bin. Built without frame pointers. */
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t n);
extern void __libc_free(void *p);

__attribute__((noinline)) char *make_buffer(size_t n) {
    return malloc(n);
}

__attribute__((noinline)) void release(void *p) {
    free(p);
}

int main(void) {
    char *small = make_buffer(24);
    char *big = make_buffer(2000), *fence = make_buffer(600);
    release(big);
    for (int i = 0; i < 100000; i++) {
        char *q = malloc(200);
        ((volatile char *)q)[0] = 1;
        free(q);
    }
    void *sorts = __libc_malloc(8000);
    release(big); /* SITE double_big */
    __libc_free(sorts);
    release(fence);
    release(small);
    puts("survived");
    return 0;
}
