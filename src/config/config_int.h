/*
 * config_int.h: what the files of src/config/ share: a file's text before
 * libconfuse reads it, and the value checks that take plain strings and
 * numbers; included only there and by tests/unit.
 */
#ifndef WARREN_CONFIG_CONFIG_INT_H
#define WARREN_CONFIG_CONFIG_INT_H

#include "config/conf.h"

/* ------------------------------------------------------------------ */
/* text.c: a configuration file's text before libconfuse sees it */

/*
 * path's text (an included file: a regular file only) with its comments
 * blanked out and its newlines kept; *last is its last line. NULL with
 * "FILE:LINE: what" in err (a NUL byte, an unterminated string). Caller
 * frees.
 */
char *conf_text(const char *path, bool main_file, int *last, char *err,
		size_t errlen);
/* A hash of the first line of path (a password file), 0 if unreadable. */
uint64_t conf_secret_hash(const char *path);

/* ------------------------------------------------------------------ */
/* check.c: configuration values checked on plain strings and
 * numbers; each 0, or -1 with what is wrong in why */

/* An integer key (by its name: "timeout", "memory") within its range. */
int conf_check_int(const char *name, long v, char *why, size_t len);
int conf_check_user(const char *v, char *why, size_t len);
int conf_check_group(const char *v, char *why, size_t len);
int conf_check_backoff(double v, char *why, size_t len);
int conf_check_type(const char *v, char *why, size_t len);
int conf_check_mode(const char *v, char *why, size_t len);
int conf_check_url(const char *v, char *why, size_t len);
int conf_check_control_socket(const char *v, char *why, size_t len);
int conf_check_listen(const char *v, char *why, size_t len);
/* one "NAME=value" of queue.environment */
int conf_check_environment(const char *e, char *why, size_t len);
/* the handler's program: a path */
int conf_check_command(const char *v, char *why, size_t len);
int conf_check_workdir(const char *v, char *why, size_t len);
/* queue.arguments: each parses, is known, and is given once */
int conf_check_arguments(const char *const *v, int n, char *why, size_t len);
int conf_check_exchange_type(const char *v, char *why, size_t len);

/* A queue section's keys that are checked together. */
struct queue_keys {
	const char *name;
	long workers, max_workers, delay, max_delay, delivery_limit;
	bool quorum, durable, declare, has_user, has_group;
	const char **args; /* queue.arguments */
	int nargs;
};
/* The name, quorum, user/group, elastic, retry and topology checks. */
int conf_check_queue_keys(const struct queue_keys *k, char *why, size_t len);

/* ------------------------------------------------------------------ */
/* conf.c: the loaded configuration as plain structs */

/* No queue may be another's NAME.failed or NAME.retry.<N>s. */
int config_check_names(const struct config *cf, char *err, size_t errlen);

#endif
