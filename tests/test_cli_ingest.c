/*
 * test_cli_ingest.c — tools/ingest.c against a scripted server on a
 * socketpair: batches cut at --batch and per tenant, every ack matched to
 * its file lines, the summary (counts, the first problems by line), a
 * malformed row (the rows before it sent and acknowledged, then the
 * error), retries on backpressure, a refused batch, a lost connection.
 *
 * The scripted server answers each batch by event id: ids starting "rej"
 * are REJECTED (reason = the id's last digit), "con" CONFLICT, "dup"
 * DUPLICATE, others ACCEPTED. Its first `refuse` batches get an Error
 * with code refuse_code instead; after `close_after` batches it closes.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../tools/ingest.h"
#include "builder.h"
#include "../tools/rows.h"

#define SERVER_BATCHES_MAX 64

typedef struct server {
	int fd;
	int refuse;
	Tally__V1__Error__Code refuse_code;
	int close_after; /* 0: never */
	int batches;
	uint32_t sizes[SERVER_BATCHES_MAX];
	uint32_t frame_bytes[SERVER_BATCHES_MAX]; /* each batch's frame, header included */
	char tenants[SERVER_BATCHES_MAX][80];
	bool create_tenant[SERVER_BATCHES_MAX];
	bool backfill[SERVER_BATCHES_MAX];
} server;

static void send_response(int fd, Tally__V1__Response *resp)
{
	size_t size = tally__v1__response__get_packed_size(resp);
	uint8_t *buf = malloc(FRAME_HEADER_SIZE + size);
	frame_header_put(buf, (uint32_t)size);
	tally__v1__response__pack(resp, buf + FRAME_HEADER_SIZE);
	cr_assert_eq(write(fd, buf, FRAME_HEADER_SIZE + size), (ssize_t)(FRAME_HEADER_SIZE + size));
	free(buf);
}

/* The id of event i of a batch (bytes + lengths, as the builder sends ids). */
static void event_id(const Tally__V1__IngestBatch *b, size_t i, char *out)
{
	size_t at = 0;
	for (size_t k = 0; k < i; k++)
		at += b->event_id->len[k];
	memcpy(out, b->event_id->bytes.data + at, b->event_id->len[i]);
	out[b->event_id->len[i]] = '\0';
}

static void answer(server *sv, const Tally__V1__Request *req)
{
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = req->request_id;
	const Tally__V1__IngestBatch *b = req->ingest;
	int k = sv->batches++;
	cr_assert_lt(k, SERVER_BATCHES_MAX);
	sv->sizes[k] = (uint32_t)b->n_time_us;
	snprintf(sv->tenants[k], sizeof(sv->tenants[k]), "%s", b->tenant);
	sv->create_tenant[k] = b->create_tenant;
	sv->backfill[k] = b->backfill;
	if (k < sv->refuse) {
		Tally__V1__Error e = TALLY__V1__ERROR__INIT;
		e.code = sv->refuse_code;
		e.message = "slow down";
		e.retry_after_ms = 1;
		resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
		resp.error = &e;
		send_response(sv->fd, &resp);
		return;
	}
	size_t n = b->n_time_us;
	Tally__V1__IngestAck__Result *results = calloc(n + 1, sizeof(*results));
	uint32_t *reasons = calloc(n + 1, sizeof(*reasons));
	Tally__V1__IngestAck ack = TALLY__V1__INGEST_ACK__INIT;
	for (size_t i = 0; i < n; i++) {
		char id[80];
		event_id(b, i, id);
		if (strncmp(id, "rej", 3) == 0) {
			results[i] = TALLY__V1__INGEST_ACK__RESULT__REJECTED;
			reasons[i] = (uint32_t)(id[strlen(id) - 1] - '0');
			ack.rejected++;
		} else if (strncmp(id, "con", 3) == 0) {
			results[i] = TALLY__V1__INGEST_ACK__RESULT__CONFLICT;
			ack.conflict++;
		} else if (strncmp(id, "dup", 3) == 0) {
			results[i] = TALLY__V1__INGEST_ACK__RESULT__DUPLICATE;
			ack.duplicate++;
		} else {
			ack.accepted++;
		}
	}
	ack.n_result = n;
	ack.result = results;
	ack.n_reason = ack.rejected ? n : 0;
	ack.reason = reasons;
	resp.body_case = TALLY__V1__RESPONSE__BODY_INGEST;
	resp.ingest = &ack;
	send_response(sv->fd, &resp);
	free(results);
	free(reasons);
}

static void *server_main(void *arg)
{
	server *sv = arg;
	frame_reader r;
	frame_reader_init(&r, 0);
	uint8_t *buf = malloc(65536);
	size_t at = 0, have = 0;
	for (;;) {
		const uint8_t *p = buf + at;
		size_t n = have - at;
		int st = frame_reader_feed(&r, &p, &n);
		at = have - n;
		if (st == FRAME_READY) {
			uint32_t size;
			const uint8_t *body = frame_reader_frame(&r, &size);
			Tally__V1__Request *req = tally__v1__request__unpack(NULL, size, body);
			frame_reader_next(&r);
			if (sv->batches < SERVER_BATCHES_MAX)
				sv->frame_bytes[sv->batches] = FRAME_HEADER_SIZE + size;
			cr_assert_not_null(req);
			cr_assert_eq(req->body_case, TALLY__V1__REQUEST__BODY_INGEST);
			answer(sv, req);
			tally__v1__request__free_unpacked(req, NULL);
			if (sv->close_after && sv->batches == sv->close_after)
				break;
			continue;
		}
		ssize_t got = read(sv->fd, buf, 65536);
		if (got <= 0)
			break;
		at = 0;
		have = (size_t)got;
	}
	free(buf);
	frame_reader_free(&r);
	close(sv->fd);
	return NULL;
}

typedef struct run {
	server sv;
	ingest_summary sum;
	char err[INGEST_ERRMSG_SIZE];
	int rc;
	uint32_t frame_bytes_max; /* the server's limit, as its HelloOk says; 0: 1 MiB */
} run;

/* Ingests text as file "in.csv" with options o, as an admin (tenant
 * NULL) or a tenant key, against the scripted server in r->sv. */
static void ingest_text(run *r, const char *text, const ingest_options *o, const char *key_tenant)
{
	int fds[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	r->sv.fd = fds[1];
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, server_main, &r->sv), 0);
	tally_client *c;
	cr_assert_eq(tally_client_from_fd(fds[0], 0, &c), 0);
	tally_session_info info;
	memset(&info, 0, sizeof(info));
	info.admin = key_tenant == NULL;
	snprintf(info.tenant, sizeof(info.tenant), "%s", key_tenant ? key_tenant : "");
	info.limits = (tally_client_limits){r->frame_bytes_max ? r->frame_bytes_max : 1 << 20, 1000, 3, 0, 0};
	FILE *in = fmemopen((void *)text, strlen(text), "r");
	r->rc = ingest_run(c, &info, o, in, "in.csv", &r->sum, r->err);
	fclose(in);
	tally_client_close(c);
	pthread_join(th, NULL);
}

/* n CSV rows "PREFIXi,1" after a header, into buf. */
static char *rows_text(const char *const *ids, size_t n)
{
	size_t size = 64;
	for (size_t i = 0; i < n; i++)
		size += strlen(ids[i]) + 40; /* ",1790000000000000,m<i % 3>\n" and room */
	char *text = malloc(size);
	cr_assert_not_null(text);
	size_t at = (size_t)snprintf(text, size, "event_id,time,model\n");
	for (size_t i = 0; i < n; i++)
		at += (size_t)snprintf(text + at, size - at, "%s,1790000000000000,m%zu\n", ids[i], i % 3);
	return text;
}

/* Asserts that the summary of sum, for file "in.csv", prints exactly want. */
static void expect_summary(const ingest_summary *sum, const char *want)
{
	char *out = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&out, &size);
	cr_assert_not_null(f);
	ingest_summary_print(sum, "in.csv", f);
	fclose(f);
	cr_expect_str_eq(out, want);
	free(out);
}

/* Description: 25 rows with --batch 10 go as batches of 10, 10 and 5; the
 * acks' counts add up; the first 5 problems are listed by line (7 were
 * found), with reason texts; the summary prints exactly. */
Test(ingest, batches_acks_and_summary)
{
	const char *ids[25];
	char names[25][16];
	for (int i = 0; i < 25; i++) {
		const char *kind = i % 4 == 1 ? "rej" : i % 4 == 3 ? "con" : i % 5 == 0 ? "dup" : "ok";
		snprintf(names[i], sizeof(names[i]), "%s%d%d", kind, i, i % 9 + 1);
		ids[i] = names[i];
	}
	char *text = rows_text(ids, 25);
	run r;
	memset(&r, 0, sizeof(r));
	ingest_options o = {.batch_events = 10};
	ingest_text(&r, text, &o, "acme");
	free(text);
	cr_assert_eq(r.rc, INGEST_DONE, "%s", r.err);
	cr_assert_eq(r.sv.batches, 3);
	cr_expect_eq(r.sv.sizes[0], 10);
	cr_expect_eq(r.sv.sizes[1], 10);
	cr_expect_eq(r.sv.sizes[2], 5);
	cr_expect_str_eq(r.sv.tenants[0], "", "a tenant key names no tenant");
	cr_expect_eq(r.sum.rows_read, 25);
	cr_expect_eq(r.sum.events_sent, 25);
	cr_expect_eq(r.sum.rejected, 6);
	cr_expect_eq(r.sum.conflict, 6);
	cr_expect_eq(r.sum.duplicate, 3);
	cr_expect_eq(r.sum.accepted, 10);
	cr_expect_eq(r.sum.batches_acked, 3);
	/* Row i is on line i + 2; rejected ids end with reason i % 9 + 1
	 * (rows 1, 5, 9: reasons 2, 6, 1). */
	expect_summary(&r.sum,
		       "in.csv: 25 rows read, 25 events acknowledged: 10 accepted, 3 duplicate, 6 conflict, 6 rejected\n"
		       "in.csv:3: rejected: event id longer than 64 bytes\n"
		       "in.csv:5: conflict: an event with this id and another payload is stored\n"
		       "in.csv:7: rejected: project longer than 128 bytes\n"
		       "in.csv:9: conflict: an event with this id and another payload is stored\n"
		       "in.csv:11: rejected: missing event id\n"
		       "in.csv: ... and 7 more rejected or conflicting events\n");
}

/* Description: an admin import with a tenant column goes out as one
 * batch per tenant, naming it, with create_tenant and backfill set; rows
 * without a tenant take --tenant. */
Test(ingest, per_tenant_batches)
{
	const char *text = "event_id,time,tenant\n"
			   "a1,1,acme\n"
			   "g1,1,globex\n"
			   "a2,1,acme\n"
			   "d1,1,\n"
			   "g2,1,globex\n";
	run r;
	memset(&r, 0, sizeof(r));
	ingest_options o = {.create_tenants = true, .backfill = true, .tenant = "default-co"};
	ingest_text(&r, text, &o, NULL);
	cr_assert_eq(r.rc, INGEST_DONE, "%s", r.err);
	cr_assert_eq(r.sv.batches, 3);
	for (int k = 0; k < 3; k++) {
		uint32_t want = strcmp(r.sv.tenants[k], "default-co") == 0 ? 1 : 2;
		cr_expect_eq(r.sv.sizes[k], want, "%s", r.sv.tenants[k]);
		cr_expect(r.sv.create_tenant[k]);
		cr_expect(r.sv.backfill[k]);
	}
	cr_expect_eq(r.sum.accepted, 5);
}

/* Description: rows that name no tenant under an admin key, or another
 * tenant under a tenant key, stop the ingest with file:line. */
Test(ingest, tenant_errors)
{
	run r;
	memset(&r, 0, sizeof(r));
	ingest_options o = {0};
	ingest_text(&r, "event_id,time\na,1\n", &o, NULL);
	cr_expect_eq(r.rc, INGEST_FAILED);
	cr_expect_str_eq(r.err, "in.csv:2: no tenant for this row: an admin key needs a tenant column or --tenant");
	cr_expect_eq(r.sv.batches, 0);

	memset(&r, 0, sizeof(r));
	ingest_text(&r, "event_id,time,tenant\na,1,acme\nb,1,globex\n", &o, "acme");
	cr_expect_eq(r.rc, INGEST_FAILED);
	cr_expect_str_eq(r.err, "in.csv:3: tenant 'globex': this key belongs to tenant acme");
	cr_expect_eq(r.sum.accepted, 1, "the row before was sent and acknowledged");
}

/* Description: a malformed row stops the reading; the rows before it
 * (several batches, some still open) are sent and acknowledged before
 * ingest_run returns the row's error. */
Test(ingest, malformed_row_after_good_rows)
{
	const char *text = "event_id,time\n"
			   "a,1\nb,2\nc,3\nd,4\ne,5\nf,6\ng,7\n"
			   "h,yesterday\n"
			   "i,9\n";
	run r;
	memset(&r, 0, sizeof(r));
	ingest_options o = {.batch_events = 3};
	ingest_text(&r, text, &o, "acme");
	cr_expect_eq(r.rc, INGEST_FAILED);
	cr_expect_str_eq(r.err, "in.csv:9: field 'time': not an RFC 3339 time or integer microseconds: 'yesterday'");
	cr_expect_eq(r.sum.rows_read, 7);
	cr_expect_eq(r.sum.accepted, 7);
	cr_expect_eq(r.sv.batches, 3);
	cr_expect_eq(r.sv.sizes[2], 1);
}

/* Description: batches refused with RESOURCE_EXHAUSTED are sent again
 * after the delay and then acknowledged, up to 8 times; a refusal of
 * another kind stops the ingest naming the batch's lines. */
Test(ingest, backpressure_retried_other_refusals_stop)
{
	const char *text = "event_id,time\na,1\nb,2\nc,3\n";
	run r;
	memset(&r, 0, sizeof(r));
	r.sv.refuse = 2;
	r.sv.refuse_code = TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED;
	ingest_options o = {.batch_events = 2};
	ingest_text(&r, text, &o, "acme");
	cr_expect_eq(r.rc, INGEST_DONE, "%s", r.err);
	cr_expect_eq(r.sum.retries, 2);
	cr_expect_eq(r.sum.accepted, 3);
	cr_expect_eq(r.sum.events_sent, 3, "a retried batch is not counted twice");
	cr_expect_eq(r.sv.batches, 4);

	memset(&r, 0, sizeof(r));
	r.sv.refuse = 1;
	r.sv.refuse_code = TALLY__V1__ERROR__CODE__PERMISSION_DENIED;
	ingest_text(&r, text, &o, "acme");
	cr_expect_eq(r.rc, INGEST_FAILED);
	cr_expect_str_eq(r.err, "the server refused the batch of lines 2-3: slow down (PERMISSION_DENIED)");
	cr_expect_eq(r.sum.accepted, 1, "the batch in flight before the refusal was still acknowledged");

	/* Refused for good: sent again INGEST_RETRIES_MAX (8) times, as
	 * documented, then the ingest fails (before 2026-12-02, 7 times). */
	memset(&r, 0, sizeof(r));
	r.sv.refuse = 1000;
	r.sv.refuse_code = TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED;
	ingest_text(&r, "event_id,time\na,1\n", &o, "acme");
	cr_expect_eq(r.rc, INGEST_FAILED);
	cr_expect_eq(r.sum.retries, INGEST_RETRIES_MAX);
	cr_expect_eq(r.sv.batches, 1 + INGEST_RETRIES_MAX);
	cr_expect_str_eq(r.err, "the server refused the batch of lines 2-2 after retries: slow down "
				"(RESOURCE_EXHAUSTED)");
}

/* Description: when the server closes with batches in flight, their
 * events are counted as unanswered and the ingest fails; the summary
 * names how many, and says sending them again is safe. */
Test(ingest, lost_connection)
{
	const char *ids[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
	char *text = rows_text(ids, 9);
	run r;
	memset(&r, 0, sizeof(r));
	r.sv.close_after = 1;
	ingest_options o = {.batch_events = 2};
	ingest_text(&r, text, &o, "acme");
	free(text);
	cr_expect_eq(r.rc, INGEST_FAILED);
	/* Whether the client finds out sending or receiving is a race. */
	cr_expect(strcmp(r.err, "waiting for acks: the server closed the connection") == 0 ||
			  strcmp(r.err, "sending a batch of 2 events: Broken pipe") == 0,
		  "%s", r.err);
	/* Found out while waiting: the first batch's ack was read. Found out
	 * sending: the ack may still be unread in the socket (then its two
	 * events count as unanswered, never as accepted twice or lost). */
	if (strncmp(r.err, "waiting", 7) == 0)
		cr_expect_eq(r.sum.accepted, 2);
	else
		cr_expect(r.sum.accepted == 0 || r.sum.accepted == 2, "accepted %" PRIu64, (uint64_t)r.sum.accepted);
	cr_expect_eq(r.sum.accepted + r.sum.unanswered, r.sum.events_sent, "every sent event accounted for");
	cr_expect_gt(r.sum.unanswered, 0);
	cr_expect_leq(r.sum.unanswered, 7);
	/* The summary says how many went unanswered, and that resending is safe. */
	char want[512];
	snprintf(want, sizeof(want),
		 "in.csv: %" PRIu64 " rows read, %" PRIu64 " events acknowledged: %" PRIu64
		 " accepted, 0 duplicate, 0 conflict, 0 rejected\n"
		 "in.csv: %" PRIu64 " events sent got no answer: they may or may not be stored "
		 "(sending them again is safe)\n",
		 (uint64_t)r.sum.rows_read, (uint64_t)r.sum.accepted, (uint64_t)r.sum.accepted,
		 (uint64_t)r.sum.unanswered);
	expect_summary(&r.sum, want);
}

/* Description: reason numbers map to the engine's texts. */
Test(ingest, reason_texts)
{
	cr_expect_str_eq(ingest_reason_text(1), "missing event id");
	cr_expect_str_eq(ingest_reason_text(4), "time in the future (beyond the tolerance)");
	cr_expect_str_eq(ingest_reason_text(10), "unknown status");
	cr_expect_str_eq(ingest_reason_text(11), "a string is not UTF-8 or holds a NUL byte");
	cr_expect_str_eq(ingest_reason_text(12), "unknown reason");
}

/* Description: problems come back per tenant's batch, not in file order:
 * the first 5 by line are still the ones listed (later ones pushed out
 * as earlier lines arrive), the rest counted. */
Test(ingest, first_problems_by_line_across_tenants)
{
	/* acme: lines 2, 4, ..., 12 rejected; globex: lines 3 and 5. */
	const char *text = "event_id,time,tenant\n"
			   "rej-a1,1,acme\n"
			   "rej-g1,1,globex\n"
			   "rej-a2,1,acme\n"
			   "con-g2,1,globex\n"
			   "rej-a3,1,acme\n"
			   "ok-g3,1,globex\n"
			   "rej-a4,1,acme\n"
			   "ok-g4,1,globex\n"
			   "rej-a5,1,acme\n"
			   "ok-g5,1,globex\n"
			   "rej-a6,1,acme\n";
	run r;
	memset(&r, 0, sizeof(r));
	ingest_options o = {0};
	ingest_text(&r, text, &o, NULL);
	cr_assert_eq(r.rc, INGEST_DONE, "%s", r.err);
	cr_assert_eq(r.sv.batches, 2);
	cr_expect_str_eq(r.sv.tenants[0], "acme", "acme's batch is answered first");
	/* The counts, then the problems. A rejected id's last digit is its
	 * reason (1 missing id, 2 id too long, 3 too old). */
	expect_summary(&r.sum,
		       "in.csv: 11 rows read, 11 events acknowledged: 3 accepted, 0 duplicate, 1 conflict, 7 rejected\n"
		       "in.csv:2: rejected: missing event id\n"
		       "in.csv:3: rejected: missing event id\n"
		       "in.csv:4: rejected: event id longer than 64 bytes\n"
		       "in.csv:5: conflict: an event with this id and another payload is stored\n"
		       "in.csv:6: rejected: time too old (before the lateness horizon)\n"
		       "in.csv: ... and 3 more rejected or conflicting events\n");
}

/* Description: with a progress stream (tally ingest gives it standard
 * error when that is a terminal) the ingest draws "\r\033[K<name>: N
 * rows read, M acknowledged, R events/s" every 1,024 rows (at most every
 * 250 ms) and clears the line at the end. */
Test(ingest, progress_line)
{
	enum { ROWS = 2048 };
	static char names[ROWS][16];
	static const char *ids[ROWS];
	for (int i = 0; i < ROWS; i++) {
		snprintf(names[i], sizeof(names[i]), "ok%d", i);
		ids[i] = names[i];
	}
	char *text = rows_text(ids, ROWS);
	run r;
	memset(&r, 0, sizeof(r));
	char *progress = NULL;
	size_t progress_size = 0;
	FILE *p = open_memstream(&progress, &progress_size);
	ingest_options o = {.progress = p};
	ingest_text(&r, text, &o, "acme");
	free(text);
	fclose(p);
	cr_assert_eq(r.rc, INGEST_DONE, "%s", r.err);
	cr_expect_eq(r.sum.accepted, ROWS);
	static const char first[] = "\r\033[Kin.csv: 1024 rows read, ";
	cr_expect_eq(strncmp(progress, first, strlen(first)), 0, "%s", progress);
	cr_expect_not_null(strstr(progress, " acknowledged, "), "%s", progress);
	cr_expect_not_null(strstr(progress, " events/s"), "%s", progress);
	cr_assert_geq(progress_size, 4);
	cr_expect_str_eq(progress + progress_size - 4, "\r\033[K", "cleared at the end");
	free(progress);
}

/* Description: against a server whose frames are at most 1,024 bytes, 60
 * rows with ids of 40 bytes and --batch 1000 go as several batches, each
 * frame within the limit, every row sent once and acknowledged; a row
 * whose event alone is larger than a 300-byte limit stops the run naming
 * its line and the limit, with the rows before it acknowledged. */
Test(ingest, batches_are_cut_at_the_server_frame_limit)
{
	enum { ROWS = 60 };
	const char *ids[ROWS];
	char names[ROWS][48];
	for (int i = 0; i < ROWS; i++) {
		snprintf(names[i], sizeof(names[i]), "ok-%037d", i);
		ids[i] = names[i];
	}
	char *text = rows_text(ids, ROWS);
	run r;
	memset(&r, 0, sizeof(r));
	r.frame_bytes_max = 1024;
	ingest_options o = {.batch_events = 1000};
	ingest_text(&r, text, &o, "acme");
	free(text);
	cr_assert_eq(r.rc, INGEST_DONE, "%s", r.err);
	cr_expect_gt(r.sv.batches, 1);
	uint32_t events = 0;
	for (int k = 0; k < r.sv.batches; k++) {
		cr_expect_leq(r.sv.frame_bytes[k], 1024, "batch %d", k);
		events += r.sv.sizes[k];
	}
	cr_expect_eq(events, ROWS);
	expect_summary(&r.sum, "in.csv: 60 rows read, 60 events acknowledged: 60 accepted, 0 duplicate, 0 conflict, "
		       "0 rejected\n");

	/* A model of 300 bytes: the event alone is over a 300-byte frame. */
	char big[400];
	int n = snprintf(big, sizeof(big), "event_id,time,model\nok-1,1790000000000000,m\n"
			 "ok-2,1790000000000000,");
	memset(big + n, 'm', 300);
	snprintf(big + n + 300, sizeof(big) - (size_t)n - 300, "\n");
	memset(&r, 0, sizeof(r));
	r.frame_bytes_max = 300;
	ingest_text(&r, big, &o, "acme");
	cr_expect_eq(r.rc, INGEST_FAILED);
	cr_expect_str_eq(r.err, "in.csv:3: the event alone is larger than the server's frame limit (300 bytes)");
	cr_expect_eq(r.sum.accepted, 1, "the row before it was sent and acknowledged");
}

/* Description: rows whose type column turns into a worthwhile dictionary
 * partway (120 distinct 2-byte types, cycling) ahead of four columns of 20
 * distinct 100-byte values: at that row every later column's codes pass
 * 127, two bytes each, and the batch grows by far more than the row's own
 * bytes. Against a server whose frame limit is what the batch before that
 * row takes plus the row's strings and 128 bytes (the allowance `tally
 * ingest` gave a row before 2026-12-02, when it then sent a batch over the
 * limit and failed, on every rerun too), every batch is within the limit
 * and every row is acknowledged. */
Test(ingest, a_row_that_widens_every_code_starts_a_new_batch)
{
	enum { ROWS = 400 };
	static char values[20][101], types[120][4];
	for (int v = 0; v < 20; v++) {
		memset(values[v], 'a' + v, 100);
		values[v][0] = (char)('A' + v);
	}
	for (int t = 0; t < 120; t++)
		snprintf(types[t], sizeof(types[t]), "%02x", t);
	size_t size = 64 + (size_t)ROWS * 480;
	char *text = malloc(size);
	cr_assert_not_null(text);
	size_t at = (size_t)snprintf(text, size, "event_id,time,type,project,agent,model,user\n");
	builder b;
	builder_init(&b);
	uint32_t limit = 0;
	for (int i = 0; i < ROWS; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%08d", i);
		at += (size_t)snprintf(text + at, size - at, "%s,%" PRId64 ",%s,%s,%s,%s,%s\n", id,
				       INT64_C(1790000000000000) + i, types[i % 120], values[i % 20],
				       values[(i + 3) % 20], values[(i + 7) % 20], values[(i + 11) % 20]);
		tally_client_event e = {
			.event_id = {id, 8}, .time_us = INT64_C(1790000000000000) + i,
			.type = {types[i % 120], 2}, .project = {values[i % 20], 100},
			.agent = {values[(i + 3) % 20], 100}, .model = {values[(i + 7) % 20], 100},
			.user = {values[(i + 11) % 20], 100},
		};
		size_t before = builder_bytes(&b), allowance = 8 + 2 + 4 * 100 + 128;
		if (!limit && builder_bytes_with(&b, &e) > before + allowance)
			limit = (uint32_t)(before + allowance); /* the old check lets the row in */
		cr_assert_eq(builder_add(&b, &e), 0);
	}
	builder_free(&b);
	cr_assert_gt(limit, 0, "a row widened every code");
	run r;
	memset(&r, 0, sizeof(r));
	r.frame_bytes_max = limit;
	ingest_options o = {.batch_events = 1000};
	ingest_text(&r, text, &o, "acme");
	free(text);
	cr_expect_eq(r.rc, INGEST_DONE, "%s", r.err);
	uint32_t events = 0;
	for (int k = 0; k < r.sv.batches; k++) {
		cr_expect_leq(r.sv.frame_bytes[k], limit, "batch %d", k);
		events += r.sv.sizes[k];
	}
	cr_expect_eq(events, ROWS);
	cr_expect_eq(r.sum.accepted, ROWS);
}
