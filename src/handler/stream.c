/* stream.c: a handler's stdout or stderr: read, logged line by line with
 * control bytes escaped and a cap per message, its tail kept. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "handler/handler_int.h"

#define LOG_LINES_MAX                                                          \
	10000 /* per stream and message; the rest is                           \
	       * counted, so a flood cannot drown the log */

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* The soft RLIMIT_NOFILE handlers start with; 0: leave it. */
void stream_init(struct stream *s, int fd, const char *name, bool keep_tail)
{
	s->fd = fd;
	s->name = name;
	s->len = 0;
	s->split = false;
	s->logged = s->dropped = 0;
	s->keep_tail = keep_tail;
	s->tail_len = 0;
	s->tail[0] = '\0';
}

/* One line of output into the log, control bytes escaped. */
static void emit_line(struct stream *s, const struct log_fields *base)
{
	char esc[HANDLER_LINE_MAX * 4 + 1];
	struct log_fields lf = *base;
	size_t o = 0;

	if (s->logged >= LOG_LINES_MAX) {
		s->dropped++;
		s->len = 0;
		return;
	}
	s->logged++;
	for (size_t i = 0; i < s->len; i++) {
		unsigned char c = (unsigned char)s->line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(esc + o, 5, "\\x%02x", c);
			o += 4;
		} else {
			esc[o++] = (char)c;
		}
	}
	esc[o] = '\0';
	lf.stream = s->name;
	log_fields(LOG_INFO, &lf, "%s: %s: %s",
		   base->message_id ? base->message_id : "-", s->name, esc);
	s->len = 0;
}

static void keep_tail(struct stream *s, const char *buf, size_t n)
{
	if (n >= HANDLER_TAIL_MAX) {
		memcpy(s->tail, buf + n - HANDLER_TAIL_MAX, HANDLER_TAIL_MAX);
		s->tail_len = HANDLER_TAIL_MAX;
	} else {
		size_t keep = s->tail_len + n > HANDLER_TAIL_MAX
				  ? HANDLER_TAIL_MAX - n
				  : s->tail_len;

		memmove(s->tail, s->tail + s->tail_len - keep, keep);
		memcpy(s->tail + keep, buf, n);
		s->tail_len = keep + n;
	}
	s->tail[s->tail_len] = '\0';
}

bool stream_drain(struct stream *s, const struct log_fields *lf)
{
	char buf[65536];

	for (int rounds = 0; rounds < 16; rounds++) {
		ssize_t n = read(s->fd, buf, sizeof(buf));

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			if (s->len > 0)
				emit_line(s, lf);
			close_fd(&s->fd);
			return false;
		}
		if (s->capture != NULL) {
			result_append(s->capture, buf, (size_t)n);
			continue;
		}
		if (s->keep_tail)
			keep_tail(s, buf, (size_t)n);
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				/* a line of exactly N pieces ends here */
				if (s->len > 0 || !s->split)
					emit_line(s, lf);
				s->split = false;
				continue;
			}
			s->line[s->len++] = buf[i];
			s->split = false;
			if (s->len == HANDLER_LINE_MAX) {
				emit_line(s, lf);
				s->split = true;
			}
		}
		/* a short read emptied the pipe: poll tells when more comes
		 * (not a read that would find nothing) */
		if ((size_t)n < sizeof(buf))
			return true;
	}
	return true; /* more may wait: poll comes back for it */
}

void stream_flush(struct stream *s, const struct log_fields *base)
{
	struct log_fields lf = *base;

	if (s->len > 0)
		emit_line(s, base);
	if (s->dropped > 0) {
		lf.stream = s->name;
		log_fields(LOG_WARNING, &lf,
			   "%s: %s: %lu more lines not logged",
			   base->message_id ? base->message_id : "-", s->name,
			   s->dropped);
	}
	s->logged = s->dropped = 0;
}
