/*
 * metrics.c: the Prometheus listener (/metrics, and /health for load
 * balancers); the only user of libmicrohttpd.
 * The daemon runs without a thread of its own: its epoll fd sits in the
 * master's epoll set and MHD_run() is called when it is ready or its
 * timeout comes, so a slow scraper never holds up the master.
 * The library is loaded (dlopen) when a listener is first configured:
 * with it come GnuTLS and its dependencies, about 2 MB of pages that a
 * warrend without metrics (the default) never maps.
 */
#include "config.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "master/master.h"

#define CONNECTIONS_MAX 16
#define CONNECTION_TIMEOUT_S 10

static struct {
	struct MHD_Daemon *d;
	struct ev *ev;
	int64_t next_run;	    /* MHD_run() at least this often */
	char *(*render)(void);	    /* the text to serve; caller frees */
	char *(*health)(int *code); /* GET /health: text and status */
} mh;

/*
 * At its connection limit MHD takes its listen socket out of its epoll
 * set and puts it back only inside a later MHD_run(): with no timeout of
 * its own to wake us, it is run at least once a second, or the listener
 * would stay deaf for good after one burst of clients.
 */
#define MHD_RUN_MS 1000

/* The library's functions, typed from its header, found once loaded. */
static struct {
	__typeof__(MHD_start_daemon) *start_daemon;
	__typeof__(MHD_stop_daemon) *stop_daemon;
	__typeof__(MHD_get_daemon_info) *get_daemon_info;
	__typeof__(MHD_get_timeout) *get_timeout;
	__typeof__(MHD_run) *run;
	__typeof__(MHD_create_response_from_buffer) *create_response;
	__typeof__(MHD_add_response_header) *add_header;
	__typeof__(MHD_queue_response) *queue_response;
	__typeof__(MHD_destroy_response) *destroy_response;
} api;

/* Each of api's fields and the symbol it is. */
static const struct {
	const char *name;
	size_t off;
} symbols[] = {
    {"MHD_start_daemon", offsetof(__typeof__(api), start_daemon)},
    {"MHD_stop_daemon", offsetof(__typeof__(api), stop_daemon)},
    {"MHD_get_daemon_info", offsetof(__typeof__(api), get_daemon_info)},
    {"MHD_get_timeout", offsetof(__typeof__(api), get_timeout)},
    {"MHD_run", offsetof(__typeof__(api), run)},
    {"MHD_create_response_from_buffer",
     offsetof(__typeof__(api), create_response)},
    {"MHD_add_response_header", offsetof(__typeof__(api), add_header)},
    {"MHD_queue_response", offsetof(__typeof__(api), queue_response)},
    {"MHD_destroy_response", offsetof(__typeof__(api), destroy_response)},
};

/* Load libmicrohttpd once, and keep it: 0, or -1 said in the log. */
static int load_library(void)
{
	static void *lib;
	const char *missing = NULL;

	if (lib != NULL)
		return 0;
	if ((lib = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		log_warnx("metrics: cannot load %s (%s); running without "
			  "metrics",
			  MHD_SONAME, dlerror());
		return -1;
	}
	for (size_t i = 0; i < sizeof(symbols) / sizeof(symbols[0]); i++) {
		void *f = dlsym(lib, symbols[i].name);

		if (f == NULL)
			missing = symbols[i].name;
		memcpy((char *)&api + symbols[i].off, &f, sizeof(f));
	}
	if (missing == NULL)
		return 0;
	log_warnx("metrics: %s has no %s; running without metrics", MHD_SONAME,
		  missing);
	dlclose(lib);
	lib = NULL;
	return -1;
}

static enum MHD_Result queue_text(struct MHD_Connection *c, unsigned code,
				  char *text, const char *type)
{
	struct MHD_Response *r =
	    api.create_response(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ok;

	if (r == NULL) {
		free(text);
		return MHD_NO;
	}
	api.add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ok = api.queue_response(c, code, r);
	api.destroy_response(r);
	return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	(void)cls;
	(void)version;
	(void)upload;
	(void)state;
	if (*upload_size != 0) /* a body we do not want */
		return MHD_NO;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return queue_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
				  xstrdup("only GET /metrics and /health\n"),
				  "text/plain; charset=utf-8");
	if (strcmp(url, "/health") == 0 && mh.health != NULL) {
		int code;
		char *text = mh.health(&code);

		return queue_text(c, (unsigned)code, text,
				  "text/plain; charset=utf-8");
	}
	if (strcmp(url, "/metrics") != 0)
		return queue_text(
		    c, MHD_HTTP_NOT_FOUND,
		    xstrdup("warrend serves /metrics and /health\n"),
		    "text/plain; charset=utf-8");
	return queue_text(c, MHD_HTTP_OK, mh.render(),
			  "text/plain; version=0.0.4; charset=utf-8");
}

static void on_ready(void *arg, uint32_t events)
{
	(void)arg;
	(void)events;
	api.run(mh.d);
	mh.next_run = now_ms() + MHD_RUN_MS;
}

void metrics_open(const char *listen, char *(*render)(void),
		  char *(*health)(int *code))
{
	struct sockaddr_storage ss;
	socklen_t len;
	const union MHD_DaemonInfo *info;

	metrics_close();
	mh.render = render;
	mh.health = health;
	if (listen == NULL || listen[0] == '\0')
		return;
	if (parse_listen(listen, &ss, &len) != 0) { /* config.c checked */
		log_warnx("metrics: bad listen address %s", listen);
		return;
	}
	if (load_library() != 0)
		return;
	mh.d = api.start_daemon(
	    MHD_USE_EPOLL | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0,
	    NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &ss,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTIONS_MAX,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
	    MHD_OPTION_END);
	if (mh.d == NULL) {
		log_warnx("metrics: cannot listen on %s (in use, or not an "
			  "address of this host); running without metrics",
			  listen);
		return;
	}
	info = api.get_daemon_info(mh.d, MHD_DAEMON_INFO_EPOLL_FD);
	if (info == NULL ||
	    (mh.ev = ev_add(info->epoll_fd, EPOLLIN, on_ready, NULL)) == NULL) {
		log_warnx("metrics: no epoll fd; running without metrics");
		api.stop_daemon(mh.d);
		mh.d = NULL;
		return;
	}
	mh.next_run = now_ms() + MHD_RUN_MS;
	log_info("metrics at http://%s/metrics", listen);
}

bool metrics_is_open(void)
{
	return mh.d != NULL;
}

void metrics_close(void)
{
	if (mh.d == NULL)
		return;
	ev_del(mh.ev);
	mh.ev = NULL;
	api.stop_daemon(mh.d);
	mh.d = NULL;
}

int64_t metrics_next_timer(void)
{
	MHD_UNSIGNED_LONG_LONG t;
	int64_t at;

	if (mh.d == NULL)
		return 0;
	at = mh.next_run;
	if (api.get_timeout(mh.d, &t) == MHD_YES && now_ms() + (int64_t)t < at)
		at = now_ms() + (int64_t)t;
	return at;
}

void metrics_timers(void)
{
	if (mh.d != NULL && now_ms() >= metrics_next_timer()) {
		api.run(mh.d);
		mh.next_run = now_ms() + MHD_RUN_MS;
	}
}
