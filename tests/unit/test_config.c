/*
 * test_config.c: the configuration schema: defaults, every key, and
 * errors that name file and line.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "config/conf.h"
#include "unit.h"

static char path[] = "/tmp/warren-unit-XXXXXX";

static struct config *load(const char *text, char *err, size_t len)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
	return config_load(path, err, len);
}

/* The error names this file and this line. */
static void check_error(const char *text, int line, const char *what)
{
	char err[1024], want[600];
	struct config *cf = load(text, err, sizeof(err));

	CHECK(cf == NULL);
	config_free(cf);
	snprintf(want, sizeof(want), "%s:%d: ", path, line);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	CHECK(strstr(err, what) != NULL);
	if (strncmp(err, want, strlen(want)) != 0 || !strstr(err, what))
		fprintf(stderr, "  got: %s\n  want: %s...%s\n", err, want,
			what);
}

#define BROKER "broker {\n url = \"amqp://u:p@localhost/\"\n}\n"

/* queue.reply and queue.breaker: defaults, values, ranges, reloads */
static void check_reply_breaker(void)
{
	char err[1024];
	struct config *cf;
	const struct queue_conf *q;

	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n"
			 "queue \"b\" {\n command = {\"/bin/cat\"}\n"
			 " reply = true\n breaker {\n }\n}\n"
			 "queue \"c\" {\n command = {\"/bin/cat\"}\n"
			 " breaker { cooldown = 5  failures = 3 }\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL);
	if (cf == NULL) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	q = config_queue(cf, "a");
	CHECK(!q->reply && !q->breaker.on);
	q = config_queue(cf, "b");
	CHECK(q->reply && q->breaker.on);
	CHECK(q->breaker.cooldown == 30 && q->breaker.failures == 0);
	q = config_queue(cf, "c");
	CHECK(!q->reply && q->breaker.on);
	CHECK(q->breaker.cooldown == 5 && q->breaker.failures == 3);
	{
		/* a change to either rolls the workers */
		struct queue_conf c = *config_queue(cf, "c");

		CHECK(queue_conf_same_but_workers(&c, config_queue(cf, "c")));
		c.breaker.failures = 4;
		CHECK(!queue_conf_same_but_workers(&c, config_queue(cf, "c")));
		c = *config_queue(cf, "c");
		c.reply = true;
		CHECK(!queue_conf_same_but_workers(&c, config_queue(cf, "c")));
	}
	config_free(cf);
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " breaker {\n  cooldown = 0\n }\n}\n",
		    7, "cooldown = 0 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " breaker {\n  failures = -1\n }\n}\n",
		    7, "failures = -1 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " breaker {\n  timeout = 3\n }\n}\n",
		    7, "timeout");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " reply = \"yes please\"\n}\n",
		    6, "reply");
}

int main(void)
{
	char err[1024];
	struct config *cf;
	const struct queue_conf *q;
	int fd = mkstemp(path);

	close(fd);

	/* defaults */
	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n", err,
		  sizeof(err));
	CHECK(cf != NULL);
	if (cf == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	CHECK(cf->broker.nurls == 1);
	CHECK(cf->broker.heartbeat == 30);
	CHECK(cf->broker.password_file == NULL);
	CHECK(cf->broker.tls.verify_peer && cf->broker.tls.verify_hostname);
	CHECK(cf->shutdown_timeout == 30);
	CHECK(cf->nqueues == 1);
	q = config_queue(cf, "a");
	CHECK(q != NULL && q->workers == 1 && q->prefetch == 1);
	CHECK(q->timeout == 0 && q->kill_grace == 5 && q->durable);
	CHECK(q->type == QUEUE_CLASSIC && q->park);
	CHECK(q->retry.attempts == 5 && q->retry.delay == 10);
	CHECK(q->retry.backoff == 2.0 && q->retry.max_delay == 3600);
	CHECK(q->nenvironment == 0 && q->environment[0] == NULL);
	CHECK_STR(q->workdir, "/");
	CHECK(q->mode == MODE_EXEC && q->max_messages == 0);
	CHECK_STR(q->command[0], "/bin/cat");
	CHECK(q->command[1] == NULL);
	CHECK(config_queue(cf, "b") == NULL);
	config_free(cf);

	/* every key set */
	cf = load("broker {\n"
		  " url = {\"amqp://a/\", \"amqps://b:5671/v\"}\n"
		  " heartbeat = 0\n password_file = \"/etc/pw\"\n"
		  " tls {\n  ca_cert = \"/ca\"\n  verify_peer = false\n }\n"
		  "}\nshutdown_timeout = 7\n"
		  "queue \"a\" {\n workers = 4\n"
		  " command = {\"/usr/bin/x\", \"--v\"}\n prefetch = 3\n"
		  " timeout = 9\n kill_grace = 2\n durable = true\n"
		  " type = \"quorum\"\n"
		  " retry {\n  attempts = 3\n  delay = 1\n  backoff = 1.5\n"
		  "  max_delay = 60\n }\n park = false\n"
		  " environment = {\"A=1\", \"B=x=y\"}\n workdir = \"/srv\"\n"
		  " mode = \"persistent\"\n max_messages = 100\n"
		  " max_rss = 512\n max_age = 3600\n slow = 30\n"
		  " max_body = 16\n"
		  "}\nqueue \"b\" {\n command = {\"/bin/true\"}\n"
		  " durable = false\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL);
	if (cf == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	CHECK(cf->broker.nurls == 2 && cf->broker.heartbeat == 0);
	CHECK_STR(cf->broker.password_file, "/etc/pw");
	CHECK_STR(cf->broker.tls.ca_cert, "/ca");
	CHECK(!cf->broker.tls.verify_peer && cf->broker.tls.verify_hostname);
	CHECK(cf->shutdown_timeout == 7 && cf->nqueues == 2);
	q = config_queue(cf, "a");
	CHECK(q->workers == 4 && q->ncommand == 2 && q->prefetch == 3);
	CHECK(q->timeout == 9 && q->kill_grace == 2 && q->durable);
	CHECK(!config_queue(cf, "b")->durable);
	CHECK(q->type == QUEUE_QUORUM && !q->park);
	CHECK(q->retry.attempts == 3 && q->retry.delay == 1);
	CHECK(q->retry.backoff == 1.5 && q->retry.max_delay == 60);
	CHECK(q->nenvironment == 2);
	CHECK_STR(q->environment[1], "B=x=y");
	CHECK_STR(q->workdir, "/srv");
	CHECK(q->mode == MODE_PERSISTENT && q->max_messages == 100);
	CHECK(q->max_rss == 512 && q->max_age == 3600 && q->slow == 30);
	CHECK(config_queue(cf, "b")->max_rss == 0);
	CHECK(config_queue(cf, "b")->max_age == 0);
	CHECK(config_queue(cf, "b")->slow == 0);
	CHECK(q->max_body == 16 && config_queue(cf, "b")->max_body == 512);
	CHECK(config_queue(cf, "b")->mode == MODE_EXEC);
	CHECK(!queue_conf_same_but_workers(q, config_queue(cf, "b")));
	CHECK(queue_conf_same_but_workers(q, q));
	{
		/* a changed mode or max_messages rolls the workers */
		struct queue_conf c = *q;

		c.workers = 9;
		CHECK(queue_conf_same_but_workers(q, &c));
		c.mode = MODE_EXEC;
		CHECK(!queue_conf_same_but_workers(q, &c));
		c.mode = q->mode;
		c.max_messages = 3;
		CHECK(!queue_conf_same_but_workers(q, &c));
		c.max_messages = q->max_messages;
		c.max_age = 7;
		CHECK(!queue_conf_same_but_workers(q, &c));
		c.max_age = q->max_age;
		c.slow = 1;
		CHECK(!queue_conf_same_but_workers(q, &c));
		c.slow = q->slow;
		c.max_body = 1;
		CHECK(!queue_conf_same_but_workers(q, &c));
	}
	config_free(cf);

	/* max_messages outside persistent mode: valid, but said */
	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			 " timeout = 5\n max_messages = 3\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL);
	if (cf != NULL) {
		FILE *out = fopen("/dev/null", "w");

		CHECK(config_warnings(cf, out) == 1);
		fclose(out);
	}
	config_free(cf);

	/* a single string is a one-element list */
	cf = load("broker {\n url = \"amqp://a/\"\n}\n"
		  "queue \"a\" {\n command = \"/bin/cat\"\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL && cf->queues[0].ncommand == 1);
	config_free(cf);

	/* errors, each with its line */
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " bogus = 1\n}\n",
		    6, "bogus");
	check_error(BROKER "queue \"a\" {\n workers = \"many\"\n"
			   " command = {\"/bin/cat\"}\n}\n",
		    5, "workers");
	check_error(BROKER "queue \"a\" {\n workers = 2\n}\n", 6,
		    "command is required");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n"
			   "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n",
		    7, "duplicate");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " workers = -1\n}\n",
		    6, "out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " prefetch = 0\n}\n",
		    6, "out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " type = \"stream\"\n}\n",
		    6, "quorum");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " retry {\n  backoff = 0.5\n }\n}\n",
		    7, "backoff");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " retry {\n  attempts = 0\n }\n}\n",
		    7, "attempts");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " environment = {\"NOEQUALS\"}\n}\n",
		    6, "NAME=value");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " environment = {\"WARREN_QUEUE=x\"}\n}\n",
		    6, "reserved");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " mode = \"fastcgi\"\n}\n",
		    6,
		    "mode = \"fastcgi\": must be \"exec\" or \"persistent\"");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " mode = 1\n}\n",
		    6, "mode");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " mode = \"persistent\"\n max_messages = -1\n}\n",
		    7, "max_messages = -1 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " max_messages = \"many\"\n}\n",
		    6, "max_messages");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " mode = \"persistent\"\n max_rss = -5\n}\n",
		    7, "max_rss = -5 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " max_age = -1\n}\n",
		    6, "max_age = -1 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " slow = -2\n}\n",
		    6, "slow = -2 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " max_body = 0\n}\n",
		    6, "max_body = 0 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " max_body = 1048577\n}\n",
		    6, "max_body = 1048577 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " workdir = \"tmp\"\n}\n",
		    6, "absolute");
	check_error(BROKER "queue \"a\" {\n command = {\"cat\"}\n}\n", 5,
		    "path");
	check_error("broker {\n url = \"http://x/\"\n}\n"
		    "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n",
		    2, "url");
	check_error("broker {\n heartbeat = 5\n}\n"
		    "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n",
		    3, "url is required");
	check_error(BROKER, 3, "queue");
	check_error("queue \"a\" {\n command = {\"/bin/cat\"}\n}\n", 3,
		    "broker");
	check_error(BROKER "shutdown_timeout = 1.5\n"
			   "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n",
		    4, "shutdown_timeout");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n}\n",
		    7, "brace");

	/* comments of every kind, counted once each, also inside lists
	 * (libconfuse 3.3 alone gets both wrong) */
	check_error("# one\n// two\n/* three\n four */\n" BROKER
		    "queue \"a\" { # q\n command = {\"/bin/cat\", # prog\n"
		    "  \"-u\" // flag\n }\n workers = -1\n}\n",
		    12, "out of range");
	cf = load(BROKER
		  "queue \"a\" {\n command = {\"/bin/x#y\", # c\n"
		  " \"a//b\", '/*c*/'}\n environment = {\"U=amqp://h/\"}\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL);
	if (cf != NULL) {
		CHECK_STR(cf->queues[0].command[0], "/bin/x#y");
		CHECK_STR(cf->queues[0].command[1], "a//b");
		CHECK_STR(cf->queues[0].command[2], "/*c*/");
		CHECK_STR(cf->queues[0].environment[0], "U=amqp://h/");
	} else {
		fprintf(stderr, "%s\n", err);
	}
	config_free(cf);

	/* values the broker would refuse at every declare */
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " type = \"quorum\"\n durable = false\n}\n",
		    8, "always durable");
	check_error(BROKER "queue \"amq.x\" {\n command = {\"/bin/cat\"}\n}\n",
		    6, "reserved");
	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n"
			 "queue \"a.failed\" {\n command = {\"/bin/cat\"}\n}\n",
		  err, sizeof(err));
	CHECK(cf == NULL && strstr(err, "where warren puts") != NULL);
	config_free(cf);
	cf = load(BROKER
		  "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n"
		  "queue \"a.retry.10s\" {\n command = {\"/bin/cat\"}\n}\n",
		  err, sizeof(err));
	CHECK(cf == NULL && strstr(err, "where warren puts") != NULL);
	config_free(cf);
	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n"
			 "queue \"a.retry\" {\n command = {\"/bin/cat\"}\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL); /* not a name warren uses */
	config_free(cf);
	check_error("broker {\n url = \"amqps://h/\"\n tls {\n  cert = \"/c\"\n"
		    " }\n}\nqueue \"a\" {\n command = {\"/bin/cat\"}\n}\n",
		    6, "cert and key");
	/* a comment right after a closing quote */
	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"// c\n"
			 " , \"-u\"}\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL && cf->queues[0].ncommand == 2);
	if (cf == NULL)
		fprintf(stderr, "%s\n", err);
	config_free(cf);

	/* what fuzzing found (tests/fuzz/fuzz_config.c): every error names
	 * a line of the file, and no text is dropped without a word */
	{
		static const char nul[] = BROKER "queue \"a\0\" {\n}\n";
		char want[600];
		FILE *f = fopen(path, "w");

		fwrite(nul, 1, sizeof(nul) - 1, f);
		fclose(f);
		cf = config_load(path, err, sizeof(err));
		snprintf(want, sizeof(want), "%s:4: a NUL byte", path);
		CHECK(cf == NULL && strncmp(err, want, strlen(want)) == 0);
		config_free(cf);
	}
	check_error(BROKER "\n\"\" = 1\n", 5, "cannot parse");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n}\n"
			   "queue \"b {\n workers = 1\n}\n",
		    7, "unterminated string");
	check_error(BROKER "queue \"a\" {\n command = \"/bin/cat\"\n"
			   " environment = {'A=1\n}\n",
		    6, "unterminated string");
	check_error(BROKER "*// c\n+/* c */\nqueue \"a\" {\n"
			   " command = {\"/bin/cat\"}\n workers = -1\n}\n",
		    8, "out of range");
	check_error("broker {\n url = \"amqp://u:p@localhost/\"\n}", 3,
		    "queue section is required");

	/* queue.user, queue.group, queue.limits */
	cf = load(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			 " user = \"nobody\"\n group = \"root\"\n"
			 " limits {\n  memory = 256\n  cpu = 2\n"
			 "  processes = 64\n  files = 100\n }\n}\n"
			 "queue \"b\" {\n command = {\"/bin/cat\"}\n}\n",
		  err, sizeof(err));
	CHECK(cf != NULL);
	if (cf != NULL) {
		const struct queue_conf *b;

		q = config_queue(cf, "a");
		b = config_queue(cf, "b");
		CHECK_STR(q->user, "nobody");
		CHECK_STR(q->group, "root");
		CHECK(q->user_line == 6);
		CHECK(q->id.set && q->id.uid == 65534 && q->id.gid == 0);
		CHECK(q->id.ngroups >= 1 && q->id.groups[0] == 0);
		CHECK(q->limits.memory == 256 && q->limits.cpu == 2);
		CHECK(q->limits.processes == 64 && q->limits.files == 100);
		CHECK(b->user == NULL && b->group == NULL && !b->id.set);
		CHECK(b->limits.memory == 0 && b->limits.cpu == 0);
		CHECK(b->limits.processes == 0 && b->limits.files == 0);
		CHECK(!queue_conf_same_but_workers(q, b));
	} else {
		fprintf(stderr, "%s\n", err);
	}
	config_free(cf);
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " user = \"no-such-user-x\"\n}\n",
		    6, "user = \"no-such-user-x\": no such user");
	check_error(BROKER
		    "queue \"a\" {\n command = {\"/bin/cat\"}\n"
		    " user = \"nobody\"\n group = \"no-such-group-x\"\n}\n",
		    7, "no such group");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " group = \"root\"\n}\n",
		    7, "group needs user");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " limits {\n  memory = 8\n }\n}\n",
		    7, "memory = 8 is out of range (0 for none, or 16 to");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " limits {\n  cpu = -1\n }\n}\n",
		    7, "cpu = -1 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " limits {\n  files = 2\n }\n}\n",
		    7, "files = 2 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " limits {\n  processes = 5000000\n }\n}\n",
		    7, "processes = 5000000 is out of range");
	check_error(BROKER "queue \"a\" {\n command = {\"/bin/cat\"}\n"
			   " limits {\n  stack = 1\n }\n}\n",
		    7, "stack");

	/* a missing file */
	cf = config_load("/nonexistent/warrend.conf", err, sizeof(err));
	CHECK(cf == NULL);
	CHECK(strstr(err, "/nonexistent/warrend.conf:") == err);
	check_reply_breaker();
	unlink(path);
	return unit_done("test_config");
}
