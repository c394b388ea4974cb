/*
 * conf.h: warrend.conf parsed into plain structs, its drop-ins, queue topology.
 */
#ifndef WARREN_CONFIG_CONF_H
#define WARREN_CONFIG_CONF_H

#include "base/base.h"

/* control_socket's default: warrend listens there, warrenctl asks there */
#define CONTROL_SOCKET_DEFAULT "/run/warren/warrend.sock"

/* ------------------------------------------------------------------ */
/* config.c: the configuration file, parsed into plain structs */

enum queue_type { QUEUE_CLASSIC, QUEUE_QUORUM };
enum queue_mode {
	MODE_EXEC,	 /* one handler process per message */
	MODE_PERSISTENT, /* one long-lived handler per worker, framed stdin */
};

struct tls_conf {
	char *ca_cert;
	char *cert;
	char *key;
	bool verify_peer;
	bool verify_hostname;
};

struct broker_conf {
	char **urls; /* at least one */
	int nurls;
	int heartbeat;	      /* seconds, 0 = off */
	int connect_timeout;  /* seconds per node: TCP, TLS, handshake */
	int consumer_timeout; /* seconds the broker lets a delivery go unacked
			       */
	char *password_file;  /* NULL if unset */
	uint64_t secret; /* a hash of its password: a reload sees a change */
	struct tls_conf tls;
};

struct retry_conf {
	int attempts;	/* attempts in all, >= 1 */
	int delay;	/* seconds before the first retry */
	double backoff; /* multiplier per further retry */
	int max_delay;	/* cap, seconds */
};

/* queue.limits: per handler process, 0 = none */
struct limits_conf {
	int memory;    /* MiB of address space, RLIMIT_AS */
	int cpu;       /* seconds of CPU time */
	int processes; /* RLIMIT_NPROC, counted over the user */
	int files;     /* RLIMIT_NOFILE */
};

/* One of queue.arguments, typed as given at declare (topology.c). */
enum qarg_kind { QARG_INT, QARG_BOOL, QARG_STR };
struct qarg {
	char *name;
	enum qarg_kind kind;
	long long i; /* QARG_INT */
	bool b;	     /* QARG_BOOL */
	char *s;     /* QARG_STR */
};

/* A queue.bind section: the exchange and the queue's keys on it. */
struct bind_conf {
	char *exchange;
	char *type;  /* direct, topic, fanout, headers */
	char **keys; /* NULL-terminated, at least one */
	int nkeys;
};

/* queue.breaker: off unless its section is given */
struct breaker_conf {
	bool on;
	int cooldown; /* seconds the pool pauses at the first opening */
	int failures; /* failed attempts in a row that open it, 0: exit 75 only
		       */
};

struct queue_conf {
	char *name;
	char *file; /* the file that defines it: the main one or an include */
	int line;   /* where the section starts, for messages */
	int workers;
	int max_workers;  /* elastic above workers (scaler.c), else = workers */
	int idle_timeout; /* seconds an extra worker may idle before it goes */
	char **command;	  /* NULL-terminated argv */
	int ncommand;
	int prefetch;
	int timeout; /* seconds, 0 = none */
	int kill_grace;
	bool durable;
	enum queue_type type;
	struct retry_conf retry;
	bool park;
	char **environment; /* NULL-terminated "NAME=value" */
	int nenvironment;
	char *workdir;
	enum queue_mode mode;
	int max_messages; /* persistent: restart after this many, 0 = never */
	bool reply;	  /* answer messages that have reply_to (replies.c) */
	struct breaker_conf breaker;
	int max_rss;  /* persistent: restart above this many MiB, 0 = never */
	int max_age;  /* persistent: restart after this many s, 0 = never */
	int slow;     /* seconds: log a handler still running past it */
	int max_body; /* MiB: a larger message is parked unread (oversize.c) */

	/* containment (identity.c): NULL user: warrend's own */
	char *user;
	char *group;	    /* NULL: the user's primary group */
	int user_line;	    /* where user is set, for messages */
	struct identity id; /* user and group, looked up at load */
	struct limits_conf limits;

	/* topology (topology.c) */
	bool declare;	   /* false: passive check only */
	struct qarg *args; /* queue.arguments */
	int nargs;
	struct bind_conf *binds;
	int nbinds;
	int delivery_limit; /* quorum: x-delivery-limit */
};

struct config {
	char *path;
	struct broker_conf broker;
	int shutdown_timeout;
	char *control_socket; /* "" when off */
	char *metrics_listen; /* "ADDRESS:PORT", "" when off */
	struct queue_conf *queues;
	int nqueues;
};

/*
 * Parse and validate PATH. On success returns a config the caller frees
 * with config_free(). On failure returns NULL and writes "FILE:LINE: what"
 * into err.
 */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cf);
const struct queue_conf *config_queue(const struct config *cf,
				      const char *name);
/*
 * Print to out a "FILE:LINE: warning: ..." line for each setting that is
 * valid but risky (a queue timeout of 0, or not below consumer_timeout);
 * returns how many.
 */
int config_warnings(const struct config *cf, FILE *out);
/* true, with words in buf, when broker.password_file is world-readable */
bool config_password_exposed(const struct config *cf, char *buf, size_t len);
/* true when two queue configurations differ only in their worker count */
bool queue_conf_same_but_workers(const struct queue_conf *a,
				 const struct queue_conf *b);

/* ------------------------------------------------------------------ */
/* include.c: the files of `include`'s glob patterns */

#define INCLUDE_MAX_FILES 4096

/*
 * The files that the glob PATTERNS match: each pattern's matches sorted
 * by name (strcmp), the patterns in the order given, a file matched twice
 * listed once. A relative pattern is taken from the directory of BASE (the
 * including file). A pattern that matches nothing, or whose directory does
 * not exist, adds nothing. Returns a NULL-terminated list to free with
 * include_free(), or NULL with what went wrong in err (which names the
 * pattern, not the file and line: the caller knows those).
 */
char **include_expand(char *const *patterns, int npatterns, const char *base,
		      char *err, size_t errlen);
void include_free(char **files);

/* ------------------------------------------------------------------ */
/* topology.c: queue arguments, bindings and declare; pure checks */

/*
 * Parse "NAME=VALUE" (queue.arguments) into a: an integer, true/false, else
 * a string (always a string for the arguments RabbitMQ reads as strings).
 * 0, or -1 with words in err. Free with qarg_free().
 */
int qarg_parse(const char *text, struct qarg *a, char *err, size_t errlen);
/* What warrend -t can tell of a known argument's value: 0, or -1 and err. */
int qarg_check(const struct qarg *a, char *err, size_t errlen);
const struct qarg *qarg_find(const struct qarg *args, int n, const char *name);
void qarg_free(struct qarg *a);
/* direct, topic, fanout or headers */
bool exchange_type_known(const char *type);
/* A bind section's exchange name, a key: 0, or -1 with words in err. */
int exchange_name_check(const char *name, char *err, size_t errlen);
int routing_key_check(const char *key, char *err, size_t errlen);
/* true when a and b ask the same of the broker (declare, args, binds) */
bool topology_same(const struct queue_conf *a, const struct queue_conf *b);
void topology_free(struct queue_conf *q);

/* ------------------------------------------------------------------ */
/* url.c: amqp:// URLs, as rabbitmq-c 0.11 reads them, without it (pure) */

struct mq_url {
	char *buf;	      /* owns the strings below (or they are static) */
	const char *user;     /* "guest" if unset */
	const char *password; /* "guest" if unset */
	const char *host;     /* "localhost" if unset; IPv6 without [] */
	const char *vhost;    /* "/" if no path; "" for "host/" */
	int port;	      /* 5672, or 5671 for amqps:// */
	bool ssl;
};
/* 0 and u (free with mq_url_free), or -1 (u needs no free). */
int mq_url_parse(const char *url, struct mq_url *u);
void mq_url_free(struct mq_url *u);

/* 0 if URL parses as an amqp:// or amqps:// URL, else -1 and err */
int mq_url_check(const char *url, char *err, size_t errlen);
/* The URL with its password hidden, for logs; caller frees. */
char *mq_url_redacted(const char *url);
/* host:port of URL, for status and metrics; caller frees. */
char *mq_url_node(const char *url);

#endif
