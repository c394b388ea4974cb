/*
 * users.c: users and groups by name or number, and the identity (uid, gid,
 * supplementary groups) a queue's handlers take. Plain libc, so that the
 * configuration can be read without libcap-ng.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

/* A name, or a decimal id when no entry has that name. */
static bool numeric(const char *s, unsigned long *v)
{
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return false;
	errno = 0;
	*v = strtoul(s, &end, 10);
	return errno == 0 && *end == '\0' && *v < 0xffffffffUL;
}

int identity_user(const char *user, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam(user);
	unsigned long v;

	if (pw == NULL && numeric(user, &v))
		pw = getpwuid((uid_t)v);
	if (pw == NULL)
		return -1;
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int identity_group(const char *group, gid_t *gid)
{
	struct group *gr = getgrnam(group);
	unsigned long v;

	if (gr == NULL && numeric(group, &v))
		gr = getgrgid((gid_t)v);
	if (gr == NULL)
		return -1;
	*gid = gr->gr_gid;
	return 0;
}

int identity_lookup(const char *user, const char *group, struct identity *id,
		    char *err, size_t errlen)
{
	struct passwd *pw;
	int n = 32;

	memset(id, 0, sizeof(*id));
	if (user == NULL)
		return 0;
	if (identity_user(user, &id->uid, &id->gid) != 0 ||
	    (pw = getpwuid(id->uid)) == NULL) {
		snprintf(err, errlen, "user = \"%s\": no such user", user);
		return -1;
	}
	if (group != NULL && identity_group(group, &id->gid) != 0) {
		snprintf(err, errlen, "group = \"%s\": no such group", group);
		return -1;
	}
	/* initgroups(3)'s list, made here: it allocates, a child must not */
	for (;;) {
		int want = n;

		id->groups = realloc(id->groups, (size_t)n * sizeof(gid_t));
		if (id->groups == NULL)
			fatal("realloc");
		if (getgrouplist(pw->pw_name, id->gid, id->groups, &want) >=
		    0) {
			id->ngroups = want;
			break;
		}
		n = want > n ? want : n * 2;
		if (n > 65536) {
			snprintf(err, errlen, "user = \"%s\": too many groups",
				 user);
			free(id->groups);
			id->groups = NULL;
			return -1;
		}
	}
	id->set = true;
	return 0;
}

void identity_free(struct identity *id)
{
	free(id->groups);
	id->groups = NULL;
	id->ngroups = 0;
}

bool identity_same(const struct identity *a, const struct identity *b)
{
	if (a->set != b->set)
		return false;
	if (!a->set)
		return true;
	return a->uid == b->uid && a->gid == b->gid &&
	       a->ngroups == b->ngroups &&
	       memcmp(a->groups, b->groups,
		      (size_t)a->ngroups * sizeof(gid_t)) == 0;
}
