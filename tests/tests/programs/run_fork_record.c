/* Fork without exec. The parent allocates before and after the fork while a second thread
 * allocates throughout; the child allocates at its own site and leaves by exit or _exit.
 * Each process's capture must hold exactly its own allocations. The parent reports the
 * child's pid on stderr; atexit handlers say which process ran them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BEFORE 40
#define AFTER 30
#define CHILD 25
#define CHILD_KEPT 5
#define THREAD 20000

static const char *role = "parent";
static volatile int started;

static void bye(void) { printf("atexit %s\n", role); }

__attribute__((noinline)) void *before_fork(size_t n) {
    return malloc(n); /* SITE before */
}
__attribute__((noinline)) void *after_fork(size_t n) {
    return malloc(n); /* SITE after */
}
__attribute__((noinline)) void *in_child(size_t n) {
    return malloc(n); /* SITE child */
}
__attribute__((noinline)) void *in_thread(size_t n) {
    return malloc(n); /* SITE thread */
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < THREAD; i++) {
        void *p = in_thread(444);
        if (i == 100)
            __atomic_store_n(&started, 1, __ATOMIC_RELEASE);
        free(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int use_exit = !(argc > 1 && strcmp(argv[1], "_exit") == 0);
    atexit(bye);
    void *before[BEFORE], *after[AFTER];
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    for (int i = 0; i < BEFORE; i++)
        before[i] = before_fork(1111);
    while (!__atomic_load_n(&started, __ATOMIC_ACQUIRE))
        ;
    fflush(stdout);
    /* The other thread is allocating now, and the blocks above are most likely still in
     * the parent's buffers: the child must take neither with it. */
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        role = "child";
        void *mine[CHILD];
        for (int i = 0; i < CHILD; i++)
            mine[i] = in_child(3333);
        for (int i = CHILD_KEPT; i < CHILD; i++)
            free(mine[i]);
        printf("child done\n");
        fflush(stdout);
        if (use_exit)
            exit(9);
        _exit(9);
    }
    for (int i = 0; i < AFTER; i++)
        after[i] = after_fork(2222);
    pthread_join(t, NULL);
    int status = 0;
    waitpid(pid, &status, 0);
    fprintf(stderr, "child pid %d\n", (int)pid);
    printf("parent saw child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    for (int i = 0; i < BEFORE; i++)
        free(before[i]);
    for (int i = 0; i < AFTER; i++)
        free(after[i]);
    return 0;
}
