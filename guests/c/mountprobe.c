/*
 * mountprobe: file operations on paths given as arguments, for the mount tests. Each
 * argument is one operation, OP:PATH[:PATH2]:
 *     read:P          print P's first line
 *     write:P         create P and write "written" to it
 *     list:P          list directory P
 *     symlink:T:L     make a symbolic link L pointing at T
 *     link:O:N        make a hard link N to O
 * For each prints one line: "<arg>: OK[ <detail>]" or "<arg>: denied (<strerror>)".
 * It never crashes; exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void denied(const char *arg) { printf("%s: denied (%s)\n", arg, strerror(errno)); }

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", argv[i]);
        char *op = buf, *a = strchr(buf, ':'), *b = NULL;
        if (!a) { printf("%s: bad argument\n", argv[i]); continue; }
        *a++ = '\0';
        if ((b = strchr(a, ':'))) *b++ = '\0';
        if (!strcmp(op, "read")) {
            FILE *f = fopen(a, "r");
            char line[128] = "";
            if (!f) { denied(argv[i]); continue; }
            if (!fgets(line, sizeof line, f)) line[0] = '\0';
            line[strcspn(line, "\n")] = '\0';
            fclose(f);
            printf("%s: OK %s\n", argv[i], line);
        } else if (!strcmp(op, "write")) {
            int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || write(fd, "written", 7) != 7) { denied(argv[i]); if (fd >= 0) close(fd); continue; }
            close(fd);
            printf("%s: OK\n", argv[i]);
        } else if (!strcmp(op, "list")) {
            DIR *d = opendir(a);
            if (!d) { denied(argv[i]); continue; }
            printf("%s: OK", argv[i]);
            struct dirent *e;
            while ((e = readdir(d))) printf(" %s", e->d_name);
            printf("\n");
            closedir(d);
        } else if (!strcmp(op, "symlink") && b) {
            if (symlink(a, b)) denied(argv[i]); else printf("%s: OK\n", argv[i]);
        } else if (!strcmp(op, "link") && b) {
            if (link(a, b)) denied(argv[i]); else printf("%s: OK\n", argv[i]);
        } else {
            printf("%s: bad argument\n", argv[i]);
        }
    }
    return 0;
}
