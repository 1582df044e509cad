/*
 * exitcode [N]
 *
 * Prints "exiting with N" to standard output, then exits with status N
 * (a decimal number). With no argument N is 0. An argument that is not a
 * decimal number in 0..255 is reported on standard error, with exit
 * status 2.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long code = 0;
    if (argc > 1) {
        char *end;
        errno = 0;
        code = strtol(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || code < 0 || code > 255) {
            fprintf(stderr, "exitcode: not an exit status (0..255): '%s'\n", argv[1]);
            return 2;
        }
    }
    printf("exiting with %ld\n", code);
    fflush(stdout);
    exit((int)code);
}
