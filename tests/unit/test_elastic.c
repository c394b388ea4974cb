/*
 * test_elastic.c: elastic.c's sizing decision: growth only while every
 * worker is busy and messages wait, at most doubling once a second and
 * never past max_workers; shrinking only by workers idle idle_timeout (or
 * at once after warrenctl scale), never below the floor.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master/pool.h"
#include "master/master.h"
#include "unit.h"

#define NOW 1000000

static struct elastic_in base(int workers, int max, int active, int busy,
			      long ready)
{
	struct elastic_in in = {0};

	in.workers = workers;
	in.max_workers = max;
	in.active = active;
	in.busy = busy;
	in.ready = ready;
	in.now = NOW;
	in.grown_at = 0;
	in.idle_timeout_ms = 5000;
	return in;
}

static int decide(const struct elastic_in *in, struct elastic_out *out)
{
	memset(out, 0, sizeof(*out));
	elastic_decide(in, out);
	return out->target;
}

static void grows(void)
{
	struct elastic_out out;
	struct elastic_in in = base(2, 16, 2, 2, 198);

	CHECK(decide(&in, &out) == 4); /* doubles */
	CHECK_STR(out.why, "scaling up: 198 ready, all busy");
	in = base(2, 16, 8, 8, 150);
	CHECK(decide(&in, &out) == 16);
	in = base(2, 16, 12, 12, 150);
	CHECK(decide(&in, &out) == 16); /* never past max_workers */
	in = base(2, 16, 4, 4, 1);
	CHECK(decide(&in, &out) == 5); /* no more than the backlog */
	/* at most one step a second */
	in = base(2, 16, 4, 4, 100);
	in.grown_at = NOW - 400;
	CHECK(decide(&in, &out) == 4);
	CHECK(strncmp(out.why, "scaling up", 10) == 0);
	in.grown_at = NOW - 1000;
	CHECK(decide(&in, &out) == 8);
}

static void holds(void)
{
	struct elastic_out out;
	struct elastic_in in = base(2, 16, 2, 1, 50); /* one idle */

	CHECK(decide(&in, &out) == 2);
	CHECK_STR(out.why, "at the minimum");
	in = base(2, 16, 2, 2, -1); /* backlog unknown */
	CHECK(decide(&in, &out) == 2);
	in = base(2, 16, 2, 2, 0); /* nothing waits */
	CHECK(decide(&in, &out) == 2);
	in = base(2, 16, 2, 2, 30);
	in.paused = true;
	CHECK(decide(&in, &out) == 2);
	in = base(4, 4, 4, 4, 30); /* a fixed pool */
	CHECK(decide(&in, &out) == 4);
	CHECK_STR(out.why, "fixed at 4");
	in = base(2, 16, 16, 16, 30);
	CHECK(decide(&in, &out) == 16);
	CHECK_STR(out.why, "at max_workers: 30 ready, all busy");
	in = base(3, 16, 1, 0, 0); /* below the floor: start */
	CHECK(decide(&in, &out) == 3);
}

static void shrinks(void)
{
	struct elastic_out out;
	int64_t idle[4] = {NOW - 6000, NOW - 5000, NOW - 1000, NOW - 100};
	struct elastic_in in = base(2, 16, 8, 4, 0);

	in.idle_since = idle;
	in.nidle = 4;
	CHECK(decide(&in, &out) == 6); /* two idle 5 s or more go */
	CHECK_STR(out.why, "scaling down: 2 idle for 5 s");
	/* never below the floor, busy ones stay */
	in = base(2, 16, 3, 2, 0);
	in.idle_since = idle;
	in.nidle = 1;
	CHECK(decide(&in, &out) == 2);
	in = base(2, 16, 4, 4, 0); /* all busy: none goes */
	CHECK(decide(&in, &out) == 4);
	CHECK(strncmp(out.why, "holding 2 above", 15) == 0);
	/* warrenctl scale down: idle ones go now, whatever their time */
	in = base(2, 16, 8, 4, 0);
	in.idle_since = idle;
	in.nidle = 4;
	in.floor_now = true;
	CHECK(decide(&in, &out) == 4);
	in.ready = 500; /* and no growth meanwhile */
	CHECK(decide(&in, &out) == 4);
	/* above max_workers (a reload lowered it): idle ones go at once */
	in = base(2, 4, 8, 6, 0);
	in.idle_since = idle;
	in.nidle = 2;
	CHECK(decide(&in, &out) == 6);
	in.nidle = 4;
	in.busy = 4;
	CHECK(decide(&in, &out) == 4);
}

static char path[] = "/tmp/warren-elastic-XXXXXX";

#define BROKER "broker {\n url = \"amqp://u:p@localhost/\"\n}\n"
#define QUEUE "queue \"a\" {\n command = {\"/bin/cat\"}\n"

static struct config *load(const char *text, char *err, size_t len)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
	return config_load(path, err, len);
}

/* max_workers and idle_timeout: defaults, and errors naming file:line. */
static void config_keys(void)
{
	char err[1024], want[100];
	struct config *cf;
	const struct queue_conf *q;

	cf = load(BROKER QUEUE " workers = 3\n}\n", err, sizeof(err));
	q = cf ? config_queue(cf, "a") : NULL;
	CHECK(q != NULL && q->max_workers == 3 && q->idle_timeout == 60);
	config_free(cf);
	cf = load(BROKER QUEUE " workers = 2\n max_workers = 16\n"
			       " idle_timeout = 5\n}\n",
		  err, sizeof(err));
	q = cf ? config_queue(cf, "a") : NULL;
	CHECK(q != NULL && q->workers == 2 && q->max_workers == 16 &&
	      q->idle_timeout == 5);
	config_free(cf);
	snprintf(want, sizeof(want), "%s:", path);
	cf = load(BROKER QUEUE " workers = 4\n max_workers = 2\n}\n", err,
		  sizeof(err));
	CHECK(cf == NULL && strncmp(err, want, strlen(want)) == 0 &&
	      strstr(err, "max_workers = 2 is below workers = 4") != NULL);
	cf = load(BROKER QUEUE " workers = 0\n max_workers = 2\n}\n", err,
		  sizeof(err));
	CHECK(cf == NULL && strstr(err, "needs workers = 1 or more") != NULL);
	cf = load(BROKER QUEUE " max_workers = 2000\n}\n", err, sizeof(err));
	CHECK(cf == NULL && strstr(err, ":6: ") != NULL &&
	      strstr(err, "max_workers = 2000 is out of range") != NULL);
	cf = load(BROKER QUEUE " idle_timeout = 0\n}\n", err, sizeof(err));
	CHECK(cf == NULL && strstr(err, ":6: ") != NULL &&
	      strstr(err, "idle_timeout = 0 is out of range") != NULL);
}

int main(void)
{
	int fd = mkstemp(path);

	close(fd);
	config_keys();
	unlink(path);
	grows();
	holds();
	shrinks();
	return unit_done("test_elastic");
}
