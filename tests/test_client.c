/*
 * test_client.c — proto/client.c against a scripted peer on a socketpair
 * (and once over loopback TCP): framing, request ids, pipelining with
 * responses out of order, the errors of a peer that closes, sends garbage
 * or announces a huge frame; then every convenience call: the request it
 * sends, the answer it decodes, the server's Error surfaced with its code,
 * message and retry_after_ms, and answers of the wrong id, kind or size
 * refused as protocol errors.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "builder.h"
#include "client.h"
#include "support/peer.h"
#include "usage.h"

/* The scripted peer: answers Hello, then collects `pings` Pings and answers
 * them in reverse order, then closes. */
typedef struct peer {
	int fd;
	int pings;
} peer;

static void *peer_main(void *arg)
{
	peer *pe = arg;
	frame_reader r;
	frame_reader_init(&r, 0);
	static uint8_t buf[4096];
	size_t at = 0, have = 0;
	Tally__V1__Request *hello = peer_recv(pe->fd, &r, buf, sizeof(buf), &at, &have);
	if (hello && hello->body_case == TALLY__V1__REQUEST__BODY_HELLO) {
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		Tally__V1__HelloOk ok = TALLY__V1__HELLO_OK__INIT;
		ok.tenant = strcmp(hello->hello->api_key, "tk_good") == 0 ? "acme" : "";
		ok.protocol_version = 1;
		resp.request_id = hello->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_HELLO;
		resp.hello = &ok;
		peer_send(pe->fd, &resp);
	}
	tally__v1__request__free_unpacked(hello, NULL);
	Tally__V1__Request *pings[16];
	for (int i = 0; i < pe->pings; i++)
		pings[i] = peer_recv(pe->fd, &r, buf, sizeof(buf), &at, &have);
	for (int i = pe->pings - 1; i >= 0; i--) {
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		Tally__V1__Pong pong = TALLY__V1__PONG__INIT;
		pong.payload = pings[i]->ping->payload;
		resp.request_id = pings[i]->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_PONG;
		resp.pong = &pong;
		peer_send(pe->fd, &resp);
		tally__v1__request__free_unpacked(pings[i], NULL);
	}
	frame_reader_free(&r);
	close(pe->fd);
	return NULL;
}

/* Description: Hello is answered with the peer's HelloOk; three pipelined
 * Pings come back in reverse order and are matched by request id with
 * their payloads; after the peer closes, recv reports -ECONNRESET, and
 * every call after that too. */
Test(client, hello_and_pipelined_pings_matched_by_id)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	peer pe = {sv[1], 3};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, peer_main, &pe), 0);
	tally_client *c;
	cr_assert_eq(tally_client_from_fd(sv[0], 0, &c), 0);

	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__Hello hello = TALLY__V1__HELLO__INIT;
	hello.api_key = "tk_good";
	req.body_case = TALLY__V1__REQUEST__BODY_HELLO;
	req.hello = &hello;
	uint64_t hello_id;
	cr_assert_eq(tally_client_send(c, &req, &hello_id), 0);
	Tally__V1__Response *resp;
	cr_assert_eq(tally_client_recv(c, &resp), 0);
	cr_expect_eq(resp->request_id, hello_id);
	cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_HELLO);
	cr_expect_str_eq(resp->hello->tenant, "acme");
	tally__v1__response__free_unpacked(resp, NULL);

	uint64_t ids[3];
	const char *payloads[3] = {"one", "two", "three"};
	for (int i = 0; i < 3; i++) {
		Tally__V1__Request p = TALLY__V1__REQUEST__INIT;
		Tally__V1__Ping ping = TALLY__V1__PING__INIT;
		ping.payload = (ProtobufCBinaryData){strlen(payloads[i]), (uint8_t *)payloads[i]};
		p.body_case = TALLY__V1__REQUEST__BODY_PING;
		p.ping = &ping;
		cr_assert_eq(tally_client_send(c, &p, &ids[i]), 0);
	}
	cr_expect(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != hello_id);
	for (int k = 0; k < 3; k++) {
		cr_assert_eq(tally_client_recv(c, &resp), 0);
		cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_PONG);
		int i = resp->request_id == ids[0] ? 0 : resp->request_id == ids[1] ? 1 : 2;
		cr_assert_eq(resp->request_id, ids[i]);
		cr_expect_eq(i, 2 - k, "reverse order");
		cr_expect_eq(resp->pong->payload.len, strlen(payloads[i]));
		cr_expect_eq(memcmp(resp->pong->payload.data, payloads[i], strlen(payloads[i])), 0);
		tally__v1__response__free_unpacked(resp, NULL);
	}
	cr_expect_eq(tally_client_recv(c, &resp), -ECONNRESET);
	cr_expect_null(resp);
	cr_expect_eq(tally_client_recv(c, &resp), -ECONNRESET, "sticky");
	pthread_join(th, NULL);
	tally_client_close(c);
}

/* Description: a frame that is not a Response is -EBADMSG, a length over
 * the client's limit is -EMSGSIZE (without reading the body), and both
 * are final. */
Test(client, garbage_and_oversize_frames_are_errors)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	tally_client *c;
	cr_assert_eq(tally_client_from_fd(sv[0], 1024, &c), 0);
	uint8_t bad[FRAME_HEADER_SIZE + 3];
	frame_header_put(bad, 3);
	memcpy(bad + FRAME_HEADER_SIZE, "\xff\xff\xff", 3);
	cr_assert_eq(write(sv[1], bad, sizeof(bad)), (ssize_t)sizeof(bad));
	Tally__V1__Response *resp;
	cr_expect_eq(tally_client_recv(c, &resp), -EBADMSG);
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	cr_expect_eq(tally_client_send(c, &req, NULL), -EBADMSG, "final");
	tally_client_close(c);
	close(sv[1]);

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	cr_assert_eq(tally_client_from_fd(sv[0], 1024, &c), 0);
	uint8_t huge[FRAME_HEADER_SIZE];
	frame_header_put(huge, UINT32_MAX);
	cr_assert_eq(write(sv[1], huge, sizeof(huge)), (ssize_t)sizeof(huge));
	cr_expect_eq(tally_client_recv(c, &resp), -EMSGSIZE);
	tally_client_close(c);
	close(sv[1]);
}

/* A peer that answers Hello with an Error for any key but "tk_good". */
static void *refusing_peer_main(void *arg)
{
	int fd = *(int *)arg;
	frame_reader r;
	frame_reader_init(&r, 0);
	static uint8_t buf[4096];
	size_t at = 0, have = 0;
	Tally__V1__Request *req = peer_recv(fd, &r, buf, sizeof(buf), &at, &have);
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__Error error = TALLY__V1__ERROR__INIT;
	error.code = TALLY__V1__ERROR__CODE__UNAUTHENTICATED;
	error.message = "unknown or revoked key";
	resp.request_id = req ? req->request_id : 0;
	resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
	resp.error = &error;
	peer_send(fd, &resp);
	tally__v1__request__free_unpacked(req, NULL);
	frame_reader_free(&r);
	close(fd);
	return NULL;
}

/* Description: tally_client_hello returns the HelloOk of a good key, and
 * TALLY_CLIENT_REFUSED with the server's message for a refused one. */
Test(client, hello_accepted_and_refused)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	peer pe = {sv[1], 0};
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, peer_main, &pe), 0);
	tally_client *c;
	cr_assert_eq(tally_client_from_fd(sv[0], 0, &c), 0);
	Tally__V1__Response *resp;
	char err[256] = "";
	cr_assert_eq(tally_client_hello(c, "tk_good", "test", &resp, err), 0, "%s", err);
	cr_expect_str_eq(resp->hello->tenant, "acme");
	tally__v1__response__free_unpacked(resp, NULL);
	pthread_join(th, NULL);
	tally_client_close(c);

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int peer_fd = sv[1];
	cr_assert_eq(pthread_create(&th, NULL, refusing_peer_main, &peer_fd), 0);
	cr_assert_eq(tally_client_from_fd(sv[0], 0, &c), 0);
	cr_expect_eq(tally_client_hello(c, "tk_bad", "test", &resp, err), TALLY_CLIENT_REFUSED);
	cr_expect_null(resp);
	cr_expect_str_eq(err, "unknown or revoked key");
	pthread_join(th, NULL);
	tally_client_close(c);
}

/* ---- the convenience calls, against a scripted peer ---------------------------- */

/*
 * A scripted peer: reads up to `requests` requests (keeping each in got[]
 * for the test to inspect after the join) and after each calls respond,
 * which may answer at once, later (out of order), wrongly, or never. With
 * listen_fd set it first accepts one TCP connection.
 */
#define SCRIPT_REQUESTS_MAX 16
typedef struct script script;
struct script {
	int fd;
	int listen_fd;
	int requests;
	void (*respond)(script *s, int index);
	Tally__V1__Request *got[SCRIPT_REQUESTS_MAX];
	int got_count;
	tally_client_limits limits; /* what Hello answers */
	const char *tenant;
};

static void *script_main(void *arg)
{
	script *s = arg;
	if (s->listen_fd >= 0) {
		s->fd = accept(s->listen_fd, NULL, NULL);
		close(s->listen_fd);
		if (s->fd < 0)
			return NULL;
	}
	frame_reader r;
	frame_reader_init(&r, 0);
	static __thread uint8_t buf[4096];
	size_t at = 0, have = 0;
	for (int i = 0; i < s->requests && i < SCRIPT_REQUESTS_MAX; i++) {
		s->got[i] = peer_recv(s->fd, &r, buf, sizeof(buf), &at, &have);
		if (!s->got[i])
			break;
		s->got_count = i + 1;
		s->respond(s, i);
	}
	frame_reader_free(&r);
	close(s->fd);
	return NULL;
}

static void send_error(int fd, uint64_t id, Tally__V1__Error__Code code, const char *message,
		       uint32_t retry_after_ms)
{
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__Error error = TALLY__V1__ERROR__INIT;
	error.code = code;
	error.message = (char *)message;
	error.retry_after_ms = retry_after_ms;
	resp.request_id = id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
	resp.error = &error;
	peer_send(fd, &resp);
}

/* An IngestAck of n results (reasons: n entries or NULL), totals counted
 * from the results. */
static void send_ack(int fd, uint64_t id, Tally__V1__IngestAck__Result *results, size_t n, uint32_t *reasons)
{
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__IngestAck ack = TALLY__V1__INGEST_ACK__INIT;
	ack.n_result = n;
	ack.result = results;
	ack.n_reason = reasons ? n : 0;
	ack.reason = reasons;
	for (size_t i = 0; i < n; i++) {
		ack.accepted += results[i] == TALLY__V1__INGEST_ACK__RESULT__ACCEPTED;
		ack.duplicate += results[i] == TALLY__V1__INGEST_ACK__RESULT__DUPLICATE;
		ack.conflict += results[i] == TALLY__V1__INGEST_ACK__RESULT__CONFLICT;
		ack.rejected += results[i] == TALLY__V1__INGEST_ACK__RESULT__REJECTED;
	}
	resp.request_id = id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_INGEST;
	resp.ingest = &ack;
	peer_send(fd, &resp);
}

static void send_hello_ok(script *s, uint64_t id)
{
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__HelloOk ok = TALLY__V1__HELLO_OK__INIT;
	Tally__V1__Limits limits = TALLY__V1__LIMITS__INIT;
	limits.frame_bytes_max = s->limits.frame_bytes_max;
	limits.batch_events_max = s->limits.batch_events_max;
	limits.inflight_requests_max = s->limits.inflight_requests_max;
	limits.query_rows_max = s->limits.query_rows_max;
	limits.list_events_max = s->limits.list_events_max;
	ok.tenant = (char *)(s->tenant ? s->tenant : "");
	ok.admin = !s->tenant;
	ok.server_version = "tallyd-test 1.2";
	ok.protocol_version = 1;
	ok.limits = &limits;
	resp.request_id = id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_HELLO;
	resp.hello = &ok;
	peer_send(s->fd, &resp);
}

/* Starts s on a socketpair; *c is the client end, already past Hello when
 * the script's first request is Hello (the respond function answers it). */
/* The script's peer on one end of a socketpair, a client with frame_limit
 * (0: the default) on the other. */
static void script_start_limit(script *s, pthread_t *th, tally_client **c, uint32_t frame_limit)
{
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	s->fd = sv[1];
	s->listen_fd = -1;
	cr_assert_eq(pthread_create(th, NULL, script_main, s), 0);
	cr_assert_eq(tally_client_from_fd(sv[0], frame_limit, c), 0);
}

static void script_start(script *s, pthread_t *th, tally_client **c)
{
	script_start_limit(s, th, c, 0);
}

static void hello_ok(tally_client *c)
{
	Tally__V1__Response *resp;
	char err[TALLY_CLIENT_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_client_hello(c, "tk_admin", "test", &resp, err), 0, "%s", err);
	tally__v1__response__free_unpacked(resp, NULL);
}

/* Closes the client and waits for the peer; s->got stays for the test. */
/* script_start, then Hello answered by the script's first step. */
static void script_open(script *s, pthread_t *th, tally_client **c)
{
	script_start(s, th, c);
	hello_ok(*c);
}

static void script_finish(script *s, pthread_t th, tally_client *c)
{
	tally_client_close(c);
	pthread_join(th, NULL);
	(void)s;
}

static void script_free(script *s)
{
	for (int i = 0; i < s->got_count; i++)
		tally__v1__request__free_unpacked(s->got[i], NULL);
}

/* Description: server strings are split into host and port: HOST:PORT,
 * [IPv6]:PORT, a bare host or [IPv6] take port 7411; every malformed form
 * is -EINVAL with a message naming the problem. */
Test(client, parse_server_forms)
{
	char host[TALLY_CLIENT_HOST_SIZE], port[TALLY_CLIENT_PORT_SIZE], err[TALLY_CLIENT_ERRMSG_SIZE];
	const struct {
		const char *in, *host, *port;
	} good[] = {
		{"127.0.0.1:7411", "127.0.0.1", "7411"}, {"db.example:9", "db.example", "9"},
		{"[::1]:9000", "::1", "9000"},           {"localhost", "localhost", "7411"},
		{"[fe80::1%eth0]", "fe80::1%eth0", "7411"}, {"h:65535", "h", "65535"},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		cr_assert_eq(tally_client_parse_server(good[i].in, host, port, err), 0, "%s: %s", good[i].in, err);
		cr_expect_str_eq(host, good[i].host, "%s", good[i].in);
		cr_expect_str_eq(port, good[i].port, "%s", good[i].in);
	}
	const struct {
		const char *in, *why;
	} bad[] = {
		{"", "bad server address '': empty (want HOST:PORT)"},
		{":7411", "bad server address ':7411': empty host"},
		{"h:", "bad server address 'h:': the port must be a number from 1 to 65535"},
		{"h:0", "bad server address 'h:0': the port must be a number from 1 to 65535"},
		{"h:65536", "bad server address 'h:65536': the port must be a number from 1 to 65535"},
		{"h:12ab", "bad server address 'h:12ab': the port must be a number from 1 to 65535"},
		{"h:99999999999999999999", "bad server address 'h:99999999999999999999': the port must be a number from 1 to 65535"},
		{"::1:80", "bad server address '::1:80': an IPv6 address needs brackets: [ADDRESS]:PORT"},
		{"[::1", "bad server address '[::1': no ']' after the IPv6 address"},
		{"[::1]x", "bad server address '[::1]x': want [IPV6]:PORT"},
		{"[]:80", "bad server address '[]:80': empty host"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_expect_eq(tally_client_parse_server(bad[i].in, host, port, err), -EINVAL, "%s", bad[i].in);
		cr_expect_str_eq(err, bad[i].why);
	}
}

static void respond_hello(script *s, int index)
{
	if (index == 0)
		send_hello_ok(s, s->got[0]->request_id);
}

static void respond_refuse(script *s, int index)
{
	send_error(s->fd, s->got[index]->request_id, TALLY__V1__ERROR__CODE__UNAUTHENTICATED,
		   "unknown or revoked key", 0);
}


/* Description: tally_client_open connects over TCP, sends Hello (key,
 * client name, protocol 1) and returns the session: tenant, role, server
 * version and every limit. A refused key is TALLY_CLIENT_REFUSED with one
 * line naming the server, the message and the code; a closed port is the
 * connect error. */
Test(client, open_over_tcp_returns_the_session)
{
	char server[64];
	script s = {.requests = 1, .respond = respond_hello, .tenant = "acme",
		    .limits = {1 << 20, 1000, 8, 5000, 700}};
	s.listen_fd = peer_listen_loopback(server, sizeof(server));
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, script_main, &s), 0);
	tally_client *c;
	tally_session_info info;
	char err[TALLY_CLIENT_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_client_open(server, "tk_secret", "tally-cli/test", &c, &info, err), 0, "%s", err);
	cr_expect_str_eq(info.tenant, "acme");
	cr_expect_not(info.admin);
	cr_expect_str_eq(info.server_version, "tallyd-test 1.2");
	cr_expect_eq(info.protocol_version, 1);
	cr_expect_eq(info.limits.frame_bytes_max, 1 << 20);
	cr_expect_eq(info.limits.batch_events_max, 1000);
	cr_expect_eq(info.limits.inflight_requests_max, 8);
	cr_expect_eq(info.limits.query_rows_max, 5000);
	cr_expect_eq(info.limits.list_events_max, 700);
	cr_expect_str_eq(tally_client_session(c)->tenant, "acme");
	tally_client_close(c);
	pthread_join(th, NULL);
	cr_assert_eq(s.got_count, 1);
	cr_assert_eq(s.got[0]->body_case, TALLY__V1__REQUEST__BODY_HELLO);
	cr_expect_str_eq(s.got[0]->hello->api_key, "tk_secret");
	cr_expect_str_eq(s.got[0]->hello->client, "tally-cli/test");
	cr_expect_eq(s.got[0]->hello->protocol_version, 1);
	tally__v1__request__free_unpacked(s.got[0], NULL);

	script refuse = {.requests = 1, .respond = respond_refuse};
	refuse.listen_fd = peer_listen_loopback(server, sizeof(server));
	cr_assert_eq(pthread_create(&th, NULL, script_main, &refuse), 0);
	cr_expect_eq(tally_client_open(server, "tk_bad", NULL, &c, &info, err), TALLY_CLIENT_REFUSED);
	cr_expect_null(c);
	char want[128];
	snprintf(want, sizeof(want), "%s refused the key: unknown or revoked key (UNAUTHENTICATED)", server);
	cr_expect_str_eq(err, want);
	pthread_join(th, NULL);
	tally__v1__request__free_unpacked(refuse.got[0], NULL);

	/* Nobody listens on the port now. */
	cr_expect_eq(tally_client_open(server, "tk", NULL, &c, NULL, err), -ECONNREFUSED);
	snprintf(want, sizeof(want), "connect %s: Connection refused", server);
	cr_expect_str_eq(err, want);
	cr_expect_eq(tally_client_open("nohost:", "tk", NULL, &c, NULL, err), -EINVAL);
}

/* Description: tally_client_open_within bounds the Hello: a peer that
 * takes the connection (the kernel's backlog accepts it) and never
 * answers fails the open with -ETIMEDOUT, naming the server, soon after
 * the timeout (the CLI's online commands open this way; before 2026-12-02
 * the timeout was set only after the Hello, and such a peer held every
 * command for good). A later call on an opened client keeps the timeout. */
Test(client, open_within_bounds_a_hello_that_is_never_answered, .timeout = 30)
{
	char server[64];
	int listen_fd = peer_listen_loopback(server, sizeof(server));
	tally_client *c = (tally_client *)1;
	char err[TALLY_CLIENT_ERRMSG_SIZE] = "";
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = tally_client_open_within(server, "tk", NULL, 200, &c, NULL, err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s_taken = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_expect_eq(rc, -ETIMEDOUT, "%d: %s", rc, err);
	cr_expect_null(c);
	char want[128];
	snprintf(want, sizeof(want), "hello to %s: no answer from the server in time", server);
	cr_expect_str_eq(err, want);
	cr_expect_lt(s_taken, 10.0, "%.1f s", s_taken);
	close(listen_fd);

	script ok = {.requests = 3, .respond = respond_hello}; /* waits for a third */
	ok.listen_fd = peer_listen_loopback(server, sizeof(server));
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, script_main, &ok), 0);
	cr_assert_eq(tally_client_open_within(server, "tk", NULL, 200, &c, NULL, err), 0, "%s", err);
	cr_expect_eq(tally_client_ping(c, "a", 1), -ETIMEDOUT, "the ping is never answered");
	tally_client_close(c);
	pthread_join(th, NULL);
	for (int i = 0; i < ok.got_count; i++)
		tally__v1__request__free_unpacked(ok.got[i], NULL);
}

/* Ingest: index 0 Hello; 1..3 batches, answered after the third in reverse
 * order: batch 3 accepted, batch 2 refused (RESOURCE_EXHAUSTED, retry 250
 * ms), batch 1 one ACCEPTED and one REJECTED (reason 3) event. */
static void respond_ingest(script *s, int index)
{
	if (index == 0) {
		send_hello_ok(s, s->got[0]->request_id);
		return;
	}
	if (index < 3)
		return;
	Tally__V1__IngestAck__Result results3[1] = {TALLY__V1__INGEST_ACK__RESULT__ACCEPTED};
	send_ack(s->fd, s->got[3]->request_id, results3, 1, NULL);
	send_error(s->fd, s->got[2]->request_id, TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED,
		   "rate limit of key k1", 250);
	Tally__V1__IngestAck__Result results1[2] = {TALLY__V1__INGEST_ACK__RESULT__ACCEPTED,
						    TALLY__V1__INGEST_ACK__RESULT__REJECTED};
	uint32_t reasons1[2] = {0, 3};
	send_ack(s->fd, s->got[1]->request_id, results1, 2, reasons1);
}

static void batch_of(builder *b, int n, const char *prefix, Tally__V1__IngestBatch *m)
{
	builder_reset(b);
	for (int i = 0; i < n; i++) {
		char id[32];
		snprintf(id, sizeof(id), "%s-%d", prefix, i);
		tally_client_event e = {.event_id = {id, (uint32_t)strlen(id)}, .time_us = 1000 + i,
					.model = {"m", 1}};
		cr_assert_eq(builder_add(b, &e), 0);
	}
	cr_assert_eq(builder_message(b, m), 0);
}

/* Description: three batches pipelined; the acks come back in reverse
 * order and are matched by request id: counts, per-event results and
 * reasons of each, and the refused batch's Error with its code, message
 * and retry_after_ms, while the other batches still complete. The peer
 * received the batches whole. */
Test(client, pipelined_ingest_acks_matched_by_id)
{
	script s = {.requests = 4, .respond = respond_ingest, .limits = {1 << 20, 100, 4, 0, 0}};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	builder b;
	builder_init(&b);
	uint64_t ids[3];
	const int sizes[3] = {2, 3, 1};
	for (int k = 0; k < 3; k++) {
		Tally__V1__IngestBatch m;
		batch_of(&b, sizes[k], k == 0 ? "a" : k == 1 ? "b" : "c", &m);
		cr_assert_eq(tally_client_ingest_send(c, &m, &ids[k]), 0);
	}
	cr_expect_eq(tally_client_inflight(c), 3);
	tally_ingest_ack ack;
	cr_assert_eq(tally_client_ingest_recv(c, &ack), 0);
	cr_expect_eq(ack.request_id, ids[2]);
	cr_expect_eq(ack.event_count, 1);
	cr_expect_eq(ack.accepted, 1);
	cr_expect_null(ack.reason);
	tally_ingest_ack_free(&ack);

	cr_assert_eq(tally_client_ingest_recv(c, &ack), TALLY_CLIENT_REFUSED);
	cr_expect_eq(ack.request_id, ids[1]);
	const tally_client_error *e = tally_client_last_error(c);
	cr_expect_eq(e->request_id, ids[1]);
	cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED);
	cr_expect_eq(e->retry_after_ms, 250);
	cr_expect_str_eq(e->message, "rate limit of key k1");
	cr_expect_str_eq(tally_client_error_code_name(e->code), "RESOURCE_EXHAUSTED");

	cr_assert_eq(tally_client_ingest_recv(c, &ack), 0);
	cr_expect_eq(ack.request_id, ids[0]);
	cr_expect_eq(ack.event_count, 2);
	cr_expect_eq(ack.accepted, 1);
	cr_expect_eq(ack.rejected, 1);
	cr_expect_eq(ack.result[1], TALLY__V1__INGEST_ACK__RESULT__REJECTED);
	cr_assert_not_null(ack.reason);
	cr_expect_eq(ack.reason[1], 3);
	tally_ingest_ack_free(&ack);
	cr_expect_eq(tally_client_inflight(c), 0);
	cr_expect_eq(tally_client_ingest_recv(c, &ack), -EBUSY, "nothing in flight");
	builder_free(&b);
	script_finish(&s, th, c);

	cr_assert_eq(s.got_count, 4);
	for (int k = 0; k < 3; k++) {
		cr_assert_eq(s.got[1 + k]->body_case, TALLY__V1__REQUEST__BODY_INGEST);
		cr_expect_eq(s.got[1 + k]->request_id, ids[k]);
		cr_expect_eq(s.got[1 + k]->ingest->n_time_us, (size_t)sizes[k]);
	}
	cr_expect_eq(s.got[2]->ingest->event_id->len[2], 3, "\"b-2\"");
	cr_expect_eq(memcmp(s.got[2]->ingest->event_id->bytes.data, "b-0b-1b-2", 9), 0);
	script_free(&s);
}

/* Index 0 Hello, then every request gets a Pong with its payload. */
static void respond_pong(script *s, int index)
{
	Tally__V1__Request *req = s->got[index];
	if (index == 0) {
		send_hello_ok(s, req->request_id);
		return;
	}
	if (req->body_case == TALLY__V1__REQUEST__BODY_INGEST) {
		/* An ack of the batch's size, all accepted. */
		size_t n = req->ingest->n_time_us;
		Tally__V1__IngestAck__Result *results = calloc(n + 1, sizeof(*results));
		send_ack(s->fd, req->request_id, results, n, NULL);
		free(results);
		return;
	}
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__Pong pong = TALLY__V1__PONG__INIT;
	if (req->body_case == TALLY__V1__REQUEST__BODY_PING)
		pong.payload = req->ping->payload;
	resp.request_id = req->request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_PONG;
	resp.pong = &pong;
	peer_send(s->fd, &resp);
}

/* Description: limits from Hello are checked before anything is sent: a
 * batch over batch_events_max is -E2BIG, one over frame_bytes_max is
 * -EMSGSIZE, a send past inflight_requests_max is -EAGAIN, and blocking
 * calls with a request in flight are -EBUSY; none of these harms the
 * connection (the ack and a ping still come through). */
Test(client, limits_checked_before_sending)
{
	script s = {.requests = 3, .respond = respond_pong, .limits = {2048, 2, 1, 0, 0}};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	builder b;
	builder_init(&b);
	Tally__V1__IngestBatch m;
	batch_of(&b, 3, "x", &m);
	cr_expect_eq(tally_client_ingest_send(c, &m, NULL), -E2BIG);
	builder_reset(&b);
	char big[3000];
	memset(big, 'z', sizeof(big));
	tally_client_event e = {.event_id = {big, sizeof(big)}, .time_us = 1};
	cr_assert_eq(builder_add(&b, &e), 0);
	cr_assert_eq(builder_message(&b, &m), 0);
	cr_expect_eq(tally_client_ingest_send(c, &m, NULL), -EMSGSIZE);
	batch_of(&b, 2, "ok", &m);
	uint64_t id;
	cr_assert_eq(tally_client_ingest_send(c, &m, &id), 0);
	cr_expect_eq(tally_client_ingest_send(c, &m, NULL), -EAGAIN);
	tally_ingest_ack ack;
	cr_expect_eq(tally_client_ingest(c, &m, &ack), -EBUSY);
	Tally__V1__Stats *stats;
	cr_expect_eq(tally_client_stats(c, &stats), -EBUSY);
	cr_expect_eq(tally_client_ping(c, "p", 1), -EBUSY);
	cr_assert_eq(tally_client_ingest_recv(c, &ack), 0);
	cr_expect_eq(ack.request_id, id);
	cr_expect_eq(ack.accepted, 2);
	tally_ingest_ack_free(&ack);
	cr_expect_eq(tally_client_ping(c, "still alive", 11), 0);
	builder_free(&b);
	script_finish(&s, th, c);
	cr_expect_eq(s.got_count, 3, "Hello, one batch, one ping: nothing else was sent");
	script_free(&s);
}

/* Description: after Hello the client takes responses up to the server's
 * frame limit when that is larger than its own (a DailyUsage page may fill
 * the server's frame): opened with a 1 MiB limit against a server of
 * 4 MiB frames, a 2 MiB Ping is sent and its 2 MiB Pong is read. Before,
 * the Pong was refused as over the frame limit, and the connection lost. */
Test(client, responses_up_to_the_servers_frame_limit)
{
	script s = {.requests = 2, .respond = respond_pong, .limits = {4u << 20, 0, 0, 0, 0}};
	pthread_t th;
	tally_client *c;
	script_start_limit(&s, &th, &c, 1u << 20);
	hello_ok(c);
	size_t size = 2u << 20;
	char *payload = malloc(size);
	cr_assert_not_null(payload);
	memset(payload, 'p', size);
	int rc = tally_client_ping(c, payload, size);
	cr_expect_eq(rc, 0, "%s", tally_client_strerror(rc));
	free(payload);
	script_finish(&s, th, c);
	script_free(&s);
}

/* Index 0 Hello; index 1 gets an answer with request id + 7. */
static void respond_wrong_id(script *s, int index)
{
	if (index == 0) {
		send_hello_ok(s, s->got[0]->request_id);
		return;
	}
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__Pong pong = TALLY__V1__PONG__INIT;
	resp.request_id = s->got[index]->request_id + 7;
	resp.body_case = TALLY__V1__RESPONSE__BODY_PONG;
	resp.pong = &pong;
	peer_send(s->fd, &resp);
}

/* Description: a response to a request that is not in flight is -EPROTO,
 * and final: the next call fails the same way without sending. */
Test(client, wrong_id_response_is_protocol_error)
{
	script s = {.requests = 3, .respond = respond_wrong_id};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	cr_expect_eq(tally_client_ping(c, "a", 1), -EPROTO);
	Tally__V1__Stats *stats;
	cr_expect_eq(tally_client_stats(c, &stats), -EPROTO);
	cr_expect_null(stats);
	script_finish(&s, th, c);
	cr_expect_eq(s.got_count, 2, "the stats request was never sent");
	script_free(&s);
}

/* Description: an answer of the wrong kind (a Pong to a Stats request) is
 * -EPROTO, and final. */
Test(client, wrong_kind_of_answer_is_protocol_error)
{
	script s = {.requests = 2, .respond = respond_pong};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	Tally__V1__Stats *stats;
	cr_expect_eq(tally_client_stats(c, &stats), -EPROTO);
	cr_expect_eq(tally_client_ping(c, "a", 1), -EPROTO, "final");
	script_finish(&s, th, c);
	script_free(&s);
}

/* Index 0 Hello (an admin's); then pages of tenants: "a" (more follow
 * after "a"), then "b" and "c" (the last); or, for index 3 on, a page with
 * no tenants that says more follow. */
static void respond_tenant_pages(script *s, int index)
{
	if (index == 0) {
		send_hello_ok(s, s->got[0]->request_id);
		return;
	}
	const Tally__V1__ListTenants *lt = s->got[index]->list_tenants;
	cr_assert_not_null(lt);
	cr_expect_eq(lt->limit, TALLY_CLIENT_LIST_PAGE);
	cr_expect_str_eq(lt->after, index == 1 ? "" : index == 2 ? "a" : "");
	Tally__V1__TenantInfo a = TALLY__V1__TENANT_INFO__INIT, b = a, c = a;
	a.name = "a";
	b.name = "b";
	c.name = "c";
	Tally__V1__TenantInfo *first[] = {&a}, *second[] = {&b, &c};
	Tally__V1__TenantList tl = TALLY__V1__TENANT_LIST__INIT;
	if (index == 1) {
		tl.n_tenants = 1;
		tl.tenants = first;
		tl.next_after = "a";
	} else if (index == 2) {
		tl.n_tenants = 2;
		tl.tenants = second;
	} else {
		tl.next_after = "z";
	}
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = s->got[index]->request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_TENANTS;
	resp.tenants = &tl;
	peer_send(s->fd, &resp);
}

/* Description: tally_client_list_tenants asks for pages (after "", then
 * after the first page's next_after) and hands back one list: a, b, c, no
 * next_after. A page with no tenants that says more follow is -EPROTO
 * (the client would ask for it again forever), and final. */
Test(client, tenant_pages_come_back_as_one_list)
{
	script s = {.requests = 4, .respond = respond_tenant_pages};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	Tally__V1__TenantList *tl;
	cr_assert_eq(tally_client_list_tenants(c, &tl), 0);
	cr_assert_eq(tl->n_tenants, 3);
	cr_expect_str_eq(tl->tenants[0]->name, "a");
	cr_expect_str_eq(tl->tenants[1]->name, "b");
	cr_expect_str_eq(tl->tenants[2]->name, "c");
	cr_expect_str_eq(tl->next_after, "");
	tally__v1__tenant_list__free_unpacked(tl, NULL);
	cr_expect_eq(tally_client_list_tenants(c, &tl), -EPROTO);
	cr_expect_null(tl);
	cr_expect_eq(tally_client_ping(c, "a", 1), -EPROTO, "final");
	script_finish(&s, th, c);
	script_free(&s);
}

/* Index 0 Hello; then an ack with one result for any batch. */
static void respond_short_ack(script *s, int index)
{
	if (index == 0) {
		send_hello_ok(s, s->got[0]->request_id);
		return;
	}
	Tally__V1__IngestAck__Result one[1] = {TALLY__V1__INGEST_ACK__RESULT__ACCEPTED};
	send_ack(s->fd, s->got[index]->request_id, one, 1, NULL);
}

/* Description: an ack with one result for a batch of two events is
 * -EPROTO (a caller would index past its results otherwise). */
Test(client, ack_of_the_wrong_size_is_protocol_error)
{
	script s = {.requests = 2, .respond = respond_short_ack};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	builder b;
	builder_init(&b);
	Tally__V1__IngestBatch m;
	batch_of(&b, 2, "two", &m);
	tally_ingest_ack ack;
	cr_expect_eq(tally_client_ingest(c, &m, &ack), -EPROTO);
	cr_expect_null(ack.response);
	builder_free(&b);
	script_finish(&s, th, c);
	script_free(&s);
}

/* Hello answered; a DailyUsage request with a page of one row whose
 * checksum is one off the row's; ChangedDays with two days and one change. */
static void respond_inconsistent_export(script *s, int index)
{
	const Tally__V1__Request *req = s->got[index];
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = req->request_id;
	if (req->body_case == TALLY__V1__REQUEST__BODY_DAILY_USAGE) {
		Tally__V1__UsageRow row = TALLY__V1__USAGE_ROW__INIT;
		row.tenant = "acme";
		row.count = 3;
		row.cost_micros = 4500;
		Tally__V1__UsageRow *rows[1] = {&row};
		Tally__V1__DailyUsagePage page = TALLY__V1__DAILY_USAGE_PAGE__INIT;
		page.day = req->daily_usage->day;
		page.n_rows = 1;
		page.rows = rows;
		page.checksum = usage_rows_checksum(rows, 1) + 1;
		resp.body_case = TALLY__V1__RESPONSE__BODY_DAILY_USAGE;
		resp.daily_usage = &page;
		peer_send(s->fd, &resp);
	} else if (req->body_case == TALLY__V1__REQUEST__BODY_CHANGED_DAYS) {
		int32_t days[2] = {20000, 20001};
		uint64_t change[1] = {7};
		Tally__V1__ChangedDaysResult r = TALLY__V1__CHANGED_DAYS_RESULT__INIT;
		r.n_days = 2;
		r.days = days;
		r.n_change = 1;
		r.change = change;
		resp.body_case = TALLY__V1__RESPONSE__BODY_CHANGED_DAYS;
		resp.changed_days = &r;
		peer_send(s->fd, &resp);
	} else {
		send_hello_ok(s, req->request_id);
	}
}

/* Description: the export's answers are checked before a caller sees them:
 * a DailyUsage page whose rows do not add up to its checksum is -EPROTO
 * with no page, and final; so is (on a new connection) a ChangedDays
 * result with more days than changes. */
Test(client, inconsistent_export_answers_are_protocol_errors)
{
	script s = {.requests = 2, .respond = respond_inconsistent_export};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	Tally__V1__DailyUsagePage *page = NULL;
	cr_expect_eq(tally_client_daily_usage(c, 20000, "", NULL, 100, &page), -EPROTO);
	cr_expect_null(page);
	cr_expect_eq(tally_client_ping(c, "a", 1), -EPROTO, "final");
	script_finish(&s, th, c);
	script_free(&s);

	script t = {.requests = 2, .respond = respond_inconsistent_export};
	script_open(&t, &th, &c);
	Tally__V1__ChangedDaysResult *changed = NULL;
	cr_expect_eq(tally_client_changed_days(c, 0, &changed), -EPROTO);
	cr_expect_null(changed);
	script_finish(&t, th, c);
	script_free(&t);
}

/* Admin calls: index 0 Hello, then each request is checked by the test
 * after the join and answered here with canned values. */
static void respond_admin(script *s, int index)
{
	Tally__V1__Request *req = s->got[index];
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = req->request_id;
	switch (req->body_case) {
	case TALLY__V1__REQUEST__BODY_HELLO:
		send_hello_ok(s, req->request_id);
		return;
	case TALLY__V1__REQUEST__BODY_CREATE_TENANT: {
		Tally__V1__TenantCreated body = TALLY__V1__TENANT_CREATED__INIT;
		body.name = req->create_tenant->name;
		body.api_key = "tk_new_key";
		body.key_id = "k7";
		resp.body_case = TALLY__V1__RESPONSE__BODY_TENANT_CREATED;
		resp.tenant_created = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_LIST_TENANTS: {
		Tally__V1__TenantInfo t1 = TALLY__V1__TENANT_INFO__INIT, t2 = TALLY__V1__TENANT_INFO__INIT;
		t1.name = "acme";
		t1.active_keys = 2;
		t2.name = "globex";
		t2.suspended = true;
		Tally__V1__TenantInfo *list[2] = {&t1, &t2};
		Tally__V1__TenantList body = TALLY__V1__TENANT_LIST__INIT;
		body.n_tenants = 2;
		body.tenants = list;
		resp.body_case = TALLY__V1__RESPONSE__BODY_TENANTS;
		resp.tenants = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_SET_TENANT_STATE: {
		Tally__V1__TenantStateSet body = TALLY__V1__TENANT_STATE_SET__INIT;
		body.name = req->set_tenant_state->name;
		body.suspended = req->set_tenant_state->suspended;
		resp.body_case = TALLY__V1__RESPONSE__BODY_TENANT_STATE;
		resp.tenant_state = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_ISSUE_KEY: {
		Tally__V1__KeyIssued body = TALLY__V1__KEY_ISSUED__INIT;
		body.key_id = "k8";
		body.api_key = "tk_issued";
		body.tenant = req->issue_key->tenant;
		resp.body_case = TALLY__V1__RESPONSE__BODY_KEY_ISSUED;
		resp.key_issued = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_LIST_KEYS: {
		Tally__V1__KeyInfo k = TALLY__V1__KEY_INFO__INIT;
		k.key_id = "k1";
		k.tenant = req->list_keys->tenant;
		k.created_us = 1790000000000000;
		k.revoked = true;
		Tally__V1__KeyInfo *list[1] = {&k};
		Tally__V1__KeyList body = TALLY__V1__KEY_LIST__INIT;
		body.n_keys = 1;
		body.keys = list;
		resp.body_case = TALLY__V1__RESPONSE__BODY_KEYS;
		resp.keys = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_REVOKE_KEY: {
		if (strcmp(req->revoke_key->key_id, "k404") == 0) {
			send_error(s->fd, req->request_id, TALLY__V1__ERROR__CODE__BAD_REQUEST, "no key k404", 0);
			return;
		}
		Tally__V1__KeyRevoked body = TALLY__V1__KEY_REVOKED__INIT;
		body.key_id = req->revoke_key->key_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_KEY_REVOKED;
		resp.key_revoked = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_STATS: {
		Tally__V1__Stats body = TALLY__V1__STATS__INIT;
		body.tenants = 3;
		body.segment_bytes = 123456789;
		body.durable_lsn = 42;
		resp.body_case = TALLY__V1__RESPONSE__BODY_STATS;
		resp.stats = &body;
		peer_send(s->fd, &resp);
		return;
	}
	case TALLY__V1__REQUEST__BODY_PING:
		send_error(s->fd, 0, TALLY__V1__ERROR__CODE__UNAVAILABLE, "server stopping", 1500);
		return;
	default:
		send_error(s->fd, req->request_id, TALLY__V1__ERROR__CODE__BAD_REQUEST, "unknown request", 0);
	}
}

/* Description: each administration call sends its request with the given
 * fields and decodes the answer; a refused one is TALLY_CLIENT_REFUSED
 * with the server's code and message and leaves the connection usable;
 * an Error about the connection (id 0, with retry_after_ms) is sticky. */
Test(client, admin_calls_send_and_decode)
{
	script s = {.requests = 12, .respond = respond_admin};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	cr_expect(tally_client_session(c)->admin);

	Tally__V1__TenantCreated *created;
	cr_assert_eq(tally_client_create_tenant(c, "initech", &created), 0);
	cr_expect_str_eq(created->name, "initech");
	cr_expect_str_eq(created->api_key, "tk_new_key");
	cr_expect_str_eq(created->key_id, "k7");
	tally__v1__tenant_created__free_unpacked(created, NULL);

	Tally__V1__TenantList *tenants;
	cr_assert_eq(tally_client_list_tenants(c, &tenants), 0);
	cr_assert_eq(tenants->n_tenants, 2);
	cr_expect_str_eq(tenants->tenants[1]->name, "globex");
	cr_expect(tenants->tenants[1]->suspended);
	cr_expect_eq(tenants->tenants[0]->active_keys, 2);
	tally__v1__tenant_list__free_unpacked(tenants, NULL);

	Tally__V1__TenantStateSet *state;
	cr_assert_eq(tally_client_set_tenant_state(c, "globex", false, &state), 0);
	cr_expect_str_eq(state->name, "globex");
	cr_expect_not(state->suspended);
	tally__v1__tenant_state_set__free_unpacked(state, NULL);
	cr_assert_eq(tally_client_set_tenant_state(c, "acme", true, NULL), 0);

	Tally__V1__KeyIssued *issued;
	cr_assert_eq(tally_client_issue_key(c, NULL, &issued), 0);
	cr_expect_str_eq(issued->api_key, "tk_issued");
	cr_expect_str_eq(issued->tenant, "");
	tally__v1__key_issued__free_unpacked(issued, NULL);

	Tally__V1__KeyList *keys;
	cr_assert_eq(tally_client_list_keys(c, "acme", &keys), 0);
	cr_assert_eq(keys->n_keys, 1);
	cr_expect_str_eq(keys->keys[0]->tenant, "acme");
	cr_expect_eq(keys->keys[0]->created_us, 1790000000000000);
	cr_expect(keys->keys[0]->revoked);
	tally__v1__key_list__free_unpacked(keys, NULL);

	Tally__V1__KeyRevoked *revoked;
	cr_assert_eq(tally_client_revoke_key(c, "k1", &revoked), 0);
	cr_expect_str_eq(revoked->key_id, "k1");
	tally__v1__key_revoked__free_unpacked(revoked, NULL);
	cr_expect_eq(tally_client_revoke_key(c, "k404", NULL), TALLY_CLIENT_REFUSED);
	const tally_client_error *e = tally_client_last_error(c);
	cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_str_eq(e->message, "no key k404");

	Tally__V1__Stats *stats;
	cr_assert_eq(tally_client_stats(c, &stats), 0, "usable after a refusal");
	cr_expect_eq(stats->tenants, 3);
	cr_expect_eq(stats->segment_bytes, 123456789);
	cr_expect_eq(stats->durable_lsn, 42);
	tally__v1__stats__free_unpacked(stats, NULL);

	cr_expect_eq(tally_client_ping(c, "x", 1), TALLY_CLIENT_REFUSED);
	cr_expect_eq(e->request_id, 0);
	cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__UNAVAILABLE);
	cr_expect_eq(e->retry_after_ms, 1500);
	cr_expect_str_eq(e->message, "server stopping");
	cr_expect_eq(tally_client_stats(c, &stats), TALLY_CLIENT_REFUSED, "sticky");
	script_finish(&s, th, c);

	cr_assert_eq(s.got_count, 11, "the last stats was never sent");
	cr_expect_str_eq(s.got[1]->create_tenant->name, "initech");
	cr_expect_eq(s.got[3]->body_case, TALLY__V1__REQUEST__BODY_SET_TENANT_STATE);
	cr_expect_not(s.got[3]->set_tenant_state->suspended);
	cr_expect(s.got[4]->set_tenant_state->suspended);
	cr_expect_str_eq(s.got[4]->set_tenant_state->name, "acme");
	cr_expect_str_eq(s.got[5]->issue_key->tenant, "");
	cr_expect_str_eq(s.got[6]->list_keys->tenant, "acme");
	cr_expect_str_eq(s.got[7]->revoke_key->key_id, "k1");
	script_free(&s);
}

/* Query: answers with rows of two group values, two quantiles and four
 * status counts; a second query (limit 13) gets a row with one group value
 * only; a listing gets a page of one event and a cursor. */
static void respond_query(script *s, int index)
{
	Tally__V1__Request *req = s->got[index];
	if (index == 0) {
		send_hello_ok(s, req->request_id);
		return;
	}
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = req->request_id;
	if (req->body_case == TALLY__V1__REQUEST__BODY_LIST_EVENTS) {
		Tally__V1__Event ev = TALLY__V1__EVENT__INIT;
		ev.event_id = (ProtobufCBinaryData){2, (uint8_t *)"e1"};
		ev.time_us = 77;
		ev.cost_micros = -3;
		Tally__V1__Event *list[1] = {&ev};
		Tally__V1__EventPage page = TALLY__V1__EVENT_PAGE__INIT;
		page.n_events = 1;
		page.events = list;
		page.next_cursor = "c2";
		resp.body_case = TALLY__V1__RESPONSE__BODY_EVENTS;
		resp.events = &page;
		peer_send(s->fd, &resp);
		return;
	}
	ProtobufCBinaryData groups[2] = {{5, (uint8_t *)"alpha"}, {5, (uint8_t *)"gpt-x"}};
	double quantiles[2] = {120.5, 980.0};
	uint64_t status[4] = {7, 2, 1, 0};
	Tally__V1__Row row = TALLY__V1__ROW__INIT;
	row.bucket_start_us = 86400000000;
	row.bucket_end_us = 2 * 86400000000;
	row.n_group = req->query->limit == 13 ? 1 : 2;
	row.group = groups;
	row.count = 10;
	row.cost_micros = 5000;
	row.n_quantile_ms = 2;
	row.quantile_ms = quantiles;
	row.n_status_count = 4;
	row.status_count = status;
	Tally__V1__Row *rows[1] = {&row};
	Tally__V1__QueryResult result = TALLY__V1__QUERY_RESULT__INIT;
	result.n_rows = 1;
	result.rows = rows;
	result.truncated = true;
	resp.body_case = TALLY__V1__RESPONSE__BODY_QUERY;
	resp.query = &result;
	peer_send(s->fd, &resp);
}

/* Description: a query goes out with every field as given and its result
 * comes back decoded; a listing likewise with its cursor; a result whose
 * rows do not have one group value per group_by entry is -EPROTO. */
Test(client, query_and_listing)
{
	script s = {.requests = 4, .respond = respond_query};
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	Tally__V1__Dimension group_by[2] = {TALLY__V1__DIMENSION__PROJECT, TALLY__V1__DIMENSION__MODEL};
	double ranks[2] = {0.5, 0.99};
	ProtobufCBinaryData values[1] = {{2, (uint8_t *)"ok"}};
	Tally__V1__Filter f = TALLY__V1__FILTER__INIT;
	f.dimension = TALLY__V1__DIMENSION__STATUS;
	f.n_values = 1;
	f.values = values;
	Tally__V1__Filter *filters[1] = {&f};
	q.from_us = 100;
	q.to_us = 200;
	q.bucket = TALLY__V1__BUCKET__DAY;
	q.time_zone = "Europe/Paris";
	q.n_group_by = 2;
	q.group_by = group_by;
	q.n_filters = 1;
	q.filters = filters;
	q.n_quantiles = 2;
	q.quantiles = ranks;
	q.order_by_aggregate = true;
	q.order_aggregate = TALLY__V1__AGGREGATE__COST;
	q.descending = true;
	q.limit = 10;
	Tally__V1__QueryResult *r;
	cr_assert_eq(tally_client_query(c, &q, &r), 0);
	cr_assert_eq(r->n_rows, 1);
	cr_expect(r->truncated);
	cr_expect_eq(r->rows[0]->count, 10);
	cr_expect_eq(r->rows[0]->group[1].len, 5);
	cr_expect_eq(memcmp(r->rows[0]->group[1].data, "gpt-x", 5), 0);
	cr_expect_eq(r->rows[0]->quantile_ms[1], 980.0);
	cr_expect_eq(r->rows[0]->status_count[1], 2);
	tally__v1__query_result__free_unpacked(r, NULL);

	Tally__V1__ListEvents list = TALLY__V1__LIST_EVENTS__INIT;
	list.from_us = 1;
	list.to_us = 2;
	list.cursor = "c1";
	list.limit = 500;
	list.user = (ProtobufCBinaryData){3, (uint8_t *)"u-9"};
	Tally__V1__EventPage *page;
	cr_assert_eq(tally_client_list_events(c, &list, &page), 0);
	cr_assert_eq(page->n_events, 1);
	cr_expect_eq(page->events[0]->cost_micros, -3);
	cr_expect_str_eq(page->next_cursor, "c2");
	tally__v1__event_page__free_unpacked(page, NULL);

	q.limit = 13; /* the peer answers with one group value for two */
	cr_expect_eq(tally_client_query(c, &q, &r), -EPROTO);
	cr_expect_null(r);
	script_finish(&s, th, c);

	const Tally__V1__Query *sent = s.got[1]->query;
	cr_expect_eq(sent->from_us, 100);
	cr_expect_eq(sent->to_us, 200);
	cr_expect_eq(sent->bucket, TALLY__V1__BUCKET__DAY);
	cr_expect_str_eq(sent->time_zone, "Europe/Paris");
	cr_assert_eq(sent->n_group_by, 2);
	cr_expect_eq(sent->group_by[1], TALLY__V1__DIMENSION__MODEL);
	cr_assert_eq(sent->n_filters, 1);
	cr_expect_eq(sent->filters[0]->values[0].len, 2);
	cr_expect_eq(sent->quantiles[1], 0.99);
	cr_expect(sent->order_by_aggregate && sent->descending);
	cr_expect_eq(sent->order_aggregate, TALLY__V1__AGGREGATE__COST);
	cr_expect_eq(sent->limit, 10);
	const Tally__V1__ListEvents *sent_list = s.got[2]->list_events;
	cr_expect_str_eq(sent_list->cursor, "c1");
	cr_expect_eq(sent_list->limit, 500);
	cr_expect_eq(memcmp(sent_list->user.data, "u-9", 3), 0);
	script_free(&s);
}

static void respond_silence(script *s, int index)
{
	if (index == 0)
		send_hello_ok(s, s->got[0]->request_id);
}

/* Description: with a timeout set, a server that never answers gives
 * -ETIMEDOUT, final. */
Test(client, timeout_is_final)
{
	script s = {.requests = 3, .respond = respond_silence}; /* waits for a third */
	pthread_t th;
	tally_client *c;
	script_open(&s, &th, &c);
	cr_assert_eq(tally_client_set_timeout(c, 50), 0);
	cr_expect_eq(tally_client_ping(c, "a", 1), -ETIMEDOUT);
	cr_expect_eq(tally_client_ping(c, "a", 1), -ETIMEDOUT, "final");
	cr_expect_str_eq(tally_client_strerror(-ETIMEDOUT), "no answer from the server in time");
	script_finish(&s, th, c);
	script_free(&s);
}

/* Description: tally_client_strerror names each of the client's results
 * (the texts the CLI prints after "tally CMD: "), gives strerror's text
 * for any other -errno and "unknown result" for a positive number;
 * tally_client_error_code_name names a code and says UNKNOWN for an
 * unspecified or unknown one. */
Test(client, result_and_error_code_names)
{
	static const struct {
		int rc;
		const char *text;
	} texts[] = {
		{0, "success"},
		{TALLY_CLIENT_REFUSED, "refused by the server"},
		{-ECONNRESET, "the server closed the connection"},
		{-ETIMEDOUT, "no answer from the server in time"},
		{-EPROTO, "the server's answer broke the protocol (wrong kind, id or size)"},
		{-EBADMSG, "the server sent a frame that is not a response"},
		{-EMSGSIZE, "message over the frame limit"},
		{-EAGAIN, "too many requests in flight"},
		{-E2BIG, "batch over the server's event limit"},
		{-EBUSY, "other requests are in flight on this connection"},
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		cr_expect_str_eq(tally_client_strerror(texts[i].rc), texts[i].text, "%d", texts[i].rc);
	cr_expect_str_eq(tally_client_strerror(-ENOENT), strerror(ENOENT));
	cr_expect_str_eq(tally_client_strerror(7), "unknown result");
	cr_expect_str_eq(tally_client_error_code_name(TALLY__V1__ERROR__CODE__PERMISSION_DENIED),
			 "PERMISSION_DENIED");
	cr_expect_str_eq(tally_client_error_code_name(TALLY__V1__ERROR__CODE__CODE_UNSPECIFIED),
			 "UNKNOWN");
	cr_expect_str_eq(tally_client_error_code_name((Tally__V1__Error__Code)999), "UNKNOWN");
}
