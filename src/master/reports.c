/*
 * reports.c: what the master makes of its workers' reports (consuming,
 * busy, outcomes with their run times, marks, the broker's
 * consumer_timeout, blocked publishing, why a worker is down), read many
 * records per system call. Master only.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>

#include "pool.h"
#include "master/master.h"

static struct {
	int ct_ms;    /* the broker's consumer_timeout, once proven shorter */
	int nblocked; /* workers the broker blocks from publishing */
	int64_t blocked_since;
} rs;

int reports_consumer_timeout(void)
{
	return rs.ct_ms;
}

void reports_consumer_timeout_reset(void)
{
	rs.ct_ms = 0;
}

/* A changed mark goes to every worker of the pool. */
void reports_tell_mark(struct pool *p, const struct mark *k)
{
	char text[1100];

	ledger_encode(k, text, sizeof(text));
	for (int i = 0; i < p->nslots; i++)
		slot_send(p->slots[i], COMMAND_MARK, text);
}

/* A message the worker settled: the pool forgets what it knew of it. */
static void forget_holding(struct slot *s)
{
	struct mark gone = {s->holding, 0, 0, 0, 0, 0, ""};

	if (s->holding == NULL)
		return;
	if (ledger_find(&s->pool->marks, s->holding) != NULL) {
		reports_tell_mark(s->pool, &gone);
		ledger_forget(&s->pool->marks, s->holding);
	}
	free(s->holding);
	s->holding = NULL;
}

/*
 * The STATUS= and metrics counts, of the pool and the slot; text is the
 * handler's run time in ms, when it ran, then a tab and its CPU time in
 * ms (-1 when unknown), then a tab and how long the message waited from
 * its timestamp, when it had one. A handled message also ends a failure
 * episode.
 */
static void count_outcome(struct slot *s, char report, const char *text)
{
	struct pool *p = s->pool;
	char *end, *cend, *wend;
	long ms = strtol(text, &end, 10), cpu = -1, wait = -1;

	if (end != text && *end == '\t') {
		cpu = strtol(end + 1, &cend, 10);
		if (cend == end + 1 || (*cend != '\0' && *cend != '\t'))
			cpu = -1;
		else if (*cend == '\t')
			wait = strtol(cend + 1, &wend, 10);
	}
	if (cpu > 0)
		p->cpu_ms += (uint64_t)cpu;
	if (wait >= 0 && report != REPORT_REQUEUED)
		histogram_observe(&p->waits, (double)wait / 1000.0);

	switch (report) {
	case REPORT_ACK:
		p->done++;
		s->acked++;
		p->last_error[0] = '\0';
		break;
	case REPORT_RETRY:
		p->retried++;
		s->retried++;
		break;
	case REPORT_FAILED:
		p->failed++;
		s->failed++;
		break;
	case REPORT_REQUEUED:
	case REPORT_TEMPFAIL:
		p->requeued++;
		s->requeued++;
		return;
	}
	if (end != text && ms >= 0)
		histogram_observe(&p->durations, (double)ms / 1000.0);
}

/*
 * A new connection of s's worker, to node (its index in broker.url),
 * counted by the node's host:port: a reload that reorders the URLs moves
 * no count. Past POOL_NODES_MAX - 1 names, the last entry is "other".
 */
static void count_connection(struct slot *s, int node)
{
	struct pool *p = s->pool;
	const char *name = pool_node_name(node);
	int i;

	s->node = node;
	for (i = 0; i < POOL_NODES_MAX - 1; i++)
		if (p->conns[i].node == NULL ||
		    strcmp(p->conns[i].node, name) == 0)
			break;
	if (p->conns[i].node == NULL)
		p->conns[i].node =
		    xstrdup(i < POOL_NODES_MAX - 1 ? name : "other");
	p->conns[i].n++;
}

/* C or Z: "home" or "away", a tab and the node's index */
static void consuming(struct slot *s, char report, const char *text)
{
	struct pool *p = s->pool;
	const char *tab = strchr(text, '\t');

	if (s->state == 0 && tab != NULL)
		count_connection(s, atoi(tab + 1));
	if (s->state != report)
		s->idle_since = now_ms();
	s->state = report;
	s->unreachable = false;
	slot_reported(s);
	if (strncmp(text, "home", 4) == 0)
		s->home_moves = 0;
	/* said once per episode; the cause stays until a message is
	 * handled: consuming alone proves little */
	if (p->last_error[0] != '\0' && !p->recovery_told) {
		log_info("queue %s: worker %d consuming again", p->q->name,
			 s->number);
		p->recovery_told = true;
	}
}

/*
 * The broker's consumer_timeout took a message back: its value holds for
 * every worker from now on, said once, and the message's attempt counts.
 */
static void taken_back(struct slot *s, const char *text)
{
	struct pool *p = s->pool;
	char *tab, num[16];
	int ms = (int)strtol(text, &tab, 10);
	struct mark *k;

	if (ms > 0 && (rs.ct_ms == 0 || ms < rs.ct_ms)) {
		if (rs.ct_ms == 0)
			log_fields(
			    LOG_ERR, NULL,
			    "the broker's consumer_timeout is %d ms, below "
			    "broker.consumer_timeout = %d s of %s: it took a "
			    "message back from %s/%d. Handlers are now stopped "
			    "in time for %d ms; set broker.consumer_timeout = "
			    "%d, or raise consumer_timeout in rabbitmq.conf",
			    ms, pool_table()->cf->broker.consumer_timeout,
			    pool_table()->path, p->q->name, s->number, ms,
			    ms > 1999 ? ms / 1000 : 1);
		rs.ct_ms = ms;
		snprintf(num, sizeof(num), "%d", ms);
		for (struct pool *q = pool_first(); q != NULL; q = q->next)
			for (int i = 0; i < q->nslots; i++)
				slot_send(q->slots[i], COMMAND_CONSUMER_TIMEOUT,
					  num);
	}
	if (*tab != '\t' || tab[1] == '\0')
		return;
	k = ledger_add(&p->marks, tab + 1);
	k->lost++;
	snprintf(k->reason, sizeof(k->reason), "consumer_timeout %ds",
		 (ms + 500) / 1000);
	reports_tell_mark(p, k);
}

/*
 * A worker lost its connection after its handler had run: the message
 * comes back, and is settled by the outcome it already had.
 */
static void outcome_pending(struct slot *s, const char *text)
{
	char *p;
	long kind = strtol(text, &p, 10), attempt, delay;
	const char *reason, *key;
	struct mark *k;

	if (*p != '\t')
		return;
	attempt = strtol(p + 1, &p, 10);
	if (*p != '\t')
		return;
	delay = strtol(p + 1, &p, 10);
	if (*p != '\t')
		return;
	reason = p + 1;
	key = strchr(reason, '\t');
	if (key == NULL || key[1] == '\0' || kind < 0 ||
	    kind > OUTCOME_REQUEUED)
		return;
	k = ledger_add(&s->pool->marks, key + 1);
	k->pending = (int)kind + 1;
	k->attempt = (int)attempt;
	k->delay = (int)delay;
	snprintf(k->reason, sizeof(k->reason), "%.*s", (int)(key - reason),
		 reason);
	reports_tell_mark(s->pool, k);
}

/* Workers the broker blocks from publishing: one line per episode. */
static void blocked(struct slot *s, bool now_blocked, const char *why)
{
	if (s->blocked == now_blocked)
		return;
	s->blocked = now_blocked;
	if (now_blocked && rs.nblocked++ == 0) {
		rs.blocked_since = now_ms();
		log_warnx("broker blocked publishing: %s; retry and parking "
			  "copies wait for it",
			  why[0] ? why : "no reason given");
	} else if (!now_blocked && --rs.nblocked == 0) {
		log_info("broker unblocked publishing after %.1f s",
			 (double)(now_ms() - rs.blocked_since) / 1000.0);
	}
}

/* One report of s's worker: code byte, text, NUL-terminated. */
static void one_report(struct slot *s, char *buf)
{
	switch (buf[0]) {
	case REPORT_CONSUMING:
	case REPORT_PAUSED:
		consuming(s, buf[0], buf + 1);
		break;
	case REPORT_BUSY:
		s->state = REPORT_BUSY;
		s->handler = (pid_t)strtol(buf + 1, NULL, 10);
		break;
	case REPORT_GROUP:
		s->group = (pid_t)strtol(buf + 1, NULL, 10);
		break;
	case REPORT_HOLDING:
		free(s->holding);
		s->holding = xstrdup(buf + 1);
		s->held_since = now_ms();
		s->state = REPORT_BUSY;
		break;
	/* an outcome also means the worker is idle again */
	case REPORT_ACK:
	case REPORT_RETRY:
	case REPORT_FAILED:
		forget_holding(s);
		/* fall through */
	case REPORT_REQUEUED:
	case REPORT_TEMPFAIL:
		count_outcome(s, buf[0], buf + 1);
		breaker_report(s, buf[0]);
		s->state = REPORT_CONSUMING;
		s->idle_since = now_ms();
		s->handler = 0;
		free(s->holding);
		s->holding = NULL;
		break;
	case REPORT_TAKEN_BACK:
		taken_back(s, buf + 1);
		break;
	case REPORT_SLOW:
		s->pool->slow++;
		break;
	case REPORT_PENDING:
		outcome_pending(s, buf + 1);
		break;
	case REPORT_BLOCKED:
	case REPORT_UNBLOCKED:
		blocked(s, buf[0] == REPORT_BLOCKED, buf + 1);
		break;
	case REPORT_READY: /* the queue's backlog, for scaler.c */
		s->pool->sc.ready = strtol(buf + 1, NULL, 10);
		s->pool->sc.ready_at = now_ms();
		break;
	case REPORT_DOWN:
		slot_reported(s);
		snprintf(s->why, sizeof(s->why), "%.690s", buf + 1);
		break;
	}
}

#define REPORTS_AT_ONCE 64
#define REPORT_MAX 1200

/* Read what s's worker reported, many records per system call. */
void reports_read(struct slot *s)
{
	static char bufs[REPORTS_AT_ONCE][REPORT_MAX];
	struct mmsghdr mm[REPORTS_AT_ONCE];
	struct iovec iov[REPORTS_AT_ONCE];
	int n;

	for (;;) {
		memset(mm, 0, sizeof(mm));
		for (int i = 0; i < REPORTS_AT_ONCE; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = REPORT_MAX - 1;
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(s->ctl, mm, REPORTS_AT_ONCE, MSG_DONTWAIT, NULL);
		/* a worker that exited with our command unread resets the
		 * socket; what it sent before is still there to read */
		if (n == -1 && errno == ECONNRESET)
			continue;
		if (n == 0)
			slot_close_ctl(s);
		if (n <= 0)
			return;
		for (int i = 0; i < n; i++) {
			if (mm[i].msg_len == 0) { /* it closed: it is exiting */
				slot_close_ctl(s);
				return;
			}
			bufs[i][mm[i].msg_len] = '\0';
			one_report(s, bufs[i]);
		}
		if (n < REPORTS_AT_ONCE)
			return;
	}
}

void reports_slot_gone(struct slot *s)
{
	if (s->blocked) {
		s->blocked = false;
		rs.nblocked--;
	}
}
