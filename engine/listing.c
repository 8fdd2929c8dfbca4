/*
 * listing.c — raw event listing with filters and a cursor (tally_list_events).
 *
 * Order is (time, event id bytewise): a total order, since ids are unique
 * within a tenant, so a cursor — the (time, id) of the last event of a page
 * — names exactly where the next page starts, whatever was ingested in
 * between (an event ingested later with an earlier time simply is not in
 * pages already read).
 *
 * A page scans the range in windows that double in length (one hour, two,
 * four, ...) and keeps the limit + 1 smallest matching events in a max-heap
 * of owned copies: once the heap is full after a window, no later event can
 * enter it, so a page of recent events never reads the whole history, and
 * memory is bounded by the limit. limit + 1 tells whether a next page exists.
 *
 * Locking: in one hold of the store lock a page pins its tenant's segment
 * files and memtables, noting the active memtable's row count. Then it
 * reads the active memtable's rows up to that count over the page's whole
 * range (a memtable's rows are unsorted, so windows would only read it
 * again), a step per hold of the lock (its rows grow, and move, under
 * it); the frozen memtable (immutable); and the files, window by window,
 * with the lock let go. So a page that reads much of a large tenant's
 * history or memtable (a filter that matches little) delays no other
 * tenant's ingest. A window is the last once the heap is full and its
 * latest event is before the window's end (memtable events past the
 * window may be in the heap already).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "filter.h"
#include "store_internal.h"

typedef struct owned_event {
	tally_event event; /* strings point into buf */
	char *buf;
} owned_event;

typedef struct list_ctx {
	const tally_list_request *req;
	int64_t cursor_time;
	char cursor_id[TALLY_EVENT_ID_SIZE_MAX];
	uint32_t cursor_id_len;
	int has_cursor;
	owned_event *heap; /* max-heap by (time, id) */
	uint32_t count;
	uint32_t capacity; /* limit + 1 */
	int64_t bound;     /* once the heap is full, its largest time: no later row can enter */
	filter_set filters;
} list_ctx;

static int key_compare(int64_t ta, const char *ia, uint32_t la, int64_t tb, const char *ib,
		       uint32_t lb)
{
	if (ta != tb)
		return ta < tb ? -1 : 1;
	uint32_t n = la < lb ? la : lb;
	int c = n ? memcmp(ia, ib, n) : 0;
	if (c)
		return c;
	return la < lb ? -1 : la > lb;
}

static int event_compare(const tally_event *a, const tally_event *b)
{
	return key_compare(a->time_us, a->event_id.ptr, a->event_id.len, b->time_us,
			   b->event_id.ptr, b->event_id.len);
}

static void heap_swap(owned_event *a, owned_event *b)
{
	owned_event t = *a;
	*a = *b;
	*b = t;
}

static void sift_down(list_ctx *c, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < c->count && event_compare(&c->heap[l].event, &c->heap[m].event) > 0)
			m = l;
		if (r < c->count && event_compare(&c->heap[r].event, &c->heap[m].event) > 0)
			m = r;
		if (m == i)
			return;
		heap_swap(&c->heap[i], &c->heap[m]);
		i = m;
	}
}

static void sift_up(list_ctx *c, uint32_t i)
{
	while (i && event_compare(&c->heap[(i - 1) / 2].event, &c->heap[i].event) < 0) {
		heap_swap(&c->heap[(i - 1) / 2], &c->heap[i]);
		i = (i - 1) / 2;
	}
}

/* Copies e into *o (one allocation for all its strings). */
static int own(owned_event *o, const tally_event *e)
{
	const tally_str *src[6] = {&e->event_id, &e->type, &e->project, &e->agent, &e->model, &e->user};
	size_t size = 1;
	for (int i = 0; i < 6; i++)
		size += src[i]->len;
	char *buf = malloc(size);
	if (!buf)
		return -ENOMEM;
	o->event = *e;
	tally_str *dst[6] = {&o->event.event_id, &o->event.type, &o->event.project, &o->event.agent,
			     &o->event.model, &o->event.user};
	char *p = buf;
	for (int i = 0; i < 6; i++) {
		if (src[i]->len)
			memcpy(p, src[i]->ptr, src[i]->len);
		*dst[i] = (tally_str){p, src[i]->len};
		p += src[i]->len;
	}
	o->buf = buf;
	return 0;
}


static int list_row(void *ctx, const rows *r, const strdict *const dict[DIM_COUNT], uint32_t i)
{
	list_ctx *c = ctx;
	const tally_list_request *req = c->req;
	/* The time alone settles most rows, before the event is put together. */
	if ((c->has_cursor && r->time_us[i] < c->cursor_time) || r->time_us[i] > c->bound)
		return 0;
	tally_event e;
	char id_text[ID_TEXT_SIZE_MAX];
	rows_event(r, dict, i, &e, id_text);
	if (c->has_cursor && key_compare(e.time_us, e.event_id.ptr, e.event_id.len, c->cursor_time,
					 c->cursor_id, c->cursor_id_len) <= 0)
		return 0;
	if (req->user.len && (e.user.len != req->user.len || memcmp(e.user.ptr, req->user.ptr, e.user.len)))
		return 0;
	const char *status = tally_status_name((int)e.status);
	tally_str value[TALLY_DIM_COUNT] = {
		[TALLY_DIM_PROJECT] = e.project, [TALLY_DIM_AGENT] = e.agent,
		[TALLY_DIM_MODEL] = e.model,     [TALLY_DIM_TYPE] = e.type,
		[TALLY_DIM_STATUS] = {status, (uint32_t)strlen(status)},
	};
	for (int d = 0; d < TALLY_DIM_COUNT; d++)
		if (!filter_set_pass(&c->filters, d, value[d]))
			return 0;
	if (c->count == c->capacity) {
		if (event_compare(&e, &c->heap[0].event) >= 0)
			return 0;
		owned_event o;
		if (own(&o, &e))
			return -ENOMEM;
		free(c->heap[0].buf);
		c->heap[0] = o;
		sift_down(c, 0);
	} else {
		if (own(&c->heap[c->count], &e))
			return -ENOMEM;
		c->count++;
		sift_up(c, c->count - 1);
	}
	if (c->count == c->capacity)
		c->bound = c->heap[0].event.time_us;
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Cursor text: decimal time, ':', the id's bytes in lower-case hex. */
static int parse_cursor(list_ctx *c, const char *text)
{
	char *end;
	errno = 0;
	long long t = strtoll(text, &end, 10);
	if (errno || end == text || *end != ':')
		return TALLY_E_INVALID;
	const char *hex = end + 1;
	size_t n = strlen(hex);
	if (n == 0 || n % 2 || n / 2 > TALLY_EVENT_ID_SIZE_MAX)
		return TALLY_E_INVALID;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return TALLY_E_INVALID;
		c->cursor_id[i] = (char)(hi * 16 + lo);
	}
	c->cursor_id_len = (uint32_t)(n / 2);
	c->cursor_time = t;
	c->has_cursor = 1;
	return 0;
}

static void format_cursor(char *out, const tally_event *e)
{
	int n = snprintf(out, TALLY_CURSOR_SIZE, "%" PRId64 ":", e->time_us);
	for (uint32_t i = 0; i < e->event_id.len && n + 3 <= TALLY_CURSOR_SIZE; i++)
		n += snprintf(out + n, TALLY_CURSOR_SIZE - (size_t)n, "%02x",
			      (unsigned char)e->event_id.ptr[i]);
}

static int sorted_compare(const void *a, const void *b)
{
	return event_compare(&((const owned_event *)a)->event, &((const owned_event *)b)->event);
}

static int list_invalid(char *errmsg, const char *message)
{
	errmsg_set(errmsg, "%s", message);
	return TALLY_E_INVALID;
}

int tally_list_events(tally_store *s, const char *tenant_name, const tally_list_request *req,
		      tally_scan_fn fn, void *fn_ctx, char *next_cursor, char *errmsg)
{
	if (errmsg)
		errmsg[0] = 0;
	if (!s || !req || !fn || !next_cursor)
		return list_invalid(errmsg, "missing argument");
	next_cursor[0] = 0;
	if (!tenant_name || !store_tenant_name_valid(tenant_name)) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "malformed tenant name");
		return TALLY_E_TENANT;
	}
	if (req->from_us >= req->to_us)
		return list_invalid(errmsg, "empty time range: from must be before to");
	if (req->limit == 0 || req->limit > TALLY_LIST_EVENTS_MAX) {
		errmsg_set(errmsg, "limit must be 1 to %u events", (unsigned)TALLY_LIST_EVENTS_MAX);
		return TALLY_E_INVALID;
	}
	if (req->user.len && !req->user.ptr)
		return list_invalid(errmsg, "user has no bytes");
	int rc = query_filters_check(req->filters, req->filter_count, errmsg);
	if (rc)
		return rc;
	list_ctx c;
	memset(&c, 0, sizeof(c));
	c.req = req;
	if (req->cursor && req->cursor[0] && parse_cursor(&c, req->cursor))
		return list_invalid(errmsg, "malformed cursor");
	c.capacity = req->limit + 1;
	c.bound = INT64_MAX;
	c.heap = calloc(c.capacity, sizeof(*c.heap));
	if (!c.heap || filter_set_init(&c.filters, req->filters, req->filter_count)) {
		free(c.heap);
		return -ENOMEM;
	}
	int64_t lo = req->from_us;
	if (c.has_cursor && c.cursor_time > lo)
		lo = c.cursor_time;
	uint64_t rows_read = 0;
	segment_file **files = NULL;
	memtable *frozen = NULL, *active = NULL;
	uint32_t file_count = 0, tenant_id = 0, active_rows = 0;
	/* One hold of the store lock: the tenant's files and memtables pinned,
	 * with the active memtable's row count, so they are one snapshot (a
	 * flush publishes its file and drops its memtable in one hold); they
	 * are read after, the active memtable a step per hold of the lock. */
	store_lock_counted(s);
	tenant *t = store_tenant_find(s, tenant_name);
	if (t) {
		tenant_id = t->id;
		rc = store_pin_tenant_files(s, t, &files, &file_count);
		if (!rc && t->frozen && t->frozen->rows.count) {
			frozen = t->frozen;
			frozen->pins++;
		}
		if (!rc && t->active && t->active->rows.count) {
			active = t->active;
			active->pins++;
			active_rows = active->rows.count;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (s->query_test_hook && t)
		s->query_test_hook(s, s->query_test_ctx);
	if (active) {
		if (!rc)
			rc = store_scan_pinned_rows(s, active, 0, active_rows, lo, req->to_us, &c.bound,
						    list_row, &c, &rows_read);
		store_memtable_unpin(s, t, active, NULL);
	}
	if (frozen) {
		if (!rc)
			rc = store_scan_memtable_range(frozen, 0, frozen->rows.count, lo, req->to_us,
						       &c.bound, list_row, &c, &rows_read);
		store_memtable_unpin(s, t, frozen, NULL);
	}
	int64_t window = TALLY_US_PER_SECOND * 3600;
	while (file_count && lo < req->to_us && !rc) {
		/* lo < to: their distance fits in 64 bits unsigned, not signed. */
		int64_t hi = (uint64_t)req->to_us - (uint64_t)lo > (uint64_t)window ? lo + window : req->to_us;
		rc = store_scan_file_rows(s, files, file_count, tenant_id, lo, hi, &c.bound, list_row,
					  &c, &rows_read, errmsg);
		if (c.count == c.capacity && c.bound < hi)
			break;
		lo = hi;
		if (window < TALLY_QUERY_RANGE_MAX_US)
			window *= 2;
	}
	if (files)
		store_files_unpin(s, files, file_count);
	free(files);
	if (!rc) {
		qsort(c.heap, c.count, sizeof(*c.heap), sorted_compare);
		uint32_t emit = c.count < req->limit ? c.count : req->limit;
		for (uint32_t i = 0; i < emit && !rc; i++)
			rc = fn(fn_ctx, &c.heap[i].event);
		if (!rc && c.count > req->limit)
			format_cursor(next_cursor, &c.heap[req->limit - 1].event);
	}
	for (uint32_t i = 0; i < c.count; i++)
		free(c.heap[i].buf);
	free(c.heap);
	filter_set_free(&c.filters);
	if (rc && errmsg && !errmsg[0])
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "listing failed: %s", tally_strerror(rc));
	return rc;
}
