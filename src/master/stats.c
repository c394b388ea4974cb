/*
 * stats.c: Prometheus text exposition (version 0.0.4): samples with
 * escaped labels, and the task-duration histogram (pure).
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "master/master.h"

/* 10 ms to an hour: the durations tasks have */
const double histogram_bounds[HISTOGRAM_BUCKETS] = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,    2.5,  5,
    10,	  30,	 60,   120, 300,  600, 1800, 3600,
};

void histogram_observe(struct histogram *h, double seconds)
{
	int i = 0;

	while (i < HISTOGRAM_BUCKETS && seconds > histogram_bounds[i])
		i++;
	h->counts[i]++; /* i == HISTOGRAM_BUCKETS: above the last bound */
	h->count++;
	h->sum += seconds;
}

void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped as the format wants. */
static void label_value(FILE *f, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
	}
}

/* {k="v",...} from NULL-terminated name, value pairs, plus one more. */
static void labels(FILE *f, const char *const *kv, const char *k, const char *v)
{
	bool any = false;

	fputc('{', f);
	for (; kv != NULL && kv[0] != NULL; kv += 2) {
		fprintf(f, "%s%s=\"", any ? "," : "", kv[0]);
		label_value(f, kv[1]);
		fputc('"', f);
		any = true;
	}
	if (k != NULL) {
		fprintf(f, "%s%s=\"", any ? "," : "", k);
		label_value(f, v);
		fputc('"', f);
	}
	fputc('}', f);
}

/* The shortest %g text of v that reads back as v. */
static const char *shortest(double v, char *buf, size_t len)
{
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return buf;
}

static void number(FILE *f, double v)
{
	char text[40];

	if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else if (isnan(v))
		fputs("NaN", f);
	else if (v == floor(v) && fabs(v) < 9e15)
		fprintf(f, "%" PRId64, (int64_t)v);
	else
		fputs(shortest(v, text, sizeof(text)), f);
}

void prom_sample(FILE *f, const char *name, const char *const *kv, double v)
{
	fputs(name, f);
	labels(f, kv, NULL, NULL);
	fputc(' ', f);
	number(f, v);
	fputc('\n', f);
}

void prom_histogram(FILE *f, const char *name, const char *const *kv,
		    const struct histogram *h)
{
	char le[32];
	uint64_t sum = 0;

	for (int i = 0; i <= HISTOGRAM_BUCKETS; i++) {
		sum += h->counts[i];
		if (i < HISTOGRAM_BUCKETS)
			snprintf(le, sizeof(le), "%g", histogram_bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		fprintf(f, "%s_bucket", name);
		labels(f, kv, "le", le);
		fprintf(f, " %" PRIu64 "\n", sum);
	}
	fprintf(f, "%s_sum", name);
	labels(f, kv, NULL, NULL);
	fputc(' ', f);
	number(f, h->sum);
	fprintf(f, "\n%s_count", name);
	labels(f, kv, NULL, NULL);
	fprintf(f, " %" PRIu64 "\n", h->count);
}
