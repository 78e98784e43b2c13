/* The floor of a tracing preload: the least one can do per malloc-family call.
 *
 * It interposes malloc, free, calloc and realloc, forwards to glibc (found with
 * dlsym(RTLD_NEXT), with a static buffer for dlsym's own bootstrap allocation) and writes one
 * 16-byte row per call into a per-thread ring of 1 MiB (initial-exec TLS): the pointer, and
 * the size with the caller's return address. No stack walk, no clock, no re-entrancy guard,
 * no writer and no file: it is not a tracer, only what any tracer costs at least.
 *
 * EXTRA_LOADS=N or EXTRA_STORES=N add N loads from (or stores to) a hot per-thread cache line
 * per call: a stand-in for N instructions' worth of real work (a stack walk, a clock), to see
 * what each instruction per event costs on a given workload (preload_floor.sh).
 * MALLOC_LOADS=N or FREE_LOADS=N put the N loads in one of the two calls only (where in the
 * program's loop the hook's work lands may matter as much as how much there is). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#ifndef EXTRA_LOADS
#define EXTRA_LOADS 0
#endif
#ifndef MALLOC_LOADS
#define MALLOC_LOADS EXTRA_LOADS
#endif
#ifndef FREE_LOADS
#define FREE_LOADS EXTRA_LOADS
#endif
#ifndef EXTRA_STORES
#define EXTRA_STORES 0
#endif

#define TLS __thread __attribute__((tls_model("initial-exec")))
#define RING_ROWS (1u << 16)

static void *(*real_malloc)(size_t);
static void (*real_free)(void *);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);

/* dlsym allocates while the real functions are being looked up. */
static char boot[4096];
static size_t boot_used;
static int resolving;

static TLS uint64_t *ring;
static TLS uint32_t ring_pos;
static TLS int mapping;
static TLS uint64_t hot[8];

static void resolve(void) {
    resolving = 1;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    resolving = 0;
}

static void *boot_alloc(size_t n) {
    void *p = boot + boot_used;
    boot_used += (n + 15) & ~(size_t)15;
    return boot_used <= sizeof boot ? p : NULL;
}

static inline void row(uint64_t a, uint64_t b, int loads) {
    uint64_t *r = ring;
    if (__builtin_expect(!r, 0)) {
        if (mapping) return; /* mmap is not malloc, but stay safe */
        mapping = 1;
        r = mmap(0, RING_ROWS * 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mapping = 0;
        if (r == MAP_FAILED) return;
        ring = r;
    }
    for (int i = 0; i < loads; i++) b ^= ((volatile uint64_t *)hot)[i & 7];
    for (int i = 0; i < EXTRA_STORES; i++) ((volatile uint64_t *)hot)[i & 7] = a + i;
    uint32_t i = ring_pos;
    r[2 * i] = a;
    r[2 * i + 1] = b;
    ring_pos = (i + 1) & (RING_ROWS - 1);
}

#define CALLER ((uint64_t)__builtin_return_address(0))

void *malloc(size_t n) {
    if (__builtin_expect(!real_malloc, 0)) {
        if (resolving) return boot_alloc(n);
        resolve();
    }
    void *p = real_malloc(n);
    row((uint64_t)p, (uint64_t)n << 48 ^ CALLER, MALLOC_LOADS);
    return p;
}

void free(void *p) {
    if ((char *)p >= boot && (char *)p < boot + sizeof boot) return;
    if (__builtin_expect(!real_free, 0)) resolve();
    row((uint64_t)p, 0, FREE_LOADS);
    real_free(p);
}

void *calloc(size_t count, size_t size) {
    if (__builtin_expect(!real_calloc, 0)) {
        if (resolving) {
            void *p = boot_alloc(count * size);
            if (p) memset(p, 0, count * size);
            return p;
        }
        resolve();
    }
    void *p = real_calloc(count, size);
    row((uint64_t)p, (uint64_t)(count * size) << 48 ^ CALLER, MALLOC_LOADS);
    return p;
}

void *realloc(void *q, size_t n) {
    if (__builtin_expect(!real_realloc, 0)) resolve();
    if ((char *)q >= boot && (char *)q < boot + sizeof boot) {
        /* A bootstrap block: glibc never saw it; copy what it can hold. */
        void *p = malloc(n);
        size_t room = (size_t)(boot + sizeof boot - (char *)q);
        if (p) memcpy(p, q, n < room ? n : room);
        return p;
    }
    row((uint64_t)q, 0, FREE_LOADS);
    void *p = real_realloc(q, n);
    row((uint64_t)p, (uint64_t)n << 48 ^ CALLER, MALLOC_LOADS);
    return p;
}
