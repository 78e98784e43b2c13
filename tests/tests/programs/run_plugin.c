/* A shared library the dlopen test loads after the program started. */
#include <stdlib.h>

__attribute__((noinline)) void *plugin_alloc(size_t n) {
    void *p = malloc(n); /* SITE plugin */
    return p;
}

void *plugin_entry(size_t n) {
    void *p = plugin_alloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}
