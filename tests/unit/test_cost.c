/*
 * test_cost.c: what a handler cost: the /proc/PID/stat and
 * /proc/PID/status parsers, rusage in ms and KiB, and /proc readings of a
 * pid that is not there.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <sys/resource.h>
#include <unistd.h>

#include "handler/handler_int.h"
#include "unit.h"

/* A stat line whose comm is comm, with utime..cstime as given. */
static long long ticks_of(const char *comm, const char *times)
{
	char line[512];

	snprintf(line, sizeof(line),
		 "1234 (%s) S 1 1234 1234 0 -1 4194560 100 0 0 0 %s 20 0 1 0 "
		 "555 10000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 "
		 "0 0 17 1 0 0 0 0 0\n",
		 comm, times);
	return cost_stat_ticks(line, strlen(line));
}

static void stat_lines(void)
{
	CHECK(ticks_of("cat", "7 3 0 0") == 10);
	CHECK(ticks_of("cat", "7 3 20 5") == 35);
	/* a name with spaces and parentheses of its own */
	CHECK(ticks_of("a b", "1 2 3 4") == 10);
	CHECK(ticks_of("a b) c", "1 2 3 4") == 10);
	CHECK(ticks_of(") S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 (",
		       "40 2 0 0") == 42);
	CHECK(ticks_of("x)", "100 0 0 0") == 100);
	CHECK(ticks_of("", "1 1 0 0") == 2);
	/* large values */
	CHECK(ticks_of("big", "4000000000 4000000000 0 0") == 8000000000LL);
	/* not a stat line */
	CHECK(cost_stat_ticks("", 0) == -1);
	CHECK(cost_stat_ticks("1234 (cat", 9) == -1);
	CHECK(cost_stat_ticks("1234 cat) S", 11) == -1);
	CHECK(cost_stat_ticks("1234 (cat) S 1 2", 16) == -1); /* cut short */
	CHECK(ticks_of("neg", "1 2 -3 4") == -1);
	CHECK(ticks_of("junk", "1 2x 3 4") == -1);
	{
		/* cut right after cstime: the last field still counts */
		const char *l = "1 (c) S 1 1 1 0 -1 0 0 0 0 0 5 6 7 8";

		CHECK(cost_stat_ticks(l, strlen(l)) == 26);
		CHECK(cost_stat_ticks(l, strlen(l) - 2) == -1); /* no cstime */
	}
}

/* One stat line: faults (minflt + majflt), ticks and the resident set. */
static void stat_samples(void)
{
	const char *l =
	    "1234 (a) b) S 1 1234 1234 0 -1 4194560 100 7 30 9 "
	    "5 6 7 8 20 0 1 0 555 10000000 300 18446744073709551615 "
	    "1 1 0\n";
	struct proc_sample s;

	CHECK(cost_stat_parse(l, strlen(l), &s) == 0);
	CHECK(s.faults == 130); /* children's faults left out */
	CHECK(s.ticks == 26);
	CHECK(s.rss_kb == 300 * (sysconf(_SC_PAGESIZE) / 1024));
	/* cut before rss: the rest still counts, the rss is unknown */
	CHECK(cost_stat_parse(l, 60, &s) == 0 && s.ticks == 26 &&
	      s.rss_kb == -1);
	CHECK(cost_stat_parse("1 (c) S 1 1 1 0 -1 0 x 0 2 0 5 6 7 8", 36, &s) ==
	      -1); /* minflt not a number */
}

static void status_texts(void)
{
	const char *st = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\n"
			 "VmPeak:\t  130000 kB\nVmHWM:\t  104512 kB\n"
			 "VmRSS:\t   10240 kB\nThreads:\t1\n";

	CHECK(cost_status_kb(st, "VmHWM") == 104512);
	CHECK(cost_status_kb(st, "VmRSS") == 10240);
	CHECK(cost_status_kb(st, "VmHW") == -1); /* not a prefix match */
	CHECK(cost_status_kb(st, "VmSwap") == -1);
	CHECK(cost_status_kb("Name:\tzombie\nState:\tZ (zombie)\n", "VmHWM") ==
	      -1);
	CHECK(cost_status_kb("VmHWM:\tlots\n", "VmHWM") == -1);
	CHECK(cost_status_kb("", "VmHWM") == -1);
}

static void rusage_figures(void)
{
	struct rusage ru = {0};
	struct handler_result r = {0};

	ru.ru_utime.tv_sec = 1;
	ru.ru_utime.tv_usec = 250000;
	ru.ru_stime.tv_usec = 40999;
	ru.ru_maxrss = 102400;
	CHECK(cost_rusage_ms(&ru) == 1290);
	cost_of_rusage(&r, &ru);
	CHECK(r.has_cpu && r.cpu_ms == 1290);
	CHECK(r.has_rss && r.max_rss_kb == 102400);
	CHECK(cost_ticks_ms(0) == 0);
	CHECK(cost_ticks_ms(sysconf(_SC_CLK_TCK)) == 1000);
}

/* No such process: every reading fails, none gives a number. */
static void missing_pid(void)
{
	pid_t none = INT_MAX - 1; /* above pid_max (at most 2^22) */
	struct proc_sample ps;

	errno = 0;
	CHECK(cost_proc_sample(none, &ps) == -1 && errno == ENOENT);
	errno = 0;
	CHECK(cost_proc_peak_kb(none) == -1 && errno == ENOENT);
	errno = 0;
	CHECK(cost_peak_reset(none) == -1 && errno == ENOENT);
	/* and our own process reads */
	CHECK(cost_proc_sample(getpid(), &ps) == 0 && ps.ticks >= 0 &&
	      ps.rss_kb > 0 && ps.faults > 0);
	CHECK(cost_proc_peak_kb(getpid()) > 0);
}

int main(void)
{
	stat_lines();
	stat_samples();
	status_texts();
	rusage_figures();
	missing_pid();
	return unit_done("test_cost");
}
