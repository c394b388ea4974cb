/* oversize.c: a delivery's body over max_body, spooled as it arrives to
 * an unlinked file and mapped, never held on the heap; dropped when no
 * file takes it. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mq_int.h"

void mq_set_max_body(struct mq *m, size_t bytes)
{
	m->max_body = bytes;
}

/* An unlinked, close-on-exec file in $TMPDIR (else /var/tmp), or -1. */
static int spool_file(char *why, size_t len)
{
	const char *dir = getenv("TMPDIR");
	char path[4200];
	int fd;

	if (dir == NULL || dir[0] == '\0')
		dir = "/var/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	/* a file system without O_TMPFILE: a named file, unlinked at once */
	snprintf(path, sizeof(path), "%s/warren-body-XXXXXX", dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, len, "no spool file in %s: %s", dir,
			 strerror(errno));
		return -1;
	}
	unlink(path);
	return fd;
}

void mq_spool_open(struct kept *k, size_t size)
{
	k->over = size;
	k->spool = spool_file(k->unkept, sizeof(k->unkept));
}

void mq_spool_write(struct kept *k, const void *p, size_t n)
{
	const char *c = p;

	while (k->spool >= 0 && n > 0) {
		ssize_t w = write(k->spool, c, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(k->unkept, sizeof(k->unkept),
				 "writing its spool file: %s",
				 w < 0 ? strerror(errno) : "no progress");
			close(k->spool);
			k->spool = -1;
			return;
		}
		c += w;
		n -= (size_t)w;
	}
}

size_t mq_spool_end(struct kept *k, bool complete)
{
	void *p;

	if (k->spool < 0)
		return 0;
	p = complete ? mmap(NULL, k->over, PROT_READ, MAP_SHARED, k->spool, 0)
		     : MAP_FAILED;
	if (complete && p == MAP_FAILED)
		snprintf(k->unkept, sizeof(k->unkept),
			 "mapping its spool file: %s", strerror(errno));
	close(k->spool); /* the mapping keeps the file */
	k->spool = -1;
	if (p == MAP_FAILED)
		return 0;
	k->body = p;
	k->mapped = k->over;
	return k->mapped;
}
