/*
 * worker.h: one worker process, and the records it exchanges with the master.
 */
#ifndef WARREN_WORKER_WORKER_H
#define WARREN_WORKER_WORKER_H

#include "amqp/mq.h"
#include "handler/handler.h"

/* ------------------------------------------------------------------ */
/* worker.c: one worker process */

/* Worker -> master reports: a record's kind byte (record.c, below). */
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

/* Master -> worker commands: a record's kind byte (record.c, below). */
enum command {
	COMMAND_RETIRE = 'R',		/* finish the current message, exit */
	COMMAND_STOP = 'S',		/* shutdown: shutdown_timeout applies */
	COMMAND_CONSUMER_TIMEOUT = 'T', /* + ms: the broker's, shorter */
	COMMAND_MARK = 'M',		/* + a mark of the ledger */
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

/* ------------------------------------------------------------------ */
/* record.c: every record between the master and a worker, typed, and
 * its one encoder and decoder (pure)
 *
 * Framing: the control socket is a SOCK_SEQPACKET pair, one record per
 * send. A record is its kind byte (enum report, worker -> master, or enum
 * command, master -> worker), then its fields as text separated by tabs:
 * numbers in decimal (no sign but a leading '-' where -1 is allowed, no
 * leading zero); text with no NUL, and no tab, CR or LF except in the
 * last field, which runs to the record's end. RECORD_MAX bounds it all. */

#define RECORD_MAX 1024	    /* bytes of one record, its kind byte included */
#define RECORD_KEY_MAX 512  /* a delivery_key(), its NUL included */
#define RECORD_TEXT_MAX 700 /* a DOWN or BLOCKED text, its NUL included */
#define RECORD_COUNT_MAX 1000000 /* deaths, takings back, attempts */

enum record_dir {
	RECORD_REPORT,	/* worker -> master: kind is an enum report */
	RECORD_COMMAND, /* master -> worker: kind is an enum command */
};

/* COMMAND_MARK: one mark of the ledger (ledger_record, ledger_apply). */
struct record_mark {
	int deaths, lost, pending, attempt, delay;
	char reason[64];
	char key[RECORD_KEY_MAX];
};

struct record {
	enum record_dir dir;
	char kind;
	union {
		struct {
			bool home; /* "home" or "away" */
			int node;  /* its index in broker.url */
		} consuming;	   /* REPORT_CONSUMING, REPORT_PAUSED */
		struct {
			int64_t ran_ms;	 /* -1: the handler did not run */
			int64_t cpu_ms;	 /* -1: unknown */
			int64_t wait_ms; /* from its timestamp, -1: unknown */
		} outcome; /* ACK, RETRY, FAILED, REQUEUED, TEMPFAIL */
		int pid;   /* REPORT_BUSY (> 0), REPORT_GROUP (0: none) */
		char key[RECORD_KEY_MAX];   /* REPORT_HOLDING */
		char text[RECORD_TEXT_MAX]; /* REPORT_DOWN, REPORT_BLOCKED */
		struct {
			int ms; /* the broker's consumer_timeout, 0: unsaid */
			char key[RECORD_KEY_MAX]; /* "": none in hand */
		} taken_back;			  /* REPORT_TAKEN_BACK */
		struct {
			int outcome; /* enum outcome_kind */
			int attempt, delay;
			char reason[64];
			char key[RECORD_KEY_MAX];
		} pending;     /* REPORT_PENDING */
		int64_t ready; /* REPORT_READY: ready messages */
		int ms;	       /* COMMAND_CONSUMER_TIMEOUT (> 0), WATCH */
		struct record_mark mark; /* COMMAND_MARK */
	} u;
};

/* r zeroed, of kind in direction dir. */
void record_init(struct record *r, enum record_dir dir, char kind);
/* r into buf (len bytes): its length, at most RECORD_MAX, or -1 with
 * why in err when r is not a record that decodes (unknown kind, a number
 * out of range, a field too long or holding a byte it may not). */
int record_encode(const struct record *r, char *buf, size_t len, char *err,
		  size_t errlen);
/* The n bytes of buf as a record of direction dir into r: 0, or -1 with
 * why in err (empty, too long, unknown kind, a field missing, extra or
 * malformed). Reads buf[0..n) only; buf need not end in a NUL. */
int record_decode(const void *buf, size_t n, enum record_dir dir,
		  struct record *r, char *err, size_t errlen);
/* Whether a and b are the same record (kind and every field of it). */
bool record_equal(const struct record *a, const struct record *b);
/* "consuming", "mark"...: the kind's name, for logs; "?" if unknown. */
const char *record_name(enum record_dir dir, char kind);
/* A mark of the ledger as a COMMAND_MARK record; -1 if its key is too
 * long for one. */
int record_of_mark(const struct mark *k, struct record *r);
/* A COMMAND_MARK's mark into l: one with no deaths, nothing lost and
 * nothing pending forgets its key. */
void record_apply_mark(struct ledger *l, const struct record_mark *m);

#endif
