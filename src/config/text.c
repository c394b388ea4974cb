/*
 * text.c: what the configuration's files hold, before libconfuse sees
 * them: a file's text (regular files only, no NUL byte) with its comments
 * blanked out and its lines kept, and the hash of a password file.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"

/*
 * A hash of the password in password_file (first line), so that a reload
 * can tell a rotated password and roll the workers; the password itself
 * is not kept. 0 when unset or unreadable (workers say why).
 */
uint64_t conf_secret_hash(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	FILE *f;
	int c;

	if (path == NULL || (f = fopen(path, "re")) == NULL)
		return 0;
	while ((c = getc(f)) != EOF && c != '\n' && c != '\r') {
		h ^= (unsigned char)c;
		h *= 0x100000001b3ULL;
	}
	fclose(f);
	return h;
}

/*
 * The file's text with its comments blanked out, newlines kept. libconfuse
 * 3.3 miscounts lines after '#' comments and cannot parse comments inside
 * lists, so it never sees one. Comments start with '#' anywhere outside a
 * quoted string, or with '//' or '/' '*' where a token starts. A string
 * left open at the end (which libconfuse 3.3 takes silently, with all
 * that follows it, when it opened with '"') is pointed at by *unclosed.
 */
static char *strip_comments(const char *in, size_t n, const char **unclosed)
{
	char *out = xcalloc(n + 1, 1), quote = 0;
	bool token_start = true;

	*unclosed = NULL;

	for (size_t i = 0; i < n; i++) {
		char c = in[i];

		out[i] = c;
		if (quote) {
			if (c == '\\' && i + 1 < n) {
				i++;
				out[i] = in[i];
			} else if (c == quote) {
				quote = 0;
				token_start = true; /* "x"// c */
				continue;
			}
			token_start = false;
			continue;
		}
		if (c == '"' || c == '\'') {
			quote = c;
			*unclosed = in + i;
		} else if (c == '#' || (token_start && c == '/' && i + 1 < n &&
					in[i + 1] == '/')) {
			while (i < n && in[i] != '\n')
				out[i++] = ' ';
			if (i < n)
				out[i] = '\n';
		} else if (token_start && c == '/' && i + 1 < n &&
			   in[i + 1] == '*') {
			out[i++] = ' ';
			out[i++] = ' ';
			while (i < n && !(in[i] == '*' && i + 1 < n &&
					  in[i + 1] == '/')) {
				out[i] = in[i] == '\n' ? '\n' : ' ';
				i++;
			}
			if (i < n) {
				out[i++] = ' ';
				out[i] = ' ';
			}
		}
		/* libconfuse ends a word at these; '*' it skips */
		token_start = strchr(" \t\r\n{}=,()+*", out[i]) != NULL;
	}
	if (!quote)
		*unclosed = NULL;
	out[n] = '\0';
	return out;
}

/* The line of p within text. */
static int line_at(const char *text, const char *p)
{
	int line = 1;

	for (; text < p; text++)
		line += *text == '\n';
	return line;
}

/*
 * An included file, opened for reading: only a regular file, so that a
 * pattern matching a FIFO or a device never blocks or reads forever.
 */
static FILE *open_regular(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	struct stat st;
	FILE *f;

	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "%s:0: cannot read: %s", path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s:0: not a regular file", path);
		close(fd);
		return NULL;
	}
	if ((f = fdopen(fd, "r")) == NULL)
		close(fd);
	return f;
}

/* The whole file, or NULL with the reason in err. */
static char *read_file(const char *path, bool main_file, size_t *n, char *err,
		       size_t errlen)
{
	FILE *f =
	    main_file ? fopen(path, "re") : open_regular(path, err, errlen);
	char *buf, *nul;
	int line = 1;

	if (f == NULL) {
		if (main_file || err[0] == '\0')
			snprintf(err, errlen, "%s:0: cannot read: %s", path,
				 strerror(errno));
		return NULL;
	}
	buf = read_all(f, n);
	fclose(f);
	nul = memchr(buf, '\0', *n);
	if (nul != NULL) {
		/* libconfuse would stop reading there, silently */
		for (const char *p = buf; p < nul; p++)
			line += *p == '\n';
		snprintf(err, errlen, "%s:%d: a NUL byte: not a text file",
			 path, line);
		free(buf);
		return NULL;
	}
	return buf;
}

char *conf_text(const char *path, bool main_file, int *last, char *err,
		size_t errlen)
{
	char *text, *clean;
	const char *unclosed;
	size_t n;

	err[0] = '\0';
	text = read_file(path, main_file, &n, err, errlen);
	if (text == NULL)
		return NULL;
	clean = strip_comments(text, n, &unclosed);
	if (unclosed != NULL) {
		snprintf(err, errlen, "%s:%d: unterminated string", path,
			 line_at(text, unclosed));
		free(text);
		free(clean);
		return NULL;
	}
	free(text);
	*last = 0;
	for (size_t i = 0; i < n; i++)
		if (clean[i] == '\n')
			(*last)++;
	if (*last == 0 || clean[n - 1] != '\n')
		(*last)++;
	return clean;
}
