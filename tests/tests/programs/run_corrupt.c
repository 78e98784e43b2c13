/* Heap misuse the debug allocator must report: argv[1] picks overflow, double free or
 * write after free. Built without frame pointers. */
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
    } else {
        release(p);
    }
    printf("survived %s\n", what);
    return 0;
}
