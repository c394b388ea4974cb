/*
 * persistent_proto.c: the wire protocol with a persistent handler
 * (warren-handler(7)): frames out (the metadata header, written as its
 * stdin pipe takes it) and answers in (status lines, "result LEN" and its
 * bytes, split from its stdout). No process management: persistent.c.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "handler/handler_int.h"

size_t frame_escape(const char *v, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (v[i] == '\\') {
			out[o++] = '\\';
			out[o++] = '\\';
		} else if (v[i] == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = v[i];
		}
	}
	return o;
}

/* The variables a frame's metadata carries: WARREN_* and trace context. */
static bool in_frame(const char *e)
{
	return strncmp(e, "WARREN_", 7) == 0 ||
	       strncmp(e, "TRACEPARENT=", 12) == 0 ||
	       strncmp(e, "TRACESTATE=", 11) == 0 ||
	       strncmp(e, "BAGGAGE=", 8) == 0;
}

char *frame_header(char *const *env, size_t body_len, size_t *len)
{
	size_t cap = 64, o;
	int n = 0;
	char *buf;

	for (char *const *e = env; *e != NULL; e++) {
		if (in_frame(*e)) {
			n++;
			cap += 2 * strlen(*e) + 1;
		}
	}
	buf = xcalloc(cap, 1);
	o = (size_t)snprintf(buf, cap, "warren %d %zu\n", n, body_len);
	for (char *const *e = env; *e != NULL; e++) {
		const char *eq = strchr(*e, '=');

		if (!in_frame(*e) || eq == NULL)
			continue;
		memcpy(buf + o, *e, (size_t)(eq - *e) + 1);
		o += (size_t)(eq - *e) + 1;
		o += frame_escape(eq + 1, strlen(eq + 1), buf + o);
		buf[o++] = '\n';
	}
	*len = o;
	return buf;
}

/* The reason of an answer as a header can hold it: at most len - 1
 * bytes, cut at a character's start, control bytes as '?'. */
static void copy_reason(char *dst, size_t len, const char *src, size_t n)
{
	size_t o;

	if (n > len - 1) {
		n = len - 1;
		/* do not end inside a UTF-8 sequence */
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	}
	for (o = 0; o < n; o++) {
		unsigned char c = (unsigned char)src[o];

		dst[o] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	dst[o] = '\0';
}

bool answer_parse(const char *line, size_t len, struct handler_result *r)
{
	static const struct {
		const char *word;
		enum answer_kind kind;
	} words[] = {{"ok", ANSWER_OK},
		     {"retry", ANSWER_RETRY},
		     {"fail", ANSWER_FAIL},
		     {"tempfail", ANSWER_TEMPFAIL}};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		size_t w = strlen(words[i].word), n;
		const char *why;

		if (len < w || memcmp(line, words[i].word, w) != 0 ||
		    (len > w && line[w] != ' '))
			continue;
		for (why = line + w, n = len - w; n > 0 && *why == ' '; n--)
			why++;
		r->started = r->answered = true;
		r->answer = words[i].kind;
		if (n == 0)
			copy_reason(r->reason, sizeof(r->reason), line, w);
		else
			copy_reason(r->reason, sizeof(r->reason), why, n);
		return true;
	}
	return false;
}

void answer_bad(struct handler_result *r)
{
	memset(r, 0, sizeof(*r));
	r->started = r->answered = true;
	r->answer = ANSWER_RETRY;
	snprintf(r->reason, sizeof(r->reason), "bad answer");
}

bool result_head_parse(const char *line, size_t len, size_t *size)
{
	size_t v = 0, i = 7;

	if (len <= 7 || memcmp(line, "result ", 7) != 0 || len - 7 > 9)
		return false;
	if (line[i] == '0' && len > 8)
		return false; /* no leading zero */
	for (; i < len; i++) {
		if (line[i] < '0' || line[i] > '9')
			return false;
		v = v * 10 + (size_t)(line[i] - '0');
	}
	if (v > RESULT_MAX)
		return false;
	*size = v;
	return true;
}

/* ------------------------------------------------------------------ */
/* frames out */

size_t frame_out_len(const struct frame_out *f)
{
	return f->head_len + f->body_len;
}

int frame_out_write(int fd, struct frame_out *f)
{
	while (f->off < frame_out_len(f)) {
		struct iovec iov[2];
		int k = 0;
		ssize_t n;

		/* header and body in one call, while the pipe takes it */
		if (f->off < f->head_len) {
			iov[k].iov_base = f->head + f->off;
			iov[k++].iov_len = f->head_len - f->off;
		}
		if (f->body_len > 0) {
			size_t from =
			    f->off > f->head_len ? f->off - f->head_len : 0;

			iov[k].iov_base = (char *)f->body + from;
			iov[k++].iov_len = f->body_len - from;
		}
		n = writev(fd, iov, k);
		if (n > 0)
			f->off += (size_t)n;
		else if (n == -1 && errno == EAGAIN)
			return 0;
		else if (n != -1 || errno != EINTR)
			return -1;
	}
	return 1;
}

void frame_out_set(struct frame_out *f, char *const *env, const void *body,
		   size_t len)
{
	frame_out_clear(f);
	f->head = frame_header(env, len, &f->head_len);
	f->body = body;
	f->body_len = len;
}

bool frame_out_untaken(int fd, const struct frame_out *f)
{
	int unread = 0;

	if (f->off == 0)
		return true;
	return fd >= 0 && ioctl(fd, FIONREAD, &unread) == 0 && unread >= 0 &&
	       (size_t)unread >= f->off;
}

void frame_out_clear(struct frame_out *f)
{
	free(f->head);
	memset(f, 0, sizeof(*f));
}

/* ------------------------------------------------------------------ */
/* answers in */

enum answer_event answer_in_next(struct answer_in *a, const char *buf, size_t n,
				 size_t *off, const char **data, size_t *len)
{
	if (a->line_done)
		a->len = 0; /* the line returned last is taken */
	a->line_done = false;
	while (*off < n) {
		const char *c = buf + *off;

		if (a->result_left > 0) {
			size_t k = n - *off < a->result_left ? n - *off
							     : a->result_left;

			*data = c;
			*len = k;
			a->result_left -= k;
			*off += k;
			return ANSWER_IN_RESULT;
		}
		(*off)++;
		if (*c == '\n') {
			a->line_done = true;
			*data = a->line;
			*len = a->len;
			return ANSWER_IN_LINE;
		}
		if (a->len < sizeof(a->line)) {
			a->line[a->len++] = *c;
			continue;
		}
		/* too long for an answer: garbage (the byte is dropped) */
		a->len = 0;
		return ANSWER_IN_LONG;
	}
	return ANSWER_IN_NONE;
}
