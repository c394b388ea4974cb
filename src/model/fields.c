/* fields.c: AMQP field values as handler text (JSON through json.c). */
#include "config.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

/*
 * Arrays and tables nested deeper than this are rendered as null, so that
 * a hostile header cannot exhaust the stack (ours or json-c's printer).
 */
#define FIELD_MAX_DEPTH 64

/* Longest scalar text: a decimal of scale 255, sign, "0." and NUL. */
#define SCALAR_MAX 300

/*
 * The shortest decimal text of d that reads back to d (to (float)d when
 * single), laid out like Python's repr() but without a trailing ".0":
 * plain digits for exponents -4 to 15 (2.5, 0.0001, 100), otherwise
 * C's exponent form (1e+300, 1e-05). d must be finite.
 */
static void number_text(double d, bool single, char *buf, size_t size)
{
	char e[40], digits[20];
	int prec, exp, nd = 0;
	const char *p;
	char *out = buf;

	for (prec = 1; prec < 17; prec++) {
		snprintf(e, sizeof(e), "%.*e", prec - 1, d);
		if (single && strtof(e, NULL) == (float)d)
			break;
		if (!single && strtod(e, NULL) == d)
			break;
	}
	snprintf(e, sizeof(e), "%.*e", prec - 1, d);
	p = strchr(e, 'e');
	exp = atoi(p + 1);
	if (exp < -4 || exp >= 16) {
		snprintf(buf, size, "%s", e);
		return;
	}
	for (const char *c = e; c < p; c++)
		if (*c >= '0' && *c <= '9')
			digits[nd++] = *c;
	if (e[0] == '-')
		*out++ = '-';
	if (exp < 0) {
		*out++ = '0';
		*out++ = '.';
		for (int i = -1; i > exp; i--)
			*out++ = '0';
		memcpy(out, digits, (size_t)nd);
		out += nd;
	} else {
		for (int i = 0; i <= exp || i < nd; i++) {
			if (i == exp + 1)
				*out++ = '.';
			*out++ = i < nd ? digits[i] : '0';
		}
	}
	*out = '\0';
}

/* value / 10^scale, exactly: 12345,2 -> 123.45; -5,3 -> -0.005. */
static void decimal_text(int32_t value, uint8_t scale, char *buf)
{
	char digits[16];
	int64_t v = value;
	int nd;
	char *out = buf;

	if (v < 0) {
		*out++ = '-';
		v = -v;
	}
	nd = snprintf(digits, sizeof(digits), "%" PRId64, v);
	if (scale == 0) {
		memcpy(out, digits, (size_t)nd + 1);
		return;
	}
	if (nd <= scale) {
		*out++ = '0';
		*out++ = '.';
		memset(out, '0', (size_t)(scale - nd));
		out += scale - nd;
		memcpy(out, digits, (size_t)nd + 1);
		return;
	}
	memcpy(out, digits, (size_t)(nd - scale));
	out += nd - scale;
	*out++ = '.';
	memcpy(out, digits + nd - scale, (size_t)scale + 1);
}

/*
 * bytes as valid UTF-8 for a JSON string: well-formed sequences as they
 * are, every other byte read as Latin-1 (0xe9 becomes U+00E9, as if it had
 * been written \u00e9). For a key, which json-c keeps NUL-terminated, a
 * NUL byte becomes U+FFFD. Returns NULL when bytes need no change, else a
 * NUL-terminated copy the caller frees, its length in *outlen.
 */
static char *json_safe(const char *bytes, size_t n, bool key, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)bytes;
	size_t i, k, o = 0;
	char *out;

	for (i = 0; i < n; i += k)
		if ((k = utf8_seq(s + i, n - i)) == 0 || (key && s[i] == 0))
			break;
	if (i == n)
		return NULL;
	out = xcalloc(3 * n + 1, 1); /* each byte grows to 3 at most */
	for (i = 0; i < n; i += k) {
		k = utf8_seq(s + i, n - i);
		if (key && s[i] == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
		} else if (k == 0) {
			out[o++] = (char)(0xc0 | s[i] >> 6);
			out[o++] = (char)(0x80 | (s[i] & 0x3f));
			k = 1;
		} else {
			memcpy(out + o, s + i, k);
			o += k;
		}
	}
	*outlen = o;
	return out;
}

static struct json *field_string(const char *bytes, size_t n)
{
	const char *s = bytes != NULL ? bytes : "";
	size_t len = bytes != NULL ? n : 0;
	struct json *j;
	char *safe = json_safe(s, len, false, &len);

	if (safe != NULL)
		s = safe;
	j = json_string_len(s, len); /* NULL past 2 GiB: no frame is */
	free(safe);
	return j;
}

static struct json *to_json(const struct field *f, int depth);

static struct json *field_array(const struct field *f, int depth)
{
	struct json *a = json_new_array();

	for (int i = 0; i < f->v.list.n; i++)
		json_push(a, to_json(&f->v.list.items[i], depth));
	return a;
}

/* Keys may be empty or hold any byte; of duplicates the first wins. */
static struct json *field_table(const struct field *f, int depth)
{
	struct json *o = json_new_object();

	for (int i = 0; i < f->v.list.n; i++) {
		const struct field *item = &f->v.list.items[i];
		size_t klen = item->key != NULL ? item->key_len : 0;
		char *key = json_safe(item->key, klen, true, &klen);

		if (key == NULL) {
			key = xcalloc(klen + 1, 1);
			if (klen > 0)
				memcpy(key, item->key, klen);
		}
		if (!json_has(o, key))
			json_set(o, key, to_json(item, depth));
		free(key);
	}
	return o;
}

/*
 * A number as its own text. NaN and infinities have none in JSON: null.
 * Negative zero is "-0.0", which JSON readers (json-c, Python) keep as a
 * negative float where "-0" would read as the integer 0.
 */
static struct json *field_number(double d, bool single)
{
	char text[SCALAR_MAX];

	if (!isfinite(d))
		return NULL;
	if (d == 0 && signbit(d))
		return json_double_text(d, "-0.0");
	number_text(d, single, text, sizeof(text));
	return json_double_text(d, text);
}

/* f as a JSON value (NULL is JSON null); depth counts enclosing lists. */
static struct json *to_json(const struct field *f, int depth)
{
	char text[SCALAR_MAX];

	switch (f->kind) {
	case FIELD_BOOL:
		return json_new_bool(f->v.b);
	case FIELD_INT:
		return json_int(f->v.i);
	case FIELD_UINT:
	case FIELD_TIMESTAMP:
		if (f->v.u > INT64_MAX)
			return json_uint(f->v.u);
		return json_int((int64_t)f->v.u);
	case FIELD_FLOAT:
		return field_number(f->v.d, true);
	case FIELD_DOUBLE:
		return field_number(f->v.d, false);
	case FIELD_DECIMAL:
		decimal_text(f->v.dec.value, f->v.dec.scale, text);
		return json_double_text(strtod(text, NULL), text);
	case FIELD_STRING:
	case FIELD_BYTES:
		return field_string(f->v.s.bytes, f->v.s.len);
	case FIELD_ARRAY:
		return depth < FIELD_MAX_DEPTH ? field_array(f, depth + 1)
					       : NULL;
	case FIELD_TABLE:
		return depth < FIELD_MAX_DEPTH ? field_table(f, depth + 1)
					       : NULL;
	case FIELD_VOID:
	default:
		return NULL;
	}
}

static char *copy_out(const char *s, size_t n, size_t *len)
{
	char *v = xcalloc(n + 1, 1);

	if (n > 0)
		memcpy(v, s, n);
	*len = n;
	return v;
}

/*
 * Scalars at the top level as plain text: NaN is "nan", infinities "inf"
 * and "-inf" (inside JSON they are null). Arrays and tables as compact
 * JSON, where bytes that are not UTF-8 are read as Latin-1 (see
 * json_safe) so that the text is always valid JSON.
 */
char *field_text(const struct field *f, size_t *len)
{
	char text[SCALAR_MAX];
	struct json *j;
	char *v;

	switch (f->kind) {
	case FIELD_VOID:
		return copy_out("", 0, len);
	case FIELD_BOOL:
		return copy_out(f->v.b ? "true" : "false", f->v.b ? 4 : 5, len);
	case FIELD_INT:
		snprintf(text, sizeof(text), "%" PRId64, f->v.i);
		break;
	case FIELD_UINT:
	case FIELD_TIMESTAMP:
		snprintf(text, sizeof(text), "%" PRIu64, f->v.u);
		break;
	case FIELD_FLOAT:
	case FIELD_DOUBLE:
		if (isnan(f->v.d))
			snprintf(text, sizeof(text), "nan");
		else if (isinf(f->v.d))
			snprintf(text, sizeof(text), "%s",
				 f->v.d < 0 ? "-inf" : "inf");
		else
			number_text(f->v.d, f->kind == FIELD_FLOAT, text,
				    sizeof(text));
		break;
	case FIELD_DECIMAL:
		decimal_text(f->v.dec.value, f->v.dec.scale, text);
		break;
	case FIELD_STRING:
	case FIELD_BYTES:
		return copy_out(f->v.s.bytes, f->v.s.bytes ? f->v.s.len : 0,
				len);
	case FIELD_ARRAY:
	case FIELD_TABLE:
		j = to_json(f, 0);
		v = json_text(j);
		*len = strlen(v);
		json_free(j);
		return v;
	default:
		return copy_out("", 0, len);
	}
	return copy_out(text, strlen(text), len);
}
