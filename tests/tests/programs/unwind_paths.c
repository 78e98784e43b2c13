/* Stacks that change deep inside between allocations: binary recursion with a left and a
 * right call site (every leaf is its own call path), and threads doing it at once. The DWARF
 * unwind memo must give exactly the stacks a full walk gives. argv[1] = depth, argv[2] =
 * rounds; prints the number of leaves allocated. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int depth_arg, rounds_arg;

__attribute__((noinline)) void *leaf_alloc(size_t n) {
    void *p = malloc(n); /* SITE leaf */
    if (p)
        *(volatile char *)p = 1;
    return p;
}

__attribute__((noinline)) long tree(int depth, long path) {
    if (depth == 0) {
        free(leaf_alloc(16 + (size_t)(path % 200)));
        return 1;
    }
    long left = tree(depth - 1, path * 2);
    long right = tree(depth - 1, path * 2 + 1);
    return left + right;
}

static void *work(void *arg) {
    long *count = arg;
    for (int r = 0; r < rounds_arg; r++)
        *count += tree(depth_arg, 1);
    return NULL;
}

int main(int argc, char **argv) {
    depth_arg = argc > 1 ? atoi(argv[1]) : 8;
    rounds_arg = argc > 2 ? atoi(argv[2]) : 4;
    size_t small_kib = argc > 3 ? (size_t)atoi(argv[3]) : 32;
    pthread_t th[3];
    long counts[4] = {0, 0, 0, 0};
    pthread_attr_t small;
    pthread_attr_init(&small);
    pthread_attr_setstacksize(&small, small_kib * 1024);
    for (int t = 0; t < 3; t++)
        pthread_create(&th[t], t == 0 ? &small : NULL, work, &counts[t]);
    work(&counts[3]);
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    printf("leaves %ld\n", counts[0] + counts[1] + counts[2] + counts[3]);
    return 0;
}
