/* test_ledger.c: the marks the master keeps on messages (their wire form:
 * test_record.c). */
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
	test_copy();
	return unit_done("test_ledger");
}
