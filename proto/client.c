/*
 * client.c — the protocol client (client.h).
 *
 * NOTES
 *
 * 1. In flight: every request sent is remembered (id, kind, event count
 *    for a batch) in a fixed table of TALLY_CLIENT_INFLIGHT_MAX entries
 *    until its response arrives. A response to nothing in flight means
 *    client and server disagree about the stream: the connection is dead
 *    (-EPROTO). The table also gives an ack the size of its batch, so an
 *    ack with the wrong number of results is caught here, not in a caller
 *    indexing past an array.
 *
 * 2. Sticky failure: the first transport or protocol error is kept in
 *    `failed` and returned by every later call. An Error with request id
 *    0 (about the connection: the server closes after it) is kept the same
 *    way as TALLY_CLIENT_REFUSED, with the Error in `error`.
 *
 * 3. Typed answers are detached from their Response: the oneof case is
 *    cleared before the Response is freed (protobuf-c frees only the
 *    selected member of a oneof), so the caller owns the sub-message and
 *    frees it with its own type's free_unpacked.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "client.h"
#include "usage.h"

#define CLIENT_READ_BYTES 65536
#define PROTOCOL_VERSION 1
#define PORT_MAX 65535

typedef struct inflight_entry {
	uint64_t id;
	int kind;        /* Tally__V1__Request__BodyCase */
	uint32_t events; /* of an ingest batch */
} inflight_entry;

struct tally_client {
	int fd;
	int failed;        /* sticky error (note 2) */
	uint64_t next_id;
	frame_reader reader;
	uint32_t send_limit; /* largest request body */
	uint8_t *in;       /* bytes read but not yet framed */
	size_t in_at, in_size;
	inflight_entry inflight[TALLY_CLIENT_INFLIGHT_MAX];
	uint32_t inflight_count, inflight_max;
	inflight_entry taken; /* the entry of the last response received */
	tally_client_error error;
	tally_session_info session;
};

int tally_client_from_fd(int fd, uint32_t frame_limit, tally_client **out)
{
	*out = NULL;
	tally_client *c = calloc(1, sizeof(*c));
	if (c)
		c->in = malloc(CLIENT_READ_BYTES);
	if (!c || !c->in) {
		free(c);
		return -ENOMEM;
	}
	c->fd = fd;
	c->next_id = 1;
	c->inflight_max = TALLY_CLIENT_INFLIGHT_MAX;
	frame_reader_init(&c->reader, frame_limit);
	c->send_limit = c->reader.limit;
	*out = c;
	return 0;
}

/* SO_RCVTIMEO and SO_SNDTIMEO of fd (0: wait forever). 0 or -errno. */
static int socket_timeout_set(int fd, uint32_t timeout_ms)
{
	struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

/* tally_client_connect with the socket's timeouts set before its connect
 * (Linux bounds a blocking connect by SO_SNDTIMEO: EINPROGRESS when it
 * runs out, reported as -ETIMEDOUT). */
static int client_connect(const char *host, const char *port, uint32_t timeout_ms,
			  tally_client **out, char *errmsg)
{
	*out = NULL;
	struct addrinfo hints, *list;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int g = getaddrinfo(host, port, &hints, &list);
	if (g) {
		if (errmsg)
			snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "resolve %s:%s: %s", host, port,
				 gai_strerror(g));
		return -EHOSTUNREACH;
	}
	int fd = -1, err = -EHOSTUNREACH;
	for (struct addrinfo *a = list; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (timeout_ms && (err = socket_timeout_set(fd, timeout_ms))) {
			close(fd);
			fd = -1;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
			err = errno == EINPROGRESS ? -ETIMEDOUT : -errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(list);
	if (fd < 0) {
		if (errmsg)
			snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "connect %s:%s: %s", host, port,
				 strerror(-err));
		return err;
	}
	int rc = tally_client_from_fd(fd, TALLY_CLIENT_RESPONSE_BYTES_MAX, out);
	if (rc) {
		close(fd);
		if (errmsg)
			snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "connect %s:%s: %s", host, port,
				 strerror(-rc));
		return rc;
	}
	(*out)->send_limit = FRAME_BYTES_MAX_DEFAULT; /* until Hello tells the server's */
	return 0;
}

int tally_client_connect(const char *host, const char *port, tally_client **out, char *errmsg)
{
	return client_connect(host, port, 0, out, errmsg);
}

void tally_client_close(tally_client *c)
{
	if (!c)
		return;
	close(c->fd);
	frame_reader_free(&c->reader);
	free(c->in);
	free(c);
}

static int parse_fail(char *errmsg, const char *server, const char *why)
{
	if (errmsg)
		snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "bad server address '%s': %s", server, why);
	return -EINVAL;
}

int tally_client_parse_server(const char *server, char *host, char *port, char *errmsg)
{
	host[0] = port[0] = '\0';
	if (!server || !server[0])
		return parse_fail(errmsg, server ? server : "", "empty (want HOST:PORT)");
	const char *host_start = server, *host_end, *rest;
	if (server[0] == '[') {
		host_start = server + 1;
		host_end = strchr(host_start, ']');
		if (!host_end)
			return parse_fail(errmsg, server, "no ']' after the IPv6 address");
		rest = host_end + 1;
		if (rest[0] && rest[0] != ':')
			return parse_fail(errmsg, server, "want [IPV6]:PORT");
	} else {
		host_end = strchr(server, ':');
		if (host_end && strchr(host_end + 1, ':'))
			return parse_fail(errmsg, server, "an IPv6 address needs brackets: [ADDRESS]:PORT");
		if (!host_end)
			host_end = server + strlen(server);
		rest = host_end;
	}
	size_t host_len = (size_t)(host_end - host_start);
	if (host_len == 0)
		return parse_fail(errmsg, server, "empty host");
	if (host_len >= TALLY_CLIENT_HOST_SIZE)
		return parse_fail(errmsg, server, "host name too long");
	const char *port_text = rest[0] == ':' ? rest + 1 : TALLY_CLIENT_PORT_DEFAULT;
	long value = 0;
	size_t digits = 0;
	for (const char *p = port_text; *p; p++, digits++) {
		if (*p < '0' || *p > '9' || value > PORT_MAX)
			return parse_fail(errmsg, server, "the port must be a number from 1 to 65535");
		value = value * 10 + (*p - '0');
	}
	if (digits == 0 || value < 1 || value > PORT_MAX)
		return parse_fail(errmsg, server, "the port must be a number from 1 to 65535");
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	snprintf(port, TALLY_CLIENT_PORT_SIZE, "%ld", value);
	return 0;
}

int tally_client_set_timeout(tally_client *c, uint32_t timeout_ms)
{
	return socket_timeout_set(c->fd, timeout_ms);
}

/* A socket error as the client reports it: a timeout is -ETIMEDOUT. */
static int socket_error(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK ? -ETIMEDOUT : -e;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return socket_error(errno);
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int tally_client_send(tally_client *c, Tally__V1__Request *req, uint64_t *id)
{
	if (c->failed)
		return c->failed;
	if (c->inflight_count >= c->inflight_max)
		return -EAGAIN;
	req->request_id = c->next_id++;
	size_t size = tally__v1__request__get_packed_size(req);
	if (size > c->send_limit)
		return -EMSGSIZE;
	uint8_t *buf = malloc(FRAME_HEADER_SIZE + size);
	if (!buf)
		return -ENOMEM;
	frame_header_put(buf, (uint32_t)size);
	tally__v1__request__pack(req, buf + FRAME_HEADER_SIZE);
	int rc = write_all(c->fd, buf, FRAME_HEADER_SIZE + size);
	free(buf);
	if (rc)
		return c->failed = rc;
	c->inflight[c->inflight_count++] = (inflight_entry){
		req->request_id, (int)req->body_case,
		req->body_case == TALLY__V1__REQUEST__BODY_INGEST && req->ingest
			? (uint32_t)req->ingest->n_time_us
			: 0,
	};
	if (id)
		*id = req->request_id;
	return 0;
}

/* Removes the in-flight entry of id into c->taken; false when there is none. */
static bool inflight_take(tally_client *c, uint64_t id)
{
	for (uint32_t i = 0; i < c->inflight_count; i++)
		if (c->inflight[i].id == id) {
			c->taken = c->inflight[i];
			c->inflight[i] = c->inflight[--c->inflight_count];
			return true;
		}
	return false;
}

int tally_client_recv(tally_client *c, Tally__V1__Response **out)
{
	*out = NULL;
	if (c->failed)
		return c->failed;
	for (;;) {
		const uint8_t *p = c->in + c->in_at;
		size_t n = c->in_size - c->in_at;
		int st = frame_reader_feed(&c->reader, &p, &n);
		c->in_at = c->in_size - n;
		if (st == FRAME_TOO_LARGE)
			return c->failed = -EMSGSIZE;
		if (st == FRAME_NO_MEMORY)
			return c->failed = -ENOMEM;
		if (st == FRAME_READY) {
			uint32_t size;
			const uint8_t *body = frame_reader_frame(&c->reader, &size);
			Tally__V1__Response *resp = tally__v1__response__unpack(NULL, size, body);
			frame_reader_next(&c->reader);
			if (!resp)
				return c->failed = -EBADMSG;
			c->taken = (inflight_entry){0, 0, 0};
			if (resp->request_id != 0 && !inflight_take(c, resp->request_id)) {
				tally__v1__response__free_unpacked(resp, NULL);
				return c->failed = -EPROTO;
			}
			*out = resp;
			return 0;
		}
		ssize_t r = recv(c->fd, c->in, CLIENT_READ_BYTES, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return c->failed = r == 0 ? -ECONNRESET : socket_error(errno);
		c->in_at = 0;
		c->in_size = (size_t)r;
	}
}

uint32_t tally_client_inflight(const tally_client *c)
{
	return c->inflight_count;
}

int tally_client_call(tally_client *c, Tally__V1__Request *req, Tally__V1__Response **out)
{
	*out = NULL;
	if (c->failed)
		return c->failed;
	if (c->inflight_count)
		return -EBUSY;
	uint64_t id;
	int rc = tally_client_send(c, req, &id);
	if (rc)
		return rc;
	Tally__V1__Response *resp;
	if ((rc = tally_client_recv(c, &resp)))
		return rc;
	/* recv accepts only ids in flight, and only this one is. */
	if (resp->request_id != id && resp->request_id != 0) {
		tally__v1__response__free_unpacked(resp, NULL);
		return c->failed = -EPROTO;
	}
	*out = resp;
	return 0;
}

/* ---- errors ---------------------------------------------------------------- */

const tally_client_error *tally_client_last_error(const tally_client *c)
{
	return &c->error;
}

const char *tally_client_error_code_name(int code)
{
	const ProtobufCEnumValue *v =
		protobuf_c_enum_descriptor_get_value(&tally__v1__error__code__descriptor, code);
	return v && code != TALLY__V1__ERROR__CODE__CODE_UNSPECIFIED ? v->name : "UNKNOWN";
}

const char *tally_client_strerror(int rc)
{
	switch (rc) {
	case 0: return "success";
	case TALLY_CLIENT_REFUSED: return "refused by the server";
	case -ECONNRESET: return "the server closed the connection";
	case -ETIMEDOUT: return "no answer from the server in time";
	case -EPROTO: return "the server's answer broke the protocol (wrong kind, id or size)";
	case -EBADMSG: return "the server sent a frame that is not a response";
	case -EMSGSIZE: return "message over the frame limit";
	case -EAGAIN: return "too many requests in flight";
	case -E2BIG: return "batch over the server's event limit";
	case -EBUSY: return "other requests are in flight on this connection";
	default: return rc < 0 ? strerror(-rc) : "unknown result";
	}
}

/*
 * Keeps the Error of resp (which must be one) in c->error; an Error about
 * the connection makes the refusal sticky (note 2). Returns
 * TALLY_CLIENT_REFUSED.
 */
static int error_keep(tally_client *c, const Tally__V1__Response *resp)
{
	const Tally__V1__Error *e = resp->error;
	c->error.request_id = resp->request_id;
	c->error.code = (int)e->code;
	c->error.retry_after_ms = e->retry_after_ms;
	snprintf(c->error.message, sizeof(c->error.message), "%s",
		 e->message && e->message[0] ? e->message : "(no message)");
	if (resp->request_id == 0)
		c->failed = TALLY_CLIENT_REFUSED;
	return TALLY_CLIENT_REFUSED;
}

/* Checks that resp answers its request with `want` or an Error. 0,
 * TALLY_CLIENT_REFUSED, or -EPROTO (final). */
static int answer_check(tally_client *c, const Tally__V1__Response *resp, int want)
{
	if (resp->body_case == TALLY__V1__RESPONSE__BODY_ERROR && resp->error)
		return error_keep(c, resp);
	if (resp->request_id == 0 || (int)resp->body_case != want)
		return c->failed = -EPROTO;
	return 0;
}

/* One blocking request whose answer must be `want`: 0 with *out, or the
 * error (the response freed). */
static int call_expect(tally_client *c, Tally__V1__Request *req, int want, Tally__V1__Response **out)
{
	*out = NULL;
	Tally__V1__Response *resp;
	int rc = tally_client_call(c, req, &resp);
	if (rc)
		return rc;
	if ((rc = answer_check(c, resp, want))) {
		tally__v1__response__free_unpacked(resp, NULL);
		return rc;
	}
	*out = resp;
	return 0;
}

/* Frees resp but its selected oneof member, which the caller now owns
 * (note 3). */
static void response_detach(Tally__V1__Response *resp)
{
	resp->body_case = TALLY__V1__RESPONSE__BODY__NOT_SET;
	tally__v1__response__free_unpacked(resp, NULL);
}

/*
 * A blocking call whose answer is the oneof member `member` of the
 * Response: sets rc, and on 0 hands the member to *out (detached, note 3)
 * or, when out is NULL, frees it; *out is NULL on failure. A macro because each call's out pointer
 * has its own type.
 */
#define CALL_TAKE(rc, c, req, want, member, out)                                 \
	do {                                                                     \
		Tally__V1__Response *resp_;                                      \
		if (out)                                                         \
			*(out) = NULL;                                           \
		(rc) = call_expect((c), (req), (want), &resp_);                   \
		if ((rc) == 0 && (out)) {                                         \
			*(out) = resp_->member;                                   \
			response_detach(resp_);                                   \
		} else if ((rc) == 0) {                                           \
			tally__v1__response__free_unpacked(resp_, NULL);          \
		}                                                                \
	} while (0)

/* ---- session ---------------------------------------------------------------- */

static void text_copy(char *out, size_t size, const char *text)
{
	snprintf(out, size, "%s", text ? text : "");
}

int tally_client_hello(tally_client *c, const char *api_key, const char *client_name,
		       Tally__V1__Response **out, char *errmsg)
{
	*out = NULL;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__Hello hello = TALLY__V1__HELLO__INIT;
	hello.api_key = (char *)api_key;
	hello.client = (char *)(client_name ? client_name : "");
	hello.protocol_version = PROTOCOL_VERSION;
	req.body_case = TALLY__V1__REQUEST__BODY_HELLO;
	req.hello = &hello;
	Tally__V1__Response *resp;
	int rc = call_expect(c, &req, TALLY__V1__RESPONSE__BODY_HELLO, &resp);
	if (rc == TALLY_CLIENT_REFUSED && errmsg)
		snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "%s", c->error.message);
	else if (rc == -EPROTO && errmsg)
		snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "the server answered Hello with something else");
	if (rc)
		return rc;
	const Tally__V1__HelloOk *ok = resp->hello;
	tally_session_info *s = &c->session;
	memset(s, 0, sizeof(*s));
	text_copy(s->tenant, sizeof(s->tenant), ok->tenant);
	s->admin = ok->admin;
	text_copy(s->server_version, sizeof(s->server_version), ok->server_version);
	s->protocol_version = ok->protocol_version;
	if (ok->limits) {
		s->limits = (tally_client_limits){
			ok->limits->frame_bytes_max, ok->limits->batch_events_max,
			ok->limits->inflight_requests_max, ok->limits->query_rows_max,
			ok->limits->list_events_max,
		};
	}
	if (s->limits.frame_bytes_max) {
		c->send_limit = s->limits.frame_bytes_max;
		/* The server answers up to its own frame limit (a DailyUsage
		 * page fills it): take that much, up to what any server may
		 * set. */
		uint32_t answers = s->limits.frame_bytes_max < TALLY_CLIENT_FRAME_BYTES_CEILING
					   ? s->limits.frame_bytes_max
					   : TALLY_CLIENT_FRAME_BYTES_CEILING;
		if (answers > c->reader.limit)
			c->reader.limit = answers;
	}
	if (s->limits.inflight_requests_max && s->limits.inflight_requests_max < TALLY_CLIENT_INFLIGHT_MAX)
		c->inflight_max = s->limits.inflight_requests_max;
	*out = resp;
	return 0;
}

int tally_client_open(const char *server, const char *api_key, const char *client_name,
		      tally_client **out, tally_session_info *info, char *errmsg)
{
	return tally_client_open_within(server, api_key, client_name, 0, out, info, errmsg);
}

int tally_client_open_within(const char *server, const char *api_key, const char *client_name,
			     uint32_t timeout_ms, tally_client **out, tally_session_info *info,
			     char *errmsg)
{
	*out = NULL;
	char host[TALLY_CLIENT_HOST_SIZE], port[TALLY_CLIENT_PORT_SIZE];
	int rc = tally_client_parse_server(server, host, port, errmsg);
	if (rc)
		return rc;
	tally_client *c;
	if ((rc = client_connect(host, port, timeout_ms, &c, errmsg)))
		return rc;
	Tally__V1__Response *resp;
	char why[TALLY_CLIENT_ERRMSG_SIZE] = "";
	rc = tally_client_hello(c, api_key, client_name, &resp, why);
	if (rc) {
		/* Only an authentication error is about the key: a server out
		 * of memory, say, refuses the Hello for a while. */
		bool key = c->error.code == TALLY__V1__ERROR__CODE__UNAUTHENTICATED ||
			   c->error.code == TALLY__V1__ERROR__CODE__PERMISSION_DENIED;
		if (errmsg && rc == TALLY_CLIENT_REFUSED)
			snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "%s refused the %s: %s (%s)", server,
				 key ? "key" : "hello", c->error.message,
				 tally_client_error_code_name(c->error.code));
		else if (errmsg)
			snprintf(errmsg, TALLY_CLIENT_ERRMSG_SIZE, "hello to %s: %s", server,
				 why[0] ? why : tally_client_strerror(rc));
		tally_client_close(c);
		return rc;
	}
	tally__v1__response__free_unpacked(resp, NULL);
	if (info)
		*info = c->session;
	*out = c;
	return 0;
}

const tally_session_info *tally_client_session(const tally_client *c)
{
	return &c->session;
}

/* ---- ingest ------------------------------------------------------------------- */

int tally_client_ingest_send(tally_client *c, const Tally__V1__IngestBatch *batch, uint64_t *id)
{
	if (c->failed)
		return c->failed;
	uint32_t limit = c->session.limits.batch_events_max;
	if (limit && batch->n_time_us > limit)
		return -E2BIG;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_INGEST;
	req.ingest = (Tally__V1__IngestBatch *)batch; /* packed, never written */
	return tally_client_send(c, &req, id);
}

/* The ack in resp matches its batch of `events` events (note 1). */
static bool ack_consistent(const Tally__V1__IngestAck *a, uint32_t events)
{
	if (a->n_result != events || (a->n_reason != 0 && a->n_reason != events))
		return false;
	uint32_t counts[4] = {0, 0, 0, 0};
	for (size_t i = 0; i < a->n_result; i++) {
		if ((unsigned)a->result[i] > TALLY__V1__INGEST_ACK__RESULT__REJECTED)
			return false;
		counts[a->result[i]]++;
	}
	return counts[0] == a->accepted && counts[1] == a->duplicate && counts[2] == a->conflict &&
	       counts[3] == a->rejected && (a->rejected == 0 || a->n_reason == events);
}

int tally_client_ingest_recv(tally_client *c, tally_ingest_ack *ack)
{
	memset(ack, 0, sizeof(*ack));
	if (c->failed)
		return c->failed;
	if (c->inflight_count == 0)
		return -EBUSY;
	for (uint32_t i = 0; i < c->inflight_count; i++)
		if (c->inflight[i].kind != TALLY__V1__REQUEST__BODY_INGEST)
			return -EBUSY;
	Tally__V1__Response *resp;
	int rc = tally_client_recv(c, &resp);
	if (rc)
		return rc;
	ack->request_id = resp->request_id;
	ack->event_count = c->taken.events;
	if ((rc = answer_check(c, resp, TALLY__V1__RESPONSE__BODY_INGEST))) {
		tally__v1__response__free_unpacked(resp, NULL);
		return rc;
	}
	const Tally__V1__IngestAck *a = resp->ingest;
	if (!ack_consistent(a, ack->event_count)) {
		tally__v1__response__free_unpacked(resp, NULL);
		return c->failed = -EPROTO;
	}
	ack->accepted = a->accepted;
	ack->duplicate = a->duplicate;
	ack->conflict = a->conflict;
	ack->rejected = a->rejected;
	ack->result = a->result;
	ack->reason = a->n_reason ? a->reason : NULL;
	ack->response = resp;
	return 0;
}

void tally_ingest_ack_free(tally_ingest_ack *ack)
{
	if (ack->response)
		tally__v1__response__free_unpacked(ack->response, NULL);
	memset(ack, 0, sizeof(*ack));
}

int tally_client_ingest(tally_client *c, const Tally__V1__IngestBatch *batch, tally_ingest_ack *ack)
{
	memset(ack, 0, sizeof(*ack));
	if (c->failed)
		return c->failed;
	if (c->inflight_count)
		return -EBUSY;
	int rc = tally_client_ingest_send(c, batch, NULL);
	if (rc)
		return rc;
	return tally_client_ingest_recv(c, ack);
}

/* ---- blocking calls ------------------------------------------------------------ */

/* Each row is as the query asked (see client.h). */
static bool query_result_consistent(const Tally__V1__Query *q, const Tally__V1__QueryResult *r)
{
	for (size_t i = 0; i < r->n_rows; i++) {
		const Tally__V1__Row *row = r->rows[i];
		if (row->n_group != q->n_group_by || row->n_quantile_ms != q->n_quantiles ||
		    (row->n_status_count != 0 && row->n_status_count != 4))
			return false;
	}
	return true;
}

int tally_client_query(tally_client *c, const Tally__V1__Query *query, Tally__V1__QueryResult **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_QUERY;
	req.query = (Tally__V1__Query *)query; /* packed, never written */
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_QUERY, query, out);
	if (rc == 0 && !query_result_consistent(query, *out)) {
		tally__v1__query_result__free_unpacked(*out, NULL);
		*out = NULL;
		return c->failed = -EPROTO;
	}
	return rc;
}

int tally_client_list_events(tally_client *c, const Tally__V1__ListEvents *request,
			     Tally__V1__EventPage **out)
{
	*out = NULL;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_LIST_EVENTS;
	req.list_events = (Tally__V1__ListEvents *)request;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_EVENTS, events, out);
	return rc;
}

int tally_client_create_tenant(tally_client *c, const char *name, Tally__V1__TenantCreated **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__CreateTenant body = TALLY__V1__CREATE_TENANT__INIT;
	body.name = (char *)name;
	req.body_case = TALLY__V1__REQUEST__BODY_CREATE_TENANT;
	req.create_tenant = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_TENANT_CREATED, tenant_created, out);
	return rc;
}

/* Moves a page's *page_n entries onto the end of *all (*n of them) and
 * sets *page_n to 0, so that freeing the page frees none of them. 0, or
 * -ENOMEM (nothing moved). */
static int entries_take(void ***all, size_t *n, void **entries, size_t *page_n)
{
	void **grown = *page_n ? realloc(*all, sizeof(**all) * (*n + *page_n)) : *all;
	if (*page_n && !grown)
		return -ENOMEM;
	if (*page_n)
		memcpy(grown + *n, entries, sizeof(*entries) * *page_n);
	*all = grown;
	*n += *page_n;
	*page_n = 0;
	return 0;
}

/* ListTenants and ListKeys, asked for a page at a time. */
typedef union list_body {
	Tally__V1__ListTenants tenants;
	Tally__V1__ListKeys keys;
} list_body;

/* Where a page's message keeps its entries, their count and next_after. */
typedef struct list_parts {
	void ***entries;
	size_t *count;
	char *next_after;
} list_parts;

typedef struct list_kind {
	int want; /* the response's body case */
	/* Fills req (and body) for the page after `after`. */
	void (*ask)(Tally__V1__Request *req, list_body *body, const char *after, const char *tenant);
	ProtobufCMessage *(*member)(Tally__V1__Response *resp); /* the page in resp */
	list_parts (*parts)(ProtobufCMessage *page);
} list_kind;

static void tenants_ask(Tally__V1__Request *req, list_body *body, const char *after,
			const char *tenant)
{
	(void)tenant;
	tally__v1__list_tenants__init(&body->tenants);
	body->tenants.after = (char *)after;
	body->tenants.limit = TALLY_CLIENT_LIST_PAGE;
	req->body_case = TALLY__V1__REQUEST__BODY_LIST_TENANTS;
	req->list_tenants = &body->tenants;
}

static ProtobufCMessage *tenants_member(Tally__V1__Response *resp)
{
	return &resp->tenants->base;
}

static list_parts tenants_parts(ProtobufCMessage *page)
{
	Tally__V1__TenantList *l = (Tally__V1__TenantList *)page;
	return (list_parts){(void ***)&l->tenants, &l->n_tenants, l->next_after};
}

static void keys_ask(Tally__V1__Request *req, list_body *body, const char *after,
		     const char *tenant)
{
	tally__v1__list_keys__init(&body->keys);
	body->keys.tenant = (char *)(tenant ? tenant : "");
	body->keys.after = (char *)after;
	body->keys.limit = TALLY_CLIENT_LIST_PAGE;
	req->body_case = TALLY__V1__REQUEST__BODY_LIST_KEYS;
	req->list_keys = &body->keys;
}

static ProtobufCMessage *keys_member(Tally__V1__Response *resp)
{
	return &resp->keys->base;
}

static list_parts keys_parts(ProtobufCMessage *page)
{
	Tally__V1__KeyList *l = (Tally__V1__KeyList *)page;
	return (list_parts){(void ***)&l->keys, &l->n_keys, l->next_after};
}

static const list_kind TENANT_PAGES = {TALLY__V1__RESPONSE__BODY_TENANTS, tenants_ask,
				       tenants_member, tenants_parts};
static const list_kind KEY_PAGES = {TALLY__V1__RESPONSE__BODY_KEYS, keys_ask, keys_member,
				    keys_parts};

/* Every page of a list of `kind`, as one message: the first page's, with
 * the later pages' entries moved into it and its next_after emptied. 0
 * with *out, or a failure (nothing kept). */
static int list_all(tally_client *c, const list_kind *kind, const char *tenant,
		    ProtobufCMessage **out)
{
	*out = NULL;
	ProtobufCMessage *all = NULL;
	char after[128] = "";
	bool more = true;
	while (more) {
		Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
		list_body body;
		kind->ask(&req, &body, after, tenant);
		Tally__V1__Response *resp;
		int rc = call_expect(c, &req, kind->want, &resp);
		if (rc) {
			if (all)
				protobuf_c_message_free_unpacked(all, NULL);
			return rc;
		}
		ProtobufCMessage *page = kind->member(resp);
		response_detach(resp);
		list_parts p = kind->parts(page);
		more = p.next_after && p.next_after[0];
		if (more && (!*p.count || strlen(p.next_after) >= sizeof(after))) {
			/* An empty page that says more follow would be asked again forever. */
			protobuf_c_message_free_unpacked(page, NULL);
			if (all)
				protobuf_c_message_free_unpacked(all, NULL);
			return c->failed = -EPROTO;
		}
		if (more)
			snprintf(after, sizeof(after), "%s", p.next_after);
		if (!all) {
			all = page;
			continue;
		}
		list_parts a = kind->parts(all);
		rc = entries_take(a.entries, a.count, *p.entries, p.count);
		protobuf_c_message_free_unpacked(page, NULL);
		if (rc) {
			protobuf_c_message_free_unpacked(all, NULL);
			return rc;
		}
	}
	list_parts a = kind->parts(all);
	if (a.next_after[0])
		a.next_after[0] = 0; /* the first page's, malloc-ed: one list now */
	*out = all;
	return 0;
}

int tally_client_list_tenants(tally_client *c, Tally__V1__TenantList **out)
{
	return list_all(c, &TENANT_PAGES, NULL, (ProtobufCMessage **)out);
}

int tally_client_set_tenant_state(tally_client *c, const char *name, bool suspended,
				  Tally__V1__TenantStateSet **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__SetTenantState body = TALLY__V1__SET_TENANT_STATE__INIT;
	body.name = (char *)name;
	body.suspended = suspended;
	req.body_case = TALLY__V1__REQUEST__BODY_SET_TENANT_STATE;
	req.set_tenant_state = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_TENANT_STATE, tenant_state, out);
	return rc;
}

int tally_client_issue_key(tally_client *c, const char *tenant, Tally__V1__KeyIssued **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__IssueKey body = TALLY__V1__ISSUE_KEY__INIT;
	body.tenant = (char *)(tenant ? tenant : "");
	req.body_case = TALLY__V1__REQUEST__BODY_ISSUE_KEY;
	req.issue_key = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_KEY_ISSUED, key_issued, out);
	return rc;
}

int tally_client_list_keys(tally_client *c, const char *tenant, Tally__V1__KeyList **out)
{
	return list_all(c, &KEY_PAGES, tenant, (ProtobufCMessage **)out);
}

int tally_client_revoke_key(tally_client *c, const char *key_id, Tally__V1__KeyRevoked **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__RevokeKey body = TALLY__V1__REVOKE_KEY__INIT;
	body.key_id = (char *)key_id;
	req.body_case = TALLY__V1__REQUEST__BODY_REVOKE_KEY;
	req.revoke_key = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_KEY_REVOKED, key_revoked, out);
	return rc;
}

int tally_client_stats(tally_client *c, Tally__V1__Stats **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__StatsRequest body = TALLY__V1__STATS_REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_STATS;
	req.stats = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_STATS, stats, out);
	return rc;
}

int tally_client_daily_usage(tally_client *c, int32_t day, const char *after_tenant,
			     const Tally__V1__UsageKey *after_row, uint32_t tenant_limit,
			     Tally__V1__DailyUsagePage **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__DailyUsage body = TALLY__V1__DAILY_USAGE__INIT;
	body.day = day;
	body.after_tenant = (char *)(after_tenant ? after_tenant : "");
	body.after_row = (Tally__V1__UsageKey *)after_row;
	body.tenant_limit = tenant_limit;
	req.body_case = TALLY__V1__REQUEST__BODY_DAILY_USAGE;
	req.daily_usage = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_DAILY_USAGE, daily_usage, out);
	if (!rc && usage_rows_checksum((*out)->rows, (*out)->n_rows) != (*out)->checksum) {
		/* The page's rows do not add up to the checksum the server computed. */
		tally__v1__daily_usage_page__free_unpacked(*out, NULL);
		*out = NULL;
		return c->failed = -EPROTO;
	}
	return rc;
}

int tally_client_changed_days(tally_client *c, uint64_t since, Tally__V1__ChangedDaysResult **out)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__ChangedDays body = TALLY__V1__CHANGED_DAYS__INIT;
	body.since = since;
	req.body_case = TALLY__V1__REQUEST__BODY_CHANGED_DAYS;
	req.changed_days = &body;
	int rc;
	CALL_TAKE(rc, c, &req, TALLY__V1__RESPONSE__BODY_CHANGED_DAYS, changed_days, out);
	if (!rc && (*out)->n_days != (*out)->n_change) {
		tally__v1__changed_days_result__free_unpacked(*out, NULL);
		*out = NULL;
		return c->failed = -EPROTO;
	}
	return rc;
}

int tally_client_ping(tally_client *c, const void *payload, size_t size)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__Ping body = TALLY__V1__PING__INIT;
	body.payload = (ProtobufCBinaryData){size, (uint8_t *)payload};
	req.body_case = TALLY__V1__REQUEST__BODY_PING;
	req.ping = &body;
	Tally__V1__Response *resp;
	int rc = call_expect(c, &req, TALLY__V1__RESPONSE__BODY_PONG, &resp);
	if (rc)
		return rc;
	const ProtobufCBinaryData *echo = &resp->pong->payload;
	bool same = echo->len == size && (size == 0 || memcmp(echo->data, payload, size) == 0);
	tally__v1__response__free_unpacked(resp, NULL);
	return same ? 0 : (c->failed = -EPROTO);
}
