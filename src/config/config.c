/*
 * config.c: the only user of libconfuse. Parses warrend.conf and the files
 * its `include` patterns name (their text from text.c) into fresh cfg_t's
 * with the schema below, validates them through check.c (every error
 * names file and line), copies them into the plain structs of warren.h
 * (conf.c) and frees the cfg_t's.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <confuse.h>

#include "config/config_int.h"

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

/* An integer key within its range (check.c's table, by key name). */
static int v_int(cfg_t *cfg, cfg_opt_t *opt)
{
	char why[200];

	for (unsigned i = 0; i < cfg_opt_size(opt); i++)
		if (conf_check_int(opt->name, cfg_opt_getnint(opt, i), why,
				   sizeof(why)) != 0) {
			cfg_error(cfg, "%s", why);
			return -1;
		}
	return 0;
}

/* Lines of the user keys seen, by section, for copy_queue. */
struct user_line {
	const cfg_t *sec;
	int line;
};
static struct user_line *user_lines;
static int nuser_lines;

static int v_user(cfg_t *cfg, cfg_opt_t *opt)
{
	char why[400];

	if (conf_check_user(cfg_opt_getnstr(opt, 0), why, sizeof(why)) != 0) {
		cfg_error(cfg, "%s", why);
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

/* Each value of opt through a check of plain strings (check.c); its
 * words at cfg's line. */
static int each_str(cfg_t *cfg, cfg_opt_t *opt,
		    int (*check)(const char *v, char *why, size_t len))
{
	char why[600];

	for (unsigned i = 0; i < cfg_opt_size(opt); i++)
		if (check(cfg_opt_getnstr(opt, i), why, sizeof(why)) != 0) {
			cfg_error(cfg, "%s", why);
			return -1;
		}
	return 0;
}

#define STR_CHECK(fn, check)                                                   \
	static int fn(cfg_t *cfg, cfg_opt_t *opt)                              \
	{                                                                      \
		return each_str(cfg, opt, check);                              \
	}
STR_CHECK(v_group, conf_check_group)
STR_CHECK(v_type, conf_check_type)
STR_CHECK(v_mode, conf_check_mode)
STR_CHECK(v_url, conf_check_url)
STR_CHECK(v_control_socket, conf_check_control_socket)
STR_CHECK(v_listen, conf_check_listen)
STR_CHECK(v_environment, conf_check_environment)
STR_CHECK(v_workdir, conf_check_workdir)
STR_CHECK(v_exchange_type, conf_check_exchange_type)
STR_CHECK(v_keys, routing_key_check)

static int v_backoff(cfg_t *cfg, cfg_opt_t *opt)
{
	char why[100];

	if (conf_check_backoff(cfg_opt_getnfloat(opt, 0), why, sizeof(why)) ==
	    0)
		return 0;
	cfg_error(cfg, "%s", why);
	return -1;
}

static int v_command(cfg_t *cfg, cfg_opt_t *opt)
{
	char why[600];

	if (cfg_opt_size(opt) == 0) {
		cfg_error(cfg, "command is an empty list");
		return -1;
	}
	/* the program; its arguments are anything */
	if (conf_check_command(cfg_opt_getnstr(opt, 0), why, sizeof(why)) == 0)
		return 0;
	cfg_error(cfg, "%s", why);
	return -1;
}

static int v_arguments(cfg_t *cfg, cfg_opt_t *opt)
{
	unsigned n = cfg_opt_size(opt);
	const char **v = xcalloc(n + 1, sizeof(*v));
	char why[400];
	int r;

	for (unsigned i = 0; i < n; i++)
		v[i] = cfg_opt_getnstr(opt, i);
	r = conf_check_arguments(v, (int)n, why, sizeof(why));
	free(v);
	if (r != 0)
		cfg_error(cfg, "%s", why);
	return r;
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

/* A queue section's keys that are checked together (check.c). */
static void queue_keys_of(cfg_t *q, struct queue_keys *k)
{
	k->workers = cfg_getint(q, "workers");
	k->max_workers = cfg_getint(q, "max_workers");
	k->quorum = strcmp(cfg_getstr(q, "type"), "quorum") == 0;
	k->durable = cfg_getbool(q, "durable");
	k->declare = cfg_getbool(q, "declare");
	k->has_user = cfg_getstr(q, "user") != NULL;
	k->has_group = cfg_getstr(q, "group") != NULL;
	k->delay = cfg_getint(q, "retry|delay");
	k->max_delay = cfg_getint(q, "retry|max_delay");
	k->delivery_limit = cfg_getint(q, "delivery_limit");
	k->nargs = (int)cfg_size(q, "arguments");
	k->args = xcalloc((size_t)k->nargs + 1, sizeof(*k->args));
	for (int i = 0; i < k->nargs; i++)
		k->args[i] = cfg_getnstr(q, "arguments", (unsigned)i);
}

/* Called when a queue section closes: the checks that need all its keys. */
static int v_queue(cfg_t *cfg, cfg_opt_t *opt)
{
	cfg_t *q = cfg_opt_getnsec(opt, cfg_opt_size(opt) - 1);
	struct queue_keys k = {.name = cfg_title(q)};
	char why[600];
	int r;

	if (k.name == NULL || k.name[0] == '\0' || strlen(k.name) > 200) {
		cfg_error(cfg, "queue name must be 1 to 200 characters");
		return -1;
	}
	if (cfg_size(q, "command") == 0) {
		cfg_error(q, "queue \"%s\": command is required", k.name);
		return -1;
	}
	queue_keys_of(q, &k);
	r = conf_check_queue_keys(&k, why, sizeof(why));
	free(k.args);
	if (r != 0)
		cfg_error(cfg, "%s", why);
	return r;
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

/* The integer keys, each checked by v_int. */
static const char *const int_keys[] = {"broker|heartbeat",
				       "broker|connect_timeout",
				       "broker|consumer_timeout",
				       "shutdown_timeout",
				       "queue|workers",
				       "queue|max_workers",
				       "queue|idle_timeout",
				       "queue|prefetch",
				       "queue|timeout",
				       "queue|kill_grace",
				       "queue|retry|attempts",
				       "queue|retry|delay",
				       "queue|retry|max_delay",
				       "queue|max_messages",
				       "queue|max_rss",
				       "queue|max_age",
				       "queue|slow",
				       "queue|max_body",
				       "queue|limits|memory",
				       "queue|limits|cpu",
				       "queue|limits|processes",
				       "queue|limits|files",
				       "queue|delivery_limit",
				       "queue|breaker|cooldown",
				       "queue|breaker|failures",
				       NULL};

/* The schema of the main file, or of an included one (queues only). */
static cfg_t *schema(bool main_file)
{
	cfg_t *cfg = cfg_init(root_opts, CFGF_NONE);

	cfg_set_error_function(cfg, on_error);
	for (const char *const *k = int_keys; *k != NULL; k++)
		cfg_set_validate_func(cfg, *k, v_int);
	cfg_set_validate_func(cfg, "broker", v_broker);
	cfg_set_validate_func(cfg, "broker|url", v_url);
	cfg_set_validate_func(cfg, "control_socket", v_control_socket);
	cfg_set_validate_func(cfg, "metrics|listen", v_listen);
	cfg_set_validate_func(cfg, "queue", v_queue);
	cfg_set_validate_func(cfg, "queue|command", v_command);
	cfg_set_validate_func(cfg, "queue|type", v_type);
	cfg_set_validate_func(cfg, "queue|retry|backoff", v_backoff);
	cfg_set_validate_func(cfg, "queue|environment", v_environment);
	cfg_set_validate_func(cfg, "queue|workdir", v_workdir);
	cfg_set_validate_func(cfg, "queue|mode", v_mode);
	cfg_set_validate_func(cfg, "queue|user", v_user);
	cfg_set_validate_func(cfg, "queue|group", v_group);
	cfg_set_validate_func(cfg, "queue|arguments", v_arguments);
	cfg_set_validate_func(cfg, "queue|bind", v_bind);
	cfg_set_validate_func(cfg, "queue|bind|type", v_exchange_type);
	cfg_set_validate_func(cfg, "queue|bind|keys", v_keys);
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

static int copy_config(struct config *cf, cfg_t *cfg)
{
	cfg_t *b = cfg_getsec(cfg, "broker");

	cf->broker.urls = copy_list(b, "url", &cf->broker.nurls);
	cf->broker.heartbeat = (int)cfg_getint(b, "heartbeat");
	cf->broker.password_file = dup_or_null(cfg_getstr(b, "password_file"));
	cf->broker.secret = conf_secret_hash(cf->broker.password_file);
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
 * Parse one file with the schema of a main or an included file. Returns
 * the cfg_t, or NULL with "FILE:LINE: what" in err. *last is the file's
 * last line, for errors about the file as a whole; *include_line where
 * its `include` is.
 */
static cfg_t *parse_file(const char *path, bool main_file, int *last,
			 int *include_line, char *err, size_t errlen)
{
	struct errbuf eb = {path, err, errlen, false, 0};
	char *clean = conf_text(path, main_file, last, err, errlen);
	cfg_t *cfg;
	int r;

	if (clean == NULL)
		return NULL;
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
	    config_check_names(cf, err, errlen) != 0) {
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
