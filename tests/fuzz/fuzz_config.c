/*
 * fuzz_config.c: libFuzzer harness feeding its input to config_load() as
 * a configuration file. Besides the sanitizers' findings it asserts that
 * every error names the file and a line of it: "PATH:LINE: " with
 * 1 <= LINE <= the input's lines + 1.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "warren.h"

static int memfd = -1;
static char path[64];

static void fail(const char *why, const char *err, const uint8_t *data,
		 size_t size)
{
	fprintf(stderr, "fuzz_config: %s\n  error: %s\n  input (%zu bytes):\n",
		why, err, size);
	fwrite(data, 1, size, stderr);
	fputc('\n', stderr);
	abort();
}

/* Lines of the input, the last one counted when unterminated. */
static long count_lines(const uint8_t *data, size_t size)
{
	long n = 0;

	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n')
			n++;
	return n + (size > 0 && data[size - 1] != '\n');
}

static void check_error(const char *err, const uint8_t *data, size_t size)
{
	size_t plen = strlen(path);
	const char *p = err + plen + 1;
	long line = 0, max = count_lines(data, size) + 1;

	if (strncmp(err, path, plen) != 0 || err[plen] != ':')
		fail("error does not start with the path", err, data, size);
	if (*p < '0' || *p > '9')
		fail("no line number", err, data, size);
	while (*p >= '0' && *p <= '9' && line <= max)
		line = line * 10 + (*p++ - '0');
	if (line < 1 || line > max)
		fail("line number out of the file", err, data, size);
	if (p[0] != ':' || p[1] != ' ' || p[2] == '\0')
		fail("no \": what\" after the line", err, data, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	struct config *cf;

	if (memfd == -1) {
		memfd = memfd_create("warrend.conf", MFD_CLOEXEC);
		if (memfd == -1) {
			perror("memfd_create");
			abort();
		}
		snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	}
	if (ftruncate(memfd, 0) != 0 ||
	    pwrite(memfd, data, size, 0) != (ssize_t)size) {
		perror("memfd");
		abort();
	}
	cf = config_load(path, err, sizeof(err));
	if (cf == NULL) {
		check_error(err, data, size);
		return 0;
	}
	if (cf->nqueues < 1 || cf->broker.nurls < 1)
		fail("loaded without a queue or a url", "", data, size);
	for (int i = 0; i < cf->nqueues; i++)
		if (cf->queues[i].line < 1 ||
		    cf->queues[i].line > count_lines(data, size) + 1)
			fail("queue line out of the file", "", data, size);
	config_free(cf);
	return 0;
}
