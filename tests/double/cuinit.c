/* The workload of the CDI engine tests: what a CUDA program does first. It loads libcuda.so.1 by
 * its soname, as every CUDA runtime does, so it finds the library only where the container's
 * loader does (NVIDIA's create-symlinks link and update-ldcache cache entry on CDI paths), and
 * calls cuInit. Prints "cuInit=<code>" or "dlopen: <error>"; exits 0 only on CUDA_SUCCESS.
 */
#include <dlfcn.h>
#include <stdio.h>

int main(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) {
        printf("dlopen: %s\n", dlerror());
        return 2;
    }
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
    if (!init) {
        printf("dlsym: %s\n", dlerror());
        return 2;
    }
    int rc = init(0);
    printf("cuInit=%d\n", rc);
    return rc == 0 ? 0 : 1;
}
