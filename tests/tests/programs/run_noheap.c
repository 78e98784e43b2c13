/* A program that never calls malloc: `tidemark run` says why its capture is empty. */
int main(void) { return 3; }
