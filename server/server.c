/*
 * server.c — tallyd's event loop (server.h): one io_uring, one thread.
 *
 * The loop owns every connection. It accepts with one multishot accept,
 * reads with one multishot receive per connection into a ring of provided
 * buffers (RECV_BUFFER_COUNT x RECV_BUFFER_SIZE, shared by all
 * connections), feeds the bytes to each connection's frame reader, and hands
 * each whole request to handlers.c. Ingest requests of one pass (up to
 * LOOP_CQES_PER_PASS completions; more while the submitter is busy) go to
 * the submitter thread as one group, which submits them to the engine
 * together, as one WAL record, while the loop goes on; the committer thread
 * waits for that record's fsync and wakes the loop through an eventfd, and
 * only then are the acks sent.
 * Queries and listings run on the worker pool and come back framed.
 *
 * Bounded work and memory:
 *   - a connection's unsent responses (`out`, and `send_buf` until its send
 *     completes) plus the answers it owes never exceed conn_out_bytes_max
 *     (CONN_OUT_BYTES_MAX, or CONN_OUT_ANSWERS_MIN of the largest response
 *     frames if that is more). An answer is owed from the moment its
 *     request is taken until it is queued, counted at the largest it can
 *     be: a frame (answer_bytes_max) for a request at the worker pool, the
 *     longest IngestAck or Error of a batch of batch_events_max events
 *     (ingest_answer_bytes_max) for an ingest batch; an answer given at
 *     once, inside handle_request, is at most a frame. So the next request
 *     is taken only while a frame more still fits, and no answer, given at
 *     once or later, can pass the bound. (An Error about the stream itself,
 *     request id 0, is one small frame more, followed by a close.);
 *     Before its Hello succeeds, a connection's frames are at most
 *     HELLO_FRAME_BYTES_MAX and its unsent answers HELLO_OUT_BYTES_MAX;
 *   - a connection is read only while it has fewer than inflight_max
 *     requests in flight and room under that bound; otherwise its receive
 *     is cancelled and whatever was already received waits in its stash (at
 *     most what the kernel had handed over);
 *   - a connection whose peer has taken no byte of the send at the kernel
 *     for idle_timeout_ms is closed and freed, its unsent output dropped
 *     (a peer that stopped reading holds nothing for longer);
 *   - no connection is read while the server holds more than
 *     pending_bytes_max of unanswered requests (backpressure), until that
 *     falls to half (a request whose connection closed while it waited
 *     counts until it is done: server_request_dropped); that time counts against no connection's idle, frame
 *     or Hello deadline (backpressure_update);
 *   - a connection that has not completed Hello within hello_timeout_ms of
 *     its accept is sent UNAUTHENTICATED and closed, whatever it sends
 *     meanwhile: a client that never authenticates holds a slot that long
 *     at most;
 *   - a frame is refused at its 4-byte header when it announces more than
 *     frame_bytes_max, before any memory is committed for it.
 *
 * Closing: a connection that must go is shut down (shutdown(2)), which ends
 * its receive and its send; its slot is freed once no operation of it is at
 * the kernel. A peer that half-closes (end of stream) gets an answer to
 * every whole request it sent before, in the order of a connection kept
 * open (the stash is still taken, under the same limits), and the
 * connection closes after the last answer is sent; an incomplete trailing
 * frame is dropped.
 * Completions for an older occupant of a slot carry an older generation and
 * are ignored; so are worker results and acks for a connection that left.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/sockios.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fail.h"
#include "latency.h"
#include "log.h"
#include "server_internal.h"

/* ---- user_data ---------------------------------------------------------- */

static uint64_t op_data(enum op_kind kind, uint32_t slot, uint32_t gen)
{
	return (uint64_t)kind << 56 | (uint64_t)(slot & 0xffffffu) << 32 | gen;
}
static enum op_kind op_kind_of(uint64_t data) { return (enum op_kind)(data >> 56); }
static uint32_t op_slot_of(uint64_t data) { return (uint32_t)(data >> 32) & 0xffffffu; }
static uint32_t op_gen_of(uint64_t data) { return (uint32_t)data; }

static struct io_uring_sqe *sqe_get(server *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	if (!sqe) {
		io_uring_submit(&s->ring);
		sqe = io_uring_get_sqe(&s->ring);
	}
	if (!sqe) {
		/* Cannot happen after a submit emptied the queue; fail loudly. */
		log_error("io_uring submission queue full after submit");
		abort();
	}
	return sqe;
}

/* ---- arming ----------------------------------------------------------- */

static void arm_accept(server *s)
{
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_multishot_accept(sqe, s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_data(OP_ACCEPT, 0, 0));
	s->accept_armed = true;
}

static void arm_eventfd(server *s, int fd, uint64_t *value, enum op_kind kind)
{
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_read(sqe, fd, value, sizeof(*value), 0);
	io_uring_sqe_set_data64(sqe, op_data(kind, 0, 0));
}

static void arm_timer(server *s)
{
	struct io_uring_sqe *sqe = sqe_get(s);
	s->timer_ts.tv_sec = 0;
	s->timer_ts.tv_nsec = (long long)TIMER_INTERVAL_MS * 1000000;
	io_uring_prep_timeout(sqe, &s->timer_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_data(OP_TIMER, 0, 0));
}

static uint32_t slot_of(const server *s, const conn *c) { return (uint32_t)(c - s->conns); }

static void arm_recv(server *s, conn *c)
{
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RECV_BUFFER_GROUP;
	io_uring_sqe_set_data64(sqe, op_data(OP_RECV, slot_of(s, c), c->gen));
	c->recv_armed = true;
	c->cancelling = false;
}

static void cancel_recv(server *s, conn *c)
{
	if (!c->recv_armed || c->cancelling)
		return;
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_cancel64(sqe, op_data(OP_RECV, slot_of(s, c), c->gen), 0);
	io_uring_sqe_set_data64(sqe, op_data(OP_CANCEL, 0, 0));
	c->cancelling = true;
}

static void conn_send(server *s, conn *c);

/* ---- connection lifecycle --------------------------------------------- */

static void conn_release(server *s, conn *c)
{
	metrics_add(s->metrics, M_CONNECTIONS_CLOSED, 1);
	close(c->fd);
	/* c->pending_bytes are requests still queued: each leaves
	 * s->pending_bytes when it ends (server_request_dropped). */
	frame_reader_free(&c->reader);
	free(c->stash);
	free(c->out);
	free(c->send_buf);
	free(c->spare);
	explicit_bzero(c->key_text, sizeof(c->key_text));
	uint32_t gen = c->gen + 1;
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->gen = gen;
	s->conn_count--;
}

/* Frees c once nothing of it is at the kernel. */
static void conn_maybe_release(server *s, conn *c)
{
	if (c->fd >= 0 && c->close_submitted && !c->recv_armed && !c->sending)
		conn_release(s, c);
}

/* Closes c now: unsent output is dropped. */
static void conn_abort(server *s, conn *c)
{
	if (c->close_submitted)
		return;
	c->close_submitted = true;
	c->read_closed = true;
	c->closing = true;
	shutdown(c->fd, SHUT_RDWR); /* ends its receive and any send */
	cancel_recv(s, c);
	conn_maybe_release(s, c);
}

/* Closes c if it is closing (or its peer half-closed) and has nothing left
 * to answer or send: for a half-closed peer, no whole request is left in the
 * stash either (unless c reads no more: at shutdown). */
static void conn_close_if_finished(server *s, conn *c)
{
	if (c->fd < 0 || c->close_submitted || !(c->closing || c->peer_closed))
		return;
	if (c->inflight || c->out_len || c->sending)
		return;
	if (!c->read_closed && c->stash_off < c->stash_len)
		return; /* received requests still to take */
	conn_abort(s, c);
}

void conn_close_after_send(server *s, conn *c)
{
	c->closing = true;
	c->read_closed = true;
	c->close_started_us = server_now_us();
	cancel_recv(s, c);
	conn_close_if_finished(s, c);
}

/* The bytes of c's responses the kernel has not taken: queued in out, and
 * the whole buffer at the kernel until its send completes. */
static uint64_t conn_unsent_bytes(const conn *c) { return (uint64_t)c->out_len + c->send_len; }

/* The largest answers c still owes, outside handle_request: a frame for each
 * request at the worker pool, the largest ingest answer for each other
 * request in flight (an ingest batch waiting for its ack). */
static uint64_t conn_owed_bytes(const server *s, const conn *c)
{
	assert(c->jobs <= c->inflight);
	return (uint64_t)c->jobs * s->answer_bytes_max +
	       (uint64_t)(c->inflight - c->jobs) * s->ingest_answer_bytes_max;
}

/* Whether one more answer of the largest size fits under c's bound (before
 * its Hello, the smaller bound of the small answers it may get). */
static bool conn_has_room(const server *s, const conn *c)
{
	if (!c->authed)
		return conn_unsent_bytes(c) + conn_owed_bytes(s, c) + HELLO_ANSWER_BYTES_MAX <=
		       HELLO_OUT_BYTES_MAX;
	return conn_unsent_bytes(c) + conn_owed_bytes(s, c) + s->answer_bytes_max <=
	       s->conn_out_bytes_max;
}

/* Whether c may read (and process) more requests now. */
static bool conn_can_take(const server *s, const conn *c)
{
	return !c->read_closed && !s->paused && !atomic_load(&s->stopping) &&
	       c->inflight < s->config.inflight_max && conn_has_room(s, c);
}

/* ---- output ------------------------------------------------------------- */

static int out_reserve(conn *c, size_t more)
{
	if (c->out_len + more <= c->out_cap)
		return 0;
	size_t cap = c->out_cap ? c->out_cap : 4096;
	while (cap < c->out_len + more)
		cap *= 2;
	uint8_t *p = realloc(c->out, cap);
	if (!p)
		return -ENOMEM;
	c->out = p;
	c->out_cap = cap;
	return 0;
}

/* Counts one request of c answered. */
static void conn_answered(server *s, conn *c, uint64_t frame_bytes)
{
	if (!frame_bytes)
		return; /* an error about the stream itself, not about a request */
	c->inflight--;
	c->pending_bytes -= frame_bytes;
	s->pending_bytes -= frame_bytes;
}

/* Starts sending what was just queued in c's out (for request frame_bytes;
 * 0: an Error about the stream). tally_sent_bytes_total counts it once the
 * kernel takes it (on_send). */
static void conn_queued(server *s, conn *c, uint64_t frame_bytes)
{
	uint64_t unsent = conn_unsent_bytes(c);
	if (unsent > atomic_load_explicit(&s->conn_unsent_bytes_peak, memory_order_relaxed))
		atomic_store_explicit(&s->conn_unsent_bytes_peak, unsent, memory_order_relaxed);
	/* An answer never passes the bound its request was taken under. */
	assert(!frame_bytes || unsent + conn_owed_bytes(s, c) <= s->conn_out_bytes_max);
	conn_send(s, c);
}

int conn_respond_framed(server *s, conn *c, uint8_t *frame, size_t size, uint64_t frame_bytes)
{
	conn_answered(s, c, frame_bytes);
	if (c->close_submitted)
		return 0;
	if (out_reserve(c, size)) {
		log_error("%s: out of memory for a %zu-byte response; closing", c->peer, size);
		conn_abort(s, c);
		return -ENOMEM;
	}
	memcpy(c->out + c->out_len, frame, size);
	c->out_len += size;
	conn_queued(s, c, frame_bytes);
	return 0;
}

int conn_respond(server *s, conn *c, const Tally__V1__Response *resp, uint64_t frame_bytes)
{
	size_t size = tally__v1__response__get_packed_size(resp);
	if (size > s->config.frame_bytes_max) {
		/* Rare: answer TOO_LARGE instead (response_frame words it), the
		 * client could not read the response anyway. */
		size_t n;
		uint8_t *frame = response_frame(resp, s->config.frame_bytes_max, s->metrics, &n);
		if (!frame) {
			conn_answered(s, c, frame_bytes);
			conn_abort(s, c);
			return -ENOMEM;
		}
		int rc = conn_respond_framed(s, c, frame, n, frame_bytes);
		free(frame);
		return rc;
	}
	conn_answered(s, c, frame_bytes);
	if (c->close_submitted)
		return 0;
	if (out_reserve(c, FRAME_HEADER_SIZE + size)) {
		log_error("%s: out of memory for a %zu-byte response; closing", c->peer, size);
		conn_abort(s, c);
		return -ENOMEM;
	}
	frame_header_put(c->out + c->out_len, (uint32_t)size);
	tally__v1__response__pack(resp, c->out + c->out_len + FRAME_HEADER_SIZE);
	c->out_len += FRAME_HEADER_SIZE + size;
	conn_queued(s, c, frame_bytes);
	return 0;
}

int conn_respond_error(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes, int code,
		       uint32_t retry_after_ms, const char *fmt, ...)
{
	char text[TALLY_ERRMSG_SIZE];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	Tally__V1__Error err = TALLY__V1__ERROR__INIT;
	err.code = (Tally__V1__Error__Code)code;
	err.message = server_text_utf8(text);
	err.retry_after_ms = retry_after_ms;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
	resp.error = &err;
	metrics_error(s->metrics, code);
	return conn_respond(s, c, &resp, frame_bytes);
}

/*
 * Sends what c has queued. The buffer at the kernel is never touched while
 * the send runs: it moves to send_buf, and new responses go to a fresh out
 * (the spare buffer of the previous send, reused).
 */
static void conn_send(server *s, conn *c)
{
	if (c->sending || !c->out_len || c->close_submitted)
		return;
	/* Hand the kernel a buffer of its own: out keeps growing meanwhile. */
	c->send_buf = c->out;
	c->send_cap = c->out_cap;
	c->send_len = c->out_len;
	c->send_off = 0;
	c->out = c->spare;
	c->out_cap = c->spare_cap;
	c->out_len = 0;
	c->spare = NULL;
	c->spare_cap = 0;
	struct io_uring_sqe *sqe = sqe_get(s);
	io_uring_prep_send(sqe, c->fd, c->send_buf, c->send_len, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_data(OP_SEND, slot_of(s, c), c->gen));
	c->sending = true;
	c->send_waiting_us = server_now_us();
}

static void on_send(server *s, conn *c, int res)
{
	c->sending = false;
	if (res <= 0) {
		if (!c->close_submitted)
			log_warn("%s: send failed (%s); closing", c->peer, strerror(res ? -res : EPIPE));
		conn_abort(s, c);
		conn_maybe_release(s, c);
		return;
	}
	c->send_off += (size_t)res;
	/* What the kernel took, not what was queued: a stalled peer's dropped
	 * output is not counted as sent. */
	metrics_add(s->metrics, M_BYTES_SENT, (uint64_t)res);
	c->send_waiting_us = server_now_us(); /* the peer took bytes */
	if (c->send_off < c->send_len && !c->close_submitted) {
		/* A short send: the rest of the same buffer. */
		struct io_uring_sqe *sqe = sqe_get(s);
		io_uring_prep_send(sqe, c->fd, c->send_buf + c->send_off, c->send_len - c->send_off,
				   MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, op_data(OP_SEND, slot_of(s, c), c->gen));
		c->sending = true;
		return;
	}
	/* Keep the sent buffer for reuse, unless it is a burst's. */
	free(c->spare);
	c->spare = NULL;
	c->spare_cap = 0;
	if (c->send_cap <= CONN_SPARE_BYTES_MAX) {
		c->spare = c->send_buf;
		c->spare_cap = c->send_cap;
	} else {
		free(c->send_buf);
	}
	c->send_buf = NULL;
	c->send_len = c->send_off = c->send_cap = 0;
	c->last_activity_us = server_now_us();
	if (c->close_submitted) {
		conn_maybe_release(s, c);
		return;
	}
	conn_send(s, c);
	conn_close_if_finished(s, c);
}

/* ---- input -------------------------------------------------------------- */

static void conn_feed(server *s, conn *c, const uint8_t *data, size_t size);

/* Feeds stashed bytes if c can take requests (what it cannot take is
 * stashed again by conn_feed). */
static void conn_drain_stash(server *s, conn *c)
{
	if (c->stash_off == c->stash_len || !conn_can_take(s, c))
		return;
	uint8_t *stash = c->stash;
	size_t off = c->stash_off, len = c->stash_len - c->stash_off;
	c->stash = NULL;
	c->stash_len = c->stash_off = c->stash_cap = 0;
	conn_feed(s, c, stash + off, len);
	free(stash);
}

static void stash_append(server *s, conn *c, const uint8_t *data, size_t size)
{
	if (c->stash_off && c->stash_off == c->stash_len)
		c->stash_off = c->stash_len = 0;
	if (c->stash_len + size > c->stash_cap) {
		size_t cap = c->stash_cap ? c->stash_cap : RECV_BUFFER_SIZE;
		while (cap < c->stash_len + size)
			cap *= 2;
		uint8_t *p = realloc(c->stash, cap);
		if (!p) {
			log_error("%s: out of memory stashing input; closing", c->peer);
			conn_abort(s, c);
			return;
		}
		c->stash = p;
		c->stash_cap = cap;
	}
	memcpy(c->stash + c->stash_len, data, size);
	c->stash_len += size;
}

static void conn_feed(server *s, conn *c, const uint8_t *data, size_t size)
{
	/* c->fd < 0: a close inside handle_request freed the slot. */
	while (size && c->fd >= 0 && !c->close_submitted) {
		if (c->read_closed)
			return; /* after an error or at shutdown, the rest is not read */
		if (!conn_can_take(s, c)) {
			if (c->inflight >= s->config.inflight_max || !conn_has_room(s, c))
				metrics_add(s->metrics, M_READS_DEFERRED, 1);
			stash_append(s, c, data, size);
			cancel_recv(s, c);
			return;
		}
		bool was_idle = c->reader.header_have == 0;
		int st = frame_reader_feed(&c->reader, &data, &size);
		if (st == FRAME_NEED_MORE) {
			if (was_idle && (c->reader.header_have || c->reader.body_have))
				c->frame_started_us = server_now_us();
			return;
		}
		if (st == FRAME_TOO_LARGE) {
			conn_respond_error(s, c, 0, 0, ERR_TOO_LARGE, 0,
					   "frame of %u bytes is over the limit of %u%s; closing",
					   c->reader.length, c->reader.limit,
					   c->authed ? "" : " before Hello");
			conn_close_after_send(s, c);
			return;
		}
		if (st == FRAME_NO_MEMORY) {
			conn_respond_error(s, c, 0, 0, ERR_UNAVAILABLE, RETRY_AFTER_MS,
					   "out of memory for a frame; closing: retry it on a new connection");
			conn_close_after_send(s, c);
			return;
		}
		uint32_t len;
		const uint8_t *body = frame_reader_frame(&c->reader, &len);
		c->frame_started_us = 0;
		uint64_t frame_bytes = (uint64_t)len + FRAME_HEADER_SIZE;
		c->inflight++;
		c->pending_bytes += frame_bytes;
		s->pending_bytes += frame_bytes;
		/* One arena per request: a columnar batch is hundreds of fields. */
		int unpack_rc;
		Tally__V1__Request *req = (Tally__V1__Request *)pb_arena_unpack(
			&tally__v1__request__descriptor, len, body, &unpack_rc);
		frame_reader_next(&c->reader);
		if (!req) {
			/* Its request id is inside what could not be decoded: the
			 * Error goes out with id 0, and the connection is closed, so
			 * that the client does not wait for an answer to it. */
			if (unpack_rc == -ENOMEM)
				conn_respond_error(s, c, 0, frame_bytes, ERR_UNAVAILABLE, RETRY_AFTER_MS,
						   "out of memory decoding a %u-byte request; closing: "
						   "retry it on a new connection", len);
			else if (unpack_rc == -E2BIG)
				conn_respond_error(s, c, 0, frame_bytes, ERR_TOO_LARGE, 0,
						   "a %u-byte request that decodes to more than %u times "
						   "its size; closing", len, PB_ARENA_BUDGET_FACTOR);
			else
				conn_respond_error(s, c, 0, frame_bytes, ERR_BAD_REQUEST, 0,
						   "a %u-byte frame that is not a Request message; closing",
						   len);
			conn_close_after_send(s, c);
			return;
		}
		if (req->request_id == 0) {
			/* An answer with id 0 is about the connection and is
			 * followed by a close (docs/protocol.md): a request may
			 * not have it, or its answer could not be told apart. */
			pb_arena_free(req);
			conn_respond_error(s, c, 0, frame_bytes, ERR_BAD_REQUEST, 0,
					   "request_id 0 is reserved for answers about the connection: "
					   "number requests from 1; closing");
			conn_close_after_send(s, c);
			return;
		}
		/* A string field is C text to the handlers: one whose bytes
		 * hold a NUL would reach them cut there (a tenant "acme\0x"
		 * taken as "acme", a key's prefix as the key). Refused; before
		 * Hello, the connection is closed too, as for a failed Hello. */
		char field[96];
		if (!pb_arena_strings_whole(&req->base, field, sizeof(field))) {
			uint64_t id = req->request_id;
			pb_arena_free(req);
			/* A revoked key's connection is refused and closed
			 * whatever it sends, a bad request too. */
			if (c->authed && !handlers_auth_still_valid(s, c, id, frame_bytes))
				continue;
			conn_respond_error(s, c, id, frame_bytes, ERR_BAD_REQUEST, 0,
					   "%s holds a NUL byte: a string is its bytes up to its length, "
					   "with no NUL among them%s", field, c->authed ? "" : "; closing");
			if (!c->authed)
				conn_close_after_send(s, c);
			continue;
		}
		/* Not answered inside handle_request: an ingest batch waits for
		 * its ack, any other request went to the worker pool. */
		bool ingest = req->body_case == TALLY__V1__REQUEST__BODY_INGEST;
		uint32_t inflight = c->inflight;
		handle_request(s, c, req, frame_bytes); /* req is not ours after */
		if (c->fd >= 0 && !c->close_submitted && c->inflight == inflight && !ingest)
			c->jobs++;
	}
}

static void on_recv(server *s, conn *c, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more) {
		c->recv_armed = false;
		c->cancelling = false;
	}
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		uint8_t *buf = s->buffers + (size_t)bid * RECV_BUFFER_SIZE;
		if (cqe->res > 0 && !c->close_submitted) {
			metrics_add(s->metrics, M_BYTES_RECEIVED, (uint64_t)cqe->res);
			c->last_activity_us = server_now_us();
			if (c->stash_off < c->stash_len)
				stash_append(s, c, buf, (size_t)cqe->res); /* keep the order */
			else
				conn_feed(s, c, buf, (size_t)cqe->res);
		}
		/* The buffer goes back to the ring at once: its bytes were copied. */
		io_uring_buf_ring_add(s->buf_ring, buf, RECV_BUFFER_SIZE, (unsigned short)bid,
				      io_uring_buf_ring_mask(RECV_BUFFER_COUNT), 0);
		io_uring_buf_ring_advance(s->buf_ring, 1);
	}
	if (c->fd < 0)
		return; /* a close while feeding freed the slot */
	if (cqe->res == 0 && !more) {
		/* The peer closed its side: answer every whole request it sent
		 * (those in the stash too), then close; no receive is armed again. */
		c->peer_closed = true;
		conn_close_if_finished(s, c);
	} else if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ECANCELED) {
		if (!c->close_submitted)
			log_warn("%s: receive failed (%s); closing", c->peer, strerror(-cqe->res));
		conn_abort(s, c);
	}
	conn_maybe_release(s, c);
}

/* Re-arms the receive of every conn that can take requests again. */
static void conns_resume(server *s)
{
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		conn *c = &s->conns[i];
		if (c->fd < 0 || c->close_submitted)
			continue;
		conn_drain_stash(s, c);
		if (c->fd < 0 || c->close_submitted)
			continue; /* a request closed it */
		if (!c->recv_armed && !c->peer_closed && c->stash_off == c->stash_len &&
		    conn_can_take(s, c))
			arm_recv(s, c);
		conn_close_if_finished(s, c); /* a half-closed peer's last answer went out */
	}
}

/* Moves a deadline that started at *start_us (0: none) on by the time the
 * server did not read since paused_since_us (or since the deadline began,
 * if later): it is counted as if that time had not passed. */
static void deadline_skip_pause(int64_t *start_us, int64_t paused_since_us, int64_t now)
{
	if (!*start_us)
		return;
	*start_us += now - (*start_us > paused_since_us ? *start_us : paused_since_us);
}

/*
 * Server-wide backpressure: pause above pending_bytes_max, resume at half.
 * While paused, no connection is read, so the rest of a frame, a Hello or
 * any request may wait in the kernel for as long as the pause lasts: the
 * idle, frame and Hello deadlines are not checked (on_timer), and at the
 * resume they move on by the pause, so that no peer is closed for the
 * server's not reading.
 */
static void backpressure_update(server *s)
{
	if (!s->paused && s->pending_bytes > s->config.pending_bytes_max) {
		s->paused = true;
		s->paused_since_us = server_now_us();
		metrics_add(s->metrics, M_BACKPRESSURE_PAUSES, 1);
		for (uint32_t i = 0; i < s->conn_slots; i++)
			if (s->conns[i].fd >= 0)
				cancel_recv(s, &s->conns[i]);
	} else if (s->paused && s->pending_bytes <= s->config.pending_bytes_max / 2) {
		s->paused = false;
		int64_t now = server_now_us();
		for (uint32_t i = 0; i < s->conn_slots; i++) {
			conn *c = &s->conns[i];
			if (c->fd < 0)
				continue;
			deadline_skip_pause(&c->last_activity_us, s->paused_since_us, now);
			deadline_skip_pause(&c->frame_started_us, s->paused_since_us, now);
			deadline_skip_pause(&c->hello_started_us, s->paused_since_us, now);
		}
	}
}

/* ---- accept ------------------------------------------------------------- */

static void refuse_connection(server *s, int fd, const char *why)
{
	/* One small frame, sent without waiting: a fresh socket's buffer takes it. */
	Tally__V1__Error err = TALLY__V1__ERROR__INIT;
	err.code = TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED;
	err.message = (char *)why;
	err.retry_after_ms = 1000;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
	resp.error = &err;
	uint8_t frame[512];
	size_t size = tally__v1__response__get_packed_size(&resp);
	if (size + FRAME_HEADER_SIZE <= sizeof(frame)) {
		frame_header_put(frame, (uint32_t)size);
		tally__v1__response__pack(&resp, frame + FRAME_HEADER_SIZE);
		ssize_t w = send(fd, frame, size + FRAME_HEADER_SIZE, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)w; /* best effort: the close says the rest */
	}
	metrics_add(s->metrics, M_CONNECTIONS_REFUSED, 1);
	metrics_error(s->metrics, err.code);
	close(fd);
}

/* How often an accept that keeps failing (out of file descriptors) is
 * logged: it is tried again at every timer tick. */
#define ACCEPT_ERROR_LOG_US (INT64_C(10) * 1000000)

/* Arms the accept again if it ended (a multishot accept ends at its first
 * error, EMFILE say, and may end on its own), unless stopping. */
static void accept_resume(server *s)
{
	if (!s->accept_armed && !atomic_load(&s->stopping))
		arm_accept(s);
}

static void on_accept(server *s, struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		s->accept_armed = false; /* on_timer resumes it; on success, at once */
	if (cqe->res < 0) {
		int64_t now = server_now_us();
		if (cqe->res != -ECANCELED && !atomic_load(&s->stopping) &&
		    (!s->accept_error_logged_us || now - s->accept_error_logged_us >= ACCEPT_ERROR_LOG_US)) {
			s->accept_error_logged_us = now;
			log_error("accept: %s (accepting again every tick)", strerror(-cqe->res));
		}
		return;
	}
	accept_resume(s);
	int fd = cqe->res;
	if (atomic_load(&s->stopping)) {
		close(fd);
		return;
	}
	if (s->conn_count >= s->conn_slots) {
		refuse_connection(s, fd, "too many connections; retry later");
		return;
	}
	conn *c = NULL;
	for (uint32_t i = 0; i < s->conn_slots; i++)
		if (s->conns[i].fd < 0) {
			c = &s->conns[i];
			break;
		}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	frame_reader_init(&c->reader, s->config.frame_bytes_max < HELLO_FRAME_BYTES_MAX
					      ? s->config.frame_bytes_max
					      : HELLO_FRAME_BYTES_MAX);
	c->last_activity_us = server_now_us();
	c->hello_started_us = c->last_activity_us;
	struct sockaddr_storage addr;
	socklen_t alen = sizeof(addr);
	char host[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;
	if (getpeername(fd, (struct sockaddr *)&addr, &alen) == 0) {
		if (addr.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&addr;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (addr.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&addr;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
	s->conn_count++;
	metrics_add(s->metrics, M_CONNECTIONS_ACCEPTED, 1);
	if (conn_can_take(s, c))
		arm_recv(s, c);
}

/* ---- timers ------------------------------------------------------------- */

/*
 * Whether c's peer has taken none of its output for idle_timeout_ms. A send
 * at the kernel completes only once the socket's buffer took all of it
 * (poll wakes a blocked send when a third of the buffer is free), so a peer
 * that reads slowly may keep one send pending long: the kernel's queue of
 * unacknowledged bytes (SIOCOUTQ) shrinking also counts as taking bytes. If
 * the kernel cannot say, the send's own progress decides.
 */
static bool conn_send_stalled(const server *s, conn *c, int64_t now)
{
	int queued;
	if (ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued >= 0) {
		if ((uint64_t)queued != c->kernel_queued_bytes)
			c->send_waiting_us = now;
		c->kernel_queued_bytes = (uint64_t)queued;
	}
	return now - c->send_waiting_us > (int64_t)s->config.idle_timeout_ms * 1000;
}

static void on_timer(server *s)
{
	accept_resume(s); /* without it, an accept that failed (EMFILE) was never made again */
	handlers_save_tenants(s);
	int64_t now = server_now_us();
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		conn *c = &s->conns[i];
		if (c->fd < 0 || c->close_submitted)
			continue;
		if (c->closing) {
			/* A peer that does not read its last answers is not waited for. */
			if (now - c->close_started_us > (int64_t)s->config.frame_timeout_ms * 1000)
				conn_abort(s, c);
			continue;
		}
		if (c->sending && conn_send_stalled(s, c, now)) {
			/* A peer that stopped reading: its unsent output is dropped. */
			metrics_add(s->metrics, M_TIMEOUTS_IDLE, 1);
			log_warn("%s: took no byte of its responses for %u ms (%" PRIu64
				 " bytes unsent); closing", c->peer, s->config.idle_timeout_ms,
				 conn_unsent_bytes(c) - c->send_off);
			conn_abort(s, c);
			continue;
		}
		if (s->paused)
			continue; /* deadlines on what the peer sends wait (backpressure_update) */
		/* Whatever it sends (Pings are answered before Hello), a connection
		 * gets hello_timeout_ms to authenticate: otherwise connections_max
		 * clients that never say Hello would lock everyone out. */
		uint32_t hello_ms = s->config.hello_timeout_ms;
		if (!c->authed && now - c->hello_started_us > (int64_t)hello_ms * 1000) {
			metrics_add(s->metrics, M_TIMEOUTS_HELLO, 1);
			log_warn("%s: no Hello within %u ms; closing", c->peer, hello_ms);
			conn_respond_error(s, c, 0, 0, ERR_UNAUTHENTICATED, 0,
					   "no Hello within %u ms; closing", hello_ms);
			conn_close_after_send(s, c);
			continue;
		}
		/* A half-closed peer's partial frame will never end: it is dropped. */
		if (c->frame_started_us && !c->peer_closed &&
		    now - c->frame_started_us > (int64_t)s->config.frame_timeout_ms * 1000) {
			metrics_add(s->metrics, M_TIMEOUTS_FRAME, 1);
			log_warn("%s: a frame not completed within %u ms; closing", c->peer,
				 s->config.frame_timeout_ms);
			conn_respond_error(s, c, 0, 0, ERR_BAD_REQUEST, 0,
					   "frame not completed within %u ms; closing",
					   s->config.frame_timeout_ms);
			conn_close_after_send(s, c);
			continue;
		}
		if (!c->inflight && !c->out_len && !c->sending && !c->frame_started_us &&
		    c->stash_off == c->stash_len &&
		    now - c->last_activity_us > (int64_t)s->config.idle_timeout_ms * 1000) {
			metrics_add(s->metrics, M_TIMEOUTS_IDLE, 1);
			conn_respond_error(s, c, 0, 0, ERR_UNAVAILABLE, 0,
					   "idle for %u ms; closing", s->config.idle_timeout_ms);
			conn_close_after_send(s, c);
		}
	}
}

/* ---- worker results and acks -------------------------------------------- */

static conn *conn_live(server *s, uint32_t slot, uint32_t gen)
{
	if (slot >= s->conn_slots)
		return NULL;
	conn *c = &s->conns[slot];
	return c->fd >= 0 && c->gen == gen && !c->close_submitted ? c : NULL;
}

void server_request_dropped(server *s, uint32_t slot, uint32_t gen, uint64_t frame_bytes)
{
	if (!frame_bytes)
		return;
	conn *c = &s->conns[slot];
	if (c->fd >= 0 && c->gen == gen) { /* closing, not yet released */
		c->inflight--;
		c->pending_bytes -= frame_bytes;
	}
	s->pending_bytes -= frame_bytes;
}

static void on_worker_done(server *s)
{
	for (worker_job *j = worker_pool_take_done(s->workers), *next; j; j = next) {
		next = j->next;
		conn *c = conn_live(s, j->slot, j->gen);
		if (!c) {
			server_request_dropped(s, j->slot, j->gen, j->frame_bytes);
		} else {
			assert(c->jobs > 0);
			c->jobs--; /* before the answer is queued: it replaces what was owed */
			/* A key revoked (or its tenant suspended) while the job
			 * ran gets no answer computed for it, only the refusal. */
			if (!handlers_auth_still_valid(s, c, j->request_id, j->frame_bytes))
				;
			else if (j->frame)
				conn_respond_framed(s, c, j->frame, j->frame_size, j->frame_bytes);
			else
				conn_respond_error(s, c, j->request_id, j->frame_bytes, ERR_UNAVAILABLE,
						   RETRY_AFTER_MS, "out of memory building the response");
			conn_close_if_finished(s, c);
		}
		free(j->frame);
		free(j);
	}
}

/* Wakes the loop's read of eventfd fd. A write only fails if the counter
 * would overflow, which leaves it readable anyway. */
static void eventfd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t w = write(fd, &one, sizeof(one));
	(void)w;
}

/* ---- the committer thread ----------------------------------------------- */

static void *committer_main(void *arg)
{
	server *s = arg;
	uint64_t done = 0;
	pthread_mutex_lock(&s->commit_lock);
	for (;;) {
		while (!s->commit_stop && s->commit_target <= done)
			pthread_cond_wait(&s->commit_cond, &s->commit_lock);
		if (s->commit_target <= done)
			break; /* stopping with nothing left to wait for */
		uint64_t lsn = s->commit_target;
		pthread_mutex_unlock(&s->commit_lock);
		int64_t t0 = server_now_us();
		int rc = tally_commit_wait(s->store, lsn);
		metrics_observe_us(s->metrics, H_COMMIT_WAIT_US, (uint64_t)(server_now_us() - t0));
		pthread_mutex_lock(&s->commit_lock);
		done = lsn;
		if (rc && !s->commit_error)
			s->commit_error = rc;
		eventfd_signal(s->commit_fd);
	}
	pthread_mutex_unlock(&s->commit_lock);
	return NULL;
}

/* ---- the submitter thread ------------------------------------------------ */

static void *submitter_main(void *arg)
{
	server *s = arg;
	pthread_mutex_lock(&s->submit_lock);
	for (;;) {
		while (!s->submit_stop && !s->submit_go)
			pthread_cond_wait(&s->submit_cond, &s->submit_lock);
		if (!s->submit_go)
			break; /* stopping, nothing handed over */
		pthread_mutex_unlock(&s->submit_lock);
		if (s->submit_hook)
			s->submit_hook(s->submit_hook_arg);
		uint64_t lsn;
		int rc = handlers_submit_group(s, &lsn);
		if (s->submit_done_hook)
			s->submit_done_hook(s->submit_hook_arg);
		pthread_mutex_lock(&s->submit_lock);
		s->submit_rc = rc;
		s->submit_lsn = lsn;
		s->submit_go = false;
		eventfd_signal(s->submit_fd);
	}
	pthread_mutex_unlock(&s->submit_lock);
	return NULL;
}

void server_store_options(const server_config *config, tally_options *options)
{
	tally_options_default(options);
	options->group_commit_window_us = config->group_commit_window_us;
	options->memtable_bytes_max = config->memtable_bytes_max;
	options->memtable_age_max_us = (int64_t)config->memtable_age_max_s * TALLY_US_PER_SECOND;
	options->query_cache_bytes_max = config->query_cache_bytes_max;
	options->query_bytes_max = config->query_bytes_max;
	options->compact_section_rows_max = config->compact_section_rows_max;
}

void server_test_submit_hooks(server *s, void (*before)(void *arg), void (*after)(void *arg),
			      void *arg)
{
	s->submit_hook = before;
	s->submit_done_hook = after;
	s->submit_hook_arg = arg;
}

void server_commit_request(server *s, uint64_t lsn)
{
	pthread_mutex_lock(&s->commit_lock);
	if (lsn > s->commit_target) {
		s->commit_target = lsn;
		pthread_cond_signal(&s->commit_cond);
	}
	pthread_mutex_unlock(&s->commit_lock);
}

/* ---- open / run / close --------------------------------------------------- */

/*
 * The largest frame an IngestBatch of at most events_max events is answered
 * with: its IngestAck with every event REJECTED for the largest reason and
 * every figure at its largest, or an Error with the longest message
 * (TALLY_ERRMSG_SIZE - 1 bytes, as conn_respond_error formats it),
 * whichever is larger; at most answer_max (a longer answer becomes a short
 * TOO_LARGE Error). 0, or -ENOMEM.
 */
static int ingest_answer_bytes_of(uint32_t events_max, uint64_t answer_max, uint64_t *out)
{
	Tally__V1__IngestAck__Result *results = malloc((size_t)events_max * sizeof(*results));
	uint32_t *reasons = malloc((size_t)events_max * sizeof(*reasons));
	if (!results || !reasons) {
		free(results);
		free(reasons);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < events_max; i++) {
		results[i] = TALLY__V1__INGEST_ACK__RESULT__REJECTED;
		reasons[i] = UINT8_MAX; /* tally_ingest_result.reason is a uint8_t */
	}
	Tally__V1__IngestAck ack = TALLY__V1__INGEST_ACK__INIT;
	ack.n_result = ack.n_reason = events_max;
	ack.result = results;
	ack.reason = reasons;
	ack.accepted = ack.duplicate = ack.conflict = ack.rejected = UINT32_MAX;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = UINT64_MAX;
	resp.body_case = TALLY__V1__RESPONSE__BODY_INGEST;
	resp.ingest = &ack;
	size_t ack_size = tally__v1__response__get_packed_size(&resp);
	free(results);
	free(reasons);
	char message[TALLY_ERRMSG_SIZE];
	memset(message, 'x', sizeof(message) - 1);
	message[sizeof(message) - 1] = 0;
	Tally__V1__Error err = TALLY__V1__ERROR__INIT;
	err.code = TALLY__V1__ERROR__CODE__INTERNAL; /* the largest code */
	err.message = message;
	err.retry_after_ms = UINT32_MAX;
	resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
	resp.error = &err;
	size_t error_size = tally__v1__response__get_packed_size(&resp);
	uint64_t size = (uint64_t)(ack_size > error_size ? ack_size : error_size);
	size += FRAME_HEADER_SIZE;
	*out = size < answer_max ? size : answer_max;
	return 0;
}

static int listen_open(server *s, char *errmsg)
{
	char host[CONFIG_ADDR_SIZE], port[32];
	if (config_split_addr(s->config.listen, host, sizeof(host), port, sizeof(port)))
		return server_fail(errmsg, -EINVAL, "listen address '%s' is not HOST:PORT", s->config.listen);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *list;
	int gai = getaddrinfo(host, port, &hints, &list);
	if (gai)
		return server_fail(errmsg, -EINVAL, "listen address %s: %s", s->config.listen, gai_strerror(gai));
	int rc = -EADDRNOTAVAIL;
	for (struct addrinfo *a = list; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_storage bound;
		socklen_t blen = sizeof(bound);
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 4096) == 0 &&
		    getsockname(fd, (struct sockaddr *)&bound, &blen) == 0) {
			s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
								      : ((struct sockaddr_in *)&bound)->sin_port);
			s->listen_fd = fd;
			rc = 0;
			break;
		}
		rc = -errno;
		close(fd);
	}
	freeaddrinfo(list);
	if (rc)
		return server_fail(errmsg, rc, "listen on %s: %s", s->config.listen, strerror(-rc));
	return 0;
}

static int ring_open(server *s, char *errmsg)
{
	struct io_uring_params p = {0};
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = RING_ENTRIES * 8;
	int rc = io_uring_queue_init_params(RING_ENTRIES, &s->ring, &p);
	if (rc)
		return server_fail(errmsg, rc, "io_uring_queue_init: %s", strerror(-rc));
	size_t ring_bytes = RECV_BUFFER_COUNT * sizeof(struct io_uring_buf);
	void *mem = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (mem == MAP_FAILED)
		return server_fail(errmsg, -errno, "mmap of the receive buffer ring: %s", strerror(errno));
	s->buf_ring = mem;
	io_uring_buf_ring_init(s->buf_ring);
	struct io_uring_buf_reg reg = {0};
	reg.ring_addr = (unsigned long)mem;
	reg.ring_entries = RECV_BUFFER_COUNT;
	reg.bgid = RECV_BUFFER_GROUP;
	rc = io_uring_register_buf_ring(&s->ring, &reg, 0);
	if (rc)
		return server_fail(errmsg, rc,
				   "io_uring_register_buf_ring: %s (tallyd needs Linux 5.19 or later)",
				   strerror(-rc));
	s->buffers = malloc((size_t)RECV_BUFFER_COUNT * RECV_BUFFER_SIZE);
	if (!s->buffers)
		return server_fail(errmsg, -ENOMEM, "out of memory for receive buffers");
	for (unsigned i = 0; i < RECV_BUFFER_COUNT; i++)
		io_uring_buf_ring_add(s->buf_ring, s->buffers + (size_t)i * RECV_BUFFER_SIZE,
				      RECV_BUFFER_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(RECV_BUFFER_COUNT), (int)i);
	io_uring_buf_ring_advance(s->buf_ring, RECV_BUFFER_COUNT);
	return 0;
}

static void gauges(void *ctx, metrics_gauges *g)
{
	server *s = ctx;
	tally_stats st;
	if (tally_store_stats(s->store, &st))
		return;
	/* Per scraping thread: the pointers must outlive this call. */
	static _Thread_local int64_t bounds[TALLY_FSYNC_HIST_BUCKETS];
	static _Thread_local uint64_t hist[TALLY_FSYNC_HIST_BUCKETS];
	for (int i = 0; i < TALLY_FSYNC_HIST_BUCKETS; i++)
		bounds[i] = tally_fsync_hist_bound_us(i);
	memcpy(hist, st.wal_fsync_hist, sizeof(hist));
	g->connections = s->conn_count;
	g->tenants = st.tenant_count;
	g->wal_bytes = st.wal_bytes;
	g->wal_files = st.wal_file_count;
	g->segment_files = st.segment_file_count;
	g->segment_bytes = st.segment_bytes;
	g->segment_rows = st.segment_rows;
	g->memtable_events = st.events_memtable;
	g->memtable_bytes = st.memtable_bytes;
	g->rollup_bytes = st.rollup_bytes;
	g->dedup_bytes = st.dedup_bytes;
	g->query_cache_bytes = st.query_cache_bytes;
	g->durable_lsn = st.durable_lsn;
	g->pending_bytes = s->pending_bytes;
	g->fsync_count = st.wal_fsync_count;
	g->fsync_us_total = st.wal_fsync_us_total;
	g->fsync_hist = hist;
	g->fsync_hist_bounds_us = bounds;
	g->fsync_hist_buckets = TALLY_FSYNC_HIST_BUCKETS;
	g->store_readonly = st.sticky_error != 0;
	g->wal_direct_io = st.wal_direct_io;
	g->flush_count = st.flush_count;
	g->compaction_count = st.compaction_count;
	g->ingest_calls = st.ingest_calls;
	g->ingest_lock_hold_us = st.ingest_lock_hold_us;
	g->ingest_lock_wait_us = st.ingest_lock_wait_us;
	g->ingest_lock_hold_max_us = st.ingest_lock_hold_max_us;
	g->dedup_expiry_count = st.dedup_expiry_count;
	g->dedup_expiry_us_last = st.dedup_expiry_us_last;
	g->dedup_expiry_hold_max_us = st.dedup_expiry_hold_max_us;
}

int server_open(const server_config *config, server **out, char *errmsg)
{
	*out = NULL;
	server *s = calloc(1, sizeof(*s));
	if (!s)
		return server_fail(errmsg, -ENOMEM, "out of memory");
	s->config = *config;
	s->listen_fd = s->stop_fd = s->commit_fd = s->worker_fd = s->submit_fd = -1;
	pthread_mutex_init(&s->commit_lock, NULL);
	pthread_cond_init(&s->commit_cond, NULL);
	pthread_mutex_init(&s->submit_lock, NULL);
	pthread_cond_init(&s->submit_cond, NULL);
	int rc = 0;
	const tally_io *io = config->io ? config->io : tally_io_default();
	if ((rc = io->mkdir(io, config->data_dir, 0755)) && rc != -EEXIST) {
		server_fail(errmsg, rc, "create data directory %s: %s", config->data_dir, strerror(-rc));
		goto fail;
	}
	tally_options options;
	server_store_options(config, &options);
	options.io = io;
	if ((rc = tally_store_open(config->data_dir, &options, &s->store, errmsg)))
		goto fail;
	if ((rc = keys_open(io, config->data_dir, &s->keys, errmsg)) ||
	    (rc = tenants_open(io, config->data_dir, &s->tenants, errmsg)))
		goto fail;
	handlers_reconcile_tenants(s);
	if ((rc = handlers_bootstrap_admin(s, errmsg)))
		goto fail;
	/* Every response frame is at most a frame of the limit: a larger one
	 * becomes TOO_LARGE (conn_respond, response_frame). */
	s->answer_bytes_max = (uint64_t)config->frame_bytes_max + FRAME_HEADER_SIZE;
	s->conn_out_bytes_max = CONN_OUT_BYTES_MAX;
	if (s->conn_out_bytes_max < CONN_OUT_ANSWERS_MIN * s->answer_bytes_max)
		s->conn_out_bytes_max = CONN_OUT_ANSWERS_MIN * s->answer_bytes_max;
	if ((rc = ingest_answer_bytes_of(config->batch_events_max, s->answer_bytes_max,
					 &s->ingest_answer_bytes_max))) {
		server_fail(errmsg, rc, "out of memory sizing the largest ingest answer");
		goto fail;
	}
	s->conn_slots = config->connections_max;
	s->conns = calloc(s->conn_slots, sizeof(*s->conns));
	if (!s->conns) {
		rc = server_fail(errmsg, -ENOMEM, "out of memory for %u connections", s->conn_slots);
		goto fail;
	}
	for (uint32_t i = 0; i < s->conn_slots; i++)
		s->conns[i].fd = -1;
	s->stop_fd = eventfd(0, EFD_CLOEXEC);
	s->commit_fd = eventfd(0, EFD_CLOEXEC);
	s->worker_fd = eventfd(0, EFD_CLOEXEC);
	s->submit_fd = eventfd(0, EFD_CLOEXEC);
	if (s->stop_fd < 0 || s->commit_fd < 0 || s->worker_fd < 0 || s->submit_fd < 0) {
		rc = server_fail(errmsg, -errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	if ((rc = listen_open(s, errmsg)) || (rc = ring_open(s, errmsg)))
		goto fail;
	if ((rc = metrics_open(config->metrics, gauges, s, &s->metrics, errmsg)))
		goto fail;
	if ((rc = worker_pool_start(config->query_threads, config->latency_slice_us, s->worker_fd, &s->workers))) {
		server_fail(errmsg, rc, "starting %u worker threads: %s", config->query_threads, strerror(-rc));
		goto fail;
	}
	if (config->export_pg[0] && (rc = export_schedule_start(s, &s->schedule, errmsg)))
		goto fail;
	if ((rc = -pthread_create(&s->committer, NULL, committer_main, s))) {
		server_fail(errmsg, rc, "starting the committer thread: %s", strerror(-rc));
		goto fail;
	}
	s->committer_started = true;
	pthread_setname_np(s->committer, "tally-commit"); /* names show in top -H; failure is harmless */
	if ((rc = -pthread_create(&s->submitter, NULL, submitter_main, s))) {
		server_fail(errmsg, rc, "starting the submitter thread: %s", strerror(-rc));
		goto fail;
	}
	s->submitter_started = true;
	pthread_setname_np(s->submitter, "tally-submit");
	*out = s;
	return 0;
fail:
	server_close(s, NULL);
	return rc;
}

uint16_t server_port(const server *s) { return s->port; }
uint16_t server_metrics_port(const server *s) { return s->metrics ? metrics_port(s->metrics) : 0; }

void server_stop(server *s)
{
	eventfd_signal(s->stop_fd); /* one write(2): async-signal-safe */
}

/* Input dropped per connection and call at most: a client that floods
 * does not hold up the stop. */
#define INPUT_DROP_BYTES_MAX (1u << 20)

/* Reads and drops what fd's peer sent that was not read (up to
 * INPUT_DROP_BYTES_MAX): a close with unread input sends a reset, and a
 * reset throws away what the kernel had not sent yet. */
static void input_drop(int fd)
{
	uint8_t scratch[16384];
	ssize_t n;
	for (size_t dropped = 0; dropped < INPUT_DROP_BYTES_MAX; dropped += (size_t)n)
		if ((n = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT)) <= 0)
			break;
}

/*
 * The end of a stop: every connection's answers are with the kernel (the
 * drain), maybe not sent yet (a peer that reads slowly). Each connection's
 * sending side is shut (a FIN after its data) and its unread input
 * dropped, for up to SHUTDOWN_LINGER_MS until the kernel has sent
 * everything; then closed with its input dropped again, so the close is
 * no reset and the kernel goes on sending what is left. Before, the close
 * of a connection whose client had sent one more request reset it and
 * lost the ack of a batch that was durable. Not covered: a client that
 * has not taken its answers within the linger and sends more after the
 * close gets a reset (what was unsent is lost; its batches were durable,
 * and sent again they come back DUPLICATE).
 */
static void conns_close_at_stop(server *s)
{
	io_uring_submit(&s->ring); /* the stop's cancels (the accept's too), if not yet */
	int64_t until = server_now_us() + (int64_t)SHUTDOWN_LINGER_MS * 1000;
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		conn *c = &s->conns[i];
		if (c->fd >= 0 && !c->close_submitted)
			shutdown(c->fd, SHUT_WR);
	}
	for (;;) {
		bool unsent = false;
		for (uint32_t i = 0; i < s->conn_slots; i++) {
			conn *c = &s->conns[i];
			if (c->fd < 0 || c->close_submitted)
				continue;
			input_drop(c->fd);
			int queued = 0;
			if (ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > 0)
				unsent = true;
		}
		if (!unsent || server_now_us() >= until)
			break;
		struct timespec pause = {0, 10 * 1000000L};
		nanosleep(&pause, NULL);
	}
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		conn *c = &s->conns[i];
		if (c->fd >= 0 && !c->close_submitted) {
			input_drop(c->fd);
			conn_abort(s, c); /* its sending side is shut already: no data dropped */
		}
	}
}

/* Whether a stopping server has nothing left to finish. */
static bool drained(server *s)
{
	if (s->pass.len || s->submit_busy || s->acks.len || worker_pool_busy(s->workers))
		return false;
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		const conn *c = &s->conns[i];
		if (c->fd >= 0 && !c->close_submitted && (c->inflight || c->out_len || c->sending))
			return false;
	}
	return true;
}

static void begin_stop(server *s)
{
	atomic_store(&s->stopping, true);
	s->stop_deadline_us = server_now_us() + (int64_t)SHUTDOWN_DRAIN_MS * 1000;
	log_info("stopping: no new connections or requests; finishing those in flight");
	if (s->accept_armed) {
		struct io_uring_sqe *sqe = sqe_get(s);
		io_uring_prep_cancel64(sqe, op_data(OP_ACCEPT, 0, 0), 0);
		io_uring_sqe_set_data64(sqe, op_data(OP_CANCEL, 0, 0));
	}
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		conn *c = &s->conns[i];
		if (c->fd >= 0 && !c->close_submitted) {
			c->read_closed = true;
			cancel_recv(s, c);
		}
	}
}

static void handle_cqe(server *s, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	enum op_kind kind = op_kind_of(data);
	uint32_t slot = op_slot_of(data), gen = op_gen_of(data);
	switch (kind) {
	case OP_ACCEPT:
		on_accept(s, cqe);
		break;
	case OP_RECV:
	case OP_SEND: {
		conn *c = slot < s->conn_slots ? &s->conns[slot] : NULL;
		if (!c || c->fd < 0 || c->gen != gen) {
			/* Cannot happen: a slot is freed only when nothing of it is
			 * at the kernel. A provided buffer still goes back. */
			if (kind == OP_RECV && (cqe->flags & IORING_CQE_F_BUFFER)) {
				uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
				io_uring_buf_ring_add(s->buf_ring, s->buffers + (size_t)bid * RECV_BUFFER_SIZE,
						      RECV_BUFFER_SIZE, (unsigned short)bid,
						      io_uring_buf_ring_mask(RECV_BUFFER_COUNT), 0);
				io_uring_buf_ring_advance(s->buf_ring, 1);
			}
			break;
		}
		if (kind == OP_RECV)
			on_recv(s, c, cqe);
		else
			on_send(s, c, cqe->res);
		break;
	}
	case OP_COMMIT_EVENT:
		handlers_ack_durable(s);
		arm_eventfd(s, s->commit_fd, &s->commit_value, OP_COMMIT_EVENT);
		break;
	case OP_WORKER_EVENT:
		on_worker_done(s);
		arm_eventfd(s, s->worker_fd, &s->worker_value, OP_WORKER_EVENT);
		break;
	case OP_SUBMIT_EVENT:
		handlers_submit_done(s);
		arm_eventfd(s, s->submit_fd, &s->submit_value, OP_SUBMIT_EVENT);
		break;
	case OP_STOP_EVENT:
		if (!atomic_load(&s->stopping))
			begin_stop(s);
		break;
	case OP_TIMER:
		on_timer(s);
		arm_timer(s);
		break;
	case OP_CANCEL:
	case OP_CLOSE:
		break;
	}
}

int server_run(server *s)
{
	arm_accept(s);
	arm_eventfd(s, s->stop_fd, &s->stop_value, OP_STOP_EVENT);
	arm_eventfd(s, s->commit_fd, &s->commit_value, OP_COMMIT_EVENT);
	arm_eventfd(s, s->worker_fd, &s->worker_value, OP_WORKER_EVENT);
	arm_eventfd(s, s->submit_fd, &s->submit_value, OP_SUBMIT_EVENT);
	arm_timer(s);
	int slice_rc = latency_slice_set(s->config.latency_slice_us);
	if (slice_rc)
		log_warn("scheduler slice of %u us refused (%s): the loop and query threads keep the kernel's default",
			 s->config.latency_slice_us, strerror(-slice_rc));
	log_info("listening on %s (port %u); data in %s", s->config.listen, s->port, s->config.data_dir);
	export_schedule_go(s->schedule); /* its runs connect to this loop */
	for (;;) {
		int rc = io_uring_submit_and_wait(&s->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
			log_error("io_uring_submit_and_wait: %s", strerror(-rc));
			s->run_error = rc;
			break;
		}
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&s->ring, head, cqe)
		{
			handle_cqe(s, cqe);
			if (++n == LOOP_CQES_PER_PASS)
				break;
		}
		io_uring_cq_advance(&s->ring, n);
		/* Every ingest of this pass (and of passes the submitter was busy
		 * for): one group to the engine, one WAL record. */
		handlers_submit_pass(s);
		backpressure_update(s);
		conns_resume(s);
		log_flush(); /* the pass's log lines: one write */
		if (atomic_load(&s->stopping) && (drained(s) || server_now_us() > s->stop_deadline_us)) {
			if (!drained(s))
				log_error("stopping: gave up waiting after %d ms", SHUTDOWN_DRAIN_MS);
			break;
		}
	}
	conns_close_at_stop(s);
	return s->run_error;
}

int server_close(server *s, char *errmsg)
{
	if (!s)
		return 0;
	int rc = 0;
	/* Before the rest: its run in progress talks to this server, whose
	 * connections are closed by now, so it ends at once. */
	export_schedule_stop(s->schedule);
	if (s->submitter_started) { /* a group it holds is finished first */
		pthread_mutex_lock(&s->submit_lock);
		s->submit_stop = true;
		pthread_cond_signal(&s->submit_cond);
		pthread_mutex_unlock(&s->submit_lock);
		pthread_join(s->submitter, NULL);
	}
	if (s->committer_started) {
		pthread_mutex_lock(&s->commit_lock);
		s->commit_stop = true;
		pthread_cond_signal(&s->commit_cond);
		pthread_mutex_unlock(&s->commit_lock);
		pthread_join(s->committer, NULL);
	}
	worker_pool_stop(s->workers);
	metrics_close(s->metrics);
	if (s->ring.ring_fd > 0)
		io_uring_queue_exit(&s->ring);
	if (s->conns) {
		for (uint32_t i = 0; i < s->conn_slots; i++) {
			conn *c = &s->conns[i];
			if (c->fd >= 0) {
				input_drop(c->fd); /* no reset: the kernel still sends what it holds */
				close(c->fd);
			}
			frame_reader_free(&c->reader);
			free(c->stash);
			free(c->out);
			free(c->send_buf);
			free(c->spare);
		}
		free(s->conns);
	}
	ingest_queue_free(&s->pass);
	ingest_queue_free(&s->submitting);
	ingest_queue_free(&s->acks);
	free(s->submit_batches);
	if (s->buf_ring)
		munmap(s->buf_ring, RECV_BUFFER_COUNT * sizeof(struct io_uring_buf));
	free(s->buffers);
	if (s->tenants) {
		char terr[TALLY_ERRMSG_SIZE];
		if (tenants_commit(s->tenants, terr))
			log_error("tenant registry at shutdown: %s (the next start adds them from the store)", terr);
	}
	if (s->store) {
		int frc = tally_flush(s->store);
		if (frc) {
			rc = frc;
			char why[TALLY_ERRMSG_SIZE];
			tally_store_errmsg_copy(s->store, why, sizeof(why));
			server_fail(errmsg, rc, "flush at shutdown: %s (%s); the WAL still holds every acknowledged event",
				    tally_strerror(frc), why);
		}
		int crc = tally_store_close(s->store);
		if (crc && !rc) {
			rc = crc;
			server_fail(errmsg, rc, "closing the store: %s", tally_strerror(crc));
		}
	}
	keys_close(s->keys);
	tenants_close(s->tenants);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	if (s->commit_fd >= 0)
		close(s->commit_fd);
	if (s->worker_fd >= 0)
		close(s->worker_fd);
	if (s->submit_fd >= 0)
		close(s->submit_fd);
	pthread_mutex_destroy(&s->commit_lock);
	pthread_cond_destroy(&s->commit_cond);
	pthread_mutex_destroy(&s->submit_lock);
	pthread_cond_destroy(&s->submit_cond);
	free(s);
	return rc;
}
