/*
 * exitcode [N]
 *
 * Prints "exiting with N" to standard output, then exits with status N
 * (a decimal number, passed to proc_exit as it is: 256 or -256 too). With
 * no argument N is 0. An argument that is not a decimal number in the
 * range of an int is reported on standard error, with exit status 2.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long long code = 0;
    if (argc > 1) {
        char *end;
        errno = 0;
        code = strtoll(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || code < INT_MIN || code > INT_MAX) {
            fprintf(stderr, "exitcode: not an exit status (an int): '%s'\n", argv[1]);
            return 2;
        }
    }
    printf("exiting with %lld\n", code);
    fflush(stdout);
    exit((int)code);
}
