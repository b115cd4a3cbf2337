/* cuprobe: what the CUDA driver itself answers, for the GPU scenario matrix
 * (scripts/gpu-scenarios.sh). Loads libcuda.so.1 the way a workload does (dlopen, the loader's
 * search path), then cuInit -> cuDriverGetVersion -> cuDeviceGetCount -> cuDeviceGet(0) ->
 * cuCtxCreate -> cuCtxDestroy, or with --load FILE... cuModuleLoadData on each file in a context.
 * Prints one JSON object per line. No CUDA headers needed: the few prototypes are declared here.
 *
 * With --whole first, it is the whole-process floor: it starts itself again (the rest of the
 * arguments) as a child and prints, after the child's lines, {"whole_ms": spawn -> reaped} as
 * its parent saw it: exec, loading, the driver work, and the process's end, where the driver's
 * fds are closed and the kernel tears the context down — what the probe's time, measured by the
 * hook from spawn to reaped, also contains, and floor_ms (inside the process) does not.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static const char *errname(CUresult (*get)(CUresult, const char **), CUresult r) {
    const char *s = NULL;
    if (get && get(r, &s) == 0 && s) return s;
    return "?";
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n + 1);
    if (fread(buf, 1, n, f) != (size_t)n) { fclose(f); free(buf); return NULL; }
    buf[n] = 0; /* PTX text must be NUL-terminated */
    fclose(f);
    *len = n;
    return buf;
}

static int whole(char **argv) {
    fflush(stdout);
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        argv[0] = "/proc/self/exe";
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    double t1 = now_ms();
    printf("{\"whole_ms\":%.2f,\"exit\":%d}\n", t1 - t0, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--whole") == 0) return whole(argv + 1);
    const char *lib = getenv("CUPROBE_LIB") ? getenv("CUPROBE_LIB") : "libcuda.so.1";
    double t0 = now_ms();
    void *h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        printf("{\"dlopen\":false,\"error\":\"%s\"}\n", dlerror());
        return 2;
    }
    CUresult (*cuInit)(unsigned) = dlsym(h, "cuInit");
    CUresult (*cuDriverGetVersion)(int *) = dlsym(h, "cuDriverGetVersion");
    CUresult (*cuDeviceGetCount)(int *) = dlsym(h, "cuDeviceGetCount");
    CUresult (*cuDeviceGet)(CUdevice *, int) = dlsym(h, "cuDeviceGet");
    CUresult (*cuCtxCreate)(CUcontext *, unsigned, CUdevice) = dlsym(h, "cuCtxCreate_v2");
    CUresult (*cuCtxDestroy)(CUcontext) = dlsym(h, "cuCtxDestroy_v2");
    CUresult (*cuModuleLoadData)(CUmodule *, const void *) = dlsym(h, "cuModuleLoadData");
    CUresult (*cuModuleUnload)(CUmodule) = dlsym(h, "cuModuleUnload");
    CUresult (*cuGetErrorName)(CUresult, const char **) = dlsym(h, "cuGetErrorName");
    double t1 = now_ms();
    const char *call = "none";
    CUresult r = cuInit(0);
    double t2 = now_ms();
    int ver = 0, count = 0;
    CUdevice dev = 0;
    CUcontext ctx = NULL;
    if (r) { call = "cuInit"; goto out; }
    cuDriverGetVersion(&ver);
    if ((r = cuDeviceGetCount(&count))) { call = "cuDeviceGetCount"; goto out; }
    if ((r = cuDeviceGet(&dev, 0))) { call = "cuDeviceGet"; goto out; }
    if ((r = cuCtxCreate(&ctx, 0, dev))) { call = "cuCtxCreate"; goto out; }
out:;
    double t3 = now_ms();
    /* Module loads (--load) come after the first line, so that line is the same in every mode;
     * floor_ms covers everything: dlopen, init, context, loads, destroy. */
    char loads[8192] = "";
    size_t used = 0;
    if (argc > 2 && strcmp(argv[1], "--load") == 0 && ctx) {
        for (int i = 2; i < argc; i++) {
            size_t len = 0;
            char *data = slurp(argv[i], &len);
            if (!data) { printf("{\"file\":\"%s\",\"error\":\"unreadable\"}\n", argv[i]); continue; }
            CUmodule m = NULL;
            CUresult lr = cuModuleLoadData(&m, data);
            if (used < sizeof loads)
                used += snprintf(loads + used, sizeof loads - used, "{\"file\":\"%s\",\"code\":%d,\"name\":\"%s\"}\n",
                                 argv[i], lr, errname(cuGetErrorName, lr));
            if (!lr) cuModuleUnload(m);
            free(data);
        }
    }
    if (ctx) cuCtxDestroy(ctx);
    double t4 = now_ms();
    printf("{\"dlopen\":true,\"failed_call\":\"%s\",\"code\":%d,\"name\":\"%s\",\"driver_version\":%d,"
           "\"device_count\":%d,\"dlopen_ms\":%.2f,\"init_ms\":%.2f,\"total_ms\":%.2f,\"floor_ms\":%.2f}\n",
           call, r, errname(cuGetErrorName, r), ver, count, t1 - t0, t2 - t1, t3 - t0, t4 - t0);
    fputs(loads, stdout);
    return r ? 1 : 0;
}
