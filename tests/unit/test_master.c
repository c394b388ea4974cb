/*
 * test_master.c: the master's decisions without a fork or a broker: the
 * reload plan, respawn backoff, crash accounting, retire order, exit
 * words, and the status JSON and metrics rendered from a hand-built pool
 * table.
 */
#include "config.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "master/pool.h"
#include "master/master.h"
#include "unit.h"

static char path[] = "/tmp/warren-unit-XXXXXX";

static struct config *load(const char *text)
{
	char err[1024];
	FILE *f = fopen(path, "w");
	struct config *cf;

	fputs(text, f);
	fclose(f);
	cf = config_load(path, err, sizeof(err));
	if (cf == NULL)
		fprintf(stderr, "%s\n", err);
	return cf;
}

#define URL(u) "broker {\n url = \"" u "\"\n}\n"
#define Q(name, extra)                                                         \
	"queue \"" name "\" {\n command = {\"/bin/cat\"}\n" extra "}\n"

/* The plan for cf's queues running, moving to ncf. */
static struct reload_plan *plan(const struct config *cf,
				const struct config *ncf)
{
	const struct queue_conf *run[8];

	for (int i = 0; i < cf->nqueues; i++)
		run[i] = &cf->queues[i];
	return reload_plan(cf, ncf, run, cf->nqueues);
}

static void test_reload_plan(void)
{
	struct config *a = load(URL("amqp://u:p@h/") Q("keep", " workers = 2\n")
				    Q("roll", "") Q("gone", ""));
	struct config *b = load(URL("amqp://u:p@h/") Q("keep", " workers = 5\n")
				    Q("roll", " timeout = 7\n") Q("new", ""));
	struct config *c = load(URL("amqp://u:p@other/") Q("keep", ""));
	struct reload_plan *pl;

	CHECK(a != NULL && b != NULL && c != NULL);
	if (a == NULL || b == NULL || c == NULL)
		return;
	pl = plan(a, b);
	CHECK(!pl->broker_changed && !pl->consumer_timeout_changed);
	CHECK(pl->n == 3);
	/* a changed worker count alone keeps the workers */
	CHECK(pl->pools[0].step == RELOAD_KEEP);
	CHECK(pl->pools[0].nq == &b->queues[0]);
	CHECK(pl->pools[1].step == RELOAD_ROLL);
	CHECK(pl->pools[1].nq == &b->queues[1]);
	CHECK(pl->pools[2].step == RELOAD_REMOVE && pl->pools[2].nq == NULL);
	CHECK(pl->nadded == 1 && pl->added[0] == &b->queues[2]);
	reload_plan_free(pl);

	/* another broker rolls every pool, even an unchanged queue */
	pl = plan(a, c);
	CHECK(pl->broker_changed);
	CHECK(pl->pools[0].step == RELOAD_ROLL);
	CHECK(pl->pools[1].step == RELOAD_REMOVE);
	CHECK(pl->nadded == 0);
	reload_plan_free(pl);

	/* the same file: nothing changes */
	pl = plan(a, a);
	for (int i = 0; i < pl->n; i++)
		CHECK(pl->pools[i].step == RELOAD_KEEP);
	CHECK(pl->nadded == 0 && !pl->broker_changed);
	reload_plan_free(pl);
	config_free(a);
	config_free(b);
	config_free(c);
}

static void test_reload_timeouts(void)
{
	struct config *a = load(URL("amqp://u:p@h/") Q("q", ""));
	struct config *b = load("broker {\n url = \"amqp://u:p@h/\"\n"
				" consumer_timeout = 60\n}\n" Q("q", ""));
	struct config *c =
	    load(URL("amqp://u:p@h/") "shutdown_timeout = 5\n" Q("q", ""));
	struct reload_plan *pl;

	CHECK(a != NULL && b != NULL && c != NULL);
	if (a == NULL || b == NULL || c == NULL)
		return;
	pl = plan(a, b);
	CHECK(pl->consumer_timeout_changed && pl->broker_changed);
	reload_plan_free(pl);
	pl = plan(a, c);
	CHECK(!pl->consumer_timeout_changed && pl->broker_changed);
	CHECK(pl->pools[0].step == RELOAD_ROLL);
	reload_plan_free(pl);
	config_free(a);
	config_free(b);
	config_free(c);
}

static void test_backoff(void)
{
	long rnds[] = {0, 1, 450, 900, 12345, 999999, -7};

	CHECK(supervise_backoff_ms(0, 5) == 0);
	for (size_t i = 0; i < sizeof(rnds) / sizeof(rnds[0]); i++) {
		int first = supervise_backoff_ms(1, rnds[i]);

		/* the first respawn is spread over 0.1-1 s */
		CHECK(first >= 100 && first <= 1000);
		for (int f = 2; f < 40; f++) {
			int d = supervise_backoff_ms(f, rnds[i]);
			int64_t full = (int64_t)1000
				       << (f - 2 > 16 ? 16 : f - 2);

			if (full > 60000)
				full = 60000;
			/* between half and all of the doubled delay */
			CHECK(d >= full / 2 && d <= full);
		}
	}
	/* it grows, and stops growing at 60 s */
	CHECK(supervise_backoff_ms(2, 0) == 500);
	CHECK(supervise_backoff_ms(3, 0) == 1000);
	CHECK(supervise_backoff_ms(30, 0) == 30000);
	CHECK(supervise_backoff_ms(30, 30000) == 60000);
}

static int exited(int code)
{
	return (code & 0xff) << 8;
}

static void test_crashed(void)
{
	CHECK(supervise_crashed(SIGSEGV));
	CHECK(supervise_crashed(SIGABRT));
	CHECK(!supervise_crashed(SIGKILL)); /* operators, the OOM killer */
	CHECK(!supervise_crashed(SIGTERM));
	CHECK(!supervise_crashed(SIGINT));
	CHECK(!supervise_crashed(SIGHUP));
	CHECK(supervise_crashed(exited(WORKER_EXIT_FATAL)));
	CHECK(!supervise_crashed(exited(WORKER_EXIT_OK)));
	CHECK(!supervise_crashed(exited(WORKER_EXIT_CONNECT)));
	CHECK(!supervise_crashed(exited(WORKER_EXIT_HANDLER)));
}

static void test_retire_order(void)
{
	struct slot s[5] = {{.number = 1, .state = REPORT_BUSY},
			    {.number = 2, .state = REPORT_CONSUMING},
			    {.number = 3, .state = REPORT_BUSY},
			    {.number = 4, .state = 0},
			    {.number = 5, .state = REPORT_PAUSED}};
	struct slot *v[5] = {&s[0], &s[1], &s[2], &s[3], &s[4]};

	qsort(v, 5, sizeof(v[0]), supervise_retire_order);
	/* idle ones first, highest number first; busy ones last */
	CHECK(v[0]->number == 5 && v[1]->number == 4 && v[2]->number == 2);
	CHECK(v[3]->number == 3 && v[4]->number == 1);
}

static void test_exit_words(void)
{
	struct slot s = {.number = 1};
	char buf[200];

	supervise_exit_words(&s, SIGSEGV, buf, sizeof(buf));
	CHECK_STR(buf, "killed by signal 11");
	supervise_exit_words(&s, exited(WORKER_EXIT_CONNECT), buf, sizeof(buf));
	CHECK_STR(buf, "cannot reach the broker (exit 10)");
	snprintf(s.why, sizeof(s.why), "connection refused");
	supervise_exit_words(&s, exited(WORKER_EXIT_CONNECT), buf, sizeof(buf));
	CHECK_STR(buf, "cannot reach the broker: connection refused");
}

/* A pool table built by hand: two workers, one busy, one down. */
static void test_status(void)
{
	struct config *cf = load(URL("amqp://u:secret@broker.example:5673/")
				     Q("jobs", " workers = 2\n"));
	struct pool *p;
	struct slot *busy, *down;
	struct master_view v;
	struct json *j;
	const struct json *qs, *ws, *w;
	char *text;

	CHECK(cf != NULL);
	if (cf == NULL)
		return;
	pool_table_set(path, cf);
	p = pool_new(&cf->queues[0]);
	busy = slot_add(p, 1);
	down = slot_add(p, 2);
	busy->pid = 4242;
	busy->state = REPORT_BUSY;
	busy->node = 0;
	busy->holding = xstrdup("id:m-7:00000000deadbeef");
	busy->held_since = now_ms() - 1500;
	busy->acked = 3;
	p->done = 3;
	p->failed = 1;
	down->pid = 0;
	v = (struct master_view){path, cf, pool_first(), true, false};

	text = status_json(&v);
	j = json_parse(text);
	CHECK(j != NULL);
	qs = json_get(j, "queues");
	ws = json_get(j, "workers");
	CHECK(json_len(qs) == 1 && json_len(ws) == 2);
	CHECK_STR(json_str(json_get(json_at(qs, 0), "name")), "jobs");
	CHECK(json_num(json_get(json_at(qs, 0), "busy")) == 1);
	CHECK(json_num(json_get(json_at(qs, 0), "down")) == 1);
	CHECK(json_num(json_get(json_at(qs, 0), "acked")) == 3);
	w = json_at(ws, 0);
	CHECK_STR(json_str(json_get(w, "state")), "busy");
	CHECK_STR(json_str(json_get(w, "message_id")), "m-7");
	CHECK(json_num(json_get(w, "busy_ms")) >= 1500);
	/* the node by host:port, never with the password */
	CHECK_STR(json_str(json_get(w, "node")), "broker.example:5673");
	CHECK(strstr(text, "secret") == NULL);
	CHECK_STR(json_str(json_get(json_at(ws, 1), "state")), "down");
	json_free(j);
	free(text);

	text = status_metrics(&v);
	CHECK(
	    strstr(
		text,
		"warren_messages_total{queue=\"jobs\",outcome=\"ack\"} 3\n") !=
	    NULL);
	CHECK(strstr(text, "warren_messages_total{queue=\"jobs\",outcome="
			   "\"failed\"} 1\n") != NULL);
	CHECK(
	    strstr(text, "warren_workers{queue=\"jobs\",state=\"busy\"} 1\n") !=
	    NULL);
	CHECK(
	    strstr(text, "warren_workers{queue=\"jobs\",state=\"down\"} 1\n") !=
	    NULL);
	free(text);
	pools_free();
	config_free(cf);
}

int main(void)
{
	int fd = mkstemp(path);

	close(fd);
	test_reload_plan();
	test_reload_timeouts();
	test_backoff();
	test_crashed();
	test_retire_order();
	test_exit_words();
	test_status();
	unlink(path);
	return unit_done("test_master");
}
