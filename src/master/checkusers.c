/*
 * checkusers.c: whether warrend can become the users its queues name
 * (refused at start and at reload when it cannot), and -t's warning for
 * queues whose handlers would run as warrend itself.
 */
#include "config.h"

#include <pwd.h>
#include <stdio.h>
#include <unistd.h>

#include "master/master.h"

/* Whether a handler of q runs as warrend's own uid and gid. */
static bool runs_as_self(const struct queue_conf *q)
{
	return !q->id.set || (q->id.uid == getuid() && q->id.gid == getgid());
}

int identity_check(const struct config *cf, char *err, size_t errlen)
{
	bool can = identity_can_switch();

	for (int i = 0; i < cf->nqueues && !can; i++) {
		const struct queue_conf *q = &cf->queues[i];

		if (runs_as_self(q))
			continue;
		snprintf(err, errlen,
			 "%s:%d: queue \"%s\": user = \"%s\": warrend (uid "
			 "%u) can switch to another user only as root or "
			 "with CAP_SETUID and CAP_SETGID",
			 cf->path, q->user_line, q->name, q->user,
			 (unsigned)getuid());
		return -1;
	}
	return 0;
}

int identity_warnings(const struct config *cf, FILE *out)
{
	struct passwd *pw;
	char self[64];
	int n = 0;

	if (!identity_can_switch())
		return 0;
	pw = getpwuid(getuid());
	if (pw != NULL)
		snprintf(self, sizeof(self), "%s", pw->pw_name);
	else
		snprintf(self, sizeof(self), "uid %u", (unsigned)getuid());
	for (int i = 0; i < cf->nqueues; i++) {
		const struct queue_conf *q = &cf->queues[i];

		if (!runs_as_self(q))
			continue;
		fprintf(out,
			"%s:%d: warning: queue \"%s\": its handlers run as "
			"warrend's own user (%s): they can read warrend's "
			"files and use its control socket; set user\n",
			cf->path, q->user_line ? q->user_line : q->line,
			q->name, self);
		n++;
	}
	return n;
}
