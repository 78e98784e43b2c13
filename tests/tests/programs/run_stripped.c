/* Built stripped (-s) with its functions exported (-rdynamic), as distributions ship programs:
   the exported functions are in .dynsym, the static ones in no symbol table at all. The static
   tm_hidden_alloc lies just after the exported tm_exported_before, the nearest symbol before
   its code; reports must not call it by that name. Every block is kept to the end (leaks). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

int tm_exported_before(int x) { return x * 3 + 1; }

static __attribute__((noinline)) void *tm_hidden_alloc(size_t n) {
    void *p = malloc(n);
    __asm__ volatile("" ::: "memory"); /* keeps the call a call */
    return p;
}

__attribute__((noinline)) void *tm_entry(size_t n) {
    void *p = tm_hidden_alloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

static void *worker(void *arg) {
    (void)arg;
    void *p = tm_entry(1000);
    __asm__ volatile("" ::: "memory");
    return p;
}

int main(void) {
    void *kept = tm_entry(2000);
    pthread_t th[2];
    void *from_thread[2];
    for (int t = 0; t < 2; t++)
        pthread_create(&th[t], NULL, worker, NULL);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], &from_thread[t]);
    printf("%d %d\n", kept != NULL, tm_exported_before(from_thread[0] != from_thread[1]));
    return 0;
}
