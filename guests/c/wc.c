/*
 * wc: count lines, words and bytes on standard input, like `wc` with no
 * options, and print them as "<lines> <words> <bytes>\n".
 *
 * Lines are newline characters; a word is a maximal run of bytes that are
 * not whitespace in the POSIX ("C") locale: space, \t, \n, \v, \f, \r.
 * Exits 0, or 1 if reading standard input fails.
 */
#include <stdio.h>

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

int main(void) {
    unsigned char buf[64 * 1024];
    unsigned long long lines = 0, words = 0, bytes = 0;
    int in_word = 0;
    size_t n;

    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        bytes += n;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = buf[i];
            if (c == '\n')
                lines++;
            if (is_space(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
    }
    if (ferror(stdin)) {
        perror("wc: stdin");
        return 1;
    }
    printf("%llu %llu %llu\n", lines, words, bytes);
    return 0;
}
