/* Allocations at known lines, built without frame pointers: the preload's recording must
 * find each site (DWARF unwinding) with its byte count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

__attribute__((noinline)) void *make_kept(size_t n) {
    return malloc(n); /* SITE kept */
}

__attribute__((noinline)) char *make_temp(int i) {
    char *p = calloc(1, 100 + i); /* SITE temp */
    p[0] = (char)i;
    return p;
}

__attribute__((noinline)) void *grow(void *p, size_t n) {
    return realloc(p, n); /* SITE grow */
}

__attribute__((noinline)) void level3(void **keep, int i) { keep[i] = make_kept(1000 + i); }
__attribute__((noinline)) void level2(void **keep, int i) { level3(keep, i); }
__attribute__((noinline)) void level1(void **keep, int i) { level2(keep, i); }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    void **keep = malloc(sizeof(void *) * n);
    long sum = 0;
    for (int i = 0; i < n; i++) {
        level1(keep, i);
        char *t = make_temp(i);
        sum += t[0];
        free(t);
    }
    void *g = grow(NULL, 10);
    g = grow(g, 5000);
    printf("sum %ld\n", sum);
    int code = argc > 2 ? atoi(argv[2]) : 0;
    if (argc > 3) {
        /* How to end: _exit (no exit handlers: the preload's _exit flushes the capture),
         * or a signal (TERM, INT: the preload's handler flushes; KILL: what was written
         * stays), after argv[4] milliseconds (50 by default). */
        fflush(stdout);
        if (strcmp(argv[3], "_exit") == 0)
            _exit(code);
        usleep(argc > 4 ? atoi(argv[4]) * 1000 : 50000);
        raise(strcmp(argv[3], "KILL") == 0  ? SIGKILL
              : strcmp(argv[3], "INT") == 0 ? SIGINT
                                            : SIGTERM);
    }
    if (code == 0) {
        for (int i = 0; i < n; i++)
            free(keep[i]);
        free(keep);
        free(g);
    }
    return code;
}
