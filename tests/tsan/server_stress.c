/*
 * server_stress.c — tallyd's threads under ThreadSanitizer (`make tsan`).
 *
 * A tallyd runs in this process (server_open + server_run on a thread) on a
 * temporary directory, with a small memtable limit so the engine flushes
 * and compacts while it serves, two query threads (the default) and the
 * metrics endpoint on a free port. At the same time:
 *
 *   - INGESTERS client threads, one tenant each, send pipelined batches
 *     (the loop thread, the submitter and the WAL writer all work on them)
 *     and re-send one earlier batch in RESEND_EVERY (DUPLICATE expected);
 *   - a query client asks each tenant's count and checks it against what
 *     was acknowledged before and sent after the query;
 *   - a scraper GETs /metrics over plain HTTP, again and again.
 *
 * Then each tenant's count must be exactly what was acknowledged, the
 * server stops (SIGTERM's path: server_stop) and closes cleanly. Exit
 * status 0 when clean, 1 on a failed check; a ThreadSanitizer report exits
 * with TSAN_OPTIONS' exitcode (the Makefile sets 66).
 *
 * STRESS_BATCHES (environment) sets the batches per ingester (default 150).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "builder.h"
#include "client.h"
#include "config.h"
#include "server.h"
#include "stress_fail.h"

#define INGESTERS 2
#define EVENTS_PER_BATCH 32
#define RESEND_EVERY 7
#define BATCHES_DEFAULT 150
#define MEMTABLE_BYTES_MAX (256u << 10)
#define HOUR_US INT64_C(3600000000)

typedef struct stress {
	server *srv;
	char address[64];
	char admin_key[80];
	char keys[INGESTERS][80];
	char tenants[INGESTERS][16];
	uint16_t metrics_port;
	int64_t base_us;
	uint32_t batches;
	atomic_uint_fast64_t sent[INGESTERS];  /* unique events handed to the client */
	atomic_uint_fast64_t acked[INGESTERS]; /* unique events acknowledged */
	atomic_bool ingest_done;
	atomic_int failures;
	int run_rc;
} stress;

#define fail(s, ...) stress_fail(&(s)->failures, "tsan server stress", __VA_ARGS__)

static void *server_main(void *arg)
{
	stress *s = arg;
	s->run_rc = server_run(s->srv);
	return NULL;
}

static tally_client *connect_with(stress *s, const char *key)
{
	tally_client *c = NULL;
	char errmsg[TALLY_CLIENT_ERRMSG_SIZE] = "";
	int rc = tally_client_open(s->address, key, "tsan-stress", &c, NULL, errmsg);
	if (rc) {
		fail(s, "connect: %s", errmsg);
		return NULL;
	}
	return c;
}

/* Event i of ingester n: unique id, times inside the last hour. */
static tally_client_event make_event(stress *s, uint32_t n, uint32_t i, char *id, size_t id_size)
{
	static const char *models[] = {"gpt-5", "claude-4", "llama-4"};
	snprintf(id, id_size, "ing%" PRIu32 "-%" PRIu32, n, i);
	const char *model = models[i % 3];
	tally_client_event e = {0};
	e.event_id = (tally_client_str){id, (uint32_t)strlen(id)};
	e.time_us = s->base_us + (int64_t)(i % 3600) * 1000000;
	e.type = (tally_client_str){"llm_call", 8};
	e.project = (tally_client_str){"alpha", 5};
	e.agent = (tally_client_str){"planner", 7};
	e.model = (tally_client_str){model, (uint32_t)strlen(model)};
	e.user = (tally_client_str){"u1", 2};
	e.status = i % 5 == 0;
	e.duration_ms = 100 + i % 50;
	e.tokens_in = 10 + i;
	e.tokens_out = 20 + i;
	e.cost_micros = 1000 + i;
	return e;
}

/* Sends batch k of ingester n and checks every result is `expected`. */
static void ingest_batch(stress *s, tally_client *c, uint32_t n, uint32_t k, bool resend)
{
	builder b;
	builder_init(&b);
	char id[48];
	for (uint32_t i = 0; i < EVENTS_PER_BATCH; i++) {
		tally_client_event e = make_event(s, n, k * EVENTS_PER_BATCH + i, id, sizeof(id));
		if (builder_add(&b, &e)) {
			fail(s, "builder_add failed");
			builder_free(&b);
			return;
		}
	}
	Tally__V1__IngestBatch m;
	if (builder_message(&b, &m)) {
		fail(s, "builder_message failed");
		builder_free(&b);
		return;
	}
	if (!resend)
		atomic_fetch_add(&s->sent[n], EVENTS_PER_BATCH);
	tally_ingest_ack ack;
	int rc = tally_client_ingest(c, &m, &ack);
	if (rc) {
		fail(s, "ingest %" PRIu32 "/%" PRIu32 ": %s", n, k, tally_client_strerror(rc));
	} else {
		uint32_t expected = resend ? ack.duplicate : ack.accepted;
		if (expected != EVENTS_PER_BATCH)
			fail(s, "ingest %" PRIu32 "/%" PRIu32 ": %" PRIu32 " accepted, %" PRIu32
			     " duplicate of %d", n, k, ack.accepted, ack.duplicate, EVENTS_PER_BATCH);
		else if (!resend)
			atomic_fetch_add(&s->acked[n], EVENTS_PER_BATCH);
		tally_ingest_ack_free(&ack);
	}
	builder_free(&b);
}

typedef struct ingester {
	stress *s;
	uint32_t n;
	pthread_t thread;
} ingester;

static void *ingester_main(void *arg)
{
	ingester *g = arg;
	stress *s = g->s;
	tally_client *c = connect_with(s, s->keys[g->n]);
	if (!c)
		return NULL;
	for (uint32_t k = 0; k < s->batches && atomic_load(&s->failures) == 0; k++) {
		ingest_batch(s, c, g->n, k, false);
		if (k % RESEND_EVERY == RESEND_EVERY - 1)
			ingest_batch(s, c, g->n, k / 2, true);
	}
	tally_client_close(c);
	return NULL;
}

static int count_events(stress *s, tally_client *c, uint32_t n, uint64_t *count)
{
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.tenant = s->tenants[n];
	q.from_us = s->base_us - HOUR_US;
	q.to_us = s->base_us + 2 * HOUR_US;
	q.bucket = TALLY__V1__BUCKET__NONE;
	Tally__V1__QueryResult *r = NULL;
	int rc = tally_client_query(c, &q, &r);
	if (rc) {
		fail(s, "query %s: %s", s->tenants[n], tally_client_strerror(rc));
		return rc;
	}
	*count = r->n_rows ? r->rows[0]->count : 0;
	tally__v1__query_result__free_unpacked(r, NULL);
	return 0;
}

static void *querier_main(void *arg)
{
	stress *s = arg;
	tally_client *c = connect_with(s, s->admin_key);
	if (!c)
		return NULL;
	uint64_t checks = 0;
	while (!atomic_load(&s->ingest_done) && atomic_load(&s->failures) == 0) {
		for (uint32_t n = 0; n < INGESTERS; n++) {
			uint64_t low = atomic_load(&s->acked[n]), count;
			if (count_events(s, c, n, &count))
				break;
			uint64_t high = atomic_load(&s->sent[n]);
			if (count < low || count > high)
				fail(s, "%s counted %" PRIu64 ", outside [%" PRIu64 ", %" PRIu64 "]",
				     s->tenants[n], count, low, high);
			checks++;
		}
	}
	tally_client_close(c);
	printf("tsan server stress: %" PRIu64 " concurrent count checks\n", checks);
	return NULL;
}

/* One GET /metrics; 0 when the answer is 200 with a body naming a metric. */
static int scrape(stress *s)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->metrics_port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	static const char request[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
	char buf[4096];
	size_t got = 0;
	bool named = false, ok = false;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    write(fd, request, sizeof(request) - 1) == (ssize_t)(sizeof(request) - 1)) {
		ssize_t r;
		while ((r = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0) {
			got += (size_t)r;
			buf[got] = '\0';
			ok |= strncmp(buf, "HTTP/1.", 7) == 0 && strstr(buf, " 200 ") != NULL;
			named |= strstr(buf, "tally_") != NULL;
			if (got == sizeof(buf) - 1)
				got = 0; /* keep reading; the status line was seen */
		}
	}
	close(fd);
	return ok && named ? 0 : -1;
}

static void *scraper_main(void *arg)
{
	stress *s = arg;
	uint64_t scrapes = 0;
	while (!atomic_load(&s->ingest_done) && atomic_load(&s->failures) == 0) {
		if (scrape(s))
			fail(s, "GET /metrics failed");
		scrapes++;
		usleep(1000);
	}
	printf("tsan server stress: %" PRIu64 " metrics scrapes\n", scrapes);
	return NULL;
}

static int read_admin_key(stress *s, const char *data_dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/admin.key", data_dir);
	FILE *f = fopen(path, "r");
	if (!f || !fgets(s->admin_key, sizeof(s->admin_key), f)) {
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	s->admin_key[strcspn(s->admin_key, "\n")] = '\0';
	return 0;
}

int main(void)
{
	static stress s;
	const char *batches = getenv("STRESS_BATCHES");
	s.batches = batches ? (uint32_t)strtoul(batches, NULL, 10) : BATCHES_DEFAULT;
	if (s.batches < RESEND_EVERY) {
		fprintf(stderr, "tsan server stress: STRESS_BATCHES must be at least %d\n", RESEND_EVERY);
		return 2;
	}
	int64_t now = (int64_t)time(NULL) * 1000000;
	s.base_us = now - now % HOUR_US - HOUR_US;

	char dir[] = "/tmp/tally-tsan-server-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("tsan server stress: mkdtemp");
		return 1;
	}
	server_config config;
	config_default(&config);
	snprintf(config.data_dir, sizeof(config.data_dir), "%s/data", dir);
	snprintf(config.listen, sizeof(config.listen), "127.0.0.1:0");
	snprintf(config.metrics, sizeof(config.metrics), "127.0.0.1:0");
	config.memtable_bytes_max = MEMTABLE_BYTES_MAX;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	if (server_open(&config, &s.srv, errmsg)) {
		fprintf(stderr, "tsan server stress: server_open: %s\n", errmsg);
		return 1;
	}
	snprintf(s.address, sizeof(s.address), "127.0.0.1:%u", server_port(s.srv));
	s.metrics_port = server_metrics_port(s.srv);
	if (read_admin_key(&s, config.data_dir)) {
		fprintf(stderr, "tsan server stress: no admin key in %s\n", config.data_dir);
		return 1;
	}
	pthread_t server_thread;
	pthread_create(&server_thread, NULL, server_main, &s);

	tally_client *admin = connect_with(&s, s.admin_key);
	for (uint32_t n = 0; admin && n < INGESTERS; n++) {
		snprintf(s.tenants[n], sizeof(s.tenants[n]), "tenant%" PRIu32, n);
		Tally__V1__TenantCreated *tc = NULL;
		int rc = tally_client_create_tenant(admin, s.tenants[n], &tc);
		if (rc) {
			fail(&s, "create %s: %s", s.tenants[n], tally_client_strerror(rc));
			break;
		}
		snprintf(s.keys[n], sizeof(s.keys[n]), "%s", tc->api_key);
		tally__v1__tenant_created__free_unpacked(tc, NULL);
	}
	if (admin)
		tally_client_close(admin);

	if (atomic_load(&s.failures) == 0) {
		ingester ingesters[INGESTERS];
		pthread_t querier, scraper;
		pthread_create(&querier, NULL, querier_main, &s);
		pthread_create(&scraper, NULL, scraper_main, &s);
		for (uint32_t n = 0; n < INGESTERS; n++) {
			ingesters[n] = (ingester){.s = &s, .n = n};
			pthread_create(&ingesters[n].thread, NULL, ingester_main, &ingesters[n]);
		}
		for (uint32_t n = 0; n < INGESTERS; n++)
			pthread_join(ingesters[n].thread, NULL);
		atomic_store(&s.ingest_done, true);
		pthread_join(querier, NULL);
		pthread_join(scraper, NULL);

		tally_client *c = connect_with(&s, s.admin_key);
		for (uint32_t n = 0; c && n < INGESTERS; n++) {
			uint64_t count = 0;
			if (count_events(&s, c, n, &count) == 0 && count != atomic_load(&s.acked[n]))
				fail(&s, "%s: %" PRIu64 " events counted, %" PRIu64 " acknowledged",
				     s.tenants[n], count, (uint64_t)atomic_load(&s.acked[n]));
		}
		if (c)
			tally_client_close(c);
	}

	server_stop(s.srv);
	pthread_join(server_thread, NULL);
	if (s.run_rc)
		fail(&s, "server_run returned %d", s.run_rc);
	if (server_close(s.srv, errmsg))
		fail(&s, "server_close: %s", errmsg);
	uint64_t total = 0;
	for (uint32_t n = 0; n < INGESTERS; n++)
		total += atomic_load(&s.acked[n]);
	printf("tsan server stress: %" PRIu64 " events acknowledged and counted\n", total);

	char command[sizeof(dir) + 16];
	snprintf(command, sizeof(command), "rm -rf %s", dir);
	if (system(command) != 0)
		fprintf(stderr, "tsan server stress: could not remove %s\n", dir);
	int failures = atomic_load(&s.failures);
	printf("tsan server stress: %s\n", failures ? "FAILED" : "clean");
	return failures ? 1 : 0;
}
