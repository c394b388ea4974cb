/*
 * record.c: the master/worker protocol, one place: each kind of record,
 * its fields as a table, and the one encoder and decoder that the worker
 * and the master both use, and the ledger's marks as records. Pure:
 * bytes in, bytes out (see worker.h).
 */
#include "config.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

/* a delivery_key(): "id:", a message_id (an AMQP short string), ":" and
 * 16 hex digits */
_Static_assert(RECORD_KEY_MAX > 3 + 255 + 1 + 16, "a key fits a record");

enum ftype {
	F_INT,	 /* int, in [min, max] */
	F_I64,	 /* int64_t, in [min, max] */
	F_WHERE, /* bool: "home" (true) or "away" */
	F_TEXT,	 /* char[size]: no tab, CR or LF; a field in the middle */
	F_REST,	 /* char[size]: the last field, to the record's end */
};

struct field_spec {
	enum ftype type;
	const char *name;
	size_t off;	  /* in struct record */
	size_t size;	  /* F_TEXT, F_REST: the array's, NUL included */
	int64_t min, max; /* numbers; text: min 1 if it may not be empty */
};

struct kind_spec {
	enum record_dir dir;
	char kind;
	const char *name;
	const struct field_spec *f;
	int n;
};

#define AT(m) offsetof(struct record, u.m)
#define SIZE(m) sizeof(((struct record *)0)->u.m)
#define INT(nm, m, lo, hi) F_INT, nm, AT(m), 0, lo, hi
#define I64(nm, m, lo, hi) F_I64, nm, AT(m), 0, lo, hi
#define WHERE(nm, m) F_WHERE, nm, AT(m), 0, 0, 0
#define TEXT(nm, m, lo) F_TEXT, nm, AT(m), SIZE(m), lo, 0
#define REST(nm, m, lo) F_REST, nm, AT(m), SIZE(m), lo, 0
#define FIELDS(a) a, (int)(sizeof(a) / sizeof(a[0]))
#define NOTHING NULL, 0

/* The fields of each kind, in their order on the wire. */
static const struct field_spec consuming[] = {
    {WHERE("where", consuming.home)},
    {INT("node", consuming.node, 0, 65535)},
};
static const struct field_spec outcome[] = {
    {I64("run_ms", outcome.ran_ms, -1, INT64_MAX)},
    {I64("cpu_ms", outcome.cpu_ms, -1, INT64_MAX)},
    {I64("wait_ms", outcome.wait_ms, -1, INT64_MAX)},
};
static const struct field_spec busy[] = {{INT("pid", pid, 1, INT_MAX)}};
static const struct field_spec group[] = {{INT("pid", pid, 0, INT_MAX)}};
static const struct field_spec down[] = {{REST("why", text, 0)}};
static const struct field_spec blocked[] = {{REST("reason", text, 0)}};
static const struct field_spec holding[] = {{REST("key", key, 1)}};
static const struct field_spec taken_back[] = {
    {INT("ms", taken_back.ms, 0, INT_MAX)},
    {REST("key", taken_back.key, 0)},
};
static const struct field_spec pending[] = {
    {INT("outcome", pending.outcome, 0, OUTCOME_REQUEUED)},
    {INT("attempt", pending.attempt, 0, RECORD_COUNT_MAX)},
    {INT("delay", pending.delay, 0, INT_MAX)},
    {TEXT("reason", pending.reason, 0)},
    {REST("key", pending.key, 1)},
};
static const struct field_spec ready[] = {
    {I64("messages", ready, 0, INT64_MAX)}};
static const struct field_spec ct[] = {{INT("ms", ms, 1, INT_MAX)}};
static const struct field_spec watch[] = {{INT("ms", ms, 0, INT_MAX)}};
static const struct field_spec mark[] = {
    {INT("deaths", mark.deaths, 0, RECORD_COUNT_MAX)},
    {INT("lost", mark.lost, 0, RECORD_COUNT_MAX)},
    {INT("pending", mark.pending, 0, OUTCOME_REQUEUED + 1)},
    {INT("attempt", mark.attempt, 0, RECORD_COUNT_MAX)},
    {INT("delay", mark.delay, 0, INT_MAX)},
    {TEXT("reason", mark.reason, 0)},
    {REST("key", mark.key, 1)},
};

/* Every kind of record. */
static const struct kind_spec specs[] = {
    {RECORD_REPORT, REPORT_CONSUMING, "consuming", FIELDS(consuming)},
    {RECORD_REPORT, REPORT_PAUSED, "paused", FIELDS(consuming)},
    {RECORD_REPORT, REPORT_BUSY, "busy", FIELDS(busy)},
    {RECORD_REPORT, REPORT_ACK, "ack", FIELDS(outcome)},
    {RECORD_REPORT, REPORT_RETRY, "retry", FIELDS(outcome)},
    {RECORD_REPORT, REPORT_FAILED, "failed", FIELDS(outcome)},
    {RECORD_REPORT, REPORT_REQUEUED, "requeued", FIELDS(outcome)},
    {RECORD_REPORT, REPORT_TEMPFAIL, "tempfail", FIELDS(outcome)},
    {RECORD_REPORT, REPORT_DOWN, "down", FIELDS(down)},
    {RECORD_REPORT, REPORT_HOLDING, "holding", FIELDS(holding)},
    {RECORD_REPORT, REPORT_TAKEN_BACK, "taken back", FIELDS(taken_back)},
    {RECORD_REPORT, REPORT_BLOCKED, "blocked", FIELDS(blocked)},
    {RECORD_REPORT, REPORT_UNBLOCKED, "unblocked", NOTHING},
    {RECORD_REPORT, REPORT_PENDING, "pending", FIELDS(pending)},
    {RECORD_REPORT, REPORT_GROUP, "group", FIELDS(group)},
    {RECORD_REPORT, REPORT_SLOW, "slow", NOTHING},
    {RECORD_REPORT, REPORT_READY, "ready", FIELDS(ready)},
    {RECORD_COMMAND, COMMAND_RETIRE, "retire", NOTHING},
    {RECORD_COMMAND, COMMAND_STOP, "stop", NOTHING},
    {RECORD_COMMAND, COMMAND_CONSUMER_TIMEOUT, "consumer_timeout", FIELDS(ct)},
    {RECORD_COMMAND, COMMAND_MARK, "mark", FIELDS(mark)},
    {RECORD_COMMAND, COMMAND_PAUSE, "pause", NOTHING},
    {RECORD_COMMAND, COMMAND_RESUME, "resume", NOTHING},
    {RECORD_COMMAND, COMMAND_GO, "go", NOTHING},
    {RECORD_COMMAND, COMMAND_PROBE, "probe", NOTHING},
    {RECORD_COMMAND, COMMAND_WATCH, "watch", FIELDS(watch)},
};

static const struct kind_spec *spec_of(enum record_dir dir, char kind)
{
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		if (specs[i].dir == dir && specs[i].kind == kind)
			return &specs[i];
	return NULL;
}

static const char *dir_name(enum record_dir dir)
{
	return dir == RECORD_REPORT ? "report" : "command";
}

const char *record_name(enum record_dir dir, char kind)
{
	const struct kind_spec *sp = spec_of(dir, kind);

	return sp != NULL ? sp->name : "?";
}

void record_init(struct record *r, enum record_dir dir, char kind)
{
	memset(r, 0, sizeof(*r));
	r->dir = dir;
	r->kind = kind;
}

/* -1 with "report busy, field pid: what" in err. */
static int __attribute__((format(printf, 5, 6)))
refuse(char *err, size_t errlen, const struct kind_spec *sp,
       const struct field_spec *f, const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (f != NULL)
		snprintf(err, errlen, "%s %s, field %s: %s", dir_name(sp->dir),
			 sp->name, f->name, what);
	else
		snprintf(err, errlen, "%s %s: %s", dir_name(sp->dir), sp->name,
			 what);
	return -1;
}

/* A number field's value, as int64_t. */
static int64_t get_num(const struct record *r, const struct field_spec *f)
{
	const char *p = (const char *)r + f->off;
	int v;
	int64_t w;

	if (f->type == F_INT) {
		memcpy(&v, p, sizeof(v));
		return v;
	}
	memcpy(&w, p, sizeof(w));
	return w;
}

static void put_num(struct record *r, const struct field_spec *f, int64_t v)
{
	char *p = (char *)r + f->off;
	int i = (int)v;

	if (f->type == F_INT)
		memcpy(p, &i, sizeof(i));
	else
		memcpy(p, &v, sizeof(v));
}

/* What is wrong with text t (n bytes) as field f, or NULL. */
static const char *text_fault(const struct field_spec *f, const char *t,
			      size_t n)
{
	if (n >= f->size)
		return "too long";
	if (n < (size_t)f->min)
		return "empty";
	if (memchr(t, '\0', n) != NULL)
		return "a NUL in it";
	if (f->type == F_TEXT &&
	    (memchr(t, '\t', n) != NULL || memchr(t, '\n', n) != NULL ||
	     memchr(t, '\r', n) != NULL))
		return "a tab or line break in it";
	return NULL;
}

/* Append field f of r to buf at *o; -1 with err if it is not valid. */
static int encode_field(const struct record *r, const struct kind_spec *sp,
			const struct field_spec *f, char *buf, size_t len,
			size_t *o, char *err, size_t errlen)
{
	const char *t = (const char *)r + f->off;
	char num[24];
	const char *fault;
	size_t n;
	int64_t v;

	switch (f->type) {
	case F_WHERE:
		t = *(const bool *)t ? "home" : "away";
		break;
	case F_INT:
	case F_I64:
		v = get_num(r, f);
		if (v < f->min || v > f->max)
			return refuse(err, errlen, sp, f,
				      "%" PRId64 " out of range", v);
		snprintf(num, sizeof(num), "%" PRId64, v);
		t = num;
		break;
	case F_TEXT:
	case F_REST:
		n = strnlen(t, f->size);
		if ((fault = text_fault(f, t, n)) != NULL)
			return refuse(err, errlen, sp, f, "%s", fault);
		break;
	}
	n = strlen(t) + (f != sp->f); /* and the tab before it */
	if (*o + n > len || *o + n > RECORD_MAX)
		return refuse(err, errlen, sp, f, "no room (record at most %d)",
			      RECORD_MAX);
	if (f != sp->f) {
		buf[(*o)++] = '\t';
		n--;
	}
	memcpy(buf + *o, t, n);
	*o += n;
	return 0;
}

int record_encode(const struct record *r, char *buf, size_t len, char *err,
		  size_t errlen)
{
	const struct kind_spec *sp = spec_of(r->dir, r->kind);
	size_t o = 1;

	if (sp == NULL) {
		snprintf(err, errlen, "unknown %s kind 0x%02x",
			 dir_name(r->dir), (unsigned char)r->kind);
		return -1;
	}
	if (len < 1)
		return refuse(err, errlen, sp, NULL, "no room");
	buf[0] = r->kind;
	for (int i = 0; i < sp->n; i++)
		if (encode_field(r, sp, &sp->f[i], buf, len, &o, err, errlen) !=
		    0)
			return -1;
	return (int)o;
}

/* Decimal t (n bytes): one "-" at most, no leading zero, in range. */
static const char *parse_num(const char *t, size_t n,
			     const struct field_spec *f, int64_t *out)
{
	bool neg = n > 0 && t[0] == '-';
	uint64_t v = 0, lim;
	size_t i = neg ? 1 : 0;

	if (n == i)
		return "not a number";
	if (t[i] == '0' && n > i + 1)
		return "a leading zero";
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < n; i++) {
		if (t[i] < '0' || t[i] > '9')
			return "not a number";
		if (v > (lim - (uint64_t)(t[i] - '0')) / 10)
			return "out of range";
		v = v * 10 + (uint64_t)(t[i] - '0');
	}
	if (neg && v == 0)
		return "not a number"; /* "-0" */
	*out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v)
		   : (int64_t)v;
	if (*out < f->min || *out > f->max)
		return "out of range";
	return NULL;
}

/* Field f from t (n bytes) into r; NULL, or what is wrong with it. */
static const char *decode_field(struct record *r, const struct field_spec *f,
				const char *t, size_t n)
{
	char *dst = (char *)r + f->off;
	const char *fault;
	int64_t v;

	switch (f->type) {
	case F_WHERE:
		if (n == 4 && memcmp(t, "home", 4) == 0)
			*(bool *)dst = true;
		else if (n == 4 && memcmp(t, "away", 4) == 0)
			*(bool *)dst = false;
		else
			return "neither home nor away";
		return NULL;
	case F_INT:
	case F_I64:
		if ((fault = parse_num(t, n, f, &v)) != NULL)
			return fault;
		put_num(r, f, v);
		return NULL;
	case F_TEXT:
	case F_REST:
		if ((fault = text_fault(f, t, n)) != NULL)
			return fault;
		memcpy(dst, t, n);
		dst[n] = '\0';
		return NULL;
	}
	return "unknown type";
}

int record_decode(const void *buf, size_t n, enum record_dir dir,
		  struct record *r, char *err, size_t errlen)
{
	const char *b = buf, *p, *end = b + n, *tab;
	const struct kind_spec *sp;
	const char *fault;

	if (n == 0) {
		snprintf(err, errlen, "empty %s", dir_name(dir));
		return -1;
	}
	if (n > RECORD_MAX) {
		snprintf(err, errlen, "%s of %zu bytes: at most %d",
			 dir_name(dir), n, RECORD_MAX);
		return -1;
	}
	if ((sp = spec_of(dir, b[0])) == NULL) {
		snprintf(err, errlen, "unknown %s kind 0x%02x", dir_name(dir),
			 (unsigned char)b[0]);
		return -1;
	}
	record_init(r, dir, b[0]);
	p = b + 1;
	for (int i = 0; i < sp->n; i++) {
		const struct field_spec *f = &sp->f[i];

		if (i > 0 && p == end)
			return refuse(err, errlen, sp, f, "missing");
		if (i > 0)
			p++; /* the tab before it */
		tab = f->type == F_REST ? NULL
					: memchr(p, '\t', (size_t)(end - p));
		if (tab == NULL)
			tab = end;
		if ((fault = decode_field(r, f, p, (size_t)(tab - p))) != NULL)
			return refuse(err, errlen, sp, f, "%s", fault);
		p = tab;
	}
	if (p != end)
		return refuse(err, errlen, sp, NULL,
			      "%zu bytes past its last "
			      "field",
			      (size_t)(end - p));
	return 0;
}

bool record_equal(const struct record *a, const struct record *b)
{
	const struct kind_spec *sp;

	if (a->dir != b->dir || a->kind != b->kind)
		return false;
	if ((sp = spec_of(a->dir, a->kind)) == NULL)
		return false;
	for (int i = 0; i < sp->n; i++) {
		const struct field_spec *f = &sp->f[i];
		const char *x = (const char *)a + f->off;
		const char *y = (const char *)b + f->off;

		switch (f->type) {
		case F_WHERE:
			if (*(const bool *)x != *(const bool *)y)
				return false;
			break;
		case F_INT:
		case F_I64:
			if (get_num(a, f) != get_num(b, f))
				return false;
			break;
		case F_TEXT:
		case F_REST:
			if (strncmp(x, y, f->size) != 0)
				return false;
			break;
		}
	}
	return true;
}

int record_of_mark(const struct mark *k, struct record *r)
{
	struct record_mark *m = &r->u.mark;

	record_init(r, RECORD_COMMAND, COMMAND_MARK);
	if (strlen(k->key) >= sizeof(m->key))
		return -1;
	m->deaths = k->deaths;
	m->lost = k->lost;
	m->pending = k->pending;
	m->attempt = k->attempt;
	m->delay = k->delay;
	snprintf(m->reason, sizeof(m->reason), "%s", k->reason);
	memcpy(m->key, k->key, strlen(k->key) + 1);
	return 0;
}

void record_apply_mark(struct ledger *l, const struct record_mark *m)
{
	struct mark *k;

	if (m->deaths == 0 && m->lost == 0 && m->pending == 0) {
		ledger_forget(l, m->key);
		return;
	}
	k = ledger_add(l, m->key);
	k->deaths = m->deaths;
	k->lost = m->lost;
	k->pending = m->pending;
	k->attempt = m->attempt;
	k->delay = m->delay;
	snprintf(k->reason, sizeof(k->reason), "%s", m->reason);
}
