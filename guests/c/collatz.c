/*
 * collatz [FILE]
 *
 * Reads one integer N per line from FILE, or from standard input when no
 * FILE is given, and for each prints the number of Collatz steps it takes
 * to reach 1 (n -> n/2 if n is even, 3n+1 if odd), one number per line.
 * Finally prints "total <sum of all steps>".
 *
 * Blank lines are skipped. N = 0 or 1 takes 0 steps. A negative N makes the
 * program loop forever (on purpose: benchmarks use it to make a few inputs
 * hang so that the host's timeouts are exercised). A line that is not an
 * integer, an unreadable FILE, or an N whose sequence would overflow 64 bits
 * is reported on standard error, with exit status 2.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Never returns: the volatile counter keeps the optimizer from deleting it. */
static void loop_forever(void) {
    volatile unsigned long counter = 0;
    for (;;)
        counter++;
}

/* Steps from n to 1, or -1 if 3n+1 would overflow. */
static long long collatz_steps(uint64_t n) {
    long long steps = 0;
    while (n > 1) {
        if (n % 2 == 0) {
            n /= 2;
        } else {
            if (n > (UINT64_MAX - 1) / 3)
                return -1;
            n = 3 * n + 1;
        }
        steps++;
    }
    return steps;
}

int main(int argc, char **argv) {
    FILE *in = stdin;
    const char *name = "stdin";
    if (argc > 1) {
        name = argv[1];
        in = fopen(name, "r");
        if (!in) {
            fprintf(stderr, "collatz: %s: %s\n", name, strerror(errno));
            return 2;
        }
    }

    char line[256];
    unsigned long long total = 0, lineno = 0;
    while (fgets(line, sizeof line, in)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            continue; /* blank line */

        char *end;
        errno = 0;
        long long n = strtoll(p, &end, 10);
        while (isspace((unsigned char)*end))
            end++;
        if (end == p || *end != '\0' || errno != 0) {
            fprintf(stderr, "collatz: %s:%llu: not an integer\n", name, lineno);
            return 2;
        }
        if (n < 0) {
            fflush(stdout); /* what was computed so far is visible */
            loop_forever();
        }

        long long steps = collatz_steps((uint64_t)n);
        if (steps < 0) {
            fprintf(stderr, "collatz: %s:%llu: %lld overflows\n", name, lineno, n);
            return 2;
        }
        printf("%lld\n", steps);
        total += (unsigned long long)steps;
    }
    if (ferror(in)) {
        fprintf(stderr, "collatz: %s: %s\n", name, strerror(errno));
        return 2;
    }
    printf("total %llu\n", total);
    return 0;
}
