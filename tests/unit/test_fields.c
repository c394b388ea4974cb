/* test_fields.c: header values as handlers see them, of every AMQP type. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "model/model.h"
#include "unit.h"

static struct field num_i(int64_t i)
{
	struct field f = {.kind = FIELD_INT};

	f.v.i = i;
	return f;
}

static struct field num_u(enum field_kind kind, uint64_t u)
{
	struct field f = {.kind = kind};

	f.v.u = u;
	return f;
}

static struct field num_d(enum field_kind kind, double d)
{
	struct field f = {.kind = kind};

	f.v.d = d;
	return f;
}

static struct field dec(int32_t value, uint8_t scale)
{
	struct field f = {.kind = FIELD_DECIMAL};

	f.v.dec.value = value;
	f.v.dec.scale = scale;
	return f;
}

static struct field str(enum field_kind kind, const char *s, size_t n)
{
	struct field f = {.kind = kind};

	f.v.s.bytes = s;
	f.v.s.len = n;
	return f;
}

static struct field list(enum field_kind kind, const struct field *items, int n)
{
	struct field f = {.kind = kind};

	f.v.list.items = items;
	f.v.list.n = n;
	return f;
}

static struct field keyed(const char *key, size_t n, struct field f)
{
	f.key = key;
	f.key_len = n;
	return f;
}

/* f's text is want, exactly: same bytes, same length. */
#define CHECK_TEXT(f, want)                                                    \
	do {                                                                   \
		struct field f_ = (f);                                         \
		size_t len_ = 99;                                              \
		char *t_ = field_text(&f_, &len_);                             \
		CHECK_STR(t_, want);                                           \
		CHECK(len_ == strlen(want));                                   \
		free(t_);                                                      \
	} while (0)

static void scalars(void)
{
	struct field f = {.kind = FIELD_VOID};
	size_t len = 99;
	char *t;

	CHECK_TEXT(f, "");
	f.kind = FIELD_BOOL;
	f.v.b = true;
	CHECK_TEXT(f, "true");
	f.v.b = false;
	CHECK_TEXT(f, "false");
	CHECK_TEXT(num_i(0), "0");
	CHECK_TEXT(num_i(-42), "-42");
	CHECK_TEXT(num_i(INT64_MIN), "-9223372036854775808");
	CHECK_TEXT(num_i(INT64_MAX), "9223372036854775807");
	CHECK_TEXT(num_u(FIELD_UINT, UINT64_MAX), "18446744073709551615");
	CHECK_TEXT(num_u(FIELD_TIMESTAMP, 1700000000), "1700000000");
	CHECK_TEXT(str(FIELD_STRING, "abc", 3), "abc");
	CHECK_TEXT(str(FIELD_STRING, "", 0), "");
	CHECK_TEXT(str(FIELD_BYTES, NULL, 0), "");
	CHECK_TEXT(str(FIELD_BYTES, "\xff\xfe/\"", 4), "\xff\xfe/\"");

	/* bytes with NUL: all of them, with their length */
	f = str(FIELD_BYTES, "a\0b\0", 4);
	t = field_text(&f, &len);
	CHECK(len == 4 && memcmp(t, "a\0b\0", 5) == 0);
	free(t);
}

static void numbers(void)
{
	CHECK_TEXT(num_d(FIELD_DOUBLE, 2.5), "2.5");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 0.1), "0.1");
	CHECK_TEXT(num_d(FIELD_DOUBLE, -0.1), "-0.1");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 1e300), "1e+300");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 1.5e-300), "1.5e-300");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 100), "100");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 0), "0");
	CHECK_TEXT(num_d(FIELD_DOUBLE, -0.0), "-0");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 123456.789), "123456.789");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 0.0001), "0.0001");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 0.00001), "1e-05");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 1e15), "1000000000000000");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 1e16), "1e+16");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 0.1 + 0.2), "0.30000000000000004");
	CHECK_TEXT(num_d(FIELD_DOUBLE, DBL_MAX), "1.7976931348623157e+308");
	CHECK_TEXT(num_d(FIELD_DOUBLE, 5e-324), "5e-324");
	CHECK_TEXT(num_d(FIELD_DOUBLE, NAN), "nan");
	CHECK_TEXT(num_d(FIELD_DOUBLE, INFINITY), "inf");
	CHECK_TEXT(num_d(FIELD_DOUBLE, -INFINITY), "-inf");

	/* single precision: shortest at float precision */
	CHECK_TEXT(num_d(FIELD_FLOAT, 0.1f), "0.1");
	CHECK_TEXT(num_d(FIELD_FLOAT, 2.5f), "2.5");
	CHECK_TEXT(num_d(FIELD_FLOAT, 1.0f / 3), "0.33333334");
	CHECK_TEXT(num_d(FIELD_FLOAT, FLT_MAX), "3.4028235e+38");
	CHECK_TEXT(num_d(FIELD_FLOAT, 16777216.0f), "16777216");
	CHECK_TEXT(num_d(FIELD_FLOAT, -INFINITY), "-inf");

	/* every text reads back to its value */
	for (int i = 0; i < 2000; i++) {
		double d = ldexp((double)rand() / RAND_MAX, rand() % 200 - 100);
		struct field f = num_d(FIELD_DOUBLE, i % 2 ? d : -d);
		size_t len;
		char *t = field_text(&f, &len);

		CHECK(strtod(t, NULL) == f.v.d);
		free(t);
		f = num_d(FIELD_FLOAT, (float)f.v.d);
		t = field_text(&f, &len);
		CHECK(strtof(t, NULL) == (float)f.v.d);
		free(t);
	}
}

static void decimals(void)
{
	CHECK_TEXT(dec(12345, 2), "123.45");
	CHECK_TEXT(dec(-150, 2), "-1.50");
	CHECK_TEXT(dec(5, 3), "0.005");
	CHECK_TEXT(dec(-5, 3), "-0.005");
	CHECK_TEXT(dec(42, 0), "42");
	CHECK_TEXT(dec(-42, 0), "-42");
	CHECK_TEXT(dec(0, 0), "0");
	CHECK_TEXT(dec(0, 2), "0.00");
	CHECK_TEXT(dec(100, 2), "1.00");
	CHECK_TEXT(dec(123, 3), "0.123");
	CHECK_TEXT(dec(INT32_MIN, 0), "-2147483648");
	CHECK_TEXT(dec(INT32_MIN, 10), "-0.2147483648");
	CHECK_TEXT(dec(INT32_MAX, 1), "214748364.7");

	/* the largest scale: 254 zeros after the point */
	struct field f = dec(1, 255);
	size_t len;
	char *t = field_text(&f, &len);

	CHECK(len == 257 && strncmp(t, "0.000", 5) == 0 && t[256] == '1');
	free(t);
}

static void json(void)
{
	struct field inner[] = {num_i(1), str(FIELD_STRING, "a", 1)};
	struct field tbl[] = {keyed("k", 1, str(FIELD_STRING, "v", 1))};
	struct field negzero[] = {num_d(FIELD_DOUBLE, -0.0),
				  num_d(FIELD_FLOAT, -0.0f)};
	struct field all[] = {
	    keyed("s", 1, str(FIELD_STRING, "a/b\"c\\\n\t\x01", 9)),
	    keyed("x", 1, str(FIELD_BYTES, "n\0l", 3)),
	    keyed("i", 1, num_i(-7)),
	    keyed("u", 1, num_u(FIELD_UINT, UINT64_MAX)),
	    keyed("f", 1, num_d(FIELD_FLOAT, 0.1f)),
	    keyed("d", 1, num_d(FIELD_DOUBLE, 2.5)),
	    keyed("e", 1, num_d(FIELD_DOUBLE, 1e300)),
	    keyed("D", 1, dec(-150, 2)),
	    keyed("z", 1, dec(7, 0)),
	    keyed("t", 1, (struct field){.kind = FIELD_BOOL, .v.b = true}),
	    keyed("T", 1, num_u(FIELD_TIMESTAMP, 1700000000)),
	    keyed("v", 1, (struct field){.kind = FIELD_VOID}),
	    keyed("n", 1, num_d(FIELD_DOUBLE, NAN)),
	    keyed("p", 1, num_d(FIELD_DOUBLE, INFINITY)),
	    keyed("a", 1, list(FIELD_ARRAY, inner, 2)),
	    keyed("o", 1, list(FIELD_TABLE, tbl, 1)),
	    keyed("E", 1, list(FIELD_ARRAY, NULL, 0)),
	    keyed("O", 1, list(FIELD_TABLE, NULL, 0)),
	};

	CHECK_TEXT(list(FIELD_ARRAY, inner, 2), "[1,\"a\"]");
	CHECK_TEXT(list(FIELD_TABLE, tbl, 1), "{\"k\":\"v\"}");
	CHECK_TEXT(list(FIELD_ARRAY, NULL, 0), "[]");
	/* negative zero stays a negative float in JSON */
	CHECK_TEXT(list(FIELD_ARRAY, negzero, 2), "[-0.0,-0.0]");
	CHECK_TEXT(list(FIELD_TABLE, NULL, 0), "{}");
	CHECK_TEXT(list(FIELD_TABLE, all, sizeof(all) / sizeof(all[0])),
		   "{\"s\":\"a/b\\\"c\\\\\\n\\t\\u0001\",\"x\":\"n\\u0000l\","
		   "\"i\":-7,\"u\":18446744073709551615,\"f\":0.1,\"d\":2.5,"
		   "\"e\":1e+300,\"D\":-1.50,\"z\":7,\"t\":true,"
		   "\"T\":1700000000,\"v\":null,\"n\":null,\"p\":null,"
		   "\"a\":[1,\"a\"],\"o\":{\"k\":\"v\"},\"E\":[],\"O\":{}}");
}

static void odd_keys(void)
{
	struct field t[] = {
	    keyed("", 0, num_i(1)),	       /* empty */
	    keyed(NULL, 0, num_i(2)),	       /* empty too: a duplicate */
	    keyed("a", 1, num_i(3)),	       /* first "a" wins */
	    keyed("a", 1, num_i(4)),	       /* ... over this */
	    keyed("a\0b", 3, num_i(5)),	       /* NUL: U+FFFD */
	    keyed("\"\\/\n", 4, num_i(6)),     /* escaped, / kept */
	    keyed("caf\xc3\xa9", 5, num_i(7)), /* UTF-8 as it is */
	    keyed("\xe9t\xe9", 3, num_i(8)),   /* Latin-1: U+00E9 */
	    keyed("\xc3\xa9t\xc3\xa9", 5, num_i(9)), /* same as the one above */
	};

	CHECK_TEXT(list(FIELD_TABLE, t, sizeof(t) / sizeof(t[0])),
		   "{\"\":1,\"a\":3,\"a\xef\xbf\xbd"
		   "b\":5,\"\\\"\\\\/\\n\":6,\"caf\xc3\xa9\":7,"
		   "\"\xc3\xa9t\xc3\xa9\":8}");
}

static void odd_strings(void)
{
	struct field a[] = {
	    str(FIELD_BYTES, "\xff\x80", 2),	      /* not UTF-8 */
	    str(FIELD_STRING, "\xe2\x82\xac", 3),     /* valid: euro sign */
	    str(FIELD_STRING, "\xe2\x82", 2),	      /* truncated */
	    str(FIELD_STRING, "\xc0\xaf", 2),	      /* overlong / */
	    str(FIELD_STRING, "\xed\xa0\x80", 3),     /* a surrogate */
	    str(FIELD_STRING, "\xf4\x90\x80\x80", 4), /* past U+10FFFF */
	    str(FIELD_STRING, "\xf0\x9f\x98\x80", 4), /* valid: emoji */
	    str(FIELD_STRING, "\x7f", 1),
	};

	CHECK_TEXT(
	    list(FIELD_ARRAY, a, sizeof(a) / sizeof(a[0])),
	    "[\"\xc3\xbf\xc2\x80\",\"\xe2\x82\xac\",\"\xc3\xa2\xc2\x82\","
	    "\"\xc3\x80\xc2\xaf\",\"\xc3\xad\xc2\xa0\xc2\x80\","
	    "\"\xc3\xb4\xc2\x90\xc2\x80\xc2\x80\",\"\xf0\x9f\x98\x80\","
	    "\"\x7f\"]");
}

/* Nesting n arrays deep: [[[...]]], the deepest holding 1. */
static char *nested(int n, size_t *len)
{
	struct field *f = calloc((size_t)n + 1, sizeof(*f));
	char *t;

	f[n] = num_i(1);
	for (int i = n - 1; i >= 0; i--)
		f[i] = list(FIELD_ARRAY, &f[i + 1], 1);
	t = field_text(&f[0], len);
	free(f);
	return t;
}

static void depth(void)
{
	char want[200];
	size_t len;
	char *t;

	/* 64 levels are shown, deeper ones are null */
	memset(want, '[', 64);
	strcpy(want + 64, "1");
	memset(want + 65, ']', 64);
	want[129] = '\0';
	t = nested(64, &len);
	CHECK_STR(t, want);
	free(t);
	want[64] = '\0';
	strcat(want, "null");
	memset(want + 68, ']', 64);
	want[132] = '\0';
	t = nested(65, &len);
	CHECK_STR(t, want);
	free(t);
	t = nested(100000, &len); /* hostile: no stack overflow */
	CHECK_STR(t, want);
	free(t);

	/* tables count as levels too */
	struct field leaf = num_i(1);
	struct field *f = calloc(70, sizeof(*f));

	f[69] = leaf;
	for (int i = 68; i >= 0; i--)
		f[i] = keyed(
		    "k", 1,
		    list(i % 2 ? FIELD_TABLE : FIELD_ARRAY, &f[i + 1], 1));
	t = field_text(&f[0], &len);
	CHECK(t != NULL && strstr(t, "null") != NULL && strstr(t, "1") == NULL);
	free(t);
	free(f);
}

int main(void)
{
	scalars();
	numbers();
	decimals();
	json();
	odd_keys();
	odd_strings();
	depth();
	return unit_done("test_fields");
}
