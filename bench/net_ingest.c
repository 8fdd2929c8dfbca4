/*
 * net_ingest.c — `tally-bench ingest`: the reference workload through a
 * running tallyd's protocol (contract in net_ingest.h; bench/README.md).
 *
 * NOTES ON THE MEASUREMENT
 *
 * 1. The batches. The workload (the engine bench's generator: T tenants,
 *    Zipf activity, 30 days, late events, 0.5% re-sends) is cut into
 *    delivery windows (by default one window: the whole workload); inside a
 *    window each tenant's events, in delivery order, are cut into batches
 *    of at most B events. Each batch names its tenant and asks for it to be
 *    created on first use (admin key). Everything is generated, built and
 *    encoded before the first send (net.c, note 1); the workload is freed
 *    before the sessions open.
 *
 * 2. The clock: from the first send to the last ack, over all
 *    connections. An ack comes after the server made the batch durable
 *    (fsync): events/s here is durable events/s.
 *
 * 3. Correctness is checked, not assumed: on a fresh server ACCEPTED must
 *    equal the workload's unique events and DUPLICATE its re-sends, with
 *    nothing CONFLICT or REJECTED. A server that already held the workload
 *    answers DUPLICATE for it: a mismatch, exit 1.
 *
 * 4. Server memory: with --server-pid, VmRSS and VmHWM of that process
 *    before the first send and after the last ack (so the figure is that of
 *    a server holding the workload).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "net.h"
#include "net_ingest.h"
#include "workload.h"

#define CLIENT_NAME "tally-bench ingest"

/* What the report needs of the workload, kept after it is freed. */
typedef struct workload_summary {
	workload_params params;
	uint64_t event_count, unique_count, resend_count, late_count;
	uint32_t active_tenant_count;
} workload_summary;

typedef struct figures {
	workload_summary w;
	double generate_s;
	double build_s;
	uint64_t batch_count;
	uint64_t encoded_bytes;
	uint64_t tenants_created, tenants_existing; /* --create-tenants */
	double tenants_create_s;
	net_ingest_figures ingest;
	bool results_match;
	net_server_memory memory_before;
	net_server_memory memory_after;
} figures;

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static void print_text(const bench_net_ingest_options *o, const net_server *server, const figures *f)
{
	const workload_summary *w = &f->w;
	printf("tally-bench ingest: %" PRIu64 " events (%" PRIu64 " unique + %" PRIu64 " re-sends, %" PRIu64
	       " late), %" PRIu32 " tenants (%" PRIu32 " active), seed %" PRIu64 "\n",
	       w->event_count, w->unique_count, w->resend_count, w->late_count, w->params.tenant_count,
	       w->active_tenant_count, w->params.seed);
	printf("  server: tallyd %s at %s (protocol %" PRIu32 "; limits: %" PRIu32 " events per batch, %"
	       PRIu32 " requests in flight, %" PRIu32 "-byte frames)\n",
	       server->info.server_version, server->address, server->info.protocol_version,
	       server->info.limits.batch_events_max, server->info.limits.inflight_requests_max,
	       server->frame_bytes_max);
	printf("  batches: %" PRIu64 " (per tenant, window of %" PRIu32 " events, at most %" PRIu32
	       " events; mean %.1f events, %.1f encoded bytes/event); %" PRIu32
	       " connections; generated in %.2f s and encoded in %.2f s (not timed)\n",
	       f->batch_count, w->params.window_events, o->batch_events,
	       f->batch_count ? (double)w->event_count / (double)f->batch_count : 0.0,
	       bench_per_event(f->encoded_bytes, w->event_count), o->connection_count, f->generate_s,
	       f->build_s);
	if (o->create_tenants)
		printf("  tenants created before the clock started (CreateTenant, one at a time): %" PRIu64
		       " new, %" PRIu64 " existing, in %.2f s\n",
		       f->tenants_created, f->tenants_existing, f->tenants_create_s);
	else
		printf("  tenants: created by the server on first use (create_tenant), inside the timed part\n");
	printf("\ningest over the protocol:\n");
	net_figures_print(&f->ingest, o->rate, f->results_match, 2);
	if (f->memory_after.read)
		printf("\nserver memory (pid %ld): VmRSS %.1f MiB before the first send, %.1f MiB after the "
		       "last ack; peak (VmHWM) %.1f MiB\n",
		       o->server_pid, f->memory_before.read ? mib(f->memory_before.rss_bytes) : 0.0,
		       mib(f->memory_after.rss_bytes), mib(f->memory_after.rss_peak_bytes));
}

static int print_json(const bench_net_ingest_options *o, const net_server *server, const figures *f)
{
	const workload_summary *w = &f->w;
	json_t *root = json_object();
	int bad = !root;
	bad |= bench_json_put(root, "benchmark", json_string("ingest"));
	bad |= bench_json_put(root, "server", json_string(server->address));
	bad |= bench_json_put(root, "server_version", json_string(server->info.server_version));
	bad |= bench_json_put(root, "events", json_integer((json_int_t)w->event_count));
	bad |= bench_json_put(root, "unique_events", json_integer((json_int_t)w->unique_count));
	bad |= bench_json_put(root, "resends", json_integer((json_int_t)w->resend_count));
	bad |= bench_json_put(root, "late_events", json_integer((json_int_t)w->late_count));
	bad |= bench_json_put(root, "tenants", json_integer(w->params.tenant_count));
	bad |= bench_json_put(root, "active_tenants", json_integer(w->active_tenant_count));
	bad |= bench_json_put(root, "seed", bench_json_u64(w->params.seed));
	bad |= bench_json_put(root, "connections", json_integer(o->connection_count));
	bad |= bench_json_put(root, "batch_events", json_integer(o->batch_events));
	bad |= bench_json_put(root, "window_events", json_integer(w->params.window_events));
	bad |= bench_json_put(root, "batches", json_integer((json_int_t)f->batch_count));
	bad |= bench_json_put(root, "encoded_bytes_per_event",
			      json_real(bench_round(bench_per_event(f->encoded_bytes, w->event_count), 3)));
	bad |= bench_json_put(root, "generate_s", json_real(bench_round(f->generate_s, 3)));
	bad |= bench_json_put(root, "build_s", json_real(bench_round(f->build_s, 3)));
	bad |= bench_json_put(root, "tenants_created_first", json_boolean(o->create_tenants));
	if (o->create_tenants) {
		bad |= bench_json_put(root, "tenants_created", json_integer((json_int_t)f->tenants_created));
		bad |= bench_json_put(root, "tenants_existing", json_integer((json_int_t)f->tenants_existing));
		bad |= bench_json_put(root, "tenants_create_s", json_real(bench_round(f->tenants_create_s, 3)));
	}
	if (!bad)
		bad |= net_figures_json(root, &f->ingest, o->rate, f->results_match);
	if (f->memory_before.read)
		bad |= bench_json_put(root, "server_rss_before_bytes",
				      json_integer((json_int_t)f->memory_before.rss_bytes));
	bad |= net_server_memory_json(root, &f->memory_after);
	return bench_json_print(root, bad);
}

int bench_net_ingest_run(const bench_net_ingest_options *o)
{
	figures f;
	memset(&f, 0, sizeof(f));
	net_server server;
	int status = net_server_probe(o->server, o->key, o->key_file, CLIENT_NAME, o->batch_events,
				      &server, NULL);
	if (status)
		return status;

	workload_params params = {
		.event_count = o->event_count,
		.tenant_count = o->tenant_count,
		.seed = o->seed,
		.window_events = o->window_events,
		.end_us = bench_wall_clock_us(),
	};
	if (!params.window_events)
		params.window_events = o->event_count < WORKLOAD_WINDOW_EVENTS_MAX
					       ? (uint32_t)o->event_count
					       : WORKLOAD_WINDOW_EVENTS_MAX;
	workload w;
	if (net_workload_generate(&w, &params, &f.generate_s))
		return 1;
	f.w = (workload_summary){
		.params = w.params,
		.event_count = w.event_count,
		.unique_count = w.unique_count,
		.resend_count = w.resend_count,
		.late_count = w.late_count,
		.active_tenant_count = w.active_tenant_count,
	};
	net_cut cut = {.batch_events = o->batch_events, .frame_bytes_max = server.frame_bytes_max};
	net_batches batches;
	status = net_batches_prepare(&w, &cut, &batches, &f.build_s);
	workload_free(&w);
	if (status)
		return 1;
	f.batch_count = batches.count;
	f.encoded_bytes = batches.encoded_bytes;

	status = 1;
	if (o->create_tenants && net_tenants_create(&server, CLIENT_NAME, &batches, &f.tenants_created,
						    &f.tenants_existing, &f.tenants_create_s))
		goto out;
	net_server_memory_read(o->server_pid, &f.memory_before);
	fprintf(stderr, "tally-bench: sending %" PRIu64 " batches over %" PRIu32 " connections to %s%s...\n",
		batches.count, o->connection_count, o->server, o->rate ? " (paced)" : "");
	net_ingest_options ingest_options = {
		.server = o->server,
		.key = server.key,
		.client_name = CLIENT_NAME,
		.connection_count = o->connection_count,
		.inflight = o->inflight,
		.rate = o->rate,
	};
	if (net_ingest_run(&ingest_options, &batches, &f.ingest))
		goto out;
	net_server_memory_read(o->server_pid, &f.memory_after);
	f.results_match = net_results_check(&f.ingest, f.w.unique_count, f.w.resend_count, "ingest");
	if (bench_report_end(o->json ? print_json(o, &server, &f) : (print_text(o, &server, &f), 0)))
		goto out;
	status = f.results_match ? 0 : 1;
out:
	net_batches_free(&batches);
	return status;
}
