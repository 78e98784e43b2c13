/* Threads allocating and freeing at a known site, some blocks freed by other threads. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 4
#define PER_THREAD 5000

static void *handoff[THREADS][PER_THREAD];

__attribute__((noinline)) void *thread_site(size_t n) {
    void *p = malloc(n); /* SITE thread */
    return p;
}

static void *work(void *arg) {
    long t = (long)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        void *p = thread_site(32 + (i % 64));
        if (i % 2)
            free(p);
        else
            handoff[t][i] = p;
    }
    return NULL;
}

int main(void) {
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, work, (void *)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    long freed = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i += 2) {
            free(handoff[t][i]);
            freed++;
        }
    printf("freed %ld\n", freed);
    return 0;
}
