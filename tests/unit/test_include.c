/*
 * test_include.c: `include` patterns: their expansion (order, relative
 * patterns, nothing matched) and the configuration they add to, with
 * errors that name the included file and line.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/conf.h"
#include "unit.h"

static char dir[] = "/tmp/warren-include-XXXXXX";

static void put(const char *name, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
}

static void drop(const char *name)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	unlink(p);
}

/* The main file, including "conf.d/STAR.conf" relative to itself. */
#define MAIN                                                                   \
	"broker {\n url = \"amqp://u:p@localhost/\"\n}\n"                      \
	"include = {\"conf.d/*.conf\"}\n"

#define QUEUE(name) "queue \"" name "\" {\n command = {\"/bin/cat\"}\n}\n"

static struct config *load(char *err, size_t len)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/main.conf", dir);
	return config_load(p, err, len);
}

/* err is "DIR/NAME:LINE: ..." and holds what. */
static void check_error(const char *name, int line, const char *what)
{
	char err[1024], want[600];
	struct config *cf = load(err, sizeof(err));

	CHECK(cf == NULL);
	config_free(cf);
	snprintf(want, sizeof(want), "%s/%s:%d: ", dir, name, line);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	CHECK(strstr(err, what) != NULL);
	if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, what))
		fprintf(stderr, "  got: %s\n  want: %s...%s\n", err, want,
			what);
}

static void test_expand(void)
{
	char err[256], *pats[] = {"conf.d/*.conf", "/nonexistent/*.conf",
				  "conf.d/1*.conf"};
	char base[512], want[512];
	char **files;

	snprintf(base, sizeof(base), "%s/main.conf", dir);
	put("conf.d/b.conf", "");
	put("conf.d/10.conf", "");
	put("conf.d/a.conf", "");
	put("conf.d/a.conf.dpkg-old", "");
	files = include_expand(pats, 3, base, err, sizeof(err));
	CHECK(files != NULL);
	if (files == NULL)
		return;
	/* sorted by name, each file once, the .dpkg-old one not matched */
	snprintf(want, sizeof(want), "%s/conf.d/10.conf", dir);
	CHECK_STR(files[0], want);
	snprintf(want, sizeof(want), "%s/conf.d/a.conf", dir);
	CHECK_STR(files[1], want);
	snprintf(want, sizeof(want), "%s/conf.d/b.conf", dir);
	CHECK_STR(files[2], want);
	CHECK(files[3] == NULL);
	include_free(files);

	/* an absolute pattern matching nothing: an empty list */
	files = include_expand(pats + 1, 1, base, err, sizeof(err));
	CHECK(files != NULL && files[0] == NULL);
	include_free(files);
	drop("conf.d/b.conf");
	drop("conf.d/10.conf");
	drop("conf.d/a.conf");
	drop("conf.d/a.conf.dpkg-old");
}

static void test_load(void)
{
	char err[1024];
	struct config *cf;

	put("main.conf", MAIN QUEUE("main"));
	put("conf.d/20-b.conf", QUEUE("b"));
	put("conf.d/10-a.conf", "# first\n" QUEUE("a"));
	cf = load(err, sizeof(err));
	CHECK(cf != NULL);
	if (cf == NULL) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	/* the main file's queues, then the included ones in order */
	CHECK(cf->nqueues == 3);
	CHECK_STR(cf->queues[0].name, "main");
	CHECK_STR(cf->queues[1].name, "a");
	CHECK_STR(cf->queues[2].name, "b");
	CHECK(strstr(cf->queues[1].file, "/conf.d/10-a.conf") != NULL);
	CHECK(strcmp(cf->queues[0].file, cf->path) == 0);
	config_free(cf);

	/* errors name the included file and its line */
	put("conf.d/30-c.conf", "\n\nqueue \"c\" {\n workers = -1\n}\n");
	check_error("conf.d/30-c.conf", 4, "workers = -1 is out of range");
	put("conf.d/30-c.conf", "\n" QUEUE("a"));
	check_error("conf.d/30-c.conf", 4, "is already defined at ");
	{
		char e[1024], where[600];
		struct config *c = load(e, sizeof(e));

		snprintf(where, sizeof(where), "at %s/conf.d/10-a.conf:", dir);
		CHECK(c == NULL && strstr(e, where) != NULL);
		config_free(c);
	}
	put("conf.d/30-c.conf", "\nshutdown_timeout = 3\n");
	check_error("conf.d/30-c.conf", 2, "only in the main configuration");
	put("conf.d/30-c.conf", "include = {\"*.conf\"}\n");
	check_error("conf.d/30-c.conf", 1, "includes do not nest");
	drop("conf.d/30-c.conf");

	/* no queue anywhere: the main file's last line */
	put("main.conf", MAIN);
	drop("conf.d/10-a.conf");
	drop("conf.d/20-b.conf");
	check_error("main.conf", 4, "at least one queue section");
	put("main.conf", MAIN "include = {\"\"}\n");
	check_error("main.conf", 5, "an empty pattern");
}

int main(void)
{
	char sub[600];

	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(sub, sizeof(sub), "%s/conf.d", dir);
	mkdir(sub, 0755);
	test_expand();
	test_load();
	drop("main.conf");
	rmdir(sub);
	rmdir(dir);
	return unit_done("test_include");
}
