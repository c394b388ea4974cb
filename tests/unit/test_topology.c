/*
 * test_topology.c: queue arguments, bind checks, trace context and the
 * broker's x-death, from data.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "handler/handler_int.h"
#include "ctl/ctl.h"
#include "unit.h"

static char err[512];

/* parse then check, as warrend -t does; 0 when both pass */
static int arg(const char *text, struct qarg *a)
{
	if (qarg_parse(text, a, err, sizeof(err)) != 0)
		return -1;
	return qarg_check(a, err, sizeof(err));
}

static void test_parse(void)
{
	struct qarg a;

	CHECK(arg("x-max-priority=10", &a) == 0);
	CHECK_STR(a.name, "x-max-priority");
	CHECK(a.kind == QARG_INT && a.i == 10);
	qarg_free(&a);
	CHECK(arg("x-single-active-consumer=true", &a) == 0);
	CHECK(a.kind == QARG_BOOL && a.b);
	qarg_free(&a);
	CHECK(arg("my-flag=false", &a) == 0);
	CHECK(a.kind == QARG_BOOL && !a.b);
	qarg_free(&a);
	CHECK(arg("x-message-ttl=60000", &a) == 0 && a.i == 60000);
	qarg_free(&a);
	CHECK(arg("x-custom=-5", &a) == 0 && a.kind == QARG_INT && a.i == -5);
	qarg_free(&a);
	/* a string, whatever it looks like, where RabbitMQ reads one */
	CHECK(arg("x-dead-letter-routing-key=123", &a) == 0);
	CHECK(a.kind == QARG_STR);
	CHECK_STR(a.s, "123");
	qarg_free(&a);
	CHECK(arg("x-dead-letter-exchange=", &a) == 0);
	CHECK(a.kind == QARG_STR && a.s[0] == '\0');
	qarg_free(&a);
	/* '=' in the value stays in the value; not a number: a string */
	CHECK(arg("x-note=a=b", &a) == 0);
	CHECK_STR(a.name, "x-note");
	CHECK_STR(a.s, "a=b");
	qarg_free(&a);
	CHECK(arg("x-num=12abc", &a) == 0 && a.kind == QARG_STR);
	qarg_free(&a);
	CHECK(arg("x-big=99999999999999999999", &a) == 0 && a.kind == QARG_STR);
	qarg_free(&a);
	CHECK(arg("x-overflow=reject-publish", &a) == 0);
	qarg_free(&a);
}

static void test_refused(void)
{
	const char *bad[] = {
	    "novalue",
	    "=10",
	    "x-max-priority=0",
	    "x-max-priority=256",
	    "x-max-priority=ten",
	    "x-single-active-consumer=yes",
	    "x-overflow=drop",
	    "x-queue-mode=fast",
	    "x-queue-type=quorum",
	    "x-delivery-limit=3",
	    "x-expires=0",
	    "x-max-length=-1",
	    "x-tab=a\tb",
	    NULL,
	};
	struct qarg a;

	for (int i = 0; bad[i] != NULL; i++) {
		int r = arg(bad[i], &a);

		CHECK(r != 0);
		if (r == 0)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		qarg_free(&a);
	}
	CHECK(arg("x-queue-type=quorum", &a) != 0 &&
	      strstr(err, "type") != NULL);
	qarg_free(&a);
}

static void test_exchange(void)
{
	char longname[300];

	CHECK(exchange_type_known("topic"));
	CHECK(exchange_type_known("headers"));
	CHECK(!exchange_type_known("x-delayed-message"));
	CHECK(!exchange_type_known(""));
	CHECK(exchange_name_check("images", err, sizeof(err)) == 0);
	CHECK(exchange_name_check("", err, sizeof(err)) != 0);
	memset(longname, 'e', 256);
	longname[256] = '\0';
	CHECK(exchange_name_check(longname, err, sizeof(err)) != 0);
	CHECK(routing_key_check("img.*", err, sizeof(err)) == 0);
	CHECK(routing_key_check("", err, sizeof(err)) == 0);
	CHECK(routing_key_check(longname, err, sizeof(err)) != 0);
	CHECK(routing_key_check("a\nb", err, sizeof(err)) != 0);
}

static void test_same(void)
{
	struct queue_conf a = {0}, b = {0};
	struct qarg x[1], y[1];

	a.declare = b.declare = true;
	CHECK(qarg_parse("x-max-priority=10", &x[0], err, sizeof(err)) == 0);
	CHECK(qarg_parse("x-max-priority=9", &y[0], err, sizeof(err)) == 0);
	a.args = x;
	a.nargs = 1;
	CHECK(!topology_same(&a, &b));
	b.args = y;
	b.nargs = 1;
	CHECK(!topology_same(&a, &b));
	b.args = x;
	CHECK(topology_same(&a, &b));
	b.declare = false;
	CHECK(!topology_same(&a, &b));
	qarg_free(&x[0]);
	qarg_free(&y[0]);
}

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_traceparent(void)
{
	const char *bad[] = {
	    "",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
	    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
	    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
	    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
	    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	    NULL,
	};

	CHECK(traceparent_valid(TP, strlen(TP)));
	/* a later version may carry more fields */
	CHECK(traceparent_valid(
	    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab", 58));
	for (int i = 0; bad[i] != NULL; i++)
		CHECK(!traceparent_valid(bad[i], strlen(bad[i])));
}

static void test_trace_of(void)
{
	static char big[BAGGAGE_MAX + 2];
	struct header h[] = {
	    {"TraceParent", TP, strlen(TP), false},
	    {"tracestate", "congo=t61rcWkgMzE", 17, false},
	    {"baggage", "userId=alice", 12, false},
	};
	struct delivery d = {0};
	struct trace t;

	d.headers = h;
	d.nheaders = 3;
	trace_of(&d, &t);
	CHECK_STR(t.traceparent, TP);
	CHECK_STR(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
	CHECK_STR(t.tracestate, "congo=t61rcWkgMzE");
	CHECK_STR(t.baggage, "userId=alice");

	/* a bad traceparent takes its tracestate with it, not the baggage */
	h[0].value = "garbage";
	h[0].len = 7;
	trace_of(&d, &t);
	CHECK(t.traceparent == NULL && t.tracestate == NULL);
	CHECK(t.trace_id[0] == '\0');
	CHECK_STR(t.baggage, "userId=alice");

	/* bounded, printable only */
	memset(big, 'a', sizeof(big) - 1);
	h[2].value = big;
	h[2].len = BAGGAGE_MAX + 1;
	trace_of(&d, &t);
	CHECK(t.baggage == NULL);
	h[2].len = BAGGAGE_MAX;
	big[BAGGAGE_MAX] = '\0';
	trace_of(&d, &t);
	CHECK(t.baggage != NULL);
	h[2].value = "a\nb";
	h[2].len = 3;
	trace_of(&d, &t);
	CHECK(t.baggage == NULL);
	h[2].value = "a\0b";
	trace_of(&d, &t);
	CHECK(t.baggage == NULL);
	h[0].value = TP;
	h[0].len = strlen(TP);
	h[1].value = "caf\xc3\xa9=1";
	h[1].len = 6;
	trace_of(&d, &t);
	CHECK(t.traceparent != NULL && t.tracestate == NULL);

	d.nheaders = 0;
	trace_of(&d, &t);
	CHECK(t.traceparent == NULL && t.baggage == NULL);
}

/* The handler's environment carries them, under OpenTelemetry's names. */
static void test_env(void)
{
	struct header h[] = {
	    {"traceparent", TP, strlen(TP), false},
	    {"baggage", "k=v", 3, false},
	};
	char *cmd[] = {"/bin/true", NULL};
	struct queue_conf q = {0};
	struct delivery d = {0};
	char **env, *head;
	bool tp = false, bg = false, ts = false;
	size_t len;

	q.name = "q";
	q.command = cmd;
	d.headers = h;
	d.nheaders = 2;
	env = handler_env(&q, 1, 1, &d);
	for (char **p = env; *p != NULL; p++) {
		tp |= strcmp(*p, "TRACEPARENT=" TP) == 0;
		bg |= strcmp(*p, "BAGGAGE=k=v") == 0;
		ts |= strncmp(*p, "TRACESTATE=", 11) == 0;
	}
	CHECK(tp && bg && !ts);
	/* and a persistent handler's frame carries them as metadata */
	head = frame_header(env, 1, &len);
	CHECK(strstr(head, "\nTRACEPARENT=" TP "\n") != NULL);
	CHECK(strstr(head, "\nBAGGAGE=k=v\n") != NULL);
	CHECK(strstr(head, "PATH=") == NULL);
	free(head);
	env_free(env);
}

/* x-death as the handler environment renders it: JSON, latest first */
static void test_death(void)
{
	const char *xd =
	    "[{\"count\":1,\"reason\":\"delivery_limit\",\"queue\":\"q\","
	    "\"time\":1764900000,\"exchange\":\"\"},"
	    "{\"count\":1,\"reason\":\"expired\",\"queue\":\"q.retry.1s\","
	    "\"time\":1764800000}]";
	struct header h[] = {{"x-death", (char *)xd, strlen(xd), false}};
	struct delivery d = {0};
	struct death x;

	CHECK(death_of(&d, &x) == -1);
	d.headers = h;
	d.nheaders = 1;
	CHECK(death_of(&d, &x) == 0);
	CHECK_STR(x.reason, "delivery_limit");
	CHECK_STR(x.queue, "q");
	CHECK(x.time == 1764900000);
	death_free(&x);
	h[0].value = "not json";
	h[0].len = 8;
	CHECK(death_of(&d, &x) == -1);
	h[0].value = "[]";
	h[0].len = 2;
	CHECK(death_of(&d, &x) == -1);
}

static struct config *load(const char *text)
{
	static char path[] = "/tmp/warren-topology-XXXXXX";
	int fd = mkstemp(path);
	struct config *cf;

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		return NULL;
	close(fd);
	cf = config_load(path, err, sizeof(err));
	unlink(path);
	memcpy(path + strlen(path) - 6, "XXXXXX", 6);
	if (cf == NULL)
		fprintf(stderr, "%s\n", err);
	return cf;
}

#define BROKER "broker {\n url = \"amqp://localhost/\"\n}\n"

/* What the configuration gives the queue, defaults included. */
static void test_config(void)
{
	struct config *a = load(
	    BROKER "queue \"q\" {\n command = {\"/bin/cat\"}\n"
		   " arguments = {\"x-max-priority=10\", \"x-sac=true\"}\n"
		   " bind \"up\" {\n  type = \"topic\"\n  keys = {\"a.*\", "
		   "\"b\"}\n }\n bind \"all\" {}\n}\n"
		   "queue \"r\" {\n command = {\"/bin/cat\"}\n"
		   " type = \"quorum\"\n retry { attempts = 4 }\n}\n");
	struct config *b;

	CHECK(a != NULL);
	if (a == NULL)
		return;
	CHECK(a->queues[0].declare);
	CHECK(a->queues[0].nargs == 2);
	CHECK(a->queues[0].args[0].kind == QARG_INT);
	CHECK(a->queues[0].args[1].kind == QARG_BOOL);
	CHECK(a->queues[0].nbinds == 2);
	CHECK_STR(a->queues[0].binds[0].exchange, "up");
	CHECK_STR(a->queues[0].binds[0].type, "topic");
	CHECK(a->queues[0].binds[0].nkeys == 2);
	CHECK_STR(a->queues[0].binds[0].keys[1], "b");
	/* no keys: the one key "", of a direct exchange */
	CHECK_STR(a->queues[0].binds[1].type, "direct");
	CHECK(a->queues[0].binds[1].nkeys == 1);
	CHECK_STR(a->queues[0].binds[1].keys[0], "");
	/* quorum: attempts + 2 */
	CHECK(a->queues[1].delivery_limit == 6);
	CHECK(a->queues[1].nbinds == 0 && a->queues[1].nargs == 0);

	/* a reload with another key rolls the workers */
	b = load(BROKER
		 "queue \"q\" {\n command = {\"/bin/cat\"}\n"
		 "arguments = {\"x-max-priority=10\", \"x-sac=true\"}\n"
		 " bind \"up\" {\n  type = \"topic\"\n  keys = {\"a.*\", "
		 "\"c\"}\n }\n bind \"all\" {}\n}\n");
	CHECK(b != NULL);
	if (b != NULL) {
		CHECK(
		    !queue_conf_same_but_workers(&a->queues[0], &b->queues[0]));
		CHECK(
		    queue_conf_same_but_workers(&a->queues[0], &a->queues[0]));
	}
	config_free(a);
	config_free(b);
}

int main(void)
{
	test_config();
	test_death();
	test_parse();
	test_refused();
	test_exchange();
	test_same();
	test_traceparent();
	test_trace_of();
	test_env();
	return unit_done("test_topology");
}
