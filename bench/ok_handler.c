/*
 * bench/ok_handler.c: the trivial persistent handler of bench/throughput.
 * It reads each frame (warren-handler(7)), skips the metadata and the
 * body, and answers "ok": what is measured is warrend's own cost per
 * message in persistent mode, as /bin/cat is in exec mode.
 *
 *     cc -O2 -Wall -Wextra -o ok_handler bench/ok_handler.c
 */
#define _POSIX_C_SOURCE 200809L /* getline */

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
	char *line = NULL, body[65536];
	size_t cap = 0, n, len, chunk;

	while (getline(&line, &cap, stdin) > 0) {
		if (sscanf(line, "warren %zu %zu", &n, &len) != 2)
			return 1;
		while (n-- > 0)
			if (getline(&line, &cap, stdin) <= 0)
				return 1;
		for (; len > 0; len -= chunk) {
			chunk = len < sizeof(body) ? len : sizeof(body);
			if (fread(body, 1, chunk, stdin) != chunk)
				return 1;
		}
		fputs("ok\n", stdout);
		if (fflush(stdout) == EOF)
			return 1;
	}
	return 0;
}
