/* Forks: the child allocates and exits (or execs argv[1..] when given); the parent waits
 * and reports the child's status. The child prints whether LD_PRELOAD reached it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) void *parent_site(size_t n) {
    return malloc(n); /* SITE parent */
}
__attribute__((noinline)) void *child_site(size_t n) {
    return malloc(n); /* SITE child */
}

int main(int argc, char **argv) {
    void *kept = parent_site(3000);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        void *c = child_site(7000);
        const char *pre = getenv("LD_PRELOAD");
        printf("child preload=%s\n", pre && strstr(pre, "tidemark") ? "yes" : "no");
        if (argc > 1) {
            fflush(stdout);
            execvp(argv[1], argv + 1);
            perror("execvp");
            _exit(127);
        }
        free(c);
        exit(7);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("parent saw child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    free(kept);
    return 0;
}
