/*
 * fuzz_config.c: libFuzzer harness feeding its input to config_load() as
 * a configuration file. Besides the sanitizers' findings it asserts that
 * every error names the file and a line of it: "PATH:LINE: " with
 * 1 <= LINE <= the input's lines + 1, or, for an error in a file that the
 * input includes, "DIR/FILE:LINE: ". The input lives in a private
 * directory DIR whose conf.d holds two drop-ins; an input whose include
 * patterns could reach outside DIR (an absolute path, "..", an escape) is
 * skipped, so that the fuzzer never reads the rest of the system.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/conf.h"

static char dir[] = "/tmp/warren-fuzz-config-XXXXXX";
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

	if (strncmp(err, dir, strlen(dir)) == 0 && err[strlen(dir)] == '/' &&
	    strncmp(err, path, plen) != 0) {
		/* an included file's error: any line of it */
		p = strchr(err, ':');
		if (p == NULL || p[1] < '0' || p[1] > '9' ||
		    strstr(p, ": ") == NULL)
			fail("included file's error without a line", err, data,
			     size);
		return;
	}
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

/* Could the input's include patterns reach outside dir? */
static bool escapes(const uint8_t *data, size_t size)
{
	if (memmem(data, size, "include", 7) == NULL)
		return false;
	if (memmem(data, size, "..", 2) != NULL || memchr(data, '\\', size))
		return true;
	for (size_t i = 0; i < size; i++)
		if (data[i] == '/' &&
		    !(i >= 6 && memcmp(data + i - 6, "conf.d", 6) == 0) &&
		    !(i >= 5 && memcmp(data + i - 5, "amqp:", 5) == 0) &&
		    !(i >= 6 && memcmp(data + i - 6, "amqp:/", 6) == 0))
			return true;
	return false;
}

static void put(const char *name, const char *text)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(p);
		abort();
	}
}

static void cleanup(void)
{
	char p[128];

	unlink(path);
	snprintf(p, sizeof(p), "%s/conf.d/a.conf", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/conf.d/b.conf", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/conf.d", dir);
	rmdir(p);
	rmdir(dir);
}

static void setup(void)
{
	char sub[128];

	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	snprintf(sub, sizeof(sub), "%s/conf.d", dir);
	mkdir(sub, 0755);
	put("conf.d/a.conf", "queue \"d1\" {\n command = {\"/bin/true\"}\n}\n");
	put("conf.d/b.conf", "queue \"d2\" {\n command = {\"/bin/true\"}\n}\n");
	snprintf(path, sizeof(path), "%s/warrend.conf", dir);
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	struct config *cf;

	FILE *f;

	if (path[0] == '\0')
		setup();
	if (escapes(data, size))
		return 0;
	f = fopen(path, "w");
	if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
		perror(path);
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
		if (strcmp(cf->queues[i].file, path) == 0 &&
		    (cf->queues[i].line < 1 ||
		     cf->queues[i].line > count_lines(data, size) + 1))
			fail("queue line out of the file", "", data, size);
	config_free(cf);
	return 0;
}
