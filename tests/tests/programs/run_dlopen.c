/* Loads argv[1] with dlopen after some allocations and allocates through it: stacks through
 * a module loaded mid-run must unwind and symbolize; with argv[2] "close", also once the
 * module is unloaded again (dlclose), before the recording ends. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    void *before = malloc(100);
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void *(*entry)(size_t) = (void *(*)(size_t))dlsym(h, "plugin_entry");
    void *kept[50];
    for (int i = 0; i < 50; i++)
        kept[i] = entry(777);
    printf("loaded\n");
    for (int i = 0; i < 50; i++)
        free(kept[i]);
    free(before);
    if (argc > 2 && strcmp(argv[2], "close") == 0 && dlclose(h) != 0) {
        fprintf(stderr, "dlclose: %s\n", dlerror());
        return 1;
    }
    return 0;
}
