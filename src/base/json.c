/* json.c: JSON texts, built and read; the only user of json-c. */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/base.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* struct json is json-c's own object; the casts are the whole wrapper. */
#define J(v) ((struct json_object *)(v))
#define W(v) ((struct json *)(v))

struct json *json_new_object(void)
{
	return W(json_object_new_object());
}

struct json *json_new_array(void)
{
	return W(json_object_new_array());
}

struct json *json_string(const char *s)
{
	return s != NULL ? W(json_object_new_string(s)) : NULL;
}

struct json *json_string_len(const char *bytes, size_t len)
{
	if (len > INT_MAX) /* json-c's limit */
		return NULL;
	return W(
	    json_object_new_string_len(bytes != NULL ? bytes : "", (int)len));
}

struct json *json_int(int64_t v)
{
	return W(json_object_new_int64(v));
}

struct json *json_uint(uint64_t v)
{
	return W(json_object_new_uint64(v));
}

struct json *json_double(double v)
{
	return W(json_object_new_double(v));
}

struct json *json_double_text(double v, const char *text)
{
	return W(json_object_new_double_s(v, text));
}

struct json *json_new_bool(bool v)
{
	return W(json_object_new_boolean(v));
}

void json_set(struct json *o, const char *key, struct json *v)
{
	json_object_object_add(J(o), key, J(v));
}

void json_push(struct json *a, struct json *v)
{
	json_object_array_add(J(a), J(v));
}

char *json_text(const struct json *v)
{
	size_t n;
	const char *s = json_object_to_json_string_length(J(v), JSON_FLAGS, &n);
	char *t = xcalloc(n + 1, 1);

	memcpy(t, s, n);
	return t;
}

void json_free(struct json *v)
{
	json_object_put(J(v));
}

struct json *json_parse(const char *text)
{
	return W(json_tokener_parse(text));
}

bool json_has(const struct json *o, const char *key)
{
	return o != NULL && json_object_is_type(J(o), json_type_object) &&
	       json_object_object_get_ex(J(o), key, NULL);
}

const struct json *json_get(const struct json *o, const char *key)
{
	struct json_object *v = NULL;

	if (o == NULL || !json_object_is_type(J(o), json_type_object) ||
	    !json_object_object_get_ex(J(o), key, &v))
		return NULL;
	return W(v);
}

const char *json_str(const struct json *v)
{
	if (v == NULL || !json_object_is_type(J(v), json_type_string))
		return NULL;
	return json_object_get_string(J(v));
}

int64_t json_num(const struct json *v)
{
	return v != NULL ? json_object_get_int64(J(v)) : 0;
}

double json_real(const struct json *v)
{
	return v != NULL ? json_object_get_double(J(v)) : 0;
}

bool json_true(const struct json *v)
{
	return v != NULL && json_object_get_boolean(J(v));
}

bool json_is_null(const struct json *v)
{
	return v == NULL || json_object_is_type(J(v), json_type_null);
}

int json_len(const struct json *a)
{
	if (a == NULL || !json_object_is_type(J(a), json_type_array))
		return 0;
	return (int)json_object_array_length(J(a));
}

const struct json *json_at(const struct json *a, int i)
{
	if (i < 0 || i >= json_len(a))
		return NULL;
	return W(json_object_array_get_idx(J(a), (size_t)i));
}
