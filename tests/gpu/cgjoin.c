/* cgjoin: what joining a cgroup v2 directory costs a new process, two ways (the probe's
 * start, src/facts/probe_spawn.rs):
 *   procs  fork, then the child writes itself into cgroup.procs (the old way: the cgroup core
 *          takes its thread-group lock for writing, which waits for an RCU grace period unless
 *          one passed recently);
 *   clone3 clone3(CLONE_INTO_CGROUP): the child is created in the cgroup (the lock is taken
 *          for reading).
 * Usage: cgjoin CGROUP2_PARENT_DIR N GAP_MS. Makes a cgroup below the directory, times N of
 * each, GAP_MS apart (an idle gap lets the lock's fast path lapse, as between two container
 * starts), and prints one JSON line of medians and maxima in ms. The cgroup is removed at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: cgjoin CGROUP2_PARENT_DIR N GAP_MS\n");
        return 2;
    }
    int n = atoi(argv[2]), gap = atoi(argv[3]);
    if (n < 1 || n > 1000) return 2;
    char dir[4096], procs[4200];
    snprintf(dir, sizeof dir, "%s/cpf-cgjoin-%d", argv[1], getpid());
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    if (mkdir(dir, 0755) != 0) {
        printf("{\"error\":\"mkdir %s: %s\"}\n", dir, strerror(errno));
        return 1;
    }
    int cgfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    double *w = calloc(n, sizeof *w), *c = calloc(n, sizeof *c);
    int clone3_errno = 0, write_errno = 0;
    for (int i = 0; i < n; i++) {
        /* procs: the child times its own write and sends the time back. */
        int p[2];
        if (pipe(p) != 0) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            double t = now_ms();
            int fd = open(procs, O_WRONLY | O_CLOEXEC);
            int ok = fd >= 0 && write(fd, "0", 1) == 1;
            double d = ok ? now_ms() - t : -errno;
            if (write(p[1], &d, sizeof d) != sizeof d) _exit(1);
            _exit(0);
        }
        close(p[1]);
        if (read(p[0], &w[i], sizeof w[i]) != sizeof w[i]) w[i] = -1;
        close(p[0]);
        waitpid(pid, NULL, 0);
        if (w[i] < 0) write_errno = (int)-w[i];
        usleep(gap * 1000);
        /* clone3: the parent times the clone itself. */
        struct clone_args_v2 a = {0};
        a.flags = CLONE_INTO_CGROUP;
        a.exit_signal = SIGCHLD;
        a.cgroup = (uint64_t)cgfd;
        double t = now_ms();
        long r = syscall(SYS_clone3, &a, sizeof a);
        if (r == 0) _exit(0);
        c[i] = now_ms() - t;
        if (r < 0) {
            clone3_errno = errno;
            c[i] = -1;
        } else {
            waitpid((pid_t)r, NULL, 0);
        }
        usleep(gap * 1000);
    }
    double wmax = 0, cmax = 0;
    for (int i = 0; i < n; i++) {
        if (w[i] > wmax) wmax = w[i];
        if (c[i] > cmax) cmax = c[i];
    }
    double wm = median(w, n), cm = median(c, n);
    rmdir(dir);
    printf("{\"n\":%d,\"gap_ms\":%d,\"procs_write_median_ms\":%.3f,\"procs_write_max_ms\":%.3f,"
           "\"clone3_into_cgroup_median_ms\":%.3f,\"clone3_into_cgroup_max_ms\":%.3f,"
           "\"write_errno\":%d,\"clone3_errno\":%d}\n",
           n, gap, wm, wmax, cm, cmax, write_errno, clone3_errno);
    return 0;
}
