/*
 * identity.c: becoming who a handler runs as. Tells whether warrend may
 * switch users (the only user of libcap-ng), switches a handler's child to
 * its user, capabilities dropped, before exec, and signals it as that
 * user. users.c looks the users and groups up.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cap-ng.h>
#include <linux/capability.h>

#include "base/base.h"

bool identity_can_switch(void)
{
	if (capng_get_caps_process() != 0)
		return geteuid() == 0;
	return capng_have_capability(CAPNG_EFFECTIVE, CAP_SETUID) &&
	       capng_have_capability(CAPNG_EFFECTIVE, CAP_SETGID);
}

/* Empty the bounding set, when allowed (CAP_SETPCAP): then not even a
 * program run as root can get a capability back. */
static void drop_bounding(void)
{
	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1)
			return; /* EINVAL: past the last; EPERM: not ours */
}

/* No capability left in the ambient, inheritable, permitted and
 * effective sets; checked. */
static int drop_caps(void)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];

	(void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capset, &hdr, d) == -1)
		return -1;
	if (syscall(SYS_capget, &hdr, d) == -1)
		return -1;
	for (int i = 0; i < 2; i++)
		if (d[i].effective || d[i].permitted || d[i].inheritable) {
			errno = EPERM;
			return -1;
		}
	return 0;
}

int identity_enter(const struct identity *id)
{
	bool self = !id->set || (id->uid == getuid() && id->gid == getgid());

	if (!self) {
		drop_bounding();
		if (syscall(SYS_setgroups, (size_t)id->ngroups, id->groups) ==
		    -1)
			return ID_SETGROUPS;
		if (syscall(SYS_setresgid, id->gid, id->gid, id->gid) == -1)
			return ID_SETGID;
		if (syscall(SYS_setresuid, id->uid, id->uid, id->uid) == -1)
			return ID_SETUID;
		if (getuid() != id->uid || geteuid() != id->uid ||
		    getgid() != id->gid || getegid() != id->gid) {
			errno = EPERM;
			return ID_VERIFY;
		}
	}
	if (id->set && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return ID_NO_NEW_PRIVS;
	/* a handler that is not root needs none (a root one stays root) */
	if ((getuid() != 0 || geteuid() != 0) && drop_caps() == -1)
		return ID_CAPS;
	return 0;
}

const char *identity_step(int step)
{
	switch (step) {
	case ID_SETGROUPS:
		return "setgroups";
	case ID_SETGID:
		return "setgid";
	case ID_SETUID:
		return "setuid";
	case ID_VERIFY:
		return "the switch did not take";
	case ID_NO_NEW_PRIVS:
		return "no_new_privs";
	case ID_CAPS:
		return "dropping capabilities";
	}
	return "?";
}

int identity_kill(const struct identity *id, pid_t target, int sig)
{
	uid_t self = geteuid();
	int r, e, pdeath = 0;

	r = kill(target, sig);
	if (r == 0 || errno != EPERM || !id->set || id->uid == self)
		return r;
	/*
	 * Not root, only CAP_SETUID: for a moment take the handler's uid as
	 * the effective one (the real and saved stay ours, so the handler
	 * gets no hold on us), send, and come back. The change of euid
	 * clears the parent-death signal: it is set again.
	 */
	(void)prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
	if (syscall(SYS_setresuid, (uid_t)-1, id->uid, (uid_t)-1) == -1) {
		errno = EPERM;
		return -1;
	}
	r = kill(target, sig);
	e = errno;
	if (syscall(SYS_setresuid, (uid_t)-1, self, (uid_t)-1) == -1)
		fatal("cannot return to uid %u after signalling a handler",
		      (unsigned)self);
	if (pdeath != 0)
		(void)prctl(PR_SET_PDEATHSIG, pdeath, 0, 0, 0);
	errno = e;
	return r;
}
