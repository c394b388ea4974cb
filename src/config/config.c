/*
 * config.c: the only user of libconfuse. Parses warrend.conf and the files
 * its `include` patterns name into fresh cfg_t's, validates them (every
 * error names file and line), copies them into the plain structs of
 * warren.h and frees the cfg_t's.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <confuse.h>

#include "warren.h"

/* Where cfg_error() messages go while one file is parsed. */
struct errbuf {
	const char *path;
	char *buf;
	size_t len;
	bool set;
	int include_line; /* where `include` is, 0 if nowhere */
};
static struct errbuf *cur_err;

static void on_error(cfg_t *cfg, const char *fmt, va_list ap)
{
	char msg[1024];

	if (cur_err == NULL || cur_err->set)
		return; /* keep the first error: later ones follow it */
	vsnprintf(msg, sizeof(msg), fmt, ap);
	snprintf(cur_err->buf, cur_err->len, "%s:%d: %s", cur_err->path,
		 cfg != NULL ? cfg->line : 0, msg);
	cur_err->set = true;
}

static int check_range(cfg_t *cfg, cfg_opt_t *opt, long lo, long hi)
{
	for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
		long v = cfg_opt_getnint(opt, i);

		if (v < lo || v > hi) {
			cfg_error(cfg, "%s = %ld is out of range (%ld to %ld)",
				  opt->name, v, lo, hi);
			return -1;
		}
	}
	return 0;
}

#define RANGE_CHECK(fn, lo, hi)                                                \
	static int fn(cfg_t *cfg, cfg_opt_t *opt)                              \
	{                                                                      \
		return check_range(cfg, opt, lo, hi);                          \
	}
RANGE_CHECK(v_seconds, 0, 86400 * 365)
RANGE_CHECK(v_workers, 0, 1024)
RANGE_CHECK(v_prefetch, 1, 65535)
RANGE_CHECK(v_attempts, 1, 1000)
RANGE_CHECK(v_heartbeat, 0, 65535)
RANGE_CHECK(v_kill_grace, 0, 3600)
RANGE_CHECK(v_connect_timeout, 1, 3600)
RANGE_CHECK(v_consumer_timeout, 1, 86400 * 7)
RANGE_CHECK(v_max_messages, 0, 1000000000)
RANGE_CHECK(v_delivery_limit, 1, 1000000)
RANGE_CHECK(v_cooldown, 1, 86400)
RANGE_CHECK(v_failures, 0, 1000000)
RANGE_CHECK(v_max_rss, 0, 1048576)
RANGE_CHECK(v_max_body, 1, 1048576)
RANGE_CHECK(v_max_workers, 1, 1024)
RANGE_CHECK(v_idle_timeout, 1, 86400)

/* A limit: 0 (none), or lo to hi. */
static int check_limit(cfg_t *cfg, cfg_opt_t *opt, long lo, long hi)
{
	long v = cfg_opt_getnint(opt, 0);

	if (v != 0 && (v < lo || v > hi)) {
		cfg_error(
		    cfg, "%s = %ld is out of range (0 for none, or %ld to %ld)",
		    opt->name, v, lo, hi);
		return -1;
	}
	return 0;
}

#define LIMIT_CHECK(fn, lo, hi)                                                \
	static int fn(cfg_t *cfg, cfg_opt_t *opt)                              \
	{                                                                      \
		return check_limit(cfg, opt, lo, hi);                          \
	}
LIMIT_CHECK(v_limit_memory, 16, 16L * 1024 * 1024) /* MiB: 16 to 16 TiB */
LIMIT_CHECK(v_limit_cpu, 1, 86400 * 365)
LIMIT_CHECK(v_limit_processes, 1, 4194304) /* the kernel's pid_max limit */
LIMIT_CHECK(v_limit_files, 3, 1 << 20)	   /* fs.nr_open's default */

/* Lines of the user keys seen, by section, for copy_queue. */
struct user_line {
	const cfg_t *sec;
	int line;
};
static struct user_line *user_lines;
static int nuser_lines;

static int v_user(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	uid_t uid;
	gid_t gid;

	if (v == NULL || v[0] == '\0' || identity_user(v, &uid, &gid) != 0) {
		cfg_error(cfg, "user = \"%s\": no such user", v ? v : "");
		return -1;
	}
	user_lines = realloc(user_lines,
			     (size_t)(nuser_lines + 1) * sizeof(*user_lines));
	if (user_lines == NULL)
		fatal("realloc");
	user_lines[nuser_lines].sec = cfg;
	user_lines[nuser_lines++].line = cfg->line;
	return 0;
}

static int v_group(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	gid_t gid;

	if (v == NULL || v[0] == '\0' || identity_group(v, &gid) != 0) {
		cfg_error(cfg, "group = \"%s\": no such group", v ? v : "");
		return -1;
	}
	return 0;
}

static int v_backoff(cfg_t *cfg, cfg_opt_t *opt)
{
	double v = cfg_opt_getnfloat(opt, 0);

	if (!(v >= 1.0 && v <= 100.0)) {
		cfg_error(cfg, "backoff = %g is out of range (1.0 to 100.0)",
			  v);
		return -1;
	}
	return 0;
}

static int v_type(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (strcmp(v, "classic") != 0 && strcmp(v, "quorum") != 0) {
		cfg_error(
		    cfg, "type = \"%s\": must be \"classic\" or \"quorum\"", v);
		return -1;
	}
	return 0;
}

static int v_mode(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (strcmp(v, "exec") != 0 && strcmp(v, "persistent") != 0) {
		cfg_error(cfg,
			  "mode = \"%s\": must be \"exec\" or \"persistent\"",
			  v);
		return -1;
	}
	return 0;
}

static int v_url(cfg_t *cfg, cfg_opt_t *opt)
{
	char err[256];

	for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
		if (mq_url_check(cfg_opt_getnstr(opt, i), err, sizeof(err))) {
			cfg_error(cfg, "url: %s", err);
			return -1;
		}
	}
	return 0;
}

static int v_control_socket(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	struct sockaddr_un sun;

	if (v == NULL || v[0] == '\0')
		return 0; /* off */
	if (v[0] != '/') {
		cfg_error(cfg,
			  "control_socket = \"%s\": must be an absolute "
			  "path, or \"\" for none",
			  v);
		return -1;
	}
	if (strlen(v) >= sizeof(sun.sun_path)) {
		cfg_error(cfg, "control_socket: longer than %zu bytes",
			  sizeof(sun.sun_path) - 1);
		return -1;
	}
	return 0;
}

static int v_listen(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);
	struct sockaddr_storage ss;
	socklen_t len;

	if (v == NULL || v[0] == '\0')
		return 0; /* off */
	if (parse_listen(v, &ss, &len) != 0) {
		cfg_error(cfg,
			  "listen = \"%s\": must be \"ADDRESS:PORT\" with "
			  "an IP address, e.g. \"127.0.0.1:9640\" or "
			  "\"[::1]:9640\"",
			  v);
		return -1;
	}
	return 0;
}

static int v_environment(cfg_t *cfg, cfg_opt_t *opt)
{
	for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
		const char *e = cfg_opt_getnstr(opt, i);
		const char *eq = strchr(e, '=');

		if (eq == NULL || eq == e) {
			cfg_error(cfg, "environment: \"%s\" is not NAME=value",
				  e);
			return -1;
		}
		if (strncmp(e, "WARREN_", 7) == 0) {
			cfg_error(cfg,
				  "environment: %.*s is reserved for warren",
				  (int)(eq - e), e);
			return -1;
		}
	}
	return 0;
}

static int v_command(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v;

	if (cfg_opt_size(opt) == 0) {
		cfg_error(cfg, "command is an empty list");
		return -1;
	}
	v = cfg_opt_getnstr(opt, 0);
	if (strchr(v, '/') == NULL) {
		/* execve does not search PATH, and warren never guesses */
		cfg_error(cfg,
			  "command \"%s\" must be a path (like /usr/bin/%s)", v,
			  v);
		return -1;
	}
	return 0;
}

static int v_workdir(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (v[0] != '/') {
		cfg_error(cfg, "workdir = \"%s\": must be an absolute path", v);
		return -1;
	}
	return 0;
}

static int v_arguments(cfg_t *cfg, cfg_opt_t *opt)
{
	unsigned n = cfg_opt_size(opt);
	struct qarg *a = xcalloc(n + 1, sizeof(*a));
	char why[400];
	int r = 0;

	for (unsigned i = 0; r == 0 && i < n; i++) {
		r = qarg_parse(cfg_opt_getnstr(opt, i), &a[i], why,
			       sizeof(why));
		if (r == 0)
			r = qarg_check(&a[i], why, sizeof(why));
		if (r == 0 && qarg_find(a, (int)i, a[i].name) != NULL) {
			snprintf(why, sizeof(why),
				 "arguments: %s is given twice", a[i].name);
			r = -1;
		}
	}
	if (r != 0)
		cfg_error(cfg, "%s", why);
	for (unsigned i = 0; i < n; i++)
		qarg_free(&a[i]);
	free(a);
	return r;
}

static int v_exchange_type(cfg_t *cfg, cfg_opt_t *opt)
{
	const char *v = cfg_opt_getnstr(opt, 0);

	if (!exchange_type_known(v)) {
		cfg_error(cfg,
			  "type = \"%s\": an exchange type is \"direct\", "
			  "\"topic\", \"fanout\" or \"headers\"",
			  v);
		return -1;
	}
	return 0;
}

static int v_keys(cfg_t *cfg, cfg_opt_t *opt)
{
	char why[300];

	for (unsigned i = 0; i < cfg_opt_size(opt); i++)
		if (routing_key_check(cfg_opt_getnstr(opt, i), why,
				      sizeof(why)) != 0) {
			cfg_error(cfg, "%s", why);
			return -1;
		}
	return 0;
}

/* Called when a bind section closes: its exchange's name. */
static int v_bind(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *b = cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);
	char why[300];

	if (exchange_name_check(cfg_title(b), why, sizeof(why)) != 0) {
		cfg_error(b->line > 0 ? b : cfg, "%s", why);
		return -1;
	}
	return 0;
}

/* The checks across a queue's topology keys. */
static int check_topology(cfg_t *cfg, cfg_t *q, const char *name)
{
	bool quorum = strcmp(cfg_getstr(q, "type"), "quorum") == 0;

	if (!cfg_getbool(q, "declare") && cfg_size(q, "arguments") > 0) {
		cfg_error(cfg,
			  "queue \"%s\": arguments are given at declare only: "
			  "with declare = false they would never be used",
			  name);
		return -1;
	}
	if (cfg_getint(q, "delivery_limit") != -1 &&
	    (!quorum || !cfg_getbool(q, "declare"))) {
		cfg_error(cfg,
			  "queue \"%s\": delivery_limit is for a quorum "
			  "queue that warrend declares (type = \"quorum\", "
			  "declare = true)",
			  name);
		return -1;
	}
	for (unsigned i = 0; quorum && i < cfg_size(q, "arguments"); i++)
		if (strncmp(cfg_getnstr(q, "arguments", i),
			    "x-max-priority=", 15) == 0) {
			cfg_error(cfg,
				  "queue \"%s\": a quorum queue has no "
				  "priorities (x-max-priority needs type = "
				  "\"classic\")",
				  name);
			return -1;
		}
	return 0;
}

/* Called when a queue section closes: the checks that need all its keys. */
/* max_workers: unset (-1), or at least workers, which must be 1 or more
 * for the pool to see its backlog. */
static int elastic_bad(cfg_t *cfg, cfg_t *q, const char *name)
{
	long w = cfg_getint(q, "workers"), max = cfg_getint(q, "max_workers");

	if (max < 0 || max == w)
		return 0;
	if (max < w) {
		cfg_error(cfg,
			  "queue \"%s\": max_workers = %ld is below workers = "
			  "%ld",
			  name, max, w);
		return -1;
	}
	if (w == 0) {
		cfg_error(cfg,
			  "queue \"%s\": max_workers needs workers = 1 or more "
			  "(a pool grows on what its workers see)",
			  name);
		return -1;
	}
	return 0;
}

static int v_queue(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *q = cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);
	const char *name = cfg_title(q);

	if (name == NULL || name[0] == '\0' || strlen(name) > 200) {
		cfg_error(cfg, "queue name must be 1 to 200 characters");
		return -1;
	}
	if (cfg_size(q, "command") == 0) {
		cfg_error(q, "queue \"%s\": command is required", name);
		return -1;
	}

	if (strncmp(name, "amq.", 4) == 0) {
		cfg_error(cfg,
			  "queue \"%s\": names starting with amq. are "
			  "reserved by RabbitMQ",
			  name);
		return -1;
	}
	if (strcmp(cfg_getstr(q, "type"), "quorum") == 0 &&
	    !cfg_getbool(q, "durable")) {
		cfg_error(cfg,
			  "queue \"%s\": a quorum queue is always durable "
			  "(remove durable = false)",
			  name);
		return -1;
	}
	if (cfg_getstr(q, "group") != NULL && cfg_getstr(q, "user") == NULL) {
		cfg_error(cfg, "queue \"%s\": group needs user", name);
		return -1;
	}
	if (elastic_bad(cfg, q, name) != 0)
		return -1;
	if (cfg_getint(q, "retry|max_delay") < cfg_getint(q, "retry|delay")) {
		cfg_error(cfg, "queue \"%s\": retry max_delay is below delay",
			  name);
		return -1;
	}
	return check_topology(cfg, q, name);
}

static int v_include(cfg_t *cfg, cfg_opt_t *opt)
{
	for (unsigned i = 0; i < cfg_opt_size(opt); i++)
		if (cfg_opt_getnstr(opt, i)[0] == '\0') {
			cfg_error(cfg, "include: an empty pattern");
			return -1;
		}
	if (cur_err != NULL)
		cur_err->include_line = cfg->line;
	return 0;
}

/* In an included file, everything but queue sections. */
static int v_main_only(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *where = cfg;

	if (opt->type == CFGT_SEC && cfg_opt_size(opt) > 0)
		where = cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);
	cfg_error(where,
		  "%s: only in the main configuration file; an included "
		  "file holds queue sections only%s",
		  opt->name,
		  strcmp(opt->name, "include") == 0 ? " (includes do not nest)"
						    : "");
	return -1;
}

static int v_broker(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *b = cfg_opt_getnsec(opt, 0);

	if (cfg_size(b, "url") == 0) {
		cfg_error(cfg, "broker: url is required");
		return -1;
	}
	if ((cfg_getstr(b, "tls|cert") == NULL) !=
	    (cfg_getstr(b, "tls|key") == NULL)) {
		cfg_error(cfg, "broker: tls cert and key go together");
		return -1;
	}
	return 0;
}

static cfg_opt_t tls_opts[] = {CFG_STR("ca_cert", NULL, CFGF_NONE),
			       CFG_STR("cert", NULL, CFGF_NONE),
			       CFG_STR("key", NULL, CFGF_NONE),
			       CFG_BOOL("verify_peer", cfg_true, CFGF_NONE),
			       CFG_BOOL("verify_hostname", cfg_true, CFGF_NONE),
			       CFG_END()};

static cfg_opt_t broker_opts[] = {CFG_STR_LIST("url", NULL, CFGF_NODEFAULT),
				  CFG_INT("heartbeat", 30, CFGF_NONE),
				  CFG_STR("password_file", NULL, CFGF_NONE),
				  CFG_INT("connect_timeout", 10, CFGF_NONE),
				  CFG_INT("consumer_timeout", 1800, CFGF_NONE),
				  CFG_SEC("tls", tls_opts, CFGF_NONE),
				  CFG_END()};

static cfg_opt_t retry_opts[] = {
    CFG_INT("attempts", 5, CFGF_NONE), CFG_INT("delay", 10, CFGF_NONE),
    CFG_FLOAT("backoff", 2.0, CFGF_NONE), CFG_INT("max_delay", 3600, CFGF_NONE),
    CFG_END()};

static cfg_opt_t breaker_opts[] = {CFG_INT("cooldown", 30, CFGF_NONE),
				   CFG_INT("failures", 0, CFGF_NONE),
				   CFG_END()};

static cfg_opt_t limits_opts[] = {CFG_INT("memory", 0, CFGF_NONE),
				  CFG_INT("cpu", 0, CFGF_NONE),
				  CFG_INT("processes", 0, CFGF_NONE),
				  CFG_INT("files", 0, CFGF_NONE), CFG_END()};

static cfg_opt_t bind_opts[] = {CFG_STR("type", "direct", CFGF_NONE),
				CFG_STR_LIST("keys", NULL, CFGF_NONE),
				CFG_END()};

#define SECTIONS (CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES)

static cfg_opt_t queue_opts[] = {
    CFG_INT("workers", 1, CFGF_NONE),
    CFG_INT("max_workers", -1, CFGF_NONE),
    CFG_INT("idle_timeout", 60, CFGF_NONE),
    CFG_STR_LIST("command", NULL, CFGF_NODEFAULT),
    CFG_INT("prefetch", 1, CFGF_NONE),
    CFG_INT("timeout", 0, CFGF_NONE),
    CFG_INT("kill_grace", 5, CFGF_NONE),
    CFG_BOOL("durable", cfg_true, CFGF_NONE),
    CFG_STR("type", "classic", CFGF_NONE),
    CFG_SEC("retry", retry_opts, CFGF_NONE),
    CFG_BOOL("park", cfg_true, CFGF_NONE),
    CFG_STR_LIST("environment", NULL, CFGF_NONE),
    CFG_STR("workdir", "/", CFGF_NONE),
    CFG_STR("mode", "exec", CFGF_NONE),
    CFG_INT("max_messages", 0, CFGF_NONE),
    CFG_INT("max_rss", 0, CFGF_NONE),
    CFG_INT("max_age", 0, CFGF_NONE),
    CFG_INT("slow", 0, CFGF_NONE),
    CFG_INT("max_body", 512, CFGF_NONE),
    CFG_STR("user", NULL, CFGF_NONE),
    CFG_STR("group", NULL, CFGF_NONE),
    CFG_SEC("limits", limits_opts, CFGF_NONE),
    CFG_BOOL("declare", cfg_true, CFGF_NONE),
    CFG_STR_LIST("arguments", NULL, CFGF_NONE),
    CFG_SEC("bind", bind_opts, SECTIONS),
    CFG_INT("delivery_limit", -1, CFGF_NONE),
    CFG_BOOL("reply", cfg_false, CFGF_NONE),
    CFG_SEC("breaker", breaker_opts, CFGF_NODEFAULT),
    CFG_END()};

static cfg_opt_t metrics_opts[] = {CFG_STR("listen", "", CFGF_NONE), CFG_END()};

static cfg_opt_t root_opts[] = {
    CFG_SEC("broker", broker_opts, CFGF_NODEFAULT),
    CFG_INT("shutdown_timeout", 30, CFGF_NONE),
    CFG_STR("control_socket", CONTROL_SOCKET_DEFAULT, CFGF_NONE),
    CFG_SEC("metrics", metrics_opts, CFGF_NONE),
    CFG_SEC("queue", queue_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_STR_LIST("include", NULL, CFGF_NONE),
    CFG_END()};

/* The schema of the main file, or of an included one (queues only). */
static cfg_t *schema(bool main_file)
{
	cfg_t *cfg = cfg_init(root_opts, CFGF_NONE);

	cfg_set_error_function(cfg, on_error);
	cfg_set_validate_func(cfg, "broker", v_broker);
	cfg_set_validate_func(cfg, "broker|url", v_url);
	cfg_set_validate_func(cfg, "broker|heartbeat", v_heartbeat);
	cfg_set_validate_func(cfg, "broker|connect_timeout", v_connect_timeout);
	cfg_set_validate_func(cfg, "broker|consumer_timeout",
			      v_consumer_timeout);
	cfg_set_validate_func(cfg, "shutdown_timeout", v_seconds);
	cfg_set_validate_func(cfg, "control_socket", v_control_socket);
	cfg_set_validate_func(cfg, "metrics|listen", v_listen);
	cfg_set_validate_func(cfg, "queue", v_queue);
	cfg_set_validate_func(cfg, "queue|workers", v_workers);
	cfg_set_validate_func(cfg, "queue|max_workers", v_max_workers);
	cfg_set_validate_func(cfg, "queue|idle_timeout", v_idle_timeout);
	cfg_set_validate_func(cfg, "queue|command", v_command);
	cfg_set_validate_func(cfg, "queue|prefetch", v_prefetch);
	cfg_set_validate_func(cfg, "queue|timeout", v_seconds);
	cfg_set_validate_func(cfg, "queue|kill_grace", v_kill_grace);
	cfg_set_validate_func(cfg, "queue|type", v_type);
	cfg_set_validate_func(cfg, "queue|retry|attempts", v_attempts);
	cfg_set_validate_func(cfg, "queue|retry|delay", v_seconds);
	cfg_set_validate_func(cfg, "queue|retry|backoff", v_backoff);
	cfg_set_validate_func(cfg, "queue|retry|max_delay", v_seconds);
	cfg_set_validate_func(cfg, "queue|environment", v_environment);
	cfg_set_validate_func(cfg, "queue|workdir", v_workdir);
	cfg_set_validate_func(cfg, "queue|mode", v_mode);
	cfg_set_validate_func(cfg, "queue|max_messages", v_max_messages);
	cfg_set_validate_func(cfg, "queue|max_rss", v_max_rss);
	cfg_set_validate_func(cfg, "queue|max_age", v_seconds);
	cfg_set_validate_func(cfg, "queue|slow", v_seconds);
	cfg_set_validate_func(cfg, "queue|max_body", v_max_body);
	cfg_set_validate_func(cfg, "queue|user", v_user);
	cfg_set_validate_func(cfg, "queue|group", v_group);
	cfg_set_validate_func(cfg, "queue|limits|memory", v_limit_memory);
	cfg_set_validate_func(cfg, "queue|limits|cpu", v_limit_cpu);
	cfg_set_validate_func(cfg, "queue|limits|processes", v_limit_processes);
	cfg_set_validate_func(cfg, "queue|limits|files", v_limit_files);
	cfg_set_validate_func(cfg, "queue|arguments", v_arguments);
	cfg_set_validate_func(cfg, "queue|bind", v_bind);
	cfg_set_validate_func(cfg, "queue|bind|type", v_exchange_type);
	cfg_set_validate_func(cfg, "queue|bind|keys", v_keys);
	cfg_set_validate_func(cfg, "queue|delivery_limit", v_delivery_limit);
	cfg_set_validate_func(cfg, "queue|breaker|cooldown", v_cooldown);
	cfg_set_validate_func(cfg, "queue|breaker|failures", v_failures);
	cfg_set_validate_func(cfg, "include", v_include);
	for (cfg_opt_t *o = root_opts; !main_file && o->name != NULL; o++)
		if (strcmp(o->name, "queue") != 0)
			cfg_set_validate_func(cfg, o->name, v_main_only);
	return cfg;
}

static char **copy_list(cfg_t *sec, const char *name, int *n)
{
	int size = (int)cfg_size(sec, name);
	char **v = xcalloc((size_t)size + 1, sizeof(char *));

	for (int i = 0; i < size; i++)
		v[i] = xstrdup(cfg_getnstr(sec, name, (unsigned)i));
	*n = size;
	return v;
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void forget_user_lines(void)
{
	free(user_lines);
	user_lines = NULL;
	nuser_lines = 0;
}

static int user_line_of(const cfg_t *sec)
{
	int line = 0;

	for (int i = 0; i < nuser_lines; i++)
		if (user_lines[i].sec == sec)
			line = user_lines[i].line; /* the last one set wins */
	return line;
}

/* queue.arguments, parsed (validated already) */
static void copy_arguments(struct queue_conf *q, cfg_t *sec)
{
	char why[300];

	q->nargs = (int)cfg_size(sec, "arguments");
	q->args = xcalloc((size_t)q->nargs + 1, sizeof(*q->args));
	for (int i = 0; i < q->nargs; i++)
		if (qarg_parse(cfg_getnstr(sec, "arguments", (unsigned)i),
			       &q->args[i], why, sizeof(why)) != 0)
			fatalx("arguments: %s",
			       why); /* v_arguments passed it */
}

/* queue.bind sections; no keys means the one key "" */
static void copy_binds(struct queue_conf *q, cfg_t *sec)
{
	q->nbinds = (int)cfg_size(sec, "bind");
	q->binds = xcalloc((size_t)q->nbinds + 1, sizeof(*q->binds));
	for (int i = 0; i < q->nbinds; i++) {
		cfg_t *b = cfg_getnsec(sec, "bind", (unsigned)i);
		struct bind_conf *bc = &q->binds[i];

		bc->exchange = xstrdup(cfg_title(b));
		bc->type = xstrdup(cfg_getstr(b, "type"));
		if (cfg_size(b, "keys") == 0) {
			bc->keys = xcalloc(2, sizeof(char *));
			bc->keys[0] = xstrdup("");
			bc->nkeys = 1;
		} else {
			bc->keys = copy_list(b, "keys", &bc->nkeys);
		}
	}
}

/* declare, arguments, bind, delivery_limit */
static void copy_topology(struct queue_conf *q, cfg_t *sec)
{
	q->declare = cfg_getbool(sec, "declare");
	copy_arguments(q, sec);
	copy_binds(q, sec);
	q->delivery_limit = (int)cfg_getint(sec, "delivery_limit");
	if (q->delivery_limit < 0)
		q->delivery_limit = q->retry.attempts + 2;
}

/* 0, or -1 with "FILE:LINE: ..." in err (user or group gone since). */
static int copy_queue(struct queue_conf *q, cfg_t *sec, const char *file,
		      char *err, size_t errlen)
{
	char why[300];

	q->name = xstrdup(cfg_title(sec));
	q->file = xstrdup(file);
	q->line = sec->line;
	q->workers = (int)cfg_getint(sec, "workers");
	q->max_workers = (int)cfg_getint(sec, "max_workers");
	if (q->max_workers < q->workers)
		q->max_workers = q->workers;
	q->idle_timeout = (int)cfg_getint(sec, "idle_timeout");
	q->command = copy_list(sec, "command", &q->ncommand);
	q->prefetch = (int)cfg_getint(sec, "prefetch");
	q->timeout = (int)cfg_getint(sec, "timeout");
	q->kill_grace = (int)cfg_getint(sec, "kill_grace");
	q->durable = cfg_getbool(sec, "durable");
	q->type = strcmp(cfg_getstr(sec, "type"), "quorum") == 0
		      ? QUEUE_QUORUM
		      : QUEUE_CLASSIC;
	q->retry.attempts = (int)cfg_getint(sec, "retry|attempts");
	q->retry.delay = (int)cfg_getint(sec, "retry|delay");
	q->retry.backoff = cfg_getfloat(sec, "retry|backoff");
	q->retry.max_delay = (int)cfg_getint(sec, "retry|max_delay");
	q->park = cfg_getbool(sec, "park");
	q->environment = copy_list(sec, "environment", &q->nenvironment);
	q->workdir = xstrdup(cfg_getstr(sec, "workdir"));
	q->mode = strcmp(cfg_getstr(sec, "mode"), "persistent") == 0
		      ? MODE_PERSISTENT
		      : MODE_EXEC;
	q->max_messages = (int)cfg_getint(sec, "max_messages");
	q->reply = cfg_getbool(sec, "reply");
	if (cfg_size(sec, "breaker") > 0) {
		q->breaker.on = true;
		q->breaker.cooldown = (int)cfg_getint(sec, "breaker|cooldown");
		q->breaker.failures = (int)cfg_getint(sec, "breaker|failures");
	}
	q->max_rss = (int)cfg_getint(sec, "max_rss");
	q->max_age = (int)cfg_getint(sec, "max_age");
	q->slow = (int)cfg_getint(sec, "slow");
	q->max_body = (int)cfg_getint(sec, "max_body");
	q->user = dup_or_null(cfg_getstr(sec, "user"));
	q->group = dup_or_null(cfg_getstr(sec, "group"));
	q->user_line = q->user != NULL ? user_line_of(sec) : 0;
	q->limits.memory = (int)cfg_getint(sec, "limits|memory");
	q->limits.cpu = (int)cfg_getint(sec, "limits|cpu");
	q->limits.processes = (int)cfg_getint(sec, "limits|processes");
	q->limits.files = (int)cfg_getint(sec, "limits|files");
	copy_topology(q, sec);
	if (identity_lookup(q->user, q->group, &q->id, why, sizeof(why)) != 0) {
		snprintf(err, errlen, "%s:%d: queue \"%s\": %s", file,
			 q->user_line ? q->user_line : q->line, q->name, why);
		return -1;
	}
	return 0;
}

/*
 * A hash of the password in password_file (first line), so that a reload
 * can tell a rotated password and roll the workers; the password itself
 * is not kept. 0 when unset or unreadable (workers say why).
 */
static uint64_t secret_hash(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	FILE *f;
	int c;

	if (path == NULL || (f = fopen(path, "re")) == NULL)
		return 0;
	while ((c = getc(f)) != EOF && c != '\n' && c != '\r') {
		h ^= (unsigned char)c;
		h *= 0x100000001b3ULL;
	}
	fclose(f);
	return h;
}

static int copy_config(struct config *cf, cfg_t *cfg)
{
	cfg_t *b = cfg_getsec(cfg, "broker");

	cf->broker.urls = copy_list(b, "url", &cf->broker.nurls);
	cf->broker.heartbeat = (int)cfg_getint(b, "heartbeat");
	cf->broker.password_file = dup_or_null(cfg_getstr(b, "password_file"));
	cf->broker.secret = secret_hash(cf->broker.password_file);
	cf->broker.connect_timeout = (int)cfg_getint(b, "connect_timeout");
	cf->broker.consumer_timeout = (int)cfg_getint(b, "consumer_timeout");
	cf->broker.tls.ca_cert = dup_or_null(cfg_getstr(b, "tls|ca_cert"));
	cf->broker.tls.cert = dup_or_null(cfg_getstr(b, "tls|cert"));
	cf->broker.tls.key = dup_or_null(cfg_getstr(b, "tls|key"));
	cf->broker.tls.verify_peer = cfg_getbool(b, "tls|verify_peer");
	cf->broker.tls.verify_hostname = cfg_getbool(b, "tls|verify_hostname");
	cf->shutdown_timeout = (int)cfg_getint(cfg, "shutdown_timeout");
	cf->control_socket = xstrdup(cfg_getstr(cfg, "control_socket"));
	cf->metrics_listen = xstrdup(cfg_getstr(cfg, "metrics|listen"));
	return 0;
}

/*
 * Append the queues of cfg, read from file, to cf's; -1 with err set when
 * one of them is already defined (in an earlier file).
 */
static int add_queues(struct config *cf, cfg_t *cfg, const char *file,
		      char *err, size_t errlen)
{
	int n = (int)cfg_size(cfg, "queue");

	for (int i = 0; i < n; i++) {
		cfg_t *sec = cfg_getnsec(cfg, "queue", (unsigned)i);
		const struct queue_conf *q = config_queue(cf, cfg_title(sec));

		if (q != NULL) {
			snprintf(err, errlen,
				 "%s:%d: queue \"%s\" is already defined at "
				 "%s:%d",
				 file, sec->line, q->name, q->file, q->line);
			return -1;
		}
	}
	cf->queues = realloc(cf->queues, (size_t)(cf->nqueues + n) *
					     sizeof(struct queue_conf));
	if (cf->queues == NULL && cf->nqueues + n > 0)
		abort();
	memset(cf->queues + cf->nqueues, 0, (size_t)n * sizeof(*cf->queues));
	for (int i = 0; i < n; i++)
		if (copy_queue(&cf->queues[cf->nqueues++],
			       cfg_getnsec(cfg, "queue", (unsigned)i), file,
			       err, errlen) != 0)
			return -1;
	return 0;
}

/*
 * The file's text with its comments blanked out, newlines kept. libconfuse
 * 3.3 miscounts lines after '#' comments and cannot parse comments inside
 * lists, so it never sees one. Comments start with '#' anywhere outside a
 * quoted string, or with '//' or '/' '*' where a token starts. A string
 * left open at the end (which libconfuse 3.3 takes silently, with all
 * that follows it, when it opened with '"') is pointed at by *unclosed.
 */
static char *strip_comments(const char *in, size_t n, const char **unclosed)
{
	char *out = xcalloc(n + 1, 1), quote = 0;
	bool token_start = true;

	*unclosed = NULL;

	for (size_t i = 0; i < n; i++) {
		char c = in[i];

		out[i] = c;
		if (quote) {
			if (c == '\\' && i + 1 < n) {
				i++;
				out[i] = in[i];
			} else if (c == quote) {
				quote = 0;
				token_start = true; /* "x"// c */
				continue;
			}
			token_start = false;
			continue;
		}
		if (c == '"' || c == '\'') {
			quote = c;
			*unclosed = in + i;
		} else if (c == '#' || (token_start && c == '/' && i + 1 < n &&
					in[i + 1] == '/')) {
			while (i < n && in[i] != '\n')
				out[i++] = ' ';
			if (i < n)
				out[i] = '\n';
		} else if (token_start && c == '/' && i + 1 < n &&
			   in[i + 1] == '*') {
			out[i++] = ' ';
			out[i++] = ' ';
			while (i < n && !(in[i] == '*' && i + 1 < n &&
					  in[i + 1] == '/')) {
				out[i] = in[i] == '\n' ? '\n' : ' ';
				i++;
			}
			if (i < n) {
				out[i++] = ' ';
				out[i] = ' ';
			}
		}
		/* libconfuse ends a word at these; '*' it skips */
		token_start = strchr(" \t\r\n{}=,()+*", out[i]) != NULL;
	}
	if (!quote)
		*unclosed = NULL;
	out[n] = '\0';
	return out;
}

/* The line of p within text. */
static int line_at(const char *text, const char *p)
{
	int line = 1;

	for (; text < p; text++)
		line += *text == '\n';
	return line;
}

/*
 * An included file, opened for reading: only a regular file, so that a
 * pattern matching a FIFO or a device never blocks or reads forever.
 */
static FILE *open_regular(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	struct stat st;
	FILE *f;

	if (fd < 0 || fstat(fd, &st) != 0) {
		snprintf(err, errlen, "%s:0: cannot read: %s", path,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s:0: not a regular file", path);
		close(fd);
		return NULL;
	}
	if ((f = fdopen(fd, "r")) == NULL)
		close(fd);
	return f;
}

/* The whole file, or NULL with the reason in err. */
static char *read_file(const char *path, bool main_file, size_t *n, char *err,
		       size_t errlen)
{
	FILE *f =
	    main_file ? fopen(path, "re") : open_regular(path, err, errlen);
	char *buf, *nul;
	int line = 1;

	if (f == NULL) {
		if (main_file || err[0] == '\0')
			snprintf(err, errlen, "%s:0: cannot read: %s", path,
				 strerror(errno));
		return NULL;
	}
	buf = read_all(f, n);
	fclose(f);
	nul = memchr(buf, '\0', *n);
	if (nul != NULL) {
		/* libconfuse would stop reading there, silently */
		for (const char *p = buf; p < nul; p++)
			line += *p == '\n';
		snprintf(err, errlen, "%s:%d: a NUL byte: not a text file",
			 path, line);
		free(buf);
		return NULL;
	}
	return buf;
}

/* NAME.failed or NAME.retry.<N>s of one queue may not be another queue. */
static bool is_side_queue(const char *name, const char *of)
{
	size_t n = strlen(of);
	const char *rest = name + n;
	char *end;

	if (strncmp(name, of, n) != 0)
		return false;
	if (strcmp(rest, ".failed") == 0)
		return true;
	if (strncmp(rest, ".retry.", 7) != 0)
		return false;
	strtol(rest + 7, &end, 10);
	return end != rest + 7 && strcmp(end, "s") == 0;
}

static int check_names(const struct config *cf, char *err, size_t errlen)
{
	for (int i = 0; i < cf->nqueues; i++)
		for (int j = 0; j < cf->nqueues; j++)
			if (i != j && is_side_queue(cf->queues[i].name,
						    cf->queues[j].name)) {
				snprintf(
				    err, errlen,
				    "%s:%d: queue \"%s\" is where warren puts "
				    "messages of queue \"%s\"",
				    cf->queues[i].file, cf->queues[i].line,
				    cf->queues[i].name, cf->queues[j].name);
				return -1;
			}
	return 0;
}

/*
 * Parse one file with the schema of a main or an included file. Returns
 * the cfg_t, or NULL with "FILE:LINE: what" in err. *last is the file's
 * last line, for errors about the file as a whole; *include_line where
 * its `include` is.
 */
static cfg_t *parse_file(const char *path, bool main_file, int *last,
			 int *include_line, char *err, size_t errlen)
{
	struct errbuf eb = {path, err, errlen, false, 0};
	char *text, *clean;
	const char *unclosed;
	size_t n;
	cfg_t *cfg;
	int r;

	err[0] = '\0';
	text = read_file(path, main_file, &n, err, errlen);
	if (text == NULL)
		return NULL;
	clean = strip_comments(text, n, &unclosed);
	if (unclosed != NULL) {
		snprintf(err, errlen, "%s:%d: unterminated string", path,
			 line_at(text, unclosed));
		free(text);
		free(clean);
		return NULL;
	}
	free(text);
	*last = 0;
	for (size_t i = 0; i < n; i++)
		if (clean[i] == '\n')
			(*last)++;
	if (*last == 0 || clean[n - 1] != '\n')
		(*last)++;
	cur_err = &eb;
	cfg = schema(main_file);
	r = cfg_parse_buf(cfg, clean);
	free(clean);
	cur_err = NULL;
	if (r != CFG_SUCCESS && !eb.set) /* no word from libconfuse */
		snprintf(err, errlen, "%s:%d: cannot parse", path,
			 cfg->line > 0 ? cfg->line : 1);
	if (r != CFG_SUCCESS) {
		cfg_free(cfg);
		return NULL;
	}
	*include_line = eb.include_line;
	return cfg;
}

/* Read the files of the main file's include patterns into cf. */
static int load_includes(struct config *cf, cfg_t *main_cfg, int line,
			 char *err, size_t errlen)
{
	int n = (int)cfg_size(main_cfg, "include"), last, unused, r = 0;
	char **patterns = xcalloc((size_t)n + 1, sizeof(char *)), **files;
	char why[700];

	for (int i = 0; i < n; i++)
		patterns[i] = cfg_getnstr(main_cfg, "include", (unsigned)i);
	files = include_expand(patterns, n, cf->path, why, sizeof(why));
	free(patterns);
	if (files == NULL) {
		snprintf(err, errlen, "%s:%d: %s", cf->path, line, why);
		return -1;
	}
	for (char **f = files; r == 0 && *f != NULL; f++) {
		cfg_t *cfg = parse_file(*f, false, &last, &unused, err, errlen);

		r = cfg != NULL ? add_queues(cf, cfg, *f, err, errlen) : -1;
		cfg_free(cfg);
		forget_user_lines(); /* its sections are freed */
	}
	include_free(files);
	return r;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct config *cf;
	int last, include_line;
	cfg_t *cfg = parse_file(path, true, &last, &include_line, err, errlen);

	if (cfg == NULL) {
		forget_user_lines();
		return NULL;
	}
	if (cfg_size(cfg, "broker") == 0) {
		snprintf(err, errlen, "%s:%d: a broker section is required",
			 path, last);
		cfg_free(cfg);
		forget_user_lines();
		return NULL;
	}
	cf = xcalloc(1, sizeof(*cf));
	cf->path = xstrdup(path);
	if (copy_config(cf, cfg) != 0 ||
	    add_queues(cf, cfg, path, err, errlen) != 0 ||
	    load_includes(cf, cfg, include_line, err, errlen) != 0 ||
	    check_names(cf, err, errlen) != 0) {
		config_free(cf);
		cf = NULL;
	} else if (cf->nqueues == 0) {
		snprintf(err, errlen,
			 "%s:%d: at least one queue section is required (in "
			 "this file or one it includes)",
			 path, last);
		config_free(cf);
		cf = NULL;
	}
	cfg_free(cfg);
	forget_user_lines();
	return cf;
}

static void free_list(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

void config_free(struct config *cf)
{
	if (cf == NULL)
		return;
	for (int i = 0; i < cf->nqueues; i++) {
		struct queue_conf *q = &cf->queues[i];

		free(q->name);
		free(q->file);
		free_list(q->command);
		free_list(q->environment);
		free(q->workdir);
		free(q->user);
		free(q->group);
		identity_free(&q->id);
		topology_free(q);
	}
	free(cf->queues);
	free(cf->control_socket);
	free(cf->metrics_listen);
	free_list(cf->broker.urls);
	free(cf->broker.password_file);
	free(cf->broker.tls.ca_cert);
	free(cf->broker.tls.cert);
	free(cf->broker.tls.key);
	free(cf->path);
	free(cf);
}

const struct queue_conf *config_queue(const struct config *cf, const char *name)
{
	for (int i = 0; i < cf->nqueues; i++)
		if (strcmp(cf->queues[i].name, name) == 0)
			return &cf->queues[i];
	return NULL;
}

static bool lists_equal(char **a, char **b)
{
	for (; *a != NULL && *b != NULL; a++, b++)
		if (strcmp(*a, *b) != 0)
			return false;
	return *a == NULL && *b == NULL;
}

#define SAME_STR(x, y)                                                         \
	((x) == NULL ? (y) == NULL : (y) != NULL && strcmp((x), (y)) == 0)

bool queue_conf_same_but_workers(const struct queue_conf *a,
				 const struct queue_conf *b)
{
	return strcmp(a->name, b->name) == 0 &&
	       lists_equal(a->command, b->command) &&
	       a->prefetch == b->prefetch && a->timeout == b->timeout &&
	       a->kill_grace == b->kill_grace && a->durable == b->durable &&
	       a->type == b->type && a->retry.attempts == b->retry.attempts &&
	       a->retry.delay == b->retry.delay &&
	       a->retry.backoff == b->retry.backoff &&
	       a->retry.max_delay == b->retry.max_delay && a->park == b->park &&
	       lists_equal(a->environment, b->environment) &&
	       strcmp(a->workdir, b->workdir) == 0 && a->mode == b->mode &&
	       a->max_messages == b->max_messages && a->reply == b->reply &&
	       a->breaker.on == b->breaker.on &&
	       a->breaker.cooldown == b->breaker.cooldown &&
	       a->breaker.failures == b->breaker.failures &&
	       a->max_rss == b->max_rss && a->max_age == b->max_age &&
	       a->slow == b->slow && a->max_body == b->max_body &&
	       SAME_STR(a->user, b->user) && SAME_STR(a->group, b->group) &&
	       identity_same(&a->id, &b->id) &&
	       memcmp(&a->limits, &b->limits, sizeof(a->limits)) == 0 &&
	       topology_same(a, b);
}

bool config_password_exposed(const struct config *cf, char *buf, size_t len)
{
	struct stat st;
	const char *f = cf->broker.password_file;

	if (f == NULL || stat(f, &st) != 0 || (st.st_mode & S_IROTH) == 0)
		return false;
	snprintf(buf, len,
		 "%s: password_file %s is readable by other users (mode %04o): "
		 "chmod o-r it",
		 cf->path, f, (unsigned)(st.st_mode & 07777));
	return true;
}

int config_warnings(const struct config *cf, FILE *out)
{
	char why[600];
	int n = 0;

	if (config_password_exposed(cf, why, sizeof(why))) {
		fprintf(out, "warning: %s\n", why);
		n++;
	}

	for (int i = 0; i < cf->nqueues; i++) {
		const struct queue_conf *q = &cf->queues[i];

		if (q->timeout == 0) {
			fprintf(out,
				"%s:%d: warning: queue \"%s\": timeout = 0 "
				"(none): a handler is stopped only before "
				"broker.consumer_timeout (%d s)\n",
				q->file, q->line, q->name,
				cf->broker.consumer_timeout);
			n++;
		} else if (q->timeout >= cf->broker.consumer_timeout) {
			fprintf(out,
				"%s:%d: warning: queue \"%s\": timeout = %d is "
				"not below broker.consumer_timeout = %d\n",
				q->file, q->line, q->name, q->timeout,
				cf->broker.consumer_timeout);
			n++;
		}
		if (q->type == QUEUE_QUORUM && q->declare &&
		    q->delivery_limit < q->retry.attempts) {
			fprintf(
			    out,
			    "%s:%d: warning: queue \"%s\": delivery_limit = "
			    "%d is below retry attempts = %d: the broker "
			    "parks a message that keeps losing its worker "
			    "before warrend has spent its attempts\n",
			    q->file, q->line, q->name, q->delivery_limit,
			    q->retry.attempts);
			n++;
		}
		if (q->mode == MODE_EXEC &&
		    (q->max_messages > 0 || q->max_rss > 0 || q->max_age > 0)) {
			fprintf(out,
				"%s:%d: warning: queue \"%s\": max_messages, "
				"max_rss and max_age apply to mode = "
				"\"persistent\" only\n",
				q->file, q->line, q->name);
			n++;
		}
	}
	return n;
}
