/* A test double for the CUDA driver (libcuda.so.1), for tests without a GPU. It is placed inside
 * a container's rootfs; its answers come from /etc/cuda-double.conf *inside that rootfs*, so a
 * probe that loaded it from anywhere else would not see the test's settings:
 *
 *   init=<code>|hang|crash   what cuInit does (default 0)
 *   ctx=<code>               what cuCtxCreate returns (default 0)
 *   version=<int>            what cuDriverGetVersion reports (a marker the test checks)
 *   count=<int>              cuDeviceGetCount (default 1)
 *   jit=<code>               what cuModuleLoadData returns (default 0)
 *   jitlib=1                 cuModuleLoadData opens libnvidia-ptxjitcompiler.so.1 by soname, as
 *                            the driver does: 221 when it cannot; the library's `marker` string
 *                            goes to /probe-log/jit
 *
 * Each cuInit appends a line to /probe-log/calls when that directory exists (a test mounts it),
 * so a test can count how many probes really ran. tests/double/hostile.c builds on this file.
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int conf_int(const char *key, int dflt, int *special) {
    FILE *f = fopen("/etc/cuda-double.conf", "r");
    if (!f) return dflt;
    char line[256];
    int v = dflt;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, k) == 0 && line[k] == '=') {
            char *val = line + k + 1;
            if (special && strncmp(val, "hang", 4) == 0) *special = 1;
            else if (special && strncmp(val, "crash", 5) == 0) *special = 2;
            else v = atoi(val);
        }
    }
    fclose(f);
    return v;
}

#ifdef HOSTILE
int hostile_cuInit(void);
#endif

int cuInit(unsigned flags) {
    (void)flags;
    FILE *log = fopen("/probe-log/calls", "a");
    if (log) { fprintf(log, "cuInit\n"); fclose(log); }
#ifdef HOSTILE
    int hostile = hostile_cuInit();
    if (hostile >= 0) return hostile;
#endif
    int special = 0;
    int code = conf_int("init", 0, &special);
    if (special == 1) for (;;) pause();
    if (special == 2) *(volatile int *)0 = 0; /* a real fault, as a broken driver would */
    return code;
}
int cuDriverGetVersion(int *v) { *v = conf_int("version", 13000, NULL); return 0; }
int cuDeviceGetCount(int *n) { *n = conf_int("count", 1, NULL); return 0; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; return 0; }
int cuDeviceGetName(char *name, int len, int dev) { (void)dev; snprintf(name, len, "Test Double GPU"); return 0; }
int cuCtxCreate_v2(void **ctx, unsigned flags, int dev) { (void)flags; (void)dev; *ctx = (void *)0x1; return conf_int("ctx", 0, NULL); }
int cuCtxDestroy_v2(void *ctx) { (void)ctx; return 0; }
int cuModuleLoadData(void **module, const void *image) {
    /* The canary must be PTX text: a probe that sent something else is a bug the test sees. */
    if (strncmp((const char *)image, ".version ", 9) != 0) return 218;
    if (conf_int("jitlib", 0, NULL)) {
        void *jit = dlopen("libnvidia-ptxjitcompiler.so.1", RTLD_NOW);
        if (!jit) return 221;
        const char **marker = dlsym(jit, "marker");
        FILE *log = fopen("/probe-log/jit", "w");
        if (log) { fprintf(log, "%s", marker ? *marker : "?"); fclose(log); }
    }
    *module = (void *)0x2;
    return conf_int("jit", 0, NULL);
}
int cuModuleUnload(void *module) { (void)module; return 0; }

static const char *names[][2] = {
    {"0", "CUDA_SUCCESS"}, {"3", "CUDA_ERROR_NOT_INITIALIZED"}, {"100", "CUDA_ERROR_NO_DEVICE"},
    {"218", "CUDA_ERROR_INVALID_PTX"}, {"221", "CUDA_ERROR_JIT_COMPILER_NOT_FOUND"}, {"304", "CUDA_ERROR_OPERATING_SYSTEM"}, {"803", "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"}, {"999", "CUDA_ERROR_UNKNOWN"},
};
int cuGetErrorName(int code, const char **out) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", code);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i][0], buf) == 0) { *out = names[i][1]; return 0; }
    return 1;
}
