/*
 * probe: report what a sandboxed program can reach. It must never crash.
 *
 * Tries to open a few paths that a sandbox should refuse (the host's
 * /etc/passwd, an escape from the /in preopen with "..", the host's /tmp,
 * a path relative to the working directory's parent) and to list "/" with
 * opendir. For each attempt prints one line to standard output:
 *     <path>: OPENED
 *     <path>: denied (<strerror>)
 * When "/" does open, each entry follows as "dirent <name>".
 * Then prints every environment entry as "env <entry>" and exits 0.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* POSIX: the application declares environ itself. */
extern char **environ;

static void try_open(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("%s: denied (%s)\n", path, strerror(errno));
    } else {
        printf("%s: OPENED\n", path);
        close(fd);
    }
}

static void try_list(const char *path) {
    DIR *dir = opendir(path);
    if (!dir) {
        printf("%s: denied (%s)\n", path, strerror(errno));
        return;
    }
    printf("%s: OPENED\n", path);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL)
        printf("dirent %s\n", entry->d_name);
    closedir(dir);
}

int main(void) {
    static const char *const paths[] = {
        "/etc/passwd",
        "/in/../../etc/passwd",
        "/tmp",
        "../secret",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        try_open(paths[i]);
    try_list("/");

    for (char **env = environ; env && *env; env++)
        printf("env %s\n", *env);
    return 0;
}
