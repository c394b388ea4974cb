/* test_env.c: the handler's environment and header names, from data. */
#include "config.h"

#include <stdlib.h>

#include "handler/handler_int.h"
#include "unit.h"

static const char *get(char **env, const char *name)
{
	size_t n = strlen(name);

	for (char **p = env; *p != NULL; p++)
		if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
			return *p + n + 1;
	return NULL;
}

static int count(char **env)
{
	int n = 0;

	while (env[n] != NULL)
		n++;
	return n;
}

/* delivery_key: one message across redeliveries, two when bodies differ */
static void test_key(void)
{
	struct delivery a = {.message_id = "job:7",
			     .routing_key = "q",
			     .body = "one",
			     .body_len = 3};
	struct delivery b = a, c = a;
	char *ka, *kb, *kc, *id;

	b.body = "two";
	c.message_id = NULL;
	ka = delivery_key(&a);
	kb = delivery_key(&b);
	kc = delivery_key(&c);
	CHECK(strncmp(ka, "id:job:7:", 9) == 0 && strlen(ka) == 9 + 16);
	CHECK(strcmp(ka, kb) != 0); /* same id, other body: other marks */
	CHECK(strncmp(kc, "sum:", 4) == 0);
	CHECK_STR(ka + 9, kc + 4); /* the same digest either way */
	free(kb);
	kb = delivery_key(&a);
	CHECK_STR(ka, kb); /* a redelivery: the same key */
	id = delivery_key_id(ka);
	CHECK_STR(id, "job:7");
	free(id);
	CHECK(delivery_key_id(kc) == NULL);
	CHECK(delivery_key_id("id:short") == NULL);
	free(ka);
	free(kb);
	free(kc);
}

int main(void)
{
	char *qenv[] = {"LANG=C.UTF-8", "PATH=/opt/bin:/usr/bin", NULL};
	char *cmd[] = {"/bin/true", NULL};
	struct queue_conf q = {0};
	struct header h[] = {
	    {"x-trace-id", "abc", 3, false},
	    {"Content-Length!", "12", 2, true},
	    {"evil", "$(touch /tmp/x); rm -rf /", 25, false},
	    {"nul", "a\0b", 3, false},
	};
	struct delivery d = {0};
	char **env, *n;

	n = env_name_of_header("x-trace-id");
	CHECK_STR(n, "WARREN_HEADER_X_TRACE_ID");
	free(n);
	n = env_name_of_header("a.b c/9é");
	CHECK_STR(n, "WARREN_HEADER_A_B_C_9__"); /* é is two bytes */
	free(n);
	n = env_name_of_header("");
	CHECK_STR(n, "WARREN_HEADER_");
	free(n);

	q.name = "task_queue";
	q.command = cmd;
	q.environment = qenv;
	q.nenvironment = 2;
	d.redelivered = true;
	d.message_id = "m-1";
	d.routing_key = "task_queue";
	d.exchange = "";
	d.timestamp = "1700000000";
	d.headers = h;
	d.nheaders = 4;

	env = handler_env(&q, 3, 2, &d);
	CHECK_STR(get(env, "PATH"), "/opt/bin:/usr/bin"); /* configured */
	CHECK_STR(get(env, "LANG"), "C.UTF-8");
	CHECK_STR(get(env, "WARREN_QUEUE"), "task_queue");
	CHECK_STR(get(env, "WARREN_WORKER"), "3");
	CHECK_STR(get(env, "WARREN_ATTEMPT"), "2");
	CHECK_STR(get(env, "WARREN_REDELIVERED"), "1");
	CHECK_STR(get(env, "WARREN_MESSAGE_ID"), "m-1");
	CHECK_STR(get(env, "WARREN_ROUTING_KEY"), "task_queue");
	CHECK_STR(get(env, "WARREN_EXCHANGE"), "");
	CHECK_STR(get(env, "WARREN_TIMESTAMP"), "1700000000");
	CHECK_STR(get(env, "WARREN_HEADER_X_TRACE_ID"), "abc");
	CHECK_STR(get(env, "WARREN_HEADER_CONTENT_LENGTH_"), "12");
	CHECK_STR(get(env, "WARREN_HEADER_EVIL"), "$(touch /tmp/x); rm -rf /");
	CHECK(get(env, "WARREN_HEADER_NUL") == NULL);	  /* NUL: left out */
	CHECK(get(env, "WARREN_CORRELATION_ID") == NULL); /* unset */
	CHECK(get(env, "HOME") == NULL);
	/* PATH, LANG, 6 WARREN_ basics (queue, worker, attempt, redelivered,
	 * message id, routing key), exchange, timestamp, 3 headers */
	CHECK(count(env) == 2 + 6 + 2 + 3);
	env_free(env);

	/* without configured PATH, the default one */
	q.environment = (char *[]){NULL};
	q.nenvironment = 0;
	d.nheaders = 0;
	d.redelivered = false;
	env = handler_env(&q, 1, 1, &d);
	CHECK_STR(get(env, "PATH"), "/usr/local/bin:/usr/bin:/bin");
	CHECK_STR(get(env, "WARREN_REDELIVERED"), "0");
	env_free(env);

	/* a header cannot shadow warren's own variables */
	struct header sneaky[] = {{"queue", "x", 1, false}};
	d.headers = sneaky;
	d.nheaders = 1;
	env = handler_env(&q, 1, 1, &d);
	CHECK_STR(get(env, "WARREN_QUEUE"), "task_queue");
	CHECK_STR(get(env, "WARREN_HEADER_QUEUE"), "x");
	env_free(env);

	/* a value execve would refuse is left out, the rest stays */
	{
		static char big[ENV_ENTRY_MAX];
		struct header large[] = {{"big", big, sizeof(big) - 10, false},
					 {"ok", "y", 1, false},
					 {"", "empty name", 10, false}};

		memset(big, 'a', sizeof(big));
		d.headers = large;
		d.nheaders = 3;
		CHECK(env_too_large(&d) == 1);
		env = handler_env(&q, 1, 1, &d);
		CHECK(get(env, "WARREN_HEADER_BIG") == NULL);
		CHECK_STR(get(env, "WARREN_HEADER_OK"), "y");
		CHECK(get(env, "WARREN_HEADER_") == NULL);
		env_free(env);
		large[0].len = 100;
		CHECK(env_too_large(&d) == 0);
	}

	/* delivery_header */
	d.headers = h;
	d.nheaders = 4;
	CHECK(delivery_header(&d, "x-trace-id") == &h[0]);
	CHECK(delivery_header(&d, "missing") == NULL);
	test_key();
	return unit_done("test_env");
}
