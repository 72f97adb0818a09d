/* A main() for fuzz targets in normal builds: runs LLVMFuzzerTestOneInput over every file named
 * on the command line, descending into directories, so ctest replays the seed corpora (under
 * ASan and UBSan in the sanitizer build) without libFuzzer. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Inputs larger than this are not seeds; refusing them keeps a wrong path from eating memory. */
enum { INPUT_MAX_BYTES = 16 << 20 };

static int run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc(INPUT_MAX_BYTES);
    size_t n = buf ? fread(buf, 1, INPUT_MAX_BYTES, f) : 0;
    int bad = !buf || ferror(f) || n == INPUT_MAX_BYTES;
    fclose(f);
    if (bad) {
        fprintf(stderr, "cannot read %s (or larger than %d bytes)\n", path, INPUT_MAX_BYTES);
        free(buf);
        return -1;
    }
    /* A copy of exactly n bytes, so ASan sees reads past the end of the input. */
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    fprintf(stderr, "running %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    (*count)++;
    return 0;
}

/* Runs path, or every entry of it (sorted, so runs are reproducible) when it is a directory. */
static int run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "cannot stat %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return run_file(path, count);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "cannot list %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char child[4096];
            snprintf(child, sizeof child, "%s/%s", path, names[i]->d_name);
            if (run_path(child, count) != 0) rc = -1;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    size_t count = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++)
        if (run_path(argv[i], &count) != 0) rc = 1;
    fprintf(stderr, "%s: %zu inputs ran\n", argv[0], count);
    /* An empty corpus would make the test pass while testing nothing. */
    return rc || count == 0 ? 1 : 0;
}
