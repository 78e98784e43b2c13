/* Exercises the whole C malloc family with checked contents, in several threads and across a
 * fork. Prints a deterministic transcript that must be the same on glibc and on tidemark. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static void fill(unsigned char *p, size_t n, unsigned char tag) { for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(tag + i); }
static int check(const unsigned char *p, size_t n, unsigned char tag) { for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(tag + i)) return 0; return 1; }

#define SLOTS 4096
static void *churn(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg * 7919 + 1;
    static __thread unsigned char *ptrs[SLOTS];
    static __thread size_t sizes[SLOTS];
    long bad = 0;
    for (int i = 0; i < 400000; i++) {
        size_t k = rnd(&s) % SLOTS;
        size_t n = rnd(&s) % 3 == 0 ? rnd(&s) % 8192 : rnd(&s) % 600;
        if (ptrs[k]) {
            if (!check(ptrs[k], sizes[k], (unsigned char)k)) bad++;
            if (rnd(&s) % 2) { free(ptrs[k]); ptrs[k] = malloc(n); }
            else {
                unsigned char *q = realloc(ptrs[k], n ? n : 1);
                size_t keep = sizes[k] < (n ? n : 1) ? sizes[k] : (n ? n : 1);
                if (!check(q, keep, (unsigned char)k)) bad++;
                ptrs[k] = q;
            }
        } else {
            ptrs[k] = rnd(&s) % 4 ? malloc(n) : calloc(1, n);
        }
        sizes[k] = ptrs[k] ? n : 0;
        if (ptrs[k]) fill(ptrs[k], n, (unsigned char)k);
    }
    for (int k = 0; k < SLOTS; k++) { if (ptrs[k] && !check(ptrs[k], sizes[k], (unsigned char)k)) bad++; free(ptrs[k]); ptrs[k] = 0; }
    return (void *)bad;
}

/* One thread allocates, another frees. */
#define HANDOFF 100000
static void *handoff[HANDOFF];
static void *consumer(void *arg) {
    (void)arg;
    long bad = 0;
    for (int i = 0; i < HANDOFF; i++) {
        while (!__atomic_load_n(&handoff[i], __ATOMIC_ACQUIRE)) sched_yield();
        if (*(int *)handoff[i] != i) bad++;
        free(handoff[i]);
    }
    return (void *)bad;
}

int main(void) {
    volatile size_t huge = SIZE_MAX / 2;
    /* malloc(0) and free(NULL) */
    void *z = malloc(0);
    printf("malloc(0) non-null: %d\n", z != NULL);
    free(z);
    free(NULL);

    /* calloc is zeroed, and overflow is refused with ENOMEM */
    unsigned char *c = calloc(100, 7);
    int zero = 1;
    for (int i = 0; i < 700; i++) zero &= c[i] == 0;
    printf("calloc zeroed: %d\n", zero);
    free(c);
    errno = 0;
    printf("calloc overflow null: %d enomem: %d\n", calloc(huge, 4) == NULL, errno == ENOMEM);

    /* alignments */
    int aligned_ok = 1;
    for (size_t a = 8; a <= 65536; a *= 2) {
        void *p = NULL;
        if (posix_memalign(&p, a, 100) != 0 || (uintptr_t)p % a) aligned_ok = 0;
        free(p);
        p = aligned_alloc(a, 3 * a);
        if (!p || (uintptr_t)p % a) aligned_ok = 0;
        free(p);
        p = memalign(a, 1);
        if (!p || (uintptr_t)p % a) aligned_ok = 0;
        free(p);
    }
    void *v = valloc(10), *pv = pvalloc(10);
    long page = sysconf(_SC_PAGESIZE);
    aligned_ok &= (uintptr_t)v % page == 0 && (uintptr_t)pv % page == 0 && malloc_usable_size(pv) >= (size_t)page;
    free(v);
    free(pv);
    void *bad_align = NULL;
    printf("alignments ok: %d, posix_memalign(3) = EINVAL: %d\n", aligned_ok, posix_memalign(&bad_align, 3, 10) == EINVAL);
    /* glibc's memalign rounds an alignment up to a power of two (0: malloc's); only one
       beyond the largest power of two is EINVAL */
    void *m0 = memalign(0, 10), *m24 = memalign(24, 10), *m100 = memalign(100, 10);
    errno = 0;
    void *mhuge = memalign((size_t)-1, 1);
    printf("memalign 0: %d, 24 -> 32: %d, 100 -> 128: %d, SIZE_MAX: null %d einval %d\n",
           m0 != NULL, m24 && (uintptr_t)m24 % 32 == 0, m100 && (uintptr_t)m100 % 128 == 0,
           mhuge == NULL, errno == EINVAL);
    free(m0);
    free(m24);
    free(m100);

    /* realloc semantics */
    char *r = realloc(NULL, 10);
    strcpy(r, "tidemark");
    r = realloc(r, 100000);
    r = realloc(r, 20);
    printf("realloc keeps: %s\n", r);
    errno = 0;
    printf("realloc(p, 0) null: %d\n", realloc(r, 0) == NULL);
    errno = 0;
    printf("reallocarray overflow null: %d enomem: %d\n", reallocarray(NULL, huge, 4) == NULL, errno == ENOMEM);

    /* usable size is at least what was asked */
    int usable_ok = 1;
    for (size_t n = 1; n < 5000; n += 37) {
        void *p = malloc(n);
        usable_ok &= malloc_usable_size(p) >= n;
        free(p);
    }
    printf("usable size ok: %d\n", usable_ok);

    /* threads churning */
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)i);
    long bad = 0;
    for (int i = 0; i < 4; i++) { void *b; pthread_join(t[i], &b); bad += (long)b; }
    printf("threads corrupt blocks: %ld\n", bad);

    /* cross-thread frees */
    pthread_t cons;
    pthread_create(&cons, NULL, consumer, NULL);
    for (int i = 0; i < HANDOFF; i++) {
        int *p = malloc(4 + (size_t)(rnd(&rng_state) % 500));
        *p = i;
        __atomic_store_n(&handoff[i], p, __ATOMIC_RELEASE);
    }
    void *cb;
    pthread_join(cons, &cb);
    printf("handoff corrupt blocks: %ld\n", (long)cb);

    /* fork while another thread allocates */
    pthread_create(&t[0], NULL, churn, (void *)9);
    int children_ok = 1;
    for (int i = 0; i < 8; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char *p = malloc(1000);
            memset(p, 1, 1000);
            free(p);
            _exit((long)churn((void *)(uintptr_t)(100 + i)) == 0 ? 0 : 1);
        }
        int status;
        waitpid(pid, &status, 0);
        children_ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    pthread_join(t[0], &cb);
    printf("fork children ok: %d, parent thread corrupt blocks: %ld\n", children_ok, (long)cb);
    return 0;
}
