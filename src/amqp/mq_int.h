/* mq_int.h: what the files of src/amqp/ share; included only there. */
#ifndef WARREN_MQ_INT_H
#define WARREN_MQ_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <amqp.h>

#include "model/model.h"
#include "mq.h"

#define CHANNEL 1     /* consuming: basic.consume, ack, nack */
#define PUB_CHANNEL 2 /* publishing: side queues and copies, confirmed */
#define RPC_TIMEOUT_S 30
#define CLOSE_TIMEOUT_S 2 /* a graceful close of a sound connection */
#define SEND_MIN_S 30	  /* a publish may take this long, or 1 s per MiB */
#define MAX_DEPTH 64	  /* nesting of header tables shown to handlers */

struct pending {
	struct delivery *d;
	struct pending *next;
};

/* A delivery's own copy of its properties and body, for republishing. */
struct kept {
	amqp_pool_t pool;
	amqp_basic_properties_t props;
	void *body;
	size_t over;	  /* announced size over max_body (oversize.c) */
	size_t mapped;	  /* body is a spool mapping this long, not malloc'd */
	int spool;	  /* the spool file while it is written, or -1 */
	char unkept[160]; /* why an oversize body was dropped, or "" */
};

/* Publisher confirms on one channel: which sequence numbers are answered. */
struct mq_track {
	uint64_t published;	 /* publish sequence numbers handed out */
	uint64_t confirmed;	 /* how many of them the broker answered */
	unsigned char *answered; /* [tag - 1]: answered yet */
	size_t cap;
	uint64_t low; /* every tag up to it is answered */
	bool nacked;  /* some answer was a nack */
};

struct mq {
	amqp_connection_state_t conn;
	char error[512];
	int reply_code;
	int lib_error; /* rabbitmq-c's status of the last library failure */
	char close_text[256]; /* the broker's words when it closed channel 1 */
	bool closed;	      /* channel 1 or the connection is gone */
	bool pub_open;	      /* channel 2 is open */
	bool confirming;      /* channel 2 wants confirm mode */
	bool refused;	      /* the broker refused a publish or declare */
	bool blocked;	      /* connection.blocked, until unblocked */
	char blocked_reason[128];
	struct mq_track track; /* channel 2's confirms */
	bool returned;	       /* a mandatory publish came back unrouted */
	bool cancelled;	       /* seen while waiting for confirms */
	char *consumer_tag;
	bool cancelling; /* basic.cancel sent, its cancel-ok not yet read */
	struct pending *head, *tail;  /* deliveries read while waiting */
	struct sockaddr_storage home; /* the first node's address ... */
	socklen_t home_len;	      /* ... or 0: not resolved */
	size_t max_body; /* bytes a delivery's body may take, 0: no limit */
};

/* reply.c */
void mq_set_error(struct mq *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The broker closed channel ch: note its words, answer close-ok. */
void mq_channel_closed(struct mq *m, amqp_channel_t ch,
		       const amqp_channel_close_t *c);
/* An rpc reply on channel ch in words; 0 if normal, else -1. */
int mq_check_reply_on(struct mq *m, amqp_rpc_reply_t r, const char *what,
		      amqp_channel_t ch);
int mq_check_reply(struct mq *m, amqp_rpc_reply_t r, const char *what);
/* A library status in words; 0 if not an error. */
int mq_check_status(struct mq *m, int status, const char *what);
/* consumer_timeout (ms, 0 if unsaid) from a channel close, or -1. */
int mq_timeout_of_close(int reply_code, const char *text);

/* connect.c */
/* The k-th node of n to try, for a connect that starts at first. */
int mq_node_order(int n, int first, int rotate, int k);

/* socket.c */
/* A TCP or TLS socket on conn, set up from t; NULL and err if not. */
amqp_socket_t *mq_new_socket(amqp_connection_state_t conn, bool ssl,
			     const struct tls_conf *t, char *err,
			     size_t errlen);
/* Why opening the socket failed (status r), in m's error. */
void mq_open_failed(struct mq *m, int r, const char *safe,
		    const struct mq_url *u, const struct broker_conf *b);
/* Resolve url's host:port once, into m->home (home_len 0 if it fails). */
void mq_resolve_home(struct mq *m, const char *url);

/* frames.c */
/* Read one thing within tv: a delivery (queued), a control frame or none. */
enum mq_event mq_read_one(struct mq *m, struct timeval *tv);
/* Read (and, with k, keep) a message's content on channel ch. */
int mq_read_content(struct mq *m, amqp_channel_t ch, struct kept *k,
		    size_t *body_len);

/* oversize.c: a delivery's body over max_body, spooled */
/* Start k's spool for a body of size bytes (k->unkept says if none). */
void mq_spool_open(struct kept *k, size_t size);
/* The next n bytes of the body; a failed write drops the spool. */
void mq_spool_write(struct kept *k, const void *p, size_t n);
/* Map the whole spool as k's body when complete: the bytes kept (0 when
 * none). */
size_t mq_spool_end(struct kept *k, bool complete);
/* props.c */
amqp_bytes_t mq_keep_bytes(amqp_pool_t *pool, amqp_bytes_t b);
void mq_keep_props(amqp_pool_t *pool, const amqp_basic_properties_t *src,
		   amqp_basic_properties_t *dst);
void mq_free_kept(void *k);
/* Bytes as a C string, or NULL when unset or holding a NUL. */
char *mq_bytes_str(amqp_bytes_t b);
/* A delivery from its method fields and kept properties and body. */
struct delivery *mq_to_delivery(const amqp_basic_deliver_t *dv, struct kept *k,
				size_t body_len);

/* confirm.c: pure bookkeeping of publisher confirms */
/* A (re)opened channel: counting starts from 1 again. */
void mq_track_reset(struct mq_track *t);
/* One more publish: its sequence number. */
uint64_t mq_track_sent(struct mq_track *t);
/* basic.ack or basic.nack of tag (and all below it with multiple). */
void mq_track_answer(struct mq_track *t, uint64_t tag, bool multiple, bool ack);
void mq_track_free(struct mq_track *t);

/* publish.c */
/* Channel 2, for declaring side queues and publishing: open it if needed. */
int mq_pub_channel(struct mq *m);
/* like's headers with p's added or replaced, into e[0..cap). */
amqp_table_t mq_merge_headers(const amqp_basic_properties_t *like,
			      const struct publish *p, amqp_table_entry_t *e,
			      int cap);

/* tls.c: why TLS failed, in words; the only user of OpenSSL */
enum tls_failure {
	TLS_UNTRUSTED,	/* the peer's certificate did not verify */
	TLS_WRONG_NAME, /* it does not name the host */
	TLS_HANDSHAKE,	/* the handshake itself failed */
};

/* Parse the CA file path once, for every later connection. -1 if bad. */
int tls_load_ca(const char *path);
/* Make ssl_ctx trust the CAs tls_load_ca() parsed; false if not path's. */
bool tls_use_ca(void *ssl_ctx, const char *path);
/* Watch rabbitmq-c's SSL_CTX (void *) for the next handshake's verdict. */
void tls_watch(void *ssl_ctx);
/* What went wrong with the last handshake, for host. */
void tls_why(enum tls_failure f, const char *host, bool have_cert, char *buf,
	     size_t len);

#endif
