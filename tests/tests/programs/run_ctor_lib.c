/* A shared library the program links: its constructor allocates before the program's main,
   and before the preload's constructor unless the preload runs first. */
#include <stdlib.h>
#include <string.h>

void *ctor_blocks[3];

__attribute__((constructor)) static void allocate_early(void) {
    for (int i = 0; i < 3; i++) {
        ctor_blocks[i] = malloc(7777); /* SITE ctor */
        memset(ctor_blocks[i], 1, 7777);
    }
}
