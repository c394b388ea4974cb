/* test_ledger.c: the marks the master keeps on messages, and their wire form.
 */
#include "config.h"

#include <stdlib.h>

#include "model/model.h"
#include "unit.h"

static void test_add_find_forget(void)
{
	struct ledger l = {0};
	struct mark *k = ledger_add(&l, "id:a");

	CHECK(k != NULL && k->deaths == 0 && k->lost == 0);
	k->deaths = 2;
	CHECK(ledger_add(&l, "id:a") == k); /* found, not made twice */
	CHECK(l.n == 1);
	CHECK(ledger_find(&l, "id:b") == NULL);
	ledger_add(&l, "id:b");
	ledger_forget(&l, "id:a");
	CHECK(ledger_find(&l, "id:a") == NULL);
	CHECK(ledger_find(&l, "id:b") != NULL);
	ledger_forget(&l, "id:nothing");
	CHECK(l.n == 1);
	ledger_free(&l);
	CHECK(l.n == 0);
}

static void test_bounded(void)
{
	struct ledger l = {0};
	char key[32];

	for (int i = 0; i < LEDGER_MAX + 10; i++) {
		snprintf(key, sizeof(key), "id:%d", i);
		ledger_add(&l, key)->lost = i;
	}
	CHECK(l.n == LEDGER_MAX);
	CHECK(ledger_find(&l, "id:0") == NULL); /* the oldest went */
	snprintf(key, sizeof(key), "id:%d", LEDGER_MAX + 9);
	CHECK(ledger_find(&l, key) != NULL);
	ledger_free(&l);
}

static void test_wire(void)
{
	struct ledger a = {0}, b = {0};
	struct mark *k = ledger_add(&a, "id:with space\tand tab");
	char line[400];

	k->deaths = 1;
	k->lost = 3;
	k->pending = 2;
	k->attempt = 4;
	k->delay = 40;
	snprintf(k->reason, sizeof(k->reason), "consumer_timeout 3s");
	ledger_encode(k, line, sizeof(line));
	CHECK(ledger_apply(&b, line) == 0);
	k = ledger_find(&b, "id:with space\tand tab");
	CHECK(k != NULL && k->deaths == 1 && k->lost == 3);
	CHECK(k != NULL && k->pending == 2 && k->attempt == 4 &&
	      k->delay == 40);
	CHECK_STR(k ? k->reason : NULL, "consumer_timeout 3s");
	/* nothing left to remember: forgotten */
	CHECK(ledger_apply(&b, "0\t0\t0\t0\t0\t\tid:with space\tand tab") == 0);
	CHECK(b.n == 0);
	CHECK(ledger_apply(&b, "x\t0\t0\t0\t0\t\tk") == -1);
	CHECK(ledger_apply(&b, "1\t0\t0\t0\t0\tno key") == -1);
	CHECK(ledger_apply(&b, "1\t0\t0\t0\t0\t\t") == -1);
	CHECK(ledger_apply(&b, "-1\t0\t0\t0\t0\t\tk") == -1);
	CHECK(ledger_apply(&b, "1\t0\t\tk") == -1); /* too few numbers */
	CHECK(b.n == 0);
	ledger_free(&a);
	ledger_free(&b);
}

static void test_copy(void)
{
	struct ledger a = {0}, c;

	ledger_add(&a, "id:x")->deaths = 2;
	ledger_copy(&c, &a);
	ledger_free(&a);
	CHECK(ledger_find(&c, "id:x") != NULL &&
	      ledger_find(&c, "id:x")->deaths == 2);
	ledger_free(&c);
}

int main(void)
{
	test_add_find_forget();
	test_bounded();
	test_wire();
	test_copy();
	return unit_done("test_ledger");
}
