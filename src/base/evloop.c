/*
 * evloop.c: the master's one epoll set. Each watched fd has a callback;
 * ev_wait() sleeps until one is ready or a timeout passes and calls them.
 * A watch removed while a batch is being dispatched is freed after it.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/base.h"

#define EV_BATCH 64

struct ev {
	int fd;
	ev_fn *fn; /* NULL once removed */
	void *arg;
	struct ev *next_dead;
};

static int epfd = -1;
static struct ev *dead;
static int dispatching;

int ev_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	return epfd;
}

int ev_fd(void)
{
	return epfd;
}

struct ev *ev_add(int fd, uint32_t events, ev_fn *fn, void *arg)
{
	struct ev *e = xcalloc(1, sizeof(*e));
	struct epoll_event ee = {.events = events, .data.ptr = e};

	e->fd = fd;
	e->fn = fn;
	e->arg = arg;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ee) == -1) {
		log_warn("epoll_ctl add fd %d", fd);
		free(e);
		return NULL;
	}
	return e;
}

int ev_mod(struct ev *e, uint32_t events)
{
	struct epoll_event ee = {.events = events, .data.ptr = e};

	if (e == NULL)
		return -1;
	return epoll_ctl(epfd, EPOLL_CTL_MOD, e->fd, &ee);
}

void ev_del(struct ev *e)
{
	if (e == NULL)
		return;
	/* before the fd is closed; a closed fd would leave the set alone */
	(void)epoll_ctl(epfd, EPOLL_CTL_DEL, e->fd, NULL);
	e->fn = NULL;
	if (dispatching) {
		e->next_dead = dead;
		dead = e;
	} else {
		free(e);
	}
}

int ev_wait(int timeout_ms)
{
	struct epoll_event ee[EV_BATCH];
	int n = epoll_wait(epfd, ee, EV_BATCH, timeout_ms);

	if (n == -1) {
		if (errno != EINTR)
			fatal("epoll_wait");
		return 0;
	}
	dispatching++;
	for (int i = 0; i < n; i++) {
		struct ev *e = ee[i].data.ptr;

		if (e->fn != NULL)
			e->fn(e->arg, ee[i].events);
	}
	if (--dispatching == 0)
		while (dead != NULL) {
			struct ev *e = dead;

			dead = e->next_dead;
			free(e);
		}
	return n;
}
