/* Links run_ctor_lib, whose constructor keeps three blocks; main frees them. */
#include <stdlib.h>

extern void *ctor_blocks[3];

int main(void) {
    for (int i = 0; i < 3; i++)
        free(ctor_blocks[i]);
    return 0;
}
