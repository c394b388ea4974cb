/*
 * fuzz_record.c: libFuzzer harness for the master/worker records
 * (record.c). The input is decoded as a report and as a command. Asserts,
 * besides the sanitizers' findings (a read past the input is one: the
 * input is not NUL-terminated): a refusal says why; a record that decodes
 * encodes again, to the very same bytes (the wire form is canonical), and
 * those decode to an equal record.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

static void fail(const char *what, const char *err)
{
	fprintf(stderr, "fuzz_record: %s: %s\n", what, err);
	abort();
}

static void one_way(const uint8_t *data, size_t size, enum record_dir dir)
{
	struct record r, back;
	char buf[RECORD_MAX], err[256];
	int n;

	err[0] = '\0';
	if (record_decode(data, size, dir, &r, err, sizeof(err)) != 0) {
		if (err[0] == '\0')
			fail("refused without a reason", "");
		return;
	}
	n = record_encode(&r, buf, sizeof(buf), err, sizeof(err));
	if (n < 0)
		fail("decoded but does not encode", err);
	if ((size_t)n != size || memcmp(buf, data, size) != 0)
		fail("encodes to other bytes", record_name(dir, r.kind));
	if (record_decode(buf, (size_t)n, dir, &back, err, sizeof(err)) != 0)
		fail("its encoding does not decode", err);
	if (!record_equal(&r, &back))
		fail("decodes to another record", record_name(dir, r.kind));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one_way(data, size, RECORD_REPORT);
	one_way(data, size, RECORD_COMMAND);
	return 0;
}
