/* Allocates a little, says "ready" (main runs after every constructor, the preload's
 * included), then waits for a signal. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    char *p = malloc(100);
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < 300; i++) {
        usleep(100000);
    }
    free(p);
    return 0;
}
