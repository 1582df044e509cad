/*
 * transform INPUT OUTPUT
 *
 * Reads the file INPUT (e.g. /in/data.txt), writes its ASCII-uppercased
 * copy to OUTPUT (e.g. /out/upper.txt) and prints the number of bytes
 * processed, followed by a newline, to standard output.
 *
 * If either file cannot be opened (or read, or written) it prints
 * "transform: <path>: <strerror>" to standard error and exits 2; a wrong
 * number of arguments prints a usage line and also exits 2.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *path, int err) {
    fprintf(stderr, "transform: %s: %s\n", path, strerror(err));
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: transform INPUT OUTPUT\n");
        return 2;
    }
    const char *in_path = argv[1], *out_path = argv[2];

    FILE *in = fopen(in_path, "rb");
    if (!in)
        return fail(in_path, errno);
    FILE *out = fopen(out_path, "wb");
    if (!out) {
        int err = errno;
        fclose(in);
        return fail(out_path, err);
    }

    unsigned char buf[64 * 1024];
    unsigned long long total = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        for (size_t i = 0; i < n; i++)
            buf[i] = (unsigned char)toupper(buf[i]); /* "C" locale: ASCII only */
        if (fwrite(buf, 1, n, out) != n) {
            int err = errno;
            fclose(in);
            fclose(out);
            return fail(out_path, err);
        }
        total += n;
    }
    if (ferror(in)) {
        int err = errno;
        fclose(in);
        fclose(out);
        return fail(in_path, err);
    }
    fclose(in);
    if (fclose(out) != 0)
        return fail(out_path, errno);

    printf("%llu\n", total);
    return 0;
}
