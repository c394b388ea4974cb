/*
 * slow.c: queue.slow, php-fpm's slowlog for warren: a handler still
 * running past N seconds is logged once per message with its pid,
 * elapsed time and kernel wait channel (/proc/PID/wchan).
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "handler/handler_int.h"

int64_t slow_deadline(int64_t started, int slow)
{
	return slow > 0 ? started + (int64_t)slow * 1000 : 0;
}

void slow_wchan_text(const char *raw, size_t n, char *buf, size_t len)
{
	size_t o = 0;

	while (n > 0 && (raw[n - 1] == '\n' || raw[n - 1] == ' '))
		n--;
	/* "0" or nothing: running, or the kernel will not say */
	if (n == 0 || (n == 1 && raw[0] == '0')) {
		snprintf(buf, len, "-");
		return;
	}
	for (size_t i = 0; i < n && o + 1 < len; i++) {
		unsigned char c = (unsigned char)raw[i];

		buf[o++] = (c < 0x21 || c > 0x7e) ? '?' : (char)c;
	}
	buf[o] = '\0';
}

void slow_wchan(pid_t pid, char *buf, size_t len)
{
	char path[64], raw[128];
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/wchan", (long)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		n = read(fd, raw, sizeof(raw));
		close(fd);
	}
	if (n < 0) {
		snprintf(buf, len, "unknown");
		return;
	}
	slow_wchan_text(raw, (size_t)n, buf, len);
}

void slow_words(char *buf, size_t len, const char *message_id, pid_t pid,
		int64_t elapsed_ms, int slow, const char *wchan)
{
	snprintf(buf, len,
		 "%s: slow: still running after %lld.%01lld s (slow = %d): "
		 "pid %ld, wchan %s",
		 message_id != NULL ? message_id : "-",
		 (long long)(elapsed_ms / 1000),
		 (long long)(elapsed_ms % 1000 / 100), slow, (long)pid, wchan);
}
