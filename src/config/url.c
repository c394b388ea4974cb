/* url.c: amqp:// URLs read as rabbitmq-c 0.11 reads them, without it (pure). */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/conf.h"

static int hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Cut the component at *pp at the next delimiter, percent-decoding it in
 * place; returns the delimiter ('\0' at the end) and moves *pp past it.
 * Inside [] (colons = false) ':' and '@' are plain. A bad escape (or one
 * above 0x7f, which amqp_parse_url refuses too) returns '%': an error.
 */
static char next_delim(char **pp, bool colons)
{
	char *from = *pp, *to = from;

	for (;;) {
		char ch = *from++;
		int hi, lo;

		switch (ch) {
		case ':':
		case '@':
			if (!colons) {
				*to++ = ch;
				break;
			}
			/* fall through */
		case '\0':
		case '/':
		case '?':
		case '#':
		case '[':
		case ']':
			*to = '\0';
			*pp = from;
			return ch;
		case '%':
			hi = hex(from[0]);
			lo = hi < 0 ? -1 : hex(from[1]);
			if (lo < 0 || hi * 16 + lo > CHAR_MAX)
				return '%';
			*to++ = (char)(hi * 16 + lo);
			from += 2;
			break;
		default:
			*to++ = ch;
			break;
		}
	}
}

/* "[v6]" after the userinfo: the host, and the delimiter after "]". */
static int ipv6_host(char **url, char *host, char *start, struct mq_url *u,
		     char **after, char *delim)
{
	if (host != start || *host != '\0')
		return -1; /* "[" must open the host */
	start = *url;
	if (next_delim(url, false) != ']')
		return -1;
	u->host = start;
	*after = *url;
	*delim = next_delim(url, true);
	return **after == '\0' ? 0 : -1; /* "]" must close it */
}

static int parse_port(const char *port, struct mq_url *u)
{
	char *end;
	long n = strtol(port, &end, 10);

	if (port == end || *end != '\0' || n < 0 || n > 65535)
		return -1;
	u->port = (int)n;
	return 0;
}

/* amqp_parse_url's steps, on u->buf: userinfo, host or [v6], port, vhost */
static int parse(char *url, struct mq_url *u)
{
	char *host, *start, *port = NULL;
	char delim;

	host = start = url;
	delim = next_delim(&url, true);
	if (delim == ':') { /* a port, or a password: not known yet */
		port = start = url;
		delim = next_delim(&url, true);
	}
	if (delim == '@') { /* it was userinfo */
		u->user = host;
		if (port != NULL)
			u->password = port;
		port = NULL;
		host = start = url;
		delim = next_delim(&url, true);
	}
	if (delim == '[') {
		if (ipv6_host(&url, host, start, u, &start, &delim) != 0)
			return -1;
	} else if (*host != '\0') {
		u->host = host;
	}
	if (delim == ':') {
		port = url;
		delim = next_delim(&url, true);
	}
	if (port != NULL && parse_port(port, u) != 0)
		return -1;
	if (delim == '/') {
		start = url;
		if (next_delim(&url, true) != '\0')
			return -1;
		u->vhost = start;
		return 0;
	}
	return delim == '\0' ? 0 : -1;
}

int mq_url_parse(const char *url, struct mq_url *u)
{
	size_t skip;

	memset(u, 0, sizeof(*u));
	u->user = u->password = "guest";
	u->host = "localhost";
	u->vhost = "/";
	u->port = 5672;
	if (strncmp(url, "amqp://", 7) == 0) {
		skip = 7;
	} else if (strncmp(url, "amqps://", 8) == 0) {
		skip = 8;
		u->port = 5671;
		u->ssl = true;
	} else {
		return -1;
	}
	u->buf = xstrdup(url + skip);
	if (parse(u->buf, u) == 0)
		return 0;
	mq_url_free(u);
	return -1;
}

void mq_url_free(struct mq_url *u)
{
	free(u->buf);
	u->buf = NULL;
}

int mq_url_check(const char *url, char *err, size_t errlen)
{
	struct mq_url u;

	if (mq_url_parse(url, &u) != 0) {
		snprintf(err, errlen, "not an amqp:// or amqps:// URL");
		return -1;
	}
	mq_url_free(&u);
	return 0;
}

char *mq_url_redacted(const char *url)
{
	struct mq_url u;
	char *out;

	if (mq_url_parse(url, &u) != 0)
		return xstrdup("(bad url)");
	if (asprintf(&out, "%s://%s@%s:%d/%s", u.ssl ? "amqps" : "amqp", u.user,
		     u.host, u.port,
		     strcmp(u.vhost, "/") == 0 ? "" : u.vhost) == -1)
		fatal("asprintf");
	mq_url_free(&u);
	return out;
}

char *mq_url_node(const char *url)
{
	struct mq_url u;
	char *out;

	if (mq_url_parse(url, &u) != 0)
		return xstrdup("?");
	if (asprintf(&out, strchr(u.host, ':') ? "[%s]:%d" : "%s:%d", u.host,
		     u.port) == -1)
		fatal("asprintf");
	mq_url_free(&u);
	return out;
}
