/*
 * command.c: what the master tells a worker over the control socket
 * (record.c decodes it): retire, stop, pause, resume, the breaker's probe,
 * a shorter consumer_timeout, marks, the watcher's interval, and the go a
 * new worker waits for before it connects.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "worker/worker_int.h"

/* The master's word: finish and go, stop, a consumer_timeout, a mark. */
static void on_command(struct worker *w, const struct record *c)
{
	switch (c->kind) {
	case COMMAND_RETIRE:
		consume_stop(w, false);
		break;
	case COMMAND_STOP:
		consume_stop(w, true);
		break;
	case COMMAND_CONSUMER_TIMEOUT:
		if (c->u.ms < w->ct_ms) {
			w->ct_ms = c->u.ms;
			if (message_running(w))
				message_limit(w);
		}
		break;
	case COMMAND_MARK:
		record_apply_mark(&w->marks, &c->u.mark);
		break;
	case COMMAND_PAUSE:
	case COMMAND_RESUME:
		w->probing = false;
		consume_pause(w, c->kind == COMMAND_PAUSE);
		break;
	case COMMAND_PROBE:
		consume_probe(w);
		break;
	case COMMAND_WATCH:
		w->watch_ms = c->u.ms;
		w->next_watch = now_ms();
		break;
	}
}

/*
 * One command of n bytes in buf (room for one more) into c; false, said
 * once at warning (then at debug), when record.c refuses it.
 */
static bool command_of(const char *buf, ssize_t n, struct record *c)
{
	static bool said;
	char err[200];

	if (record_decode(buf, (size_t)n, RECORD_COMMAND, c, err,
			  sizeof(err)) == 0)
		return true;
	(said ? log_debug : log_warnx)("bad command from the master: %s", err);
	said = true;
	return false;
}

void command_read(struct worker *w)
{
	char buf[RECORD_MAX + 1]; /* a longer one is refused, not cut */
	struct record c;

	for (;;) {
		ssize_t n = recv(w->ctl, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == -1 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			/* the master is gone: nothing may outlive it */
			if (w->h != NULL)
				handler_free(w->h);
			w->h = NULL;
			persistent_free(w->p);
			w->p = NULL;
			log_warnx("master went away; exiting");
			mq_close(w->mq);
			exit(WORKER_EXIT_MASTER);
		}
		if (command_of(buf, n, &c))
			on_command(w, &c);
	}
}

/*
 * Before it connects, a new worker waits for the master's go: a master
 * starting a thousand workers forks them all first, instead of sharing
 * the CPU with the early ones while it forks the rest. What the master
 * says meanwhile is kept (marks, a consumer_timeout, a pause) or ends it
 * (retire, stop: nothing to finish yet).
 */
void command_wait_go(struct worker *w)
{
	char buf[RECORD_MAX + 1];
	struct record c;

	for (;;) {
		ssize_t n = recv(w->ctl, buf, sizeof(buf), 0);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			exit(WORKER_EXIT_MASTER);
		if (!command_of(buf, n, &c))
			continue;
		switch (c.kind) {
		case COMMAND_GO:
			return;
		case COMMAND_RETIRE:
		case COMMAND_STOP:
			exit(WORKER_EXIT_OK);
		case COMMAND_PAUSE:
		case COMMAND_RESUME:
			w->paused = c.kind == COMMAND_PAUSE;
			break;
		default:
			on_command(w, &c); /* marks, consumer_timeout */
			break;
		}
	}
}
