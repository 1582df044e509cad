/*
 * tree: leave a large tree in /out, as a hostile command might.
 *
 *     tree deep N [LEN]   N directories nested in /out (d/d/…/d; each name
 *                   LEN letters d, 1 by default), each made and entered
 *                   through the one above (no long paths), and a file "f"
 *                   holding "bottom" in the deepest
 *     tree wide N   N empty files f0 … f(N-1) in /out
 *     tree dirs N   N empty directories d0 … d(N-1) in /out
 *
 * Prints how many levels or files it made; exits 1 at the first failure,
 * saying why on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, long at) {
    fprintf(stderr, "tree: %s at %ld: %s\n", what, at, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: tree deep N [LEN] | wide N | dirs N\n");
        return 2;
    }
    long n = atol(argv[2]);
    int dir = open("/out", O_RDONLY | O_DIRECTORY);
    if (dir < 0)
        return fail("open /out", 0);
    if (strcmp(argv[1], "deep") == 0) {
        char name[256] = "d";
        long len = argc == 4 ? atol(argv[3]) : 1;
        if (len < 1 || len > 255)
            len = 1;
        memset(name, 'd', (size_t)len);
        name[len] = '\0';
        for (long i = 0; i < n; i++) {
            if (mkdirat(dir, name, 0755) != 0)
                return fail("mkdir", i);
            int next = openat(dir, name, O_RDONLY | O_DIRECTORY);
            if (next < 0)
                return fail("open", i);
            close(dir);
            dir = next;
        }
        int f = openat(dir, "f", O_WRONLY | O_CREAT, 0644);
        if (f < 0 || write(f, "bottom", 6) != 6)
            return fail("write", n);
        close(f);
    } else if (strcmp(argv[1], "wide") == 0) {
        for (long i = 0; i < n; i++) {
            char name[32];
            snprintf(name, sizeof name, "f%ld", i);
            int f = openat(dir, name, O_WRONLY | O_CREAT, 0644);
            if (f < 0)
                return fail("create", i);
            close(f);
        }
    } else if (strcmp(argv[1], "dirs") == 0) {
        for (long i = 0; i < n; i++) {
            char name[32];
            snprintf(name, sizeof name, "d%ld", i);
            if (mkdirat(dir, name, 0755) != 0)
                return fail("mkdir", i);
        }
    } else {
        fprintf(stderr, "usage: tree deep N [LEN] | wide N | dirs N\n");
        return 2;
    }
    printf("%ld\n", n);
    return 0;
}
