/*
 * test_client.c — proto/client.c against a scripted peer on a socketpair:
 * framing, request ids, pipelining with responses out of order, and the
 * errors of a peer that closes, sends garbage or announces a huge frame.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"

/* The scripted peer: answers Hello, then collects `pings` Pings and answers
 * them in reverse order, then closes. */
typedef struct peer {
	int fd;
	int pings;
} peer;

static void peer_send(int fd, Tally__V1__Response *resp)
{
	size_t size = tally__v1__response__get_packed_size(resp);
	uint8_t *buf = malloc(FRAME_HEADER_SIZE + size);
	frame_header_put(buf, (uint32_t)size);
	tally__v1__response__pack(resp, buf + FRAME_HEADER_SIZE);
	cr_assert_eq(write(fd, buf, FRAME_HEADER_SIZE + size), (ssize_t)(FRAME_HEADER_SIZE + size));
	free(buf);
}

static Tally__V1__Request *peer_recv(int fd, frame_reader *r, uint8_t *buf, size_t *at, size_t *have)
{
	for (;;) {
		const uint8_t *p = buf + *at;
		size_t n = *have - *at;
		int st = frame_reader_feed(r, &p, &n);
		*at = *have - n;
		if (st == FRAME_READY) {
			uint32_t size;
			const uint8_t *body = frame_reader_frame(r, &size);
			Tally__V1__Request *req = tally__v1__request__unpack(NULL, size, body);
			frame_reader_next(r);
			return req;
		}
		ssize_t got = read(fd, buf, 4096);
		if (got <= 0)
			return NULL;
		*at = 0;
		*have = (size_t)got;
	}
}

static void *peer_main(void *arg)
{
	peer *pe = arg;
	frame_reader r;
	frame_reader_init(&r, 0);
	static uint8_t buf[4096];
	size_t at = 0, have = 0;
	Tally__V1__Request *hello = peer_recv(pe->fd, &r, buf, &at, &have);
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
		pings[i] = peer_recv(pe->fd, &r, buf, &at, &have);
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
	Tally__V1__Request *req = peer_recv(fd, &r, buf, &at, &have);
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
