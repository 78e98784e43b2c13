/* The variadic members of the exec family, which stable Rust cannot define. src/exec.rs
 * exports execl, execlp and execle as jumps to these (registers and stack untouched, so the
 * variadic arguments arrive as the caller passed them). Each collects its arguments into an
 * argv array on the stack and calls the exported execv, execvp or execve of this library,
 * which checkpoints the capture and calls glibc's. glibc's own
 * execl* call its internal execve directly, so without these an execl would skip the
 * checkpoint. Like glibc's, the argv array is on the stack; a count that could not fit there
 * fails with E2BIG (the kernel refuses far shorter command lines anyway). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#define MAX_ARGS 65536

static size_t count_args(const char *first, va_list ap) {
    size_t n = 1;
    if (first == NULL)
        return 1;
    while (va_arg(ap, const char *) != NULL && n < MAX_ARGS)
        n++;
    return n + 1;
}

/* Fills argv[0..n) from first and ap; argv[n - 1] is NULL. */
static void fill_args(const char **argv, size_t n, const char *first, va_list ap) {
    argv[0] = first;
    for (size_t i = 1; i < n; i++)
        argv[i] = va_arg(ap, const char *);
    argv[n - 1] = NULL;
}

#define COLLECT(first, last_named)                                                              \
    va_list ap;                                                                                 \
    va_start(ap, last_named);                                                                   \
    size_t n = count_args(first, ap);                                                           \
    va_end(ap);                                                                                 \
    if (n > MAX_ARGS) {                                                                         \
        errno = E2BIG;                                                                          \
        return -1;                                                                              \
    }                                                                                           \
    const char *argv[n];                                                                        \
    va_start(ap, last_named);                                                                   \
    fill_args(argv, n, first, ap);

int tidemark_execl(const char *path, const char *arg, ...) {
    COLLECT(arg, arg)
    va_end(ap);
    return execv(path, (char *const *)argv);
}

int tidemark_execlp(const char *file, const char *arg, ...) {
    COLLECT(arg, arg)
    va_end(ap);
    return execvp(file, (char *const *)argv);
}

int tidemark_execle(const char *path, const char *arg, ...) {
    COLLECT(arg, arg)
    /* After the terminating NULL comes the environment. */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, (char *const *)argv, envp);
}
