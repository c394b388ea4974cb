/*
 * worker.h: one worker process, and the records it exchanges with the master.
 */
#ifndef WARREN_WORKER_WORKER_H
#define WARREN_WORKER_WORKER_H

#include "amqp/mq.h"
#include "handler/handler.h"

/* ------------------------------------------------------------------ */
/* worker.c: one worker process */

/* Worker -> master report codes, one byte each on the control socket. */
enum report {
	REPORT_CONSUMING = 'C',
	REPORT_BUSY = 'B',
	REPORT_ACK = 'a',
	REPORT_RETRY = 'r',
	REPORT_FAILED = 'f',
	REPORT_REQUEUED = 'q',
	REPORT_DOWN = 'D',	 /* lost or could not get its connection */
	REPORT_HOLDING = 'H',	 /* + key: a message taken in hand */
	REPORT_TAKEN_BACK = 'L', /* + "MS\tKEY": the broker's consumer_timeout
				  * took it back */
	REPORT_BLOCKED = 'P',	 /* + reason: the broker blocks publishing */
	REPORT_UNBLOCKED = 'U',
	REPORT_PENDING = 'O',  /* + "KIND\tATTEMPT\tDELAY\tREASON\tKEY": an
				* outcome the lost connection kept from it */
	REPORT_PAUSED = 'Z',   /* + like C: connected, not consuming */
	REPORT_GROUP = 'G',    /* + pid: its persistent handler's process
				* group, alive across messages ("0": none) */
	REPORT_TEMPFAIL = 't', /* + like a: put back unspent (breaker) */
	REPORT_SLOW = 'S',     /* the handler in hand ran past queue.slow */
	REPORT_READY = 'N',    /* + count: the queue's ready messages */
};

/* Master -> worker commands on the control socket. */
enum command {
	COMMAND_RETIRE = 'R',		/* finish the current message, exit */
	COMMAND_STOP = 'S',		/* shutdown: shutdown_timeout applies */
	COMMAND_CONSUMER_TIMEOUT = 'T', /* + ms: the broker's, shorter */
	COMMAND_MARK = 'M',		/* + ledger_encode() text */
	COMMAND_PAUSE = 'Z',		/* stop consuming after this message */
	COMMAND_RESUME = 'G',		/* consume again */
	COMMAND_GO = 'A',		/* a new worker may connect now */
	COMMAND_PROBE = 'P', /* paused by the breaker: take one message */
	COMMAND_WATCH = 'W', /* + ms: report REPORT_READY this often, 0: stop */
};

/* Worker exit statuses, telling the master why. */
enum worker_exit {
	WORKER_EXIT_OK = 0,	     /* retired or stopped */
	WORKER_EXIT_FATAL = 1,	     /* unexpected error */
	WORKER_EXIT_CONNECT = 10,    /* could not connect / lost it */
	WORKER_EXIT_LOGIN = 11,	     /* refused login */
	WORKER_EXIT_DECLARE = 12,    /* could not declare or consume */
	WORKER_EXIT_HANDLER = 13,    /* handler could not start */
	WORKER_EXIT_MASTER = 14,     /* master went away */
	WORKER_EXIT_TAKEN_BACK = 15, /* the broker's consumer_timeout hit */
	WORKER_EXIT_HOME = 16,	     /* its own node is back: respawn now */
};

#define HOME_PROBE_MS 5000 /* a worker on a fallback node looks home */

/* What a new worker starts from. */
struct worker_start {
	const struct config *cf;
	const struct queue_conf *q;
	int number;
	int ctl;		    /* its end of the control socket */
	const struct ledger *marks; /* the pool's, copied */
	int consumer_timeout_ms;    /* the broker's once proven shorter */
	int home_moves;		    /* moves home that did not stay there */
	bool paused;		    /* its queue is paused: do not consume */
};

/* Runs in the forked child; never returns. */
void worker_main(const struct worker_start *ws) __attribute__((noreturn));
const char *worker_exit_reason(int status);

#endif
