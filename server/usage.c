/*
 * usage.c — the billing export's requests (admin keys only; docs/billing.md):
 * DailyUsage, one UTC day's usage of every tenant a page of tenants at a
 * time, and ChangedDays, the days whose events changed after a watermark.
 *
 * DailyUsage: on the loop thread, the store's change watermark W is read
 * first, then the page's tenant names are copied from the registry (it is
 * the loop's) in bytewise order after `after_tenant`; then, on the worker
 * pool, the engine is asked for each tenant's day grouped by all five
 * dimensions (rollup pages: exact counts and sums), and the page answers
 * W. A row's errors are its count when its status is not ok.
 *
 * WHY W COMES BEFORE THE TENANTS. The export promises (engine/tally.h,
 * docs/architecture.md "The watermark argument") that an event the page
 * missed has a change after W, so that ChangedDays(W) lists its day. Take
 * an event E of the day, with LSN L, of tenant T:
 *   - L > W: ChangedDays(W) lists E's day, whatever the page saw.
 *   - L <= W: W is the durable LSN, so E's record was appended, and E
 *     applied, before W was read; the page's queries start after that and
 *     see E. And T is on the page if the page's range holds it: a tenant
 *     enters the registry on the loop thread before any batch of it is
 *     queued for the engine (ingest's create_tenant, CreateTenant), so
 *     before E's LSN existed, and W and the copy are read later on that
 *     same thread. A tenant with events never leaves the registry (only a
 *     CreateTenant whose write failed is taken back, before any event).
 * Read on the worker instead, W could follow a tenant created, and its
 * events made durable, between the copy and the worker's start: missing
 * from the page, its events at or below W, its day never listed again
 * (tests/test_server.c, daily_usage_watermark_precedes_its_tenants).
 * tally_change_watermark takes the WAL's mutex for one load (never held
 * across an fsync), so the loop can afford it; ChangedDays reads it there
 * too.
 *
 * PAGES INSIDE A TENANT. A page holds at most rows_max rows, the most a
 * frame surely fits (USAGE_ROW_BYTES_MAX each), so that no tenant-day is
 * too large to export: when a tenant's rows pass that, the page stops
 * after its last row and names it (next_after_row); the next page asks
 * the engine for that tenant's rows after it (tally_query.after, keyset
 * paging in the engine's default order, which is the page's row order:
 * project, agent, model, type, status name). Each page of a tenant
 * aggregates its whole day again, so a tenant-day of G groups costs about
 * G / rows_max aggregations, twice that past TALLY_QUERY_CELLS_MAX groups
 * after the cursor (the engine answers such a page in a narrowed window:
 * docs/queries.md, "Windows"); a page is TOO_LARGE only past
 * query_bytes_max in its narrowest window.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "fail.h"
#include "server_internal.h"
#include "tally_limits.h"
#include "usage.h"

#define USAGE_TENANTS_DEFAULT 1000u
#define USAGE_TENANTS_MAX 10000u
/* The most bytes one UsageRow takes in a page: a field's tag and length
 * (3 bytes at most for these sizes) before each string, the longest
 * strings, seven varints of 10 bytes with their tags, a Wraps of four,
 * and the row's own tag and length. */
#define USAGE_STRING_BYTES(n) (3 + (n))
#define USAGE_ROW_BYTES_MAX                                                                    \
	(USAGE_STRING_BYTES(TALLY_TENANT_SIZE_MAX) + 3 * USAGE_STRING_BYTES(TALLY_DIMENSION_SIZE_MAX) + \
	 USAGE_STRING_BYTES(TALLY_TYPE_SIZE_MAX) + 7 * 11 + (3 + 4 * 11) + 4)
/* A page's bytes beside its rows: its other fields (a UsageKey as long as
 * a row), the response around it and the frame's header, generously. */
#define USAGE_PAGE_OVERHEAD_BYTES (USAGE_ROW_BYTES_MAX + 256)

/* A DailyUsage's cursor inside a tenant's rows: group values as the
 * engine's query takes them (the status by name), their bytes here. */
typedef struct usage_cursor {
	bool set;
	tally_str group[TALLY_DIM_COUNT];
	char bytes[3 * TALLY_DIMENSION_SIZE_MAX + TALLY_TYPE_SIZE_MAX];
} usage_cursor;

typedef struct usage_job {
	tally_store *store;
	metrics *metrics;
	uint32_t frame_limit;
	int32_t day;
	uint64_t watermark; /* read before the tenants were copied: see the file comment */
	size_t tenant_count;
	bool last_page;
	size_t rows_max;    /* rows a page may hold */
	usage_cursor after; /* when set, tenants[0]'s rows start after it */
	char (*tenants)[TALLY_TENANT_SIZE_MAX + 1];
} usage_job;

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int row_cmp(const void *a, const void *b)
{
	const Tally__V1__UsageRow *x = *(Tally__V1__UsageRow *const *)a;
	const Tally__V1__UsageRow *y = *(Tally__V1__UsageRow *const *)b;
	int t = strcmp(x->tenant, y->tenant);
	if (t)
		return t;
	const ProtobufCBinaryData *fx[4] = {&x->project, &x->agent, &x->model, &x->type};
	const ProtobufCBinaryData *fy[4] = {&y->project, &y->agent, &y->model, &y->type};
	for (int k = 0; k < 4; k++) {
		size_t n = fx[k]->len < fy[k]->len ? fx[k]->len : fy[k]->len;
		int c = n ? memcmp(fx[k]->data, fy[k]->data, n) : 0;
		if (c)
			return c;
		if (fx[k]->len != fy[k]->len)
			return fx[k]->len < fy[k]->len ? -1 : 1;
	}
	/* Statuses by name, as the engine orders its groups (and pages them). */
	return strcmp(tally_status_name((int)x->status), tally_status_name((int)y->status));
}

/* The rows of one page; strings point into the engine results kept alive
 * in results[] until the page is framed. */
typedef struct page {
	Tally__V1__UsageRow *rows;
	Tally__V1__UsageRow **ptrs;
	size_t count, cap;
	tally_result **results;
	size_t result_count;
} page;

static int page_add(page *p, const char *tenant, const tally_row *src)
{
	if (p->count == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 1024;
		Tally__V1__UsageRow *rows = realloc(p->rows, cap * sizeof(*rows));
		if (!rows)
			return -ENOMEM;
		p->rows = rows;
		p->cap = cap;
	}
	Tally__V1__UsageRow *r = &p->rows[p->count++];
	tally__v1__usage_row__init(r);
	r->tenant = (char *)tenant;
	const tally_str *g = src->group;
	r->project = (ProtobufCBinaryData){g[TALLY_DIM_PROJECT].len, (uint8_t *)g[TALLY_DIM_PROJECT].ptr};
	r->agent = (ProtobufCBinaryData){g[TALLY_DIM_AGENT].len, (uint8_t *)g[TALLY_DIM_AGENT].ptr};
	r->model = (ProtobufCBinaryData){g[TALLY_DIM_MODEL].len, (uint8_t *)g[TALLY_DIM_MODEL].ptr};
	r->type = (ProtobufCBinaryData){g[TALLY_DIM_TYPE].len, (uint8_t *)g[TALLY_DIM_TYPE].ptr};
	/* The status group value is its name ("ok", "error", ...). */
	uint32_t status = 0;
	for (uint32_t st = 0; st < TALLY_STATUS_COUNT; st++) {
		const char *name = tally_status_name((int)st);
		if (g[TALLY_DIM_STATUS].len == strlen(name) && memcmp(g[TALLY_DIM_STATUS].ptr, name, strlen(name)) == 0)
			status = st;
	}
	r->status = status;
	r->count = src->count;
	r->tokens_in = src->tokens_in;
	r->tokens_out = src->tokens_out;
	r->cost_micros = src->cost_micros;
	r->duration_ms = src->duration_ms_sum;
	r->errors = src->count - src->status_count[TALLY_STATUS_OK];
	return convert_wraps(&src->wraps, &r->wraps);
}

static void run_daily_usage(worker_job *job)
{
	usage_job *u = job->arg;
	page p = {0};
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = 0;
	p.results = calloc(u->tenant_count ? u->tenant_count : 1, sizeof(*p.results));
	if (!p.results)
		rc = -ENOMEM;
	tally_query q = {0};
	assert(u->day >= 0 && u->day < INT64_MAX / TALLY_US_PER_DAY); /* on_daily_usage */
	q.from_us = (int64_t)u->day * TALLY_US_PER_DAY;
	q.to_us = q.from_us + TALLY_US_PER_DAY;
	q.bucket = TALLY_BUCKET_NONE;
	q.group_by = (1u << TALLY_DIM_COUNT) - 1;
	/* The page ends after its tenants, or when its rows reach rows_max:
	 * after tenant `stop` (whole), or inside it (`inside`). */
	size_t rows_left = u->rows_max, stop = SIZE_MAX;
	bool inside = false;
	for (size_t t = 0; t < u->tenant_count && !rc; t++) {
		if (rows_left == 0) {
			stop = t - 1;
			break;
		}
		q.after = t == 0 && u->after.set;
		if (q.after)
			memcpy(q.after_group, u->after.group, sizeof(q.after_group));
		q.limit = rows_left < TALLY_QUERY_ROWS_MAX ? (uint32_t)rows_left : TALLY_QUERY_ROWS_MAX;
		tally_result *r = NULL;
		rc = tally_query_run(u->store, u->tenants[t], &q, &r, errmsg);
		if (rc)
			break;
		p.results[p.result_count++] = r;
		for (size_t i = 0; i < r->row_count && !rc; i++)
			rc = page_add(&p, u->tenants[t], &r->rows[i]);
		rows_left -= r->row_count;
		if (r->truncated) { /* more rows of this tenant than the page has room for */
			stop = t;
			inside = true;
			break;
		}
	}
	/* Everything the page read must be durable before it is exported:
	 * otherwise a crash could take back an event the bill already counts,
	 * and no change mark would remain to re-export the day. */
	if (!rc && (rc = tally_change_barrier(u->store)))
		snprintf(errmsg, sizeof(errmsg), "daily usage: the store could not make what it read durable: %s",
			 tally_strerror(rc));
	if (!rc) {
		p.ptrs = malloc((p.count ? p.count : 1) * sizeof(*p.ptrs));
		if (!p.ptrs)
			rc = -ENOMEM;
	}
	if (!rc) {
		/* The documented order, whatever order the engine's groups came in. */
		for (size_t i = 0; i < p.count; i++)
			p.ptrs[i] = &p.rows[i];
		qsort(p.ptrs, p.count, sizeof(*p.ptrs), row_cmp);
	}
	if (rc) {
		int code = rc == TALLY_E_LIMIT ? ERR_TOO_LARGE : error_code_of_failure(rc);
		if (!errmsg[0])
			snprintf(errmsg, sizeof(errmsg), "daily usage: %s", tally_strerror(rc));
		metrics_error(u->metrics, code);
		Tally__V1__Error err = TALLY__V1__ERROR__INIT;
		err.code = (Tally__V1__Error__Code)code;
		err.message = server_text_utf8(errmsg);
		err.retry_after_ms = retry_after_of(code);
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		resp.request_id = job->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
		resp.error = &err;
		job->frame = response_frame(&resp, u->frame_limit, u->metrics, &job->frame_size);
	} else {
		Tally__V1__DailyUsagePage out = TALLY__V1__DAILY_USAGE_PAGE__INIT;
		out.day = u->day;
		out.rows = p.ptrs;
		out.n_rows = p.count;
		Tally__V1__UsageKey key = TALLY__V1__USAGE_KEY__INIT;
		if (stop != SIZE_MAX) {
			out.next_after_tenant = u->tenants[stop];
			if (inside) { /* the page's last row is stop's */
				const Tally__V1__UsageRow *last = p.ptrs[p.count - 1];
				key.project = last->project;
				key.agent = last->agent;
				key.model = last->model;
				key.type = last->type;
				key.status = last->status;
				out.next_after_row = &key;
			}
		} else {
			out.next_after_tenant = u->last_page || !u->tenant_count ? ""
										: u->tenants[u->tenant_count - 1];
		}
		out.watermark = u->watermark;
		out.checksum = usage_rows_checksum(p.ptrs, p.count);
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		resp.request_id = job->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_DAILY_USAGE;
		resp.daily_usage = &out;
		job->frame = response_frame(&resp, u->frame_limit, u->metrics, &job->frame_size);
	}
	for (size_t i = 0; i < p.result_count; i++)
		tally_result_free(p.results[i]);
	free(p.results);
	for (size_t i = 0; i < p.count; i++)
		free(p.rows[i].wraps);
	free(p.rows);
	free(p.ptrs);
	free(u->tenants);
	free(u);
}

/* Points cursor `to` (a copy of `from`) at its own bytes. */
static void usage_cursor_point(usage_cursor *to, const usage_cursor *from)
{
	for (int d = 0; d < TALLY_DIM_COUNT; d++) /* all in bytes but the status's static name */
		if (d != TALLY_DIM_STATUS)
			to->group[d].ptr = to->bytes + (from->group[d].ptr - from->bytes);
}

/* m->after_row into *out (the status by name), or an answered BAD_REQUEST
 * and -1: a cursor needs its tenant, a known status and strings no event
 * could exceed. */
static int usage_cursor_take(const Tally__V1__DailyUsage *m, usage_cursor *out, server *s, conn *c,
			     uint64_t request_id, uint64_t fb)
{
	const Tally__V1__UsageKey *k = m->after_row;
	if (!m->after_tenant || !m->after_tenant[0]) {
		conn_respond_error(s, c, request_id, fb, ERR_BAD_REQUEST, 0,
				   "after_row without after_tenant: a row is a place in one tenant's rows");
		return -1;
	}
	if (k->status >= TALLY_STATUS_COUNT) {
		conn_respond_error(s, c, request_id, fb, ERR_BAD_REQUEST, 0, "after_row: unknown status %u",
				   k->status);
		return -1;
	}
	const struct {
		int dim;
		const ProtobufCBinaryData *value;
		size_t max;
	} fields[] = {
		{TALLY_DIM_PROJECT, &k->project, TALLY_DIMENSION_SIZE_MAX},
		{TALLY_DIM_AGENT, &k->agent, TALLY_DIMENSION_SIZE_MAX},
		{TALLY_DIM_MODEL, &k->model, TALLY_DIMENSION_SIZE_MAX},
		{TALLY_DIM_TYPE, &k->type, TALLY_TYPE_SIZE_MAX},
	};
	size_t at = 0;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		size_t len = fields[i].value->len;
		if (len > fields[i].max) {
			conn_respond_error(s, c, request_id, fb, ERR_BAD_REQUEST, 0,
					   "after_row: %s of %zu bytes (at most %zu)", tally_dim_name(fields[i].dim),
					   len, fields[i].max);
			return -1;
		}
		if (len)
			memcpy(out->bytes + at, fields[i].value->data, len);
		out->group[fields[i].dim] = (tally_str){out->bytes + at, (uint32_t)len};
		at += len;
	}
	const char *status = tally_status_name((int)k->status);
	out->group[TALLY_DIM_STATUS] = (tally_str){status, (uint32_t)strlen(status)};
	out->set = true;
	return 0;
}

void on_daily_usage(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const Tally__V1__DailyUsage *m = req->daily_usage;
	uint32_t limit = m->tenant_limit ? m->tenant_limit : USAGE_TENANTS_DEFAULT;
	if (limit > USAGE_TENANTS_MAX) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "tenant_limit %u: at most %u tenants per page", limit, USAGE_TENANTS_MAX);
		return;
	}
	/* Compared as days, before any multiplication: an int32 day times
	 * TALLY_US_PER_DAY passes int64 from day 106,751,992 on. A day is
	 * exported once it has begun, and no day before 1970-01-01 has an
	 * event (tools/export.h, EXPORT_E_DAY). */
	int64_t today = server_wall_us() / TALLY_US_PER_DAY;
	if (m->day < 0 || m->day > today) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "day %d is outside the days a DailyUsage may ask for: "
				   "0 (1970-01-01) to %" PRId64 " (today, UTC)",
				   m->day, today);
		return;
	}
	usage_cursor after_row = {0};
	if (m->after_row && usage_cursor_take(m, &after_row, s, c, req->request_id, fb))
		return;
	/* Before the tenants are copied: see the file comment. */
	uint64_t watermark = tally_change_watermark(s->store);
	size_t n;
	const tenant_entry *list = tenants_list(s->tenants, &n);
	const char **names = malloc((n ? n : 1) * sizeof(*names));
	usage_job *u = calloc(1, sizeof(*u));
	worker_job *job = calloc(1, sizeof(*job));
	if (!names || !u || !job)
		goto nomem;
	for (size_t i = 0; i < n; i++)
		names[i] = list[i].name;
	qsort(names, n, sizeof(*names), name_cmp);
	const char *after = m->after_tenant ? m->after_tenant : "";
	size_t lo = 0, hi = n; /* the first name > after (>= after, to go on inside it) */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int order = strcmp(names[mid], after);
		if (order < 0 || (order == 0 && !after_row.set))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (after_row.set && (lo == n || strcmp(names[lo], after) != 0))
		after_row.set = false; /* no such tenant: nothing of it to go on with */
	size_t take = n - lo < limit ? n - lo : limit;
	u->tenants = malloc((take ? take : 1) * sizeof(*u->tenants));
	if (!u->tenants)
		goto nomem;
	for (size_t i = 0; i < take; i++)
		snprintf(u->tenants[i], sizeof(u->tenants[i]), "%s", names[lo + i]);
	free(names);
	names = NULL;
	u->tenant_count = take;
	u->last_page = lo + take == n;
	u->store = s->store;
	u->metrics = s->metrics;
	u->frame_limit = s->config.frame_bytes_max;
	u->rows_max = u->frame_limit > USAGE_PAGE_OVERHEAD_BYTES + USAGE_ROW_BYTES_MAX
			      ? (u->frame_limit - USAGE_PAGE_OVERHEAD_BYTES) / USAGE_ROW_BYTES_MAX
			      : 1;
	u->after = after_row;
	if (after_row.set) /* its strings point into the job's own copy of the bytes */
		usage_cursor_point(&u->after, &after_row);
	u->day = m->day;
	u->watermark = watermark;
	job->fn = run_daily_usage;
	job->arg = u;
	job->slot = (uint32_t)(c - s->conns);
	job->gen = c->gen;
	job->request_id = req->request_id;
	job->frame_bytes = fb;
	job->started_us = server_now_us();
	/* job->lane stays "": the export's lane, no tenant's */
	if (worker_pool_submit(s->workers, job))
		goto nomem;
	return;
nomem:
	free(names);
	if (u)
		free(u->tenants);
	free(u);
	free(job);
	conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
}

void on_changed_days(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	/* Before the days: a change after it is reported now or next time. */
	uint64_t watermark = tally_change_watermark(s->store);
	size_t cap = CHANGE_DAYS_MAX, count = 0; /* the most days the change map holds */
	int32_t *days = NULL;
	uint64_t *lsns = NULL;
	int rc;
	for (;;) {
		days = malloc(cap * sizeof(*days));
		lsns = malloc(cap * sizeof(*lsns));
		if (!days || !lsns) {
			rc = -ENOMEM;
			break;
		}
		rc = tally_changed_days(s->store, req->changed_days->since, days, lsns, cap, &count);
		if (rc != TALLY_E_LIMIT || count <= cap)
			break;
		free(days);
		free(lsns);
		cap = count;
	}
	if (rc == TALLY_E_NOTFOUND) {
		free(days);
		free(lsns);
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "changed days: watermark %" PRIu64 " is older than the changes the store remembers: "
				   "re-export every day exported with it",
				   req->changed_days->since);
		return;
	}
	if (rc) {
		free(days);
		free(lsns);
		int code = error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code),
				   "changed days: %s", tally_strerror(rc));
		return;
	}
	Tally__V1__ChangedDaysResult out = TALLY__V1__CHANGED_DAYS_RESULT__INIT;
	out.days = days;
	out.n_days = count;
	out.change = lsns;
	out.n_change = count;
	out.watermark = watermark;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = req->request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_CHANGED_DAYS;
	resp.changed_days = &out;
	conn_respond(s, c, &resp, fb);
	free(days);
	free(lsns);
}
