/* A hostile test double for the CUDA driver: the honest double (libcuda.c) plus, from cuInit, each
 * way out of the probe an image that supplies its own libcuda.so.1 would try. It records what it
 * tried and whether it worked, one line each, in /probe-log/escapes (a host directory the test
 * mounts into the container, mode 0777); the test asserts every attempt failed.
 *
 *   <name> ok   <detail>      the escape worked (a test failure)
 *   <name> no   <detail>      it was refused
 *   info <key>=<value>        what the double saw (its environment, identity)
 *
 * Nothing it does is harmful even when it works: files in /proc/sys and /proc/sysrq-trigger are
 * opened for writing and closed without a byte written; files it creates are removed.
 *
 * Extra keys of /etc/cuda-double.conf (inside the rootfs, as for libcuda.c):
 *   hostile=1           run the escape attempts in cuInit, then answer as the honest double
 *   linger=<name>       fork a daemon named <name> (comm) that outlives the probe if it can
 *   forge=<code>        print a forged answer (cuInit failed with <code>) on stdout and _exit(0)
 *   huge=1              write 4 MiB to stdout, then hang
 *   closeout=1          close stdout, then hang with SIGTERM ignored
 *   threads=<n>         create n threads in cuInit as the real driver does; 304 when it cannot
 *   devcheck=1          cuInit opens /dev/nvidiactl; 100 (no device) when it is refused (EACCES)
 *   seccheck=1          call sysinfo(2) and record `info sysinfo=ok` or `errno N` (a test's seccomp
 *                       filter refuses it)
 *   procfile=<path>     record the first line of <path> as `info procfile=<line>` (what the driver
 *                       would read there: a test mounts its own file below the container's /proc)
 *
 * Built a second time with -DGCC_BAIT as a `libgcc_s.so.1` for an image's LD_LIBRARY_PATH: the
 * host loader must never map it. Its constructor, run anywhere outside a container rootfs,
 * leaves HOSTILE-HOST-LOADER in its working directory (the hook's: the bundle).
 */
#define _GNU_SOURCE
#define HOSTILE
#include "libcuda.c"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

static void note(const char *name, int ok, const char *detail) {
    FILE *f = fopen("/probe-log/escapes", "a");
    if (!f) return;
    fprintf(f, "%s %s %s\n", name, ok ? "ok" : "no", detail ? detail : "");
    fclose(f);
}

static void info(const char *key, const char *value) {
    FILE *f = fopen("/probe-log/escapes", "a");
    if (!f) return;
    fprintf(f, "info %s=%s\n", key, value ? value : "(unset)");
    fclose(f);
}

__attribute__((constructor)) static void hostile_constructor(void) {
    /* Outside the container's rootfs (no double conf there): the host loader ran us. */
    if (access("/etc/cuda-double.conf", F_OK) != 0) {
        FILE *f = fopen("HOSTILE-HOST-LOADER", "w");
        if (f) {
            char buf[256] = "";
            ssize_t n = readlink("/proc/self/ns/mnt", buf, sizeof buf - 1);
            if (n > 0) buf[n] = 0;
            fprintf(f, "uid=%d mnt=%s\n", (int)getuid(), buf);
            fclose(f);
        }
    }
}

#ifdef GCC_BAIT
/* What a Rust binary imports from libgcc_s, so the host loader would go on past relocation. */
#define STUB(n) void n(void) { abort(); }
STUB(_Unwind_Backtrace) STUB(_Unwind_DeleteException) STUB(_Unwind_FindEnclosingFunction)
STUB(_Unwind_GetCFA) STUB(_Unwind_GetDataRelBase) STUB(_Unwind_GetIP) STUB(_Unwind_GetIPInfo)
STUB(_Unwind_GetLanguageSpecificData) STUB(_Unwind_GetRegionStart) STUB(_Unwind_GetTextRelBase)
STUB(_Unwind_RaiseException) STUB(_Unwind_Resume) STUB(_Unwind_SetGR) STUB(_Unwind_SetIP)
#endif

static int conf_str(const char *key, char *out, size_t len) {
    FILE *f = fopen("/etc/cuda-double.conf", "r");
    if (!f) return 0;
    char line[256];
    size_t k = strlen(key);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, k) == 0 && line[k] == '=') {
            snprintf(out, len, "%s", line + k + 1);
            out[strcspn(out, "\n")] = 0;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* Inherited descriptors: any fd above stderr at cuInit, and whether ".." of it reaches a procfs
 * with a writable core_pattern (the host's, through a /proc fd opened before the chroot). */
static void try_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int own = d ? dirfd(d) : -1;
    char found[1024] = "";
    int any = 0;
    for (int fd = 3; fd < 1024; fd++) {
        if (fd == own || fcntl(fd, F_GETFD) < 0) continue;
        char path[64], target[256] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 0) target[n] = 0;
        size_t l = strlen(found);
        snprintf(found + l, sizeof found - l, "%d:%s ", fd, target);
        any = 1;
        int up = openat(fd, "..", O_RDONLY | O_DIRECTORY);
        if (up >= 0) {
            int cp = openat(up, "sys/kernel/core_pattern", O_WRONLY);
            if (cp < 0) cp = openat(up, "../sys/kernel/core_pattern", O_WRONLY);
            if (cp >= 0) { note("fd-host-proc", 1, target); close(cp); }
            close(up);
        }
    }
    if (d) closedir(d);
    note("inherited-fds", any, found);
}

static void try_open_write(const char *name, const char *path) {
    int fd = open(path, O_WRONLY);
    char detail[300];
    snprintf(detail, sizeof detail, "%s: %s", path, fd >= 0 ? "opened for writing" : strerror(errno));
    note(name, fd >= 0, detail);
    if (fd >= 0) close(fd);
}

static void try_create(const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    char detail[300];
    snprintf(detail, sizeof detail, "%s: %s", path, fd >= 0 ? "created" : strerror(errno));
    note(name, fd >= 0, detail);
    if (fd >= 0) { close(fd); unlink(path); }
}

static void try_read_masked(const char *path) {
    char buf[64] = "";
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    int ok = n > 0 && strstr(buf, "SECRET") != NULL;
    char detail[300];
    snprintf(detail, sizeof detail, "%s: %s", path, ok ? "read the secret" : (fd < 0 ? strerror(errno) : "empty"));
    note("masked-read", ok, detail);
}

/* Our parent, and every process of the container's /proc: none may be traced or signalled from
 * here, except our own probe helper (signalling it only ends this probe). */
static void try_parent(void) {
    pid_t pp = getppid();
    char detail[64];
    snprintf(detail, sizeof detail, "ppid=%d", (int)pp);
    int traced = pp > 0 && ptrace(PTRACE_ATTACH, pp, 0, 0) == 0;
    if (traced) { waitpid(pp, NULL, __WALL); ptrace(PTRACE_DETACH, pp, 0, 0); }
    note("ptrace-parent", traced, detail);
    note("signal-parent", pp > 0 && kill(pp, 0) == 0, detail);
    DIR *d = opendir("/proc");
    struct dirent *e;
    char list[512] = "";
    int any = 0;
    while (d && (e = readdir(d))) {
        int p = atoi(e->d_name);
        if (p <= 0 || p == getpid()) continue;
        if (ptrace(PTRACE_ATTACH, p, 0, 0) == 0) {
            waitpid(p, NULL, __WALL);
            ptrace(PTRACE_DETACH, p, 0, 0);
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%d ", p);
            any = 1;
        }
    }
    if (d) closedir(d);
    note("ptrace-any", any, list);
}

static void linger(const char *name) {
    pid_t p = fork();
    if (p == 0) {
        setsid();
        if (fork() != 0) _exit(0);
        prctl(PR_SET_NAME, name);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        for (;;) sleep(1);
    }
    if (p > 0) waitpid(p, NULL, 0);
}

static void *idle_thread(void *arg) { (void)arg; for (;;) pause(); return NULL; }

int hostile_cuInit(void) {
    char buf[256];
    if (conf_str("hostile", buf, sizeof buf)) {
        const char *keys[] = {"LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES",
                              "CUDA_MODULE_LOADING", "PATH", "HOME", NULL};
        for (int i = 0; keys[i]; i++) info(keys[i], getenv(keys[i]));
        snprintf(buf, sizeof buf, "%d", (int)getpid());
        info("pid", buf);
        snprintf(buf, sizeof buf, "%d", (int)getuid());
        info("uid", buf);
        int selfok = readlink("/proc/self/exe", buf, sizeof buf - 1) > 0;
        info("proc-self", selfok ? "works" : strerror(errno));
        try_fds();
        try_open_write("core-pattern", "/proc/sys/kernel/core_pattern");
        try_open_write("sysrq-trigger", "/proc/sysrq-trigger");
        try_create("rootfs-write", "/hostile-rootfs-write");
        try_create("readonly-path-write", "/ro-target/hostile-write");
        try_read_masked("/secret");
        try_parent();
    }
    if (conf_str("seccheck", buf, sizeof buf)) {
        char info_buf[256];
        long r = syscall(SYS_sysinfo, info_buf);
        snprintf(buf, sizeof buf, r == 0 ? "ok" : "errno %d", errno);
        info("sysinfo", buf);
    }
    if (conf_str("procfile", buf, sizeof buf)) {
        char line[256] = "";
        FILE *f = fopen(buf, "r");
        if (f) {
            if (!fgets(line, sizeof line, f)) line[0] = 0;
            fclose(f);
            line[strcspn(line, "\n")] = 0;
        } else {
            snprintf(line, sizeof line, "unreadable: %s", strerror(errno));
        }
        info("procfile", line);
    }
    if (conf_str("linger", buf, sizeof buf)) linger(buf);
    if (conf_str("threads", buf, sizeof buf)) {
        int n = atoi(buf);
        for (int i = 0; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, idle_thread, NULL) != 0) return 304;
        }
    }
    if (conf_str("devcheck", buf, sizeof buf)) {
        int fd = open("/dev/nvidiactl", O_RDWR);
        if (fd < 0 && errno == EACCES) return 100;
        if (fd >= 0) close(fd);
    }
    if (conf_str("forge", buf, sizeof buf)) {
        printf("{\"identity\":{\"uid\":0,\"gid\":0,\"groups\":[]},\"libcuda\":\"/usr/lib/libcuda.so.1\","
               "\"calls\":[{\"call\":\"cuInit\",\"code\":%d,\"name\":null,\"ms\":1.0}]}", atoi(buf));
        fflush(stdout);
        _exit(0);
    }
    if (conf_str("huge", buf, sizeof buf)) {
        static char chunk[65536];
        memset(chunk, '{', sizeof chunk);
        for (int i = 0; i < 64; i++) if (write(1, chunk, sizeof chunk) < 0) break;
        for (;;) pause();
    }
    if (conf_str("closeout", buf, sizeof buf)) {
        close(1);
        signal(SIGTERM, SIG_IGN);
        for (;;) pause();
    }
    return -1; /* go on as the honest double */
}
