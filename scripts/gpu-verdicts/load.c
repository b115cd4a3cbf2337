/* Load each file with cuModuleLoadData on GPU 0 and print what the driver says:
 * "path<TAB>code<TAB>name". First line: "# cc MAJOR.MINOR driver X.Y".
 * Used by scripts/gpu-verdicts.sh on the GPU machine. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    CUdevice dev;
    CUcontext ctx;
    int major = 0, minor = 0, drv = 0;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuCtxCreate(&ctx, NULL, 0, dev)) {
        fprintf(stderr, "no CUDA context\n");
        return 2;
    }
    cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
    cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    cuDriverGetVersion(&drv);
    printf("# cc %d.%d driver %d.%d\n", major, minor, drv / 1000, (drv % 1000) / 10);
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { printf("%s\t-1\tunreadable\n", argv[i]); continue; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        rewind(f);
        char *buf = calloc(1, n + 1); /* PTX text must be NUL-terminated */
        if (fread(buf, 1, n, f) != (size_t)n) { printf("%s\t-1\tshort read\n", argv[i]); fclose(f); continue; }
        fclose(f);
        CUmodule m;
        CUresult r = cuModuleLoadData(&m, buf);
        const char *name = "?";
        cuGetErrorName(r, &name);
        printf("%s\t%d\t%s\n", argv[i], (int)r, name);
        if (r == CUDA_SUCCESS) cuModuleUnload(m);
        free(buf);
    }
    cuCtxDestroy(ctx);
    return 0;
}
