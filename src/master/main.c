/* main.c: warrend's flags and start. */
#include "config.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <syslog.h>
#include <unistd.h>

#include "master/master.h"

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: warrend [-c FILE] [-t] [-d] [-V] [-h]\n"
	    "  -c FILE  configuration file (default %s/warren/warrend.conf)\n"
	    "  -t       check the configuration and exit\n"
	    "  -d       debug logging\n"
	    "  -V       print the version and exit\n"
	    "  -h       this help\n",
	    SYSCONFDIR);
}

/* fds 0-2 must be open, or pipes made later could land on them */
static void sane_stdio(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) == -1) {
			int n = open("/dev/null", O_RDWR);

			if (n != fd && n >= 0)
				close(n);
		}
	}
}

/*
 * Each worker costs the master a socket and itself a few fds: large pools
 * need more than the soft limit of 1024 systemd starts services with.
 * Raised to the hard limit; handlers get the old soft limit back.
 */
static void raise_nofile(void)
{
	struct rlimit rl;
	rlim_t want;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1 << 20)
		   ? (1 << 20)
		   : rl.rlim_max;
	if (rl.rlim_cur >= want)
		return;
	handler_set_nofile((unsigned long)rl.rlim_cur);
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		log_warn("setrlimit RLIMIT_NOFILE %lu", (unsigned long)want);
}

int main(int argc, char **argv)
{
	const char *path = SYSCONFDIR "/warren/warrend.conf";
	bool check = false, debug = false;
	struct config *cf;
	char err[1024];
	int c;

	/*
	 * Before any secret is read: no core file, and no process of our
	 * uid (a handler) may read our memory or ptrace us. A handler is
	 * exec'd, and dumpable again.
	 */
	prctl(PR_SET_DUMPABLE, 0);
	sane_stdio();
	while ((c = getopt(argc, argv, "c:tdVh")) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check = true;
			break;
		case 'd':
			debug = true;
			break;
		case 'V':
			printf("warrend %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 64;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 64;
	}
	log_init("warrend", debug);
	if (journal_is_stderr())
		log_to_journal(journal_send);
	cf = config_load(path, err, sizeof(err));
	if (cf != NULL && identity_check(cf, err, sizeof(err)) != 0) {
		config_free(cf);
		cf = NULL;
	}
	if (check) {
		if (cf == NULL) {
			fprintf(stderr, "%s\n", err);
			return EX_CONFIG_STATUS;
		}
		config_warnings(cf, stderr);
		identity_warnings(cf, stderr);
		printf("configuration OK\n");
		config_free(cf);
		return 0;
	}
	if (cf == NULL) {
		log_fields(LOG_ERR, NULL, "%s", err);
		return EX_CONFIG_STATUS;
	}
	raise_nofile();
	return master_run(path, cf);
}
