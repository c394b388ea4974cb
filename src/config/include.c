/*
 * include.c: the files that the configuration's `include` patterns name,
 * expanded with glob(3) in a fixed order. Pure of libconfuse: config.c
 * reads what this returns.
 */
#include "config.h"

#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/conf.h"

/* glob's complaint about a directory it could not read, kept for err */
static char glob_failed[512];

static int on_glob_error(const char *dir, int errnum)
{
	/* a directory that does not exist matches nothing, like an empty one */
	if (errnum == ENOENT || errnum == ENOTDIR)
		return 0;
	snprintf(glob_failed, sizeof(glob_failed), "cannot read %s: %s", dir,
		 strerror(errnum));
	return 1;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* PATTERN as glob should see it: a relative one under BASE's directory,
 * whose own glob characters are escaped. Caller frees. */
static char *anchored(const char *pattern, const char *base)
{
	const char *slash = strrchr(base, '/');
	size_t dirlen = slash != NULL ? (size_t)(slash - base) + 1 : 0;
	char *out = xcalloc(2 * dirlen + strlen(pattern) + 1, 1), *p = out;

	if (pattern[0] == '/')
		dirlen = 0;
	for (size_t i = 0; i < dirlen; i++) {
		if (strchr("*?[\\", base[i]) != NULL)
			*p++ = '\\';
		*p++ = base[i];
	}
	strcpy(p, pattern);
	return out;
}

static bool listed(char **files, int n, const char *f)
{
	for (int i = 0; i < n; i++)
		if (strcmp(files[i], f) == 0)
			return true;
	return false;
}

/* Append the sorted matches of one pattern to files; -1 with err set. */
static int expand_one(const char *pattern, const char *base, char ***files,
		      int *n, char *err, size_t errlen)
{
	char *pat = anchored(pattern, base);
	glob_t g;
	int r;

	glob_failed[0] = '\0';
	r = glob(pat, GLOB_NOSORT, on_glob_error, &g);
	free(pat);
	if (r == GLOB_NOMATCH)
		return 0;
	if (r != 0) {
		snprintf(err, errlen, "include \"%s\": %s", pattern,
			 glob_failed[0] ? glob_failed : "glob failed");
		if (r != GLOB_NOSPACE)
			globfree(&g);
		return -1;
	}
	qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), by_name);
	for (size_t i = 0; i < g.gl_pathc; i++) {
		if (listed(*files, *n, g.gl_pathv[i]))
			continue; /* matched by an earlier pattern: read once */
		if (*n >= INCLUDE_MAX_FILES) {
			snprintf(err, errlen,
				 "include \"%s\": more than %d files in all",
				 pattern, INCLUDE_MAX_FILES);
			globfree(&g);
			return -1;
		}
		*files = realloc(*files, (size_t)(*n + 2) * sizeof(char *));
		if (*files == NULL)
			abort();
		(*files)[(*n)++] = xstrdup(g.gl_pathv[i]);
		(*files)[*n] = NULL;
	}
	globfree(&g);
	return 0;
}

char **include_expand(char *const *patterns, int npatterns, const char *base,
		      char *err, size_t errlen)
{
	char **files = xcalloc(1, sizeof(char *));
	int n = 0;

	for (int i = 0; i < npatterns; i++)
		if (expand_one(patterns[i], base, &files, &n, err, errlen) !=
		    0) {
			include_free(files);
			return NULL;
		}
	return files;
}

void include_free(char **files)
{
	if (files == NULL)
		return;
	for (char **p = files; *p != NULL; p++)
		free(*p);
	free(files);
}
