/*
 * server_internal.h — the structures shared by the server's event loop
 * (server.c), its request handlers (handlers.c) and its worker pool
 * (worker.c). Nothing outside server/ includes this.
 *
 * Who touches what (server/README.md, "Threading model"):
 *   - The loop thread owns every conn, the key store, the tenant registry,
 *     the pending-ack queue and all io_uring state.
 *   - Worker threads run queries, listings and stats against the engine
 *     (which is thread-safe) and hand back a finished, framed response
 *     through the worker pool's done queue; they never touch a conn.
 *   - The committer thread waits for WAL durability (tally_commit_wait) and
 *     wakes the loop through an eventfd.
 */
#ifndef TALLY_SERVER_INTERNAL_H
#define TALLY_SERVER_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

#include "arena.h"
#include "config.h"
#include "frame.h"
#include "keys.h"
#include "metrics.h"
#include "schedule.h"
#include "server.h"
#include "tally.h"
#include "tally.pb-c.h"
#include "tenants.h"
#include "worker.h"

#define SERVER_VERSION "0.4.0"
#define PROTOCOL_VERSION 1

/* io_uring: entries of the submission queue; provided receive buffers. */
#define RING_ENTRIES 1024u
#define RECV_BUFFER_SIZE (64u << 10)
#define RECV_BUFFER_COUNT 256u /* a power of two */
#define RECV_BUFFER_GROUP 1
/* Completions handled per pass before pending ingest is submitted. */
#define LOOP_CQES_PER_PASS 256u
/* How often timeouts are checked. */
#define TIMER_INTERVAL_MS 200
/* A conn's unsent responses (queued and at the kernel) plus the largest
 * answers it still owes never exceed this, or CONN_OUT_ANSWERS_MIN of the
 * largest response frames if that is more: its next request is read only
 * while one more answer of the largest size fits (server.c, "Bounded work
 * and memory"). */
#define CONN_OUT_BYTES_MAX (32u << 20)
/* The largest page of ListTenants and ListKeys (`limit`; 0 asks for every
 * entry in one answer, which a frame may not hold). */
#define LIST_ENTRIES_PAGE_MAX 100000u
/* Room for this many of the largest response frames at least, so that a
 * connection may read a request while one answer of the largest size is
 * owed or unsent. */
#define CONN_OUT_ANSWERS_MIN 2u
/* A sent output buffer of at most this capacity is kept for the next
 * responses; a larger one is freed, so an idle conn holds no burst's memory. */
#define CONN_SPARE_BYTES_MAX (1u << 20)
/* How long a shutdown waits for in-flight requests and unsent responses. */
#define SHUTDOWN_DRAIN_MS 10000
/* After the drain, how long a stop waits for the kernel to send each
 * connection's last answers before it closes them (conns_close_at_stop). */
#define SHUTDOWN_LINGER_MS 1000
/* Tenants created by ingest reach tenants.json this often at most. */
#define TENANTS_SAVE_INTERVAL_US (INT64_C(1000000))
/* retry_after_ms suggested with UNAVAILABLE. */
#define RETRY_AFTER_MS 100
/* The largest frame body a connection may send before its Hello succeeds
 * (a Hello or a Ping needs a few hundred bytes): a client without a key
 * cannot make the loop decode frame_bytes_max bytes (seconds of the one
 * loop thread, hundreds of MiB once decoded). Raised to frame_bytes_max
 * by the Hello. */
#define HELLO_FRAME_BYTES_MAX (16u << 10)
/* The largest answer to a frame before Hello (a Pong echoing a Ping of
 * HELLO_FRAME_BYTES_MAX, an Error, HelloOk), and the unsent answers a
 * connection may hold before its Hello succeeds: a client without a key
 * that pipelines Pings and never reads holds 64 KiB of the server's
 * memory, not the conn_out_bytes_max (32 MiB) of an authenticated one. */
#define HELLO_ANSWER_BYTES_MAX (HELLO_FRAME_BYTES_MAX + 64)
#define HELLO_OUT_BYTES_MAX (4 * HELLO_ANSWER_BYTES_MAX)

/* io_uring user_data: kind in the top 8 bits, conn slot and generation below. */
enum op_kind {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_CANCEL,
	OP_COMMIT_EVENT, /* the committer's eventfd */
	OP_WORKER_EVENT, /* the worker pool's eventfd */
	OP_SUBMIT_EVENT, /* the submitter's eventfd */
	OP_STOP_EVENT,   /* server_stop's eventfd */
	OP_TIMER,
	OP_CLOSE,
};

typedef struct conn {
	int fd; /* -1: slot free */
	uint32_t gen; /* bumps when the slot is reused: stale completions are ignored */
	frame_reader reader;
	/* Bytes received but not yet fed to the reader (reading paused mid-buffer). */
	uint8_t *stash;
	size_t stash_len, stash_off, stash_cap;
	/* Authentication (after Hello). */
	bool authed;
	bool admin;
	char tenant[TALLY_TENANT_SIZE_MAX + 1];
	char key_id[KEY_ID_SIZE];
	char key_text[KEY_TEXT_SIZE];
	uint64_t auth_generation; /* server->auth_generation when last checked */
	/* Output: framed responses queued (out) and at the kernel (send_buf,
	 * send_off of send_len bytes sent); spare is the last sent buffer, reused. */
	uint8_t *out, *send_buf, *spare;
	size_t out_len, out_cap, send_len, send_off, send_cap, spare_cap;
	bool sending;
	bool recv_armed;  /* a multishot receive is active */
	bool cancelling;  /* its cancel was submitted */
	bool read_closed; /* the peer closed, or the conn is being closed: read no more */
	bool closing;     /* close once nothing is in flight and the output is sent */
	bool peer_closed; /* the peer half-closed: answer every whole request received,
			   * then close */
	bool close_submitted;
	uint32_t inflight; /* requests read but not answered */
	uint32_t jobs;     /* of those, requests at the worker pool (the rest, outside
			    * handle_request, are ingest batches waiting for their ack) */
	uint64_t pending_bytes; /* their frame bytes */
	/* When the peer last took bytes of c's output: the send at the kernel
	 * began or moved on, or the kernel's send queue (kernel_queued_bytes
	 * when the timer last looked) shrank. */
	int64_t send_waiting_us;
	uint64_t kernel_queued_bytes;
	/* Deadlines on what the peer sends: its last bytes in or out (idle
	 * after idle_timeout_ms), when its partial frame began (0: none; due
	 * within frame_timeout_ms), and its accept (Hello due within
	 * hello_timeout_ms). Each moves on by the time the server paused
	 * reading (backpressure_update): that time is not the peer's. */
	int64_t last_activity_us;
	int64_t frame_started_us;
	int64_t hello_started_us;
	int64_t close_started_us; /* when a graceful close began */
	char peer[64];
} conn;

/* An ingest request waiting for the end of the pass (submit) and then for durability. */
typedef struct pending_ingest {
	uint32_t slot, gen;
	uint64_t request_id;
	uint64_t frame_bytes;
	Tally__V1__Request *request; /* decoded; the events point into it until submitted */
	tally_event *events;
	tally_ingest_result *results;
	size_t count;
	char tenant[TALLY_TENANT_SIZE_MAX + 1];
	bool backfill;
	int status;          /* the engine's verdict for this batch */
	uint64_t commit_lsn; /* acknowledged once durable_lsn reaches it */
	int64_t received_us;
} pending_ingest;

typedef struct ingest_queue {
	pending_ingest *items;
	size_t head, len, cap;
} ingest_queue;

struct server {
	server_config config;
	tally_store *store;
	keystore *keys;
	tenant_registry *tenants;
	metrics *metrics;
	worker_pool *workers;
	export_schedule *schedule; /* the nightly export, when --export-pg is set */
	uint64_t auth_generation; /* bumps on every revoke and suspension */
	int64_t tenants_saved_us;  /* last lazy write of the registry */

	struct io_uring ring;
	struct io_uring_buf_ring *buf_ring;
	uint8_t *buffers; /* RECV_BUFFER_COUNT x RECV_BUFFER_SIZE */
	int listen_fd;
	uint16_t port;
	bool accept_armed;
	int64_t accept_error_logged_us; /* server_now_us of the last accept error logged */
	int stop_fd;   /* eventfd: server_stop */
	int commit_fd; /* eventfd: the committer */
	int worker_fd; /* eventfd: the worker pool */
	int submit_fd; /* eventfd: the submitter */
	uint64_t stop_value, commit_value, worker_value, submit_value; /* read targets */
	struct __kernel_timespec timer_ts;

	conn *conns;
	uint32_t conn_slots; /* config.connections_max */
	_Atomic uint32_t conn_count;   /* atomic: the metrics thread reads it */
	_Atomic uint64_t pending_bytes; /* request bytes read and not yet answered, all conns */
	bool paused;            /* server-wide backpressure: reading stopped */
	int64_t paused_since_us; /* when it stopped: the conns' deadlines wait meanwhile */
	/* Per conn (server.c, "Bounded work and memory"): its unsent plus owed
	 * response bytes never exceed conn_out_bytes_max; an answer is owed at
	 * its largest: answer_bytes_max (a frame) for a worker's, or
	 * ingest_answer_bytes_max for an ingest batch's. */
	uint64_t conn_out_bytes_max;
	uint64_t answer_bytes_max;
	uint64_t ingest_answer_bytes_max;
	/* The most unsent response bytes one conn has held (out and at the
	 * kernel) since the server opened: the bound's witness (tests read it). */
	_Atomic uint64_t conn_unsent_bytes_peak;

	/* Ingest collected in the current pass(es), then in the engine
	 * (submitting), then waiting for durability. */
	ingest_queue pass;
	ingest_queue submitting;
	ingest_queue acks;

	/* The submitter thread: runs tally_ingest_submit_many for the group in
	 * `submitting`, so the loop never waits on the engine's lock or work.
	 * The loop owns `submitting` and `submit_batches`, and touches neither
	 * while submit_busy; the submitter reads them only then. */
	pthread_t submitter;
	bool submitter_started;
	bool submit_busy;           /* loop only: a group is with the submitter */
	tally_batch *submit_batches; /* the group, as the engine takes it */
	uint32_t submit_batch_cap;
	pthread_mutex_t submit_lock;
	pthread_cond_t submit_cond;
	bool submit_go;             /* under submit_lock: a group was handed over */
	bool submit_stop;           /* under submit_lock */
	int submit_rc;              /* under submit_lock: the engine's return */
	uint64_t submit_lsn;        /* under submit_lock: its WAL record */
	void (*submit_hook)(void *arg); /* tests: runs on the submitter before each group */
	void (*submit_done_hook)(void *arg); /* tests: runs after it, before it is reported */
	void *submit_hook_arg;

	/* The committer thread. */
	pthread_t committer;
	bool committer_started;
	pthread_mutex_t commit_lock;
	pthread_cond_t commit_cond;
	uint64_t commit_target; /* under commit_lock */
	int commit_error;       /* under commit_lock: sticky */
	bool commit_stop;       /* under commit_lock */

	atomic_bool stopping;
	bool stopped_accepting;
	int64_t stop_deadline_us;
	int run_error;
};

/* Monotonic time, for every duration and deadline (timeouts, the drain,
 * latencies): a wall clock stepped by NTP or a VM resume would fire them
 * at once or never. */
static inline int64_t server_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall-clock time, UTC: only for what is about days (today, the nightly
 * export's hour). */
static inline int64_t server_wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- server.c, for the handlers ---- */

/* Appends a framed response to c's output (packed here) and counts it
 * answered: inflight and pending bytes drop. 0 or -ENOMEM (then the conn is
 * closed). */
int conn_respond(server *s, conn *c, const Tally__V1__Response *resp, uint64_t frame_bytes);
/* An Error response for request_id (Error.Code code). */
int conn_respond_error(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes, int code,
		       uint32_t retry_after_ms, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
/* Appends an already framed response made by a worker. */
int conn_respond_framed(server *s, conn *c, uint8_t *frame, size_t size, uint64_t frame_bytes);
/* Stops reading c and closes it once its output is sent. */
void conn_close_after_send(server *s, conn *c);
/* A request of the connection of slot and gen (frame_bytes, as counted
 * when it was read) ends without an answer: the connection closed or is
 * closing. Its bytes leave the server-wide count only now: conn_release
 * leaves there the bytes of requests still queued (a batch for the
 * submitter, a job for the workers), so a client that resets its
 * connections cannot queue decoded requests past pending_bytes_max. */
void server_request_dropped(server *s, uint32_t slot, uint32_t gen, uint64_t frame_bytes);
/* Asks the committer to wait for lsn to be durable (then acks are sent). */
void server_commit_request(server *s, uint64_t lsn);

/* ---- handlers.c ---- */

/* Handles one decoded request of c (takes ownership of req). */
void handle_request(server *s, conn *c, Tally__V1__Request *req, uint64_t frame_bytes);
/* Whether c's key (and its tenant) is still good after a revoke or a
 * suspension since it was last checked; if not, answers request_id with
 * UNAUTHENTICATED and closes c once that is sent. */
bool handlers_auth_still_valid(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes);
/* Hands every ingest collected since the last group to the submitter
 * (one WAL record), unless a group is still there. */
void handlers_submit_pass(server *s);
/* The submitter finished its group: acks wait for durability, refusals go
 * out; then the next group is handed over. */
void handlers_submit_done(server *s);
/* Runs on the submitter: the engine's ingest of the group. */
int handlers_submit_group(server *s, uint64_t *lsn);
/* Sends the acks whose commit is durable; fails them if the WAL failed. */
void handlers_ack_durable(server *s);
/* A framed response in a malloc-ed buffer (for worker threads); over the
 * frame limit it becomes TOO_LARGE, counted in m (NULL: not counted). NULL
 * when out of memory. */
uint8_t *response_frame(const Tally__V1__Response *resp, uint32_t limit, metrics *m, size_t *size_out);

/* ---- usage.c: the billing export's requests (admin only) ---- */
void on_daily_usage(server *s, conn *c, Tally__V1__Request *req, uint64_t frame_bytes);
void on_changed_days(server *s, conn *c, Tally__V1__Request *req, uint64_t frame_bytes);

/* Writes tenants created by ingest to tenants.json, at most once per
 * TENANTS_SAVE_INTERVAL_US (the timer calls it). */
void handlers_save_tenants(server *s);
/* At open: every tenant the store has events of is in the registry; a
 * failed write of tenants.json is logged and left to the periodic save. */
void handlers_reconcile_tenants(server *s);

/* Issues the first admin key (DATA/admin.key) when there is none. */
int handlers_bootstrap_admin(server *s, char *errmsg);
void ingest_queue_free(ingest_queue *q);

/* Protocol error codes (Error.Code) as ints for the metrics. */
#define ERR_BAD_REQUEST TALLY__V1__ERROR__CODE__BAD_REQUEST
#define ERR_UNAUTHENTICATED TALLY__V1__ERROR__CODE__UNAUTHENTICATED
#define ERR_PERMISSION_DENIED TALLY__V1__ERROR__CODE__PERMISSION_DENIED
#define ERR_RESOURCE_EXHAUSTED TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED
#define ERR_TOO_LARGE TALLY__V1__ERROR__CODE__TOO_LARGE
#define ERR_UNAVAILABLE TALLY__V1__ERROR__CODE__UNAVAILABLE
#define ERR_CONFLICT TALLY__V1__ERROR__CODE__CONFLICT
#define ERR_INTERNAL TALLY__V1__ERROR__CODE__INTERNAL

/* The Error code of a failure the request did not cause: running out of
 * memory passes (UNAVAILABLE, retry), anything else is a server fault
 * (INTERNAL, alert). docs/protocol.md, "Errors". */
static inline int error_code_of_failure(int rc)
{
	return rc == -ENOMEM ? ERR_UNAVAILABLE : ERR_INTERNAL;
}

/* retry_after_ms for an Error of `code`: RETRY_AFTER_MS with UNAVAILABLE. */
static inline uint32_t retry_after_of(int code)
{
	return code == ERR_UNAVAILABLE ? RETRY_AFTER_MS : 0;
}

#endif /* TALLY_SERVER_INTERNAL_H */
