/* main.c: warrend's flags and start. */
#include "config.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "warren.h"

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

int main(int argc, char **argv)
{
	const char *path = SYSCONFDIR "/warren/warrend.conf";
	bool check = false, debug = false;
	struct config *cf;
	char err[1024];
	int c;

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
	cf = config_load(path, err, sizeof(err));
	if (check) {
		if (cf == NULL) {
			fprintf(stderr, "%s\n", err);
			return EX_CONFIG_STATUS;
		}
		config_warnings(cf, stderr);
		printf("configuration OK\n");
		config_free(cf);
		return 0;
	}
	if (cf == NULL) {
		log_fields(LOG_ERR, NULL, "%s", err);
		return EX_CONFIG_STATUS;
	}
	return master_run(path, cf);
}
