/* Heap misuse the debug allocator must report: argv[1] picks overflow, double free, a
 * double free after many rounds from the same stacks (whose tracebacks the preload's express
 * lane answers), a write after free that is still in the quarantine at exit, a free of a
 * stack buffer or of a global one, a free of a pointer inside a block over 512 bytes, a
 * free of a block over 512 bytes whose header a write before it damaged, or nothing.
 * Built without frame pointers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) char *make_buffer(size_t n) {
    char *p = malloc(n); /* SITE alloc */
    return p;
}

__attribute__((noinline)) void overflow(char *p, size_t n) {
    memset(p, 'x', n + 3); /* three bytes too many */
}

__attribute__((noinline)) void release(char *p) {
    free(p); /* SITE free */
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "overflow";
    char *p = make_buffer(24);
    if (strcmp(what, "overflow") == 0) {
        overflow(p, 24);
        release(p); /* SITE overflow */
    } else if (strcmp(what, "double") == 0) {
        release(p);
        release(p); /* SITE double */
    } else if (strcmp(what, "repeated") == 0) {
        release(p);
        for (int i = 0; i < 1000; i++) {
            p = make_buffer(24); /* SITE repeated_alloc */
            release(p); /* SITE repeated_free */
        }
        release(p); /* SITE repeated_double */
    } else if (strcmp(what, "stack") == 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "%s", what);
        release(buf); /* SITE stack */
        release(p);
    } else if (strcmp(what, "interior_big") == 0) {
        /* Over 512 bytes: a debug block in glibc's memory. Filled with words that read as a
           plausible chunk size, so that glibc's own free would accept the interior pointer. */
        size_t *big = (size_t *)make_buffer(1000);
        for (int i = 0; i < 125; i++) big[i] = 0x31;
        release((char *)&big[4]); /* SITE interior_big */
        release(p);
    } else if (strcmp(what, "underflow_big") == 0) {
        /* A write 14 bytes before a block over 512 bytes: past the front guard, into the
           header's tag, so no debug header seems to precede the pointer. */
        char *big = make_buffer(1000);
        ((volatile char *)big)[-14] = 'X';
        release(big); /* SITE underflow_big */
        release(p);
    } else if (strcmp(what, "global") == 0) {
        static char global_buf[64];
        snprintf(global_buf, sizeof global_buf, "%s", what);
        release(global_buf); /* SITE global */
        release(p);
    } else if (strcmp(what, "after_free") == 0) {
        release(p); /* SITE after_free */
        ((volatile char *)p)[10] = 'Z';
    } else {
        release(p);
    }
    printf("survived %s\n", what);
    return 0;
}
