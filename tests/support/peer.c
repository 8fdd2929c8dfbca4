/*
 * peer.c — see peer.h.
 */
#include "peer.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int peer_listen_loopback(char *server, size_t size)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(fd, 4), 0);
	socklen_t len = sizeof(a);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	snprintf(server, size, "127.0.0.1:%u", ntohs(a.sin_port));
	return fd;
}

void peer_send(int fd, Tally__V1__Response *resp)
{
	size_t size = tally__v1__response__get_packed_size(resp);
	uint8_t *buf = malloc(FRAME_HEADER_SIZE + size);
	cr_assert_not_null(buf);
	frame_header_put(buf, (uint32_t)size);
	tally__v1__response__pack(resp, buf + FRAME_HEADER_SIZE);
	cr_assert_eq(write(fd, buf, FRAME_HEADER_SIZE + size), (ssize_t)(FRAME_HEADER_SIZE + size));
	free(buf);
}

Tally__V1__Request *peer_recv(int fd, frame_reader *r, uint8_t *buf, size_t size, size_t *at,
			      size_t *have)
{
	for (;;) {
		const uint8_t *p = buf + *at;
		size_t n = *have - *at;
		int st = frame_reader_feed(r, &p, &n);
		*at = *have - n;
		if (st == FRAME_READY) {
			uint32_t frame_size;
			const uint8_t *body = frame_reader_frame(r, &frame_size);
			Tally__V1__Request *req = tally__v1__request__unpack(NULL, frame_size, body);
			frame_reader_next(r);
			return req;
		}
		if (st < 0)
			return NULL;
		ssize_t got = read(fd, buf, size);
		if (got <= 0)
			return NULL;
		*at = 0;
		*have = (size_t)got;
	}
}
