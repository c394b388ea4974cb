/*
 * examples/handler.c: a persistent warren handler in C, with stdio only.
 *
 *     cc -O2 -Wall -Wextra -o /usr/local/bin/crc-check handler.c
 *
 *     queue "uploads" {
 *         mode = "persistent"
 *         command = {"/usr/local/bin/crc-check"}
 *     }
 *
 * It checks each message's body against the CRC-32 its publisher put in
 * the header "crc32" (eight hex digits; the handler sees it as the
 * metadata WARREN_HEADER_CRC32), and answers
 *
 *     ok crc32 XXXXXXXX, N bytes        the body is whole (or has no header)
 *     fail crc32 mismatch: ...          it is not: no retry will mend it
 *     fail empty body
 *
 * A message with a reply_to (WARREN_REPLY_TO) gets its CRC as a result,
 * which warrend sends back with queue.reply = true:
 *
 *     result 8\nXXXXXXXXok crc32 XXXXXXXX, N bytes
 *
 * with one line per message on stderr, which warrend logs. The frames
 * (warren-handler(7)):
 *
 *     warren N LEN\n   N lines NAME=VALUE\n   LEN bytes of body
 *
 * VALUE escaped: a backslash as two, a newline as backslash and n.
 */
#define _POSIX_C_SOURCE 200809L /* getline, strdup */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct message {
	char *id;	/* WARREN_MESSAGE_ID, or NULL */
	char *attempt;	/* WARREN_ATTEMPT, or NULL */
	char *crc;	/* WARREN_HEADER_CRC32, or NULL */
	char *reply_to; /* WARREN_REPLY_TO, or NULL */
	unsigned char *body;
	size_t len;
};

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 as zlib, cksum -a crc32b and Python's zlib.crc32 compute it */
static uint32_t crc32_of(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	while (n-- > 0)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* The input is not the protocol: say so and exit; warrend restarts us. */
static void protocol_error(const char *what)
{
	fprintf(stderr, "handler.c: protocol error: %s\n", what);
	exit(1);
}

/* A decimal number that fills all of s, with no sign or leading zero. */
static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9' || (*s == '0' && s[1] != '\0'))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > SIZE_MAX)
		return -1;
	*out = (size_t)v;
	return 0;
}

/* Undo the value escapes in place: "\\" -> "\", "\n" -> newline. */
static void unescape(char *v)
{
	char *o = v;

	for (; *v != '\0'; v++) {
		if (*v != '\\') {
			*o++ = *v;
			continue;
		}
		v++;
		if (*v == '\\')
			*o++ = '\\';
		else if (*v == 'n')
			*o++ = '\n';
		else
			protocol_error("bad escape in a metadata value");
	}
	*o = '\0';
}

/* Reads one line without its newline; NULL at EOF before any byte. */
static char *read_line(char **buf, size_t *cap)
{
	ssize_t n = getline(buf, cap, stdin);

	if (n == -1)
		return NULL;
	if (n == 0 || (*buf)[n - 1] != '\n')
		protocol_error("end of input inside a line");
	(*buf)[n - 1] = '\0';
	return *buf;
}

static void message_free(struct message *m)
{
	free(m->id);
	free(m->attempt);
	free(m->crc);
	free(m->reply_to);
	free(m->body);
	memset(m, 0, sizeof(*m));
}

/* Reads the next frame into m; 0 at EOF between frames, 1 otherwise. */
static int read_frame(struct message *m)
{
	static char *line;
	static size_t cap;
	char tag[8], nbuf[24], lbuf[24], extra;
	size_t nmeta;

	if (read_line(&line, &cap) == NULL)
		return 0;
	if (sscanf(line, "%7s %23s %23s %c", tag, nbuf, lbuf, &extra) != 3 ||
	    strcmp(tag, "warren") != 0 || parse_size(nbuf, &nmeta) != 0 ||
	    parse_size(lbuf, &m->len) != 0)
		protocol_error("bad frame header");
	for (size_t i = 0; i < nmeta; i++) {
		char *eq, **slot = NULL;

		if (read_line(&line, &cap) == NULL)
			protocol_error("end of input inside the metadata");
		eq = strchr(line, '=');
		if (eq == NULL || eq == line)
			protocol_error("bad metadata line");
		*eq = '\0';
		if (strcmp(line, "WARREN_MESSAGE_ID") == 0)
			slot = &m->id;
		else if (strcmp(line, "WARREN_ATTEMPT") == 0)
			slot = &m->attempt;
		else if (strcmp(line, "WARREN_HEADER_CRC32") == 0)
			slot = &m->crc;
		else if (strcmp(line, "WARREN_REPLY_TO") == 0)
			slot = &m->reply_to;
		if (slot != NULL) {
			unescape(eq + 1);
			free(*slot);
			if ((*slot = strdup(eq + 1)) == NULL)
				protocol_error("out of memory");
		}
	}
	/* +1: malloc(0) may be NULL */
	if ((m->body = malloc(m->len + 1)) == NULL)
		protocol_error("out of memory for the body");
	if (fread(m->body, 1, m->len, stdin) != m->len)
		protocol_error("end of input inside the body");
	return 1;
}

/* s on stderr with every byte outside '!'..'~', and '\', as \xHH */
static void put_safe(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x21 || c > 0x7e || c == '\\')
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
}

/* The answer to one message, written to stdout (and flushed). */
static void handle(const struct message *m)
{
	uint32_t crc = crc32_of(m->body, m->len);

	fputs("handler.c: ", stderr);
	put_safe(m->id != NULL ? m->id : "-");
	fprintf(stderr, ": %zu bytes, crc32 %08x, attempt %s\n", m->len, crc,
		m->attempt != NULL ? m->attempt : "?");
	if (m->len == 0) {
		puts("fail empty body");
	} else if (m->crc != NULL &&
		   (strlen(m->crc) != 8 ||
		    strspn(m->crc, "0123456789abcdefABCDEF") != 8 ||
		    strtoul(m->crc, NULL, 16) != crc)) {
		/* the header's text goes out escaped, never as a newline */
		fprintf(stdout, "fail crc32 mismatch: body %08x, header ", crc);
		for (const char *p = m->crc; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				fputc('?', stdout);
			else
				fputc(*p, stdout);
		fputc('\n', stdout);
	} else {
		/* a requester waits: the result first, then the answer */
		if (m->reply_to != NULL)
			printf("result 8\n%08x", crc);
		printf("ok crc32 %08x, %zu bytes\n", crc, m->len);
	}
	/* stdout is a pipe, fully buffered: the answer must go now */
	if (fflush(stdout) == EOF)
		exit(1);
}

int main(void)
{
	static char errbuf[BUFSIZ];
	struct message m = {0};

	/* stderr is unbuffered: each fputc would be a write of its own, and
	 * warrend a read of its own. Line-buffered, a line is one write. */
	setvbuf(stderr, errbuf, _IOLBF, sizeof(errbuf));
	crc_init();
	while (read_frame(&m)) {
		handle(&m);
		message_free(&m);
	}
	/* EOF on stdin: warrend stops us (shutdown, reload, max_messages) */
	return 0;
}
