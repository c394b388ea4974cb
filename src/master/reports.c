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
	struct record r;

	if (record_of_mark(k, &r) != 0)
		return; /* keys come from records: never too long */
	for (int i = 0; i < p->nslots; i++)
		slot_send(p->slots[i], &r);
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
 * The STATUS= and metrics counts, of the pool and the slot, from an
 * outcome report: the handler's run time, its CPU time and how long the
 * message waited from its timestamp, each -1 when unknown. A handled
 * message also ends a failure episode.
 */
static void count_outcome(struct slot *s, char report, int64_t ms, int64_t cpu,
			  int64_t wait)
{
	struct pool *p = s->pool;

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
	if (ms >= 0)
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

/* C or Z: at home or away, on node (its index in broker.url) */
static void consuming(struct slot *s, char report, bool home, int node)
{
	struct pool *p = s->pool;

	if (s->state == 0)
		count_connection(s, node);
	if (s->state != report)
		s->idle_since = now_ms();
	s->state = report;
	s->unreachable = false;
	slot_reported(s);
	if (home)
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
static void taken_back(struct slot *s, int ms, const char *key)
{
	struct pool *p = s->pool;
	struct record ct;
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
		record_init(&ct, RECORD_COMMAND, COMMAND_CONSUMER_TIMEOUT);
		ct.u.ms = ms;
		for (struct pool *q = pool_first(); q != NULL; q = q->next)
			for (int i = 0; i < q->nslots; i++)
				slot_send(q->slots[i], &ct);
	}
	if (key[0] == '\0')
		return;
	k = ledger_add(&p->marks, key);
	if (k->lost < RECORD_COUNT_MAX) /* what a record carries */
		k->lost++;
	snprintf(k->reason, sizeof(k->reason), "consumer_timeout %ds",
		 (int)(((int64_t)ms + 500) / 1000));
	reports_tell_mark(p, k);
}

/*
 * A worker lost its connection after its handler had run: the message
 * comes back, and is settled by the outcome it already had.
 */
static void outcome_pending(struct slot *s, const struct record *r)
{
	struct mark *k = ledger_add(&s->pool->marks, r->u.pending.key);

	k->pending = r->u.pending.outcome + 1;
	k->attempt = r->u.pending.attempt;
	k->delay = r->u.pending.delay;
	snprintf(k->reason, sizeof(k->reason), "%s", r->u.pending.reason);
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

/* An outcome: the worker is idle again. */
static void outcome(struct slot *s, const struct record *r)
{
	if (r->kind != REPORT_REQUEUED && r->kind != REPORT_TEMPFAIL)
		forget_holding(s);
	count_outcome(s, r->kind, r->u.outcome.ran_ms, r->u.outcome.cpu_ms,
		      r->u.outcome.wait_ms);
	breaker_report(s, r->kind);
	s->state = REPORT_CONSUMING;
	s->idle_since = now_ms();
	s->handler = 0;
	free(s->holding);
	s->holding = NULL;
}

/* One report of s's worker, decoded. */
static void one_report(struct slot *s, const struct record *r)
{
	switch (r->kind) {
	case REPORT_CONSUMING:
	case REPORT_PAUSED:
		consuming(s, r->kind, r->u.consuming.home, r->u.consuming.node);
		break;
	case REPORT_BUSY:
		s->state = REPORT_BUSY;
		s->handler = r->u.pid;
		break;
	case REPORT_GROUP:
		s->group = r->u.pid;
		break;
	case REPORT_HOLDING:
		free(s->holding);
		s->holding = xstrdup(r->u.key);
		s->held_since = now_ms();
		s->state = REPORT_BUSY;
		break;
	case REPORT_ACK:
	case REPORT_RETRY:
	case REPORT_FAILED:
	case REPORT_REQUEUED:
	case REPORT_TEMPFAIL:
		outcome(s, r);
		break;
	case REPORT_TAKEN_BACK:
		taken_back(s, r->u.taken_back.ms, r->u.taken_back.key);
		break;
	case REPORT_SLOW:
		s->pool->slow++;
		break;
	case REPORT_PENDING:
		outcome_pending(s, r);
		break;
	case REPORT_BLOCKED:
	case REPORT_UNBLOCKED:
		blocked(s, r->kind == REPORT_BLOCKED, r->u.text);
		break;
	case REPORT_READY: /* the queue's backlog, for scaler.c */
		s->pool->sc.ready = (long)r->u.ready;
		s->pool->sc.ready_at = now_ms();
		break;
	case REPORT_DOWN:
		slot_reported(s);
		snprintf(s->why, sizeof(s->why), "%s", r->u.text);
		break;
	}
}

/* n bytes from s's worker: decoded and acted on, or refused (said once
 * at warning, then at debug). */
static void one_record(struct slot *s, const char *buf, size_t n)
{
	static bool said;
	struct record r;
	char err[200];

	if (record_decode(buf, n, RECORD_REPORT, &r, err, sizeof(err)) == 0) {
		one_report(s, &r);
		return;
	}
	(said ? log_debug : log_warnx)("bad report from worker %s/%d: %s",
				       s->pool->q->name, s->number, err);
	said = true;
}

#define REPORTS_AT_ONCE 64

/* Read what s's worker reported, many records per system call. */
void reports_read(struct slot *s)
{
	/* a record longer than RECORD_MAX is refused, not cut */
	static char bufs[REPORTS_AT_ONCE][RECORD_MAX + 1];
	struct mmsghdr mm[REPORTS_AT_ONCE];
	struct iovec iov[REPORTS_AT_ONCE];
	int n;

	for (;;) {
		memset(mm, 0, sizeof(mm));
		for (int i = 0; i < REPORTS_AT_ONCE; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof(bufs[i]);
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
			one_record(s, bufs[i], mm[i].msg_len);
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
