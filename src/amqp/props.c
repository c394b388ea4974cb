/* props.c: AMQP properties and field tables, copied and made plain data. */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mq_int.h"

/* Bytes as a C string, or NULL when unset or holding a NUL. */
char *mq_bytes_str(amqp_bytes_t b)
{
	char *s;

	if (b.bytes == NULL || memchr(b.bytes, '\0', b.len) != NULL)
		return NULL;
	s = xcalloc(b.len + 1, 1);
	memcpy(s, b.bytes, b.len);
	return s;
}

static void to_field(const amqp_field_value_t *v, struct field *f, int depth);

/* An array or table as plain data, its items allocated. */
static void to_list(const amqp_field_value_t *v, struct field *f, int depth)
{
	bool array = v->kind == AMQP_FIELD_KIND_ARRAY;
	int n = array ? v->value.array.num_entries : v->value.table.num_entries;
	struct field *items = xcalloc(n > 0 ? (size_t)n : 1, sizeof(*items));

	for (int i = 0; i < n; i++) {
		if (array) {
			to_field(&v->value.array.entries[i], &items[i],
				 depth + 1);
			continue;
		}
		to_field(&v->value.table.entries[i].value, &items[i],
			 depth + 1);
		items[i].key = v->value.table.entries[i].key.bytes;
		items[i].key_len = v->value.table.entries[i].key.len;
	}
	f->kind = array ? FIELD_ARRAY : FIELD_TABLE;
	f->v.list.items = items;
	f->v.list.n = n;
}

/* An AMQP value as plain data (fields.c renders it); release after. */
static void to_field(const amqp_field_value_t *v, struct field *f, int depth)
{

	f->kind = FIELD_VOID;
	switch (v->kind) {
	case AMQP_FIELD_KIND_BOOLEAN:
		f->kind = FIELD_BOOL;
		f->v.b = v->value.boolean != 0;
		break;
	case AMQP_FIELD_KIND_I8:
		f->kind = FIELD_INT;
		f->v.i = v->value.i8;
		break;
	case AMQP_FIELD_KIND_I16:
		f->kind = FIELD_INT;
		f->v.i = v->value.i16;
		break;
	case AMQP_FIELD_KIND_I32:
		f->kind = FIELD_INT;
		f->v.i = v->value.i32;
		break;
	case AMQP_FIELD_KIND_I64:
		f->kind = FIELD_INT;
		f->v.i = v->value.i64;
		break;
	case AMQP_FIELD_KIND_U8:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u8;
		break;
	case AMQP_FIELD_KIND_U16:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u16;
		break;
	case AMQP_FIELD_KIND_U32:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u32;
		break;
	case AMQP_FIELD_KIND_U64:
		f->kind = FIELD_UINT;
		f->v.u = v->value.u64;
		break;
	case AMQP_FIELD_KIND_F32:
		f->kind = FIELD_FLOAT;
		f->v.d = v->value.f32;
		break;
	case AMQP_FIELD_KIND_F64:
		f->kind = FIELD_DOUBLE;
		f->v.d = v->value.f64;
		break;
	case AMQP_FIELD_KIND_DECIMAL:
		f->kind = FIELD_DECIMAL;
		f->v.dec.scale = v->value.decimal.decimals;
		f->v.dec.value = (int32_t)v->value.decimal.value;
		break;
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		f->kind = v->kind == AMQP_FIELD_KIND_UTF8 ? FIELD_STRING
							  : FIELD_BYTES;
		f->v.s.bytes = v->value.bytes.bytes;
		f->v.s.len = v->value.bytes.len;
		break;
	case AMQP_FIELD_KIND_TIMESTAMP:
		f->kind = FIELD_TIMESTAMP;
		f->v.u = v->value.u64;
		break;
	case AMQP_FIELD_KIND_ARRAY:
	case AMQP_FIELD_KIND_TABLE:
		if (depth < MAX_DEPTH) /* deeper than anyone means: void */
			to_list(v, f, depth);
		break;
	default:
		break; /* void */
	}
}

static void field_release(struct field *f)
{
	if (f->kind != FIELD_ARRAY && f->kind != FIELD_TABLE)
		return;
	for (int i = 0; i < f->v.list.n; i++)
		field_release((struct field *)&f->v.list.items[i]);
	free((void *)f->v.list.items);
}

/* Headers as the handler sees them; an empty name is left out. */
static void copy_headers(struct delivery *d, const amqp_table_t *t)
{
	d->headers = xcalloc((size_t)t->num_entries + 1, sizeof(struct header));
	for (int i = 0; i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];
		struct header *h = &d->headers[d->nheaders];
		struct field f = {0};

		if (e->key.len == 0)
			continue;
		to_field(&e->value, &f, 0);
		h->value = field_text(&f, &h->len);
		h->integer = f.kind == FIELD_INT || f.kind == FIELD_UINT;
		field_release(&f);
		h->name = xcalloc(e->key.len + 1, 1);
		memcpy(h->name, e->key.bytes, e->key.len);
		d->nheaders++;
	}
}

/*
 * Deep copies into a pool of our own. rabbitmq-c's amqp_table_clone
 * refuses a table with an empty key, which a publisher may send and the
 * broker routes; these copy whatever was decoded.
 */
amqp_bytes_t mq_keep_bytes(amqp_pool_t *pool, amqp_bytes_t b)
{
	amqp_bytes_t o = {b.len, NULL};

	if (b.len == 0)
		return amqp_empty_bytes;
	o.bytes = amqp_pool_alloc(pool, b.len);
	if (o.bytes == NULL)
		fatal("amqp_pool_alloc");
	memcpy(o.bytes, b.bytes, b.len);
	return o;
}

static void keep_table(amqp_pool_t *pool, const amqp_table_t *src,
		       amqp_table_t *dst);

static void keep_value(amqp_pool_t *pool, const amqp_field_value_t *src,
		       amqp_field_value_t *dst)
{
	*dst = *src;
	switch (src->kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		dst->value.bytes = mq_keep_bytes(pool, src->value.bytes);
		break;
	case AMQP_FIELD_KIND_TABLE:
		keep_table(pool, &src->value.table, &dst->value.table);
		break;
	case AMQP_FIELD_KIND_ARRAY: {
		int n = src->value.array.num_entries;

		if (n <= 0)
			break;
		dst->value.array.entries = amqp_pool_alloc(
		    pool, (size_t)n * sizeof(amqp_field_value_t));
		if (dst->value.array.entries == NULL)
			fatal("amqp_pool_alloc");
		for (int i = 0; i < n; i++)
			keep_value(pool, &src->value.array.entries[i],
				   &dst->value.array.entries[i]);
		break;
	}
	default:
		break;
	}
}

static void keep_table(amqp_pool_t *pool, const amqp_table_t *src,
		       amqp_table_t *dst)
{
	*dst = *src;
	if (src->num_entries <= 0)
		return;
	dst->entries = amqp_pool_alloc(pool, (size_t)src->num_entries *
						 sizeof(amqp_table_entry_t));
	if (dst->entries == NULL)
		fatal("amqp_pool_alloc");
	for (int i = 0; i < src->num_entries; i++) {
		dst->entries[i].key = mq_keep_bytes(pool, src->entries[i].key);
		keep_value(pool, &src->entries[i].value,
			   &dst->entries[i].value);
	}
}

void mq_keep_props(amqp_pool_t *pool, const amqp_basic_properties_t *src,
		   amqp_basic_properties_t *dst)
{
	struct {
		amqp_flags_t flag;
		amqp_bytes_t *field;
	} strs[] = {
	    {AMQP_BASIC_CONTENT_TYPE_FLAG, &dst->content_type},
	    {AMQP_BASIC_CONTENT_ENCODING_FLAG, &dst->content_encoding},
	    {AMQP_BASIC_CORRELATION_ID_FLAG, &dst->correlation_id},
	    {AMQP_BASIC_REPLY_TO_FLAG, &dst->reply_to},
	    {AMQP_BASIC_EXPIRATION_FLAG, &dst->expiration},
	    {AMQP_BASIC_MESSAGE_ID_FLAG, &dst->message_id},
	    {AMQP_BASIC_TYPE_FLAG, &dst->type},
	    {AMQP_BASIC_USER_ID_FLAG, &dst->user_id},
	    {AMQP_BASIC_APP_ID_FLAG, &dst->app_id},
	    {AMQP_BASIC_CLUSTER_ID_FLAG, &dst->cluster_id},
	};

	/* a field whose flag is unset holds whatever its memory held */
	*dst = *src;
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		*strs[i].field = (src->_flags & strs[i].flag)
				     ? mq_keep_bytes(pool, *strs[i].field)
				     : amqp_empty_bytes;
	if (src->_flags & AMQP_BASIC_HEADERS_FLAG)
		keep_table(pool, &src->headers, &dst->headers);
	else
		dst->headers = amqp_empty_table;
}

/* Roughly the encoded size of a table or value (keys, strings, nesting). */
static size_t value_size(const amqp_field_value_t *v);

static size_t table_size(const amqp_table_t *t)
{
	size_t n = 4;

	for (int i = 0; i < t->num_entries; i++)
		n += 1 + t->entries[i].key.len +
		     value_size(&t->entries[i].value);
	return n;
}

static size_t value_size(const amqp_field_value_t *v)
{
	size_t n = 9; /* a type byte and at most 8 bytes of number */

	switch (v->kind) {
	case AMQP_FIELD_KIND_UTF8:
	case AMQP_FIELD_KIND_BYTES:
		return 5 + v->value.bytes.len;
	case AMQP_FIELD_KIND_TABLE:
		return 1 + table_size(&v->value.table);
	case AMQP_FIELD_KIND_ARRAY:
		for (int i = 0; i < v->value.array.num_entries; i++)
			n += value_size(&v->value.array.entries[i]);
		return n;
	default:
		return n;
	}
}

size_t mq_headers_size(const struct delivery *d)
{
	const struct kept *k = d->amqp;

	if (k == NULL || !(k->props._flags & AMQP_BASIC_HEADERS_FLAG))
		return 0;
	return table_size(&k->props.headers);
}

void mq_free_kept(void *p)
{
	struct kept *k = p;

	empty_amqp_pool(&k->pool);
	if (k->mapped > 0)
		munmap(k->body, k->mapped);
	else
		free(k->body);
	free(k);
}

#define PROP(flag, field) ((p->_flags & (flag)) ? mq_bytes_str(p->field) : NULL)

/* A delivery from its method fields and kept properties and body. */
struct delivery *mq_to_delivery(const amqp_basic_deliver_t *dv, struct kept *k,
				size_t body_len)
{
	struct delivery *d = xcalloc(1, sizeof(*d));
	const amqp_basic_properties_t *p = &k->props;
	char num[32];

	d->tag = dv->delivery_tag;
	d->redelivered = dv->redelivered;
	d->exchange = mq_bytes_str(dv->exchange);
	d->routing_key = mq_bytes_str(dv->routing_key);
	d->message_id = PROP(AMQP_BASIC_MESSAGE_ID_FLAG, message_id);
	d->correlation_id =
	    PROP(AMQP_BASIC_CORRELATION_ID_FLAG, correlation_id);
	d->reply_to = PROP(AMQP_BASIC_REPLY_TO_FLAG, reply_to);
	d->content_type = PROP(AMQP_BASIC_CONTENT_TYPE_FLAG, content_type);
	d->content_encoding =
	    PROP(AMQP_BASIC_CONTENT_ENCODING_FLAG, content_encoding);
	d->type = PROP(AMQP_BASIC_TYPE_FLAG, type);
	d->app_id = PROP(AMQP_BASIC_APP_ID_FLAG, app_id);
	d->expiration = PROP(AMQP_BASIC_EXPIRATION_FLAG, expiration);
	d->user_id = PROP(AMQP_BASIC_USER_ID_FLAG, user_id);
	if (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
		snprintf(num, sizeof(num), "%" PRIu64, p->timestamp);
		d->timestamp = xstrdup(num);
	}
	if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
		snprintf(num, sizeof(num), "%u", p->priority);
		d->priority = xstrdup(num);
	}
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
		copy_headers(d, &p->headers);
	d->body = k->body;
	d->body_len = body_len;
	d->body_over = k->over;
	if (k->unkept[0] != '\0')
		d->unkept = xstrdup(k->unkept);
	d->amqp = k;
	d->amqp_free = mq_free_kept;
	d->received = now_ms();
	d->key = delivery_key(d);
	return d;
}
