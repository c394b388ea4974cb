/*
 * notify.c: the only user of libsystemd. sd_notify for the service
 * manager, and native journal records.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* records would all name journal_send() as their source otherwise */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

#include "base/base.h"

void notify_ready(void)
{
	sd_notify(0, "READY=1");
}

void notify_reloading(void)
{
	struct timespec ts;
	char buf[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
		     (unsigned long long)ts.tv_nsec / 1000ULL);
	sd_notify(0, buf);
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void notify_status(const char *status)
{
	sd_notifyf(0, "STATUS=%s", status);
}

void notify_watchdog(void)
{
	sd_notify(0, "WATCHDOG=1");
}

long notify_watchdog_ms(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	return (long)((usec + 999) / 1000); /* under 1 ms is 1, not off */
}

/* JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd gave us. */
bool journal_is_stderr(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (e == NULL || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) == -1)
		return false;
	return st.st_dev == dev && st.st_ino == ino;
}

int journal_send(int prio, const char *message, const char **fields,
		 int nfields)
{
	struct iovec iov[16];
	char pbuf[16], *mbuf;
	int n = 0, r;

	snprintf(pbuf, sizeof(pbuf), "PRIORITY=%d", prio);
	if (asprintf(&mbuf, "MESSAGE=%s", message) == -1)
		return -1;
	iov[n].iov_base = pbuf;
	iov[n++].iov_len = strlen(pbuf);
	iov[n].iov_base = mbuf;
	iov[n++].iov_len = strlen(mbuf);
	for (int i = 0; i < nfields && n < 16; i++) {
		iov[n].iov_base = (void *)fields[i];
		iov[n++].iov_len = strlen(fields[i]);
	}
	r = sd_journal_sendv(iov, n);
	free(mbuf);
	return r;
}
