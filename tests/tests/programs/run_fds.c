/* A program that does what it likes with file descriptors 3 and up, as shells and daemons
 * do, while it is recorded: the capture must hold all its allocations and its own file only
 * its own bytes.
 *
 *   run_fds close FILE      closes 3..1023 one by one (a daemon), then writes FILE
 *   run_fds closefrom FILE  closefrom(3), then writes FILE
 *   run_fds dup2 FILE       opens FILE and dup2s it onto 3..63, writing a line through each
 *   run_fds replace FILE    closes 3..1023, then replaces FILE (the capture's own path) with
 *                           a file of its own and writes that
 *
 * Around the descriptor work it allocates BEFORE, AFTER and LATE blocks at sites of their
 * own, sleeping between them so that the recording writes before and after. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BEFORE 1000
#define AFTER 2000
#define LATE 300

__attribute__((noinline)) void *before_fds(size_t n) {
    return malloc(n); /* SITE before */
}
__attribute__((noinline)) void *after_fds(size_t n) {
    return malloc(n); /* SITE after */
}
__attribute__((noinline)) void *late(size_t n) {
    return malloc(n); /* SITE late */
}

static void say(int fd, const char *line) {
    if (write(fd, line, strlen(line)) != (ssize_t)strlen(line))
        exit(5);
}

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    const char *how = argv[1], *file = argv[2];
    for (int i = 0; i < BEFORE; i++)
        free(before_fds(100));
    usleep(50000);
    int fd = -1;
    if (strcmp(how, "close") == 0 || strcmp(how, "replace") == 0) {
        for (int n = 3; n < 1024; n++)
            close(n);
        if (strcmp(how, "replace") == 0)
            unlink(file);
    } else if (strcmp(how, "closefrom") == 0) {
        closefrom(3);
    } else if (strcmp(how, "dup2") != 0) {
        return 2;
    }
    fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return 3;
    if (strcmp(how, "dup2") == 0) {
        for (int n = 3; n < 64; n++) {
            if (n != fd && dup2(fd, n) != n)
                return 4;
            char line[32];
            snprintf(line, sizeof line, "through %d\n", n);
            say(n, line);
            free(after_fds(200));
            usleep(1000);
        }
        for (int i = 0; i < AFTER - 61; i++)
            free(after_fds(200));
    } else {
        say(fd, "user line 1\n");
        for (int i = 0; i < AFTER; i++)
            free(after_fds(200));
    }
    usleep(50000);
    say(fd, "user line 2\n");
    for (int i = 0; i < LATE; i++)
        free(late(300));
    return 0;
}
