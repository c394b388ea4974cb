/*
 * bench/ack_consumer.c: the bare consumer that bench/throughput measures
 * warrend against: it only acks. Its rate is what the broker allows one
 * prefetch-1 consumer, the ceiling for any supervisor.
 *
 *     cc -O2 -Wall -Wextra -o ack_consumer bench/ack_consumer.c -lrabbitmq
 *     ack_consumer -u URL -q QUEUE [-n COUNT] [-k CONSUMERS] [-p PREFETCH] [-s]
 *
 * Each of the CONSUMERS processes (default 1) opens its own connection,
 * sets basic.qos(PREFETCH) (default 1), consumes QUEUE and acks every
 * message as it arrives. With -n, the run ends once COUNT messages in all
 * have been acked: the process that acks the last one exits, the others
 * are stopped, and ack_consumer exits 0. Without -n it runs until a
 * signal. Any broker error ends it with status 1 and the reason. With -s,
 * each consumer writes "consuming" on stdout once basic.consume is
 * confirmed (the start-up anchor of bench/throughput).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#define CHANNEL 1

static const char *progname = "ack_consumer";
static int say_consuming;

static void die(const char *fmt, const char *what)
{
	fprintf(stderr, "%s: ", progname);
	fprintf(stderr, fmt, what);
	fputc('\n', stderr);
	exit(1);
}

/* Exits with the broker's words unless the reply is a normal one. */
static void check_reply(amqp_rpc_reply_t r, const char *what)
{
	char buf[512];

	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return;
	case AMQP_RESPONSE_NONE:
		snprintf(buf, sizeof(buf), "%s: missing RPC reply", what);
		break;
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		snprintf(buf, sizeof(buf), "%s: %s", what,
			 amqp_error_string2(r.library_error));
		break;
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD ||
		    r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
			/* both close methods begin with code and text */
			amqp_connection_close_t *c = r.reply.decoded;

			snprintf(buf, sizeof(buf),
				 "%s: broker closed the %s: %u %.*s", what,
				 r.reply.id == AMQP_CONNECTION_CLOSE_METHOD
				     ? "connection"
				     : "channel",
				 c->reply_code, (int)c->reply_text.len,
				 (const char *)c->reply_text.bytes);
		} else {
			snprintf(buf, sizeof(buf), "%s: broker method 0x%08x",
				 what, r.reply.id);
		}
		break;
	default:
		snprintf(buf, sizeof(buf), "%s: reply type %d", what,
			 (int)r.reply_type);
	}
	die("%s", buf);
}

static void check_status(int status, const char *what)
{
	char buf[256];

	if (status == AMQP_STATUS_OK)
		return;
	snprintf(buf, sizeof(buf), "%s: %s", what, amqp_error_string2(status));
	die("%s", buf);
}

static amqp_connection_state_t connect_to(char *url, const char *queue,
					  int prefetch)
{
	struct amqp_connection_info ci;
	amqp_connection_state_t conn;
	amqp_socket_t *sock;
	const char *vhost;

	if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK)
		die("bad URL %s", url);
	/* amqp_parse_url reads ".../" as vhost ""; the default one is "/" */
	vhost = ci.vhost[0] != '\0' ? ci.vhost : "/";
	conn = amqp_new_connection();
	if ((sock = amqp_tcp_socket_new(conn)) == NULL)
		die("%s", "cannot create a socket");
	check_status(amqp_socket_open(sock, ci.host, ci.port), "connect");
	check_reply(amqp_login(conn, vhost, 0, 131072, 0,
			       AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
		    "login");
	amqp_channel_open(conn, CHANNEL);
	check_reply(amqp_get_rpc_reply(conn), "channel.open");
	amqp_basic_qos(conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	check_reply(amqp_get_rpc_reply(conn), "basic.qos");
	amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(queue),
			   amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
	check_reply(amqp_get_rpc_reply(conn), "basic.consume");
	return conn;
}

/* One consumer: ack until `total` acks in all (0: forever), then exit 0. */
static void consume(char *url, const char *queue, int prefetch, long total,
		    atomic_long *acked)
{
	amqp_connection_state_t conn = connect_to(url, queue, prefetch);

	if (say_consuming && write(1, "consuming\n", 10) != 10)
		die("%s", "stdout: cannot write");
	for (;;) {
		amqp_envelope_t env;
		amqp_rpc_reply_t r;

		amqp_maybe_release_buffers(conn);
		r = amqp_consume_message(conn, &env, NULL, 0);
		check_reply(r, "basic.deliver");
		/* the ack is on the socket when basic_ack returns */
		if (amqp_basic_ack(conn, CHANNEL, env.delivery_tag, 0) != 0)
			die("%s", "basic.ack: cannot send");
		amqp_destroy_envelope(&env);
		if (total > 0 && atomic_fetch_add(acked, 1) + 1 >= total)
			_exit(0); /* the others are stopped by the parent */
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s -u URL -q QUEUE [-n COUNT] [-k CONSUMERS] "
		"[-p PREFETCH]\n",
		progname);
	exit(64);
}

static long number(const char *s, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v < min)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	char *url = NULL, *queue = NULL;
	long total = 0, k = 1, prefetch = 1, left;
	atomic_long *acked;
	pid_t *pids;
	int c, status, failed = 0, stopping = 0;

	while ((c = getopt(argc, argv, "u:q:n:k:p:s")) != -1) {
		switch (c) {
		case 'u':
			url = optarg;
			break;
		case 'q':
			queue = optarg;
			break;
		case 'n':
			total = number(optarg, 1);
			break;
		case 'k':
			k = number(optarg, 1);
			break;
		case 'p':
			prefetch = number(optarg, 1);
			break;
		case 's':
			say_consuming = 1;
			break;
		default:
			usage();
		}
	}
	if (url == NULL || queue == NULL || optind != argc || prefetch > 65535)
		usage();
	acked = mmap(NULL, sizeof(*acked), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (acked == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	atomic_init(acked, 0);
	if ((pids = calloc((size_t)k, sizeof(*pids))) == NULL)
		die("%s", "out of memory");
	for (long i = 0; i < k; i++) {
		if ((pids[i] = fork()) == -1)
			die("fork: %s", strerror(errno));
		if (pids[i] == 0) {
			/* a parent killed by a signal takes us along */
			prctl(PR_SET_PDEATHSIG, SIGTERM);
			if (getppid() == 1)
				_exit(1);
			progname = "ack_consumer (child)";
			consume(url, queue, (int)prefetch, total, acked);
		}
	}
	/* the first to finish ends the run: done, or an error */
	for (left = k; left > 0; left--) {
		pid_t pid = wait(&status);

		if (pid == -1)
			die("wait: %s", strerror(errno));
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
		    !(stopping && WIFSIGNALED(status) &&
		      WTERMSIG(status) == SIGTERM))
			failed = 1;
		for (long i = 0; i < k; i++) {
			if (pids[i] == pid)
				pids[i] = 0;
			else if (pids[i] > 0 && !stopping)
				kill(pids[i], SIGTERM);
		}
		stopping = 1;
	}
	return failed || atomic_load(acked) < total ? 1 : 0;
}
