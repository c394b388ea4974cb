/*
 * fuzz_headers.c: libFuzzer harness for header values. The input is
 * decoded into a tree of struct field (see decode()), rendered with
 * field_text(), and turned into a handler environment with handler_env().
 * Asserts, besides the sanitizers' findings: scalars read back to their
 * value; arrays and tables are valid UTF-8 JSON that json-c's strict
 * parser takes whole and prints back the same; every environment entry
 * is NAME=VALUE with NAME in [A-Z0-9_]+, no name twice, each header shown
 * as SPEC.md says.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "handler/handler_int.h"

#define MAX_DEPTH 80   /* past fields.c's cap of 64, to reach it */
#define MAX_NODES 5000 /* fields in one input */
#define MAX_ITEMS 16   /* per array or table */
#define MAX_HEADERS 64

/* The input, read front to back; past its end every byte reads as 0. */
struct input {
	const uint8_t *p;
	size_t n;
	int nodes;
};

static uint8_t get8(struct input *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static void get(struct input *in, void *out, size_t k)
{
	size_t have = k < in->n ? k : in->n;

	memset(out, 0, k);
	memcpy(out, in->p, have);
	in->p += have;
	in->n -= have;
}

/* A length byte, then that many bytes (fewer at the end of the input). */
static const char *get_bytes(struct input *in, size_t *len)
{
	const char *s = (const char *)in->p;

	*len = get8(in);
	if (*len > in->n)
		*len = in->n;
	in->p += *len;
	in->n -= *len;
	return s;
}

/*
 * One field: a kind byte (modulo the number of kinds, in enum field_kind
 * order), then its value: BOOL 1 byte; INT, UINT, TIMESTAMP, DOUBLE 8;
 * FLOAT 4 (a float's bits); DECIMAL a scale byte and 4 value bytes;
 * STRING and BYTES a length byte and the bytes; ARRAY and TABLE a count
 * byte (modulo MAX_ITEMS) and the items, a table's each preceded by its
 * key as length byte and bytes. Too deep, or too many: VOID.
 */
static void decode(struct input *in, struct field *f, int depth)
{
	uint8_t kind = get8(in) % (FIELD_TABLE + 1);
	float fl;
	int n;

	memset(&f->v, 0, sizeof(f->v));
	f->kind = (enum field_kind)kind;
	if (++in->nodes > MAX_NODES)
		f->kind = FIELD_VOID;
	switch (f->kind) {
	case FIELD_BOOL:
		f->v.b = get8(in) & 1;
		break;
	case FIELD_INT:
	case FIELD_UINT:
	case FIELD_TIMESTAMP:
	case FIELD_DOUBLE:
		get(in, &f->v, 8);
		break;
	case FIELD_FLOAT:
		get(in, &fl, sizeof(fl));
		f->v.d = fl;
		break;
	case FIELD_DECIMAL:
		f->v.dec.scale = get8(in);
		get(in, &f->v.dec.value, 4);
		break;
	case FIELD_STRING:
	case FIELD_BYTES:
		f->v.s.bytes = get_bytes(in, &f->v.s.len);
		break;
	case FIELD_ARRAY:
	case FIELD_TABLE:
		if (depth >= MAX_DEPTH) {
			f->kind = FIELD_VOID;
			break;
		}
		n = get8(in) % MAX_ITEMS;
		struct field *items = calloc((size_t)n + 1, sizeof(*items));

		for (int i = 0; i < n; i++) {
			if (f->kind == FIELD_TABLE)
				items[i].key = get_bytes(in, &items[i].key_len);
			decode(in, &items[i], depth + 1);
		}
		f->v.list.items = items;
		f->v.list.n = n;
		break;
	default:
		break;
	}
}

static void free_field(struct field *f)
{
	if (f->kind != FIELD_ARRAY && f->kind != FIELD_TABLE)
		return;
	for (int i = 0; i < f->v.list.n; i++)
		free_field((struct field *)&f->v.list.items[i]);
	free((void *)f->v.list.items);
}

#define FAIL(...)                                                              \
	do {                                                                   \
		fprintf(stderr, "fuzz_headers: " __VA_ARGS__);                 \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

static void check_json(const struct field *f, const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(MAX_DEPTH + 8);
	struct json_object *j;
	const char *again;
	enum json_type want =
	    f->kind == FIELD_ARRAY ? json_type_array : json_type_object;

	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
					JSON_TOKENER_VALIDATE_UTF8);
	j = json_tokener_parse_ex(tok, text, (int)len);
	if (j == NULL || json_tokener_get_error(tok) != json_tokener_success)
		FAIL("not JSON (%s): %s",
		     json_tokener_error_desc(json_tokener_get_error(tok)),
		     text);
	if (json_tokener_get_parse_end(tok) != len)
		FAIL("JSON ends early: %s", text);
	if (json_object_get_type(j) != want)
		FAIL("JSON of the wrong type: %s", text);
	again = json_object_to_json_string_ext(
	    j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (strcmp(again, text) != 0)
		FAIL("JSON prints back otherwise:\n  %s\n  %s", text, again);
	json_object_put(j);
	json_tokener_free(tok);
}

/* -?D+(.D{scale})? */
static void check_decimal(const struct field *f, const char *t)
{
	const char *p = t + (t[0] == '-');
	size_t digits = strspn(p, "0123456789");

	if (digits == 0)
		FAIL("decimal without digits: %s", t);
	p += digits;
	if (f->v.dec.scale > 0 &&
	    (p[0] != '.' || strspn(p + 1, "0123456789") != f->v.dec.scale ||
	     p[1 + f->v.dec.scale] != '\0'))
		FAIL("decimal %d scale %d: %s", f->v.dec.value, f->v.dec.scale,
		     t);
	if (f->v.dec.scale == 0 && p[0] != '\0')
		FAIL("decimal %d: %s", f->v.dec.value, t);
	if ((f->v.dec.value < 0) != (t[0] == '-'))
		FAIL("decimal %d: sign of %s", f->v.dec.value, t);
}

static void check_text(const struct field *f)
{
	size_t len = (size_t)-1;
	char *t = field_text(f, &len);

	if (t == NULL || len == (size_t)-1 || t[len] != '\0')
		FAIL("no text, or not NUL-terminated");
	if (f->kind != FIELD_STRING && f->kind != FIELD_BYTES &&
	    strlen(t) != len)
		FAIL("NUL inside the text of kind %d", f->kind);
	switch (f->kind) {
	case FIELD_STRING:
	case FIELD_BYTES:
		if (len != f->v.s.len || memcmp(t, f->v.s.bytes, len) != 0)
			FAIL("string not as it is");
		break;
	case FIELD_INT:
		if (strtoll(t, NULL, 10) != f->v.i)
			FAIL("int %lld: %s", (long long)f->v.i, t);
		break;
	case FIELD_UINT:
	case FIELD_TIMESTAMP:
		if (strtoull(t, NULL, 10) != f->v.u || t[0] == '-')
			FAIL("uint %llu: %s", (unsigned long long)f->v.u, t);
		break;
	case FIELD_DOUBLE:
		if (isnan(f->v.d) ? strcmp(t, "nan") != 0
				  : strtod(t, NULL) != f->v.d)
			FAIL("double %a: %s", f->v.d, t);
		break;
	case FIELD_FLOAT:
		if (isnan(f->v.d) ? strcmp(t, "nan") != 0
				  : strtof(t, NULL) != (float)f->v.d)
			FAIL("float %a: %s", f->v.d, t);
		break;
	case FIELD_DECIMAL:
		check_decimal(f, t);
		break;
	case FIELD_BOOL:
		if (strcmp(t, f->v.b ? "true" : "false") != 0)
			FAIL("bool: %s", t);
		break;
	case FIELD_VOID:
		if (len != 0)
			FAIL("void: %s", t);
		break;
	case FIELD_ARRAY:
	case FIELD_TABLE:
		check_json(f, t, len);
		break;
	}
	free(t);
}

static const char *env_get(char **env, const char *name)
{
	size_t n = strlen(name);

	for (char **p = env; *p != NULL; p++)
		if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
			return *p + n + 1;
	return NULL;
}

static void check_env_entries(char **env)
{
	for (int i = 0; env[i] != NULL; i++) {
		size_t n = strspn(env[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					  "0123456789_");

		if (n == 0 || env[i][n] != '=')
			FAIL("not NAME=VALUE: %s", env[i]);
		for (int j = 0; j < i; j++)
			if (strncmp(env[i], env[j], n + 1) == 0)
				FAIL("twice: %.*s", (int)n, env[i]);
	}
}

static bool has_nul(const struct header *h)
{
	return memchr(h->value, '\0', h->len) != NULL;
}

static bool same_value(const char *got, const struct header *h)
{
	return strlen(got) == h->len && memcmp(got, h->value, h->len) == 0;
}

/*
 * Each header as SPEC.md shows it: of those mapping to one name the first
 * wins; values holding NUL and empty names are left out.
 */
static void check_headers(char **env, const struct header *h, int n)
{
	if (env_get(env, "WARREN_HEADER_") != NULL)
		FAIL("an empty header name is shown");
	for (int i = 0; i < n; i++) {
		char *name = env_name_of_header(h[i].name);
		const char *got = env_get(env, name);
		bool first = true, any = false;

		for (int j = 0; j < n; j++) {
			char *other = env_name_of_header(h[j].name);

			if (strcmp(other, name) == 0) {
				first = first && j >= i;
				any = any || (got != NULL && !has_nul(&h[j]) &&
					      same_value(got, &h[j]));
			}
			free(other);
		}
		if (h[i].name[0] == '\0') {
			free(name);
			continue;
		}
		if (first && !has_nul(&h[i]) &&
		    (got == NULL || !same_value(got, &h[i])))
			FAIL("%s is not the first header's value", name);
		if (got != NULL && !any)
			FAIL("%s is no header's value", name);
		free(name);
	}
}

static void check_env(const struct field *root)
{
	char *qenv[] = {"LANG=C.UTF-8", "PATH=/opt/bin:/usr/bin", NULL};
	char *cmd[] = {"/bin/true", NULL};
	struct queue_conf q = {0};
	struct delivery d = {0};
	struct header h[MAX_HEADERS];
	int n = 0;
	char **env;

	q.name = "task_queue";
	q.command = cmd;
	q.environment = qenv;
	q.nenvironment = 2;
	d.message_id = "m-1";
	d.routing_key = "task_queue";
	d.exchange = "";
	/* a table's entries are the headers; anything else is header "x" */
	for (int i = 0;
	     root->kind == FIELD_TABLE && i < root->v.list.n && n < MAX_HEADERS;
	     i++, n++) {
		const struct field *f = &root->v.list.items[i];

		h[n].name = calloc(f->key_len + 1, 1);
		memcpy(h[n].name, f->key, f->key_len);
		h[n].value = field_text(f, &h[n].len);
		h[n].integer = f->kind == FIELD_INT || f->kind == FIELD_UINT;
	}
	if (root->kind != FIELD_TABLE) {
		h[0].name = strdup("x");
		h[0].value = field_text(root, &h[0].len);
		h[0].integer = false;
		n = 1;
	}
	d.headers = h;
	d.nheaders = n;
	env = handler_env(&q, 1, 1, &d);
	check_env_entries(env);
	check_headers(env, h, n);
	if (env_get(env, "WARREN_QUEUE") == NULL ||
	    strcmp(env_get(env, "WARREN_QUEUE"), "task_queue") != 0)
		FAIL("WARREN_QUEUE lost");
	env_free(env);
	for (int i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].value);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {data, size, 0};
	struct field root = {0};

	decode(&in, &root, 0);
	check_text(&root);
	check_env(&root);
	free_field(&root);
	return 0;
}
