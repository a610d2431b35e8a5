/* main.c: corpus replay driver, linked instead of libFuzzer when fuzzing_engine=none (the dav1d
 * tests/libfuzzer/main.c pattern). Every fuzz target then runs as an ordinary test:
 *
 *   fuzz_TARGET PATH...    each PATH a file, or a directory whose regular files are replayed in
 *                          name order (one level, no recursion)
 *
 * Each input is read into a buffer of exactly its size (so an over-read is an ASan report, not a
 * silent read of slack) and passed to LLVMFuzzerTestOneInput once. Exit 0 after all inputs, 1 if
 * a path cannot be read or no input was found; a finding aborts the process.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
		fprintf(stderr, "%s: cannot stat\n", path);
		fclose(f);
		return -1;
	}
	size_t n = (size_t)st.st_size;
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf || fread(buf, 1, n, f) != n) {
		fprintf(stderr, "%s: read failed\n", path);
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

static int only_files(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

int main(int argc, char **argv)
{
	size_t done = 0;
	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (run_file(argv[i]) < 0)
				return 1;
			done++;
			continue;
		}
		struct dirent **ents;
		int n = scandir(argv[i], &ents, only_files, alphasort);
		if (n < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		for (int k = 0; k < n; k++) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", argv[i], ents[k]->d_name);
			if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
				if (run_file(path) < 0)
					return 1;
				done++;
			}
			free(ents[k]);
		}
		free(ents);
	}
	printf("%zu inputs replayed\n", done);
	if (!done) {
		fprintf(stderr, "no inputs (usage: %s FILE|DIR...)\n", argv[0]);
		return 1;
	}
	return 0;
}
