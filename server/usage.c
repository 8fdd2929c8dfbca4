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
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "server_internal.h"
#include "tally_limits.h"
#include "usage.h"

#define USAGE_TENANTS_DEFAULT 1000u
#define USAGE_TENANTS_MAX 10000u

typedef struct usage_job {
	tally_store *store;
	metrics *metrics;
	uint32_t frame_limit;
	int32_t day;
	uint64_t watermark; /* read before the tenants were copied: see the file comment */
	size_t tenant_count;
	bool last_page;
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
	return (x->status > y->status) - (x->status < y->status);
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
	return 0;
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
	for (size_t t = 0; t < u->tenant_count && !rc; t++) {
		tally_result *r = NULL;
		rc = tally_query_run(u->store, u->tenants[t], &q, &r, errmsg);
		if (rc)
			break;
		p.results[p.result_count++] = r;
		for (size_t i = 0; i < r->row_count && !rc; i++)
			rc = page_add(&p, u->tenants[t], &r->rows[i]);
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
		err.message = errmsg;
		err.retry_after_ms = retry_after_of(code);
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		resp.request_id = job->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
		resp.error = &err;
		job->frame = response_frame(&resp, u->frame_limit, &job->frame_size);
	} else {
		Tally__V1__DailyUsagePage out = TALLY__V1__DAILY_USAGE_PAGE__INIT;
		out.day = u->day;
		out.rows = p.ptrs;
		out.n_rows = p.count;
		out.next_after_tenant = u->last_page || !u->tenant_count ? "" : u->tenants[u->tenant_count - 1];
		out.watermark = u->watermark;
		out.checksum = usage_rows_checksum(p.ptrs, p.count);
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		resp.request_id = job->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_DAILY_USAGE;
		resp.daily_usage = &out;
		job->frame = response_frame(&resp, u->frame_limit, &job->frame_size);
	}
	for (size_t i = 0; i < p.result_count; i++)
		tally_result_free(p.results[i]);
	free(p.results);
	free(p.rows);
	free(p.ptrs);
	free(u->tenants);
	free(u);
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
	int64_t today = server_now_us() / TALLY_US_PER_DAY;
	if (m->day < 0 || m->day > today) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "day %d is outside the days a DailyUsage may ask for: "
				   "0 (1970-01-01) to %" PRId64 " (today, UTC)",
				   m->day, today);
		return;
	}
	/* Before the tenants are copied: see the file comment. */
	uint64_t watermark = tally_change_watermark(s->store);
	size_t n;
	const tenant_entry *list = tenants_list(s->tenants, &n);
	const char **names = malloc((n ? n : 1) * sizeof(*names));
	usage_job *u = calloc(1, sizeof(*u));
	worker_job *job = calloc(1, sizeof(*job));
	if (!names || !u || !job) {
		free(names);
		free(u);
		free(job);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++)
		names[i] = list[i].name;
	qsort(names, n, sizeof(*names), name_cmp);
	const char *after = m->after_tenant ? m->after_tenant : "";
	size_t lo = 0, hi = n; /* the first name > after */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(names[mid], after) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t take = n - lo < limit ? n - lo : limit;
	u->tenants = malloc((take ? take : 1) * sizeof(*u->tenants));
	if (!u->tenants) {
		free(names);
		free(u);
		free(job);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
		return;
	}
	for (size_t i = 0; i < take; i++)
		snprintf(u->tenants[i], sizeof(u->tenants[i]), "%s", names[lo + i]);
	free(names);
	u->tenant_count = take;
	u->last_page = lo + take == n;
	u->store = s->store;
	u->metrics = s->metrics;
	u->frame_limit = s->config.frame_bytes_max;
	u->day = m->day;
	u->watermark = watermark;
	job->fn = run_daily_usage;
	job->arg = u;
	job->slot = (uint32_t)(c - s->conns);
	job->gen = c->gen;
	job->request_id = req->request_id;
	job->frame_bytes = fb;
	job->started_us = server_now_us();
	worker_pool_submit(s->workers, job);
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
