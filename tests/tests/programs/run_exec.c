/* exec by a recorded program. A second thread allocates and frees THREAD blocks and is
 * joined; main allocates BEFORE blocks at its own site and keeps them (live when the image is
 * replaced), then runs /bin/true through the exec function named by argv[1]. With "fail" it
 * first execs a program that does not exist, then allocates AFTER blocks and exits 7; with
 * "vfork" a vfork child execs /bin/true (the child shares this process's memory: its exec
 * must not touch the recording), then this process allocates AFTER blocks and exits 7; with
 * "self" it execs itself as "successor", which allocates 11 blocks and exits 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BEFORE 300
#define AFTER 7
#define THREAD 5000

static void *keep[BEFORE + AFTER];

__attribute__((noinline)) void *before_exec(size_t n) {
    return malloc(n); /* SITE before */
}
__attribute__((noinline)) void *after_failure(size_t n) {
    return malloc(n); /* SITE after */
}
__attribute__((noinline)) void *in_successor(size_t n) {
    return malloc(n); /* SITE successor */
}
__attribute__((noinline)) void *in_thread(size_t n) {
    return malloc(n); /* SITE thread */
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < THREAD; i++)
        free(in_thread(444));
    return NULL;
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "execv";
    if (strcmp(how, "successor") == 0) {
        for (int i = 0; i < 11; i++)
            keep[i] = in_successor(555);
        return 0;
    }
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    for (int i = 0; i < BEFORE; i++)
        keep[i] = before_exec(333);
    char *args[] = {"true", NULL};
    char *env[] = {NULL};
    if (strcmp(how, "execl") == 0)
        execl("/bin/true", "true", (char *)NULL);
    else if (strcmp(how, "execlp") == 0)
        execlp("true", "true", (char *)NULL);
    else if (strcmp(how, "execle") == 0)
        execle("/bin/true", "true", (char *)NULL, env);
    else if (strcmp(how, "execv") == 0)
        execv("/bin/true", args);
    else if (strcmp(how, "execvp") == 0)
        execvp("true", args);
    else if (strcmp(how, "execvpe") == 0)
        execvpe("true", args, env);
    else if (strcmp(how, "execve") == 0)
        execve("/bin/true", args, env);
    else if (strcmp(how, "self") == 0) {
        char *again[] = {argv[0], "successor", NULL};
        execv("/proc/self/exe", again);
    }
    else if (strcmp(how, "fail") == 0 || strcmp(how, "vfork") == 0) {
        if (how[0] == 'f') {
            if (execv("/nonexistent/tidemark-test", args) != -1 || errno != ENOENT)
                return 99;
        } else {
            pid_t pid = vfork();
            if (pid == 0) {
                execv("/bin/true", args);
                _exit(97);
            }
            int status;
            if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
                WEXITSTATUS(status) != 0)
                return 96;
        }
        for (int i = 0; i < AFTER; i++)
            keep[BEFORE + i] = after_failure(777);
        return 7;
    }
    fprintf(stderr, "%s failed: %s\n", how, strerror(errno));
    return 98;
}
