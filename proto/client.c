/*
 * client.c — the protocol client (client.h).
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"

#define CLIENT_READ_BYTES 65536

struct tally_client {
	int fd;
	int failed;        /* sticky error */
	uint64_t next_id;
	frame_reader reader;
	uint8_t *in;       /* bytes read but not yet framed */
	size_t in_at, in_size;
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
	frame_reader_init(&c->reader, frame_limit);
	*out = c;
	return 0;
}

int tally_client_connect(const char *host, const char *port, tally_client **out, char *errmsg)
{
	*out = NULL;
	struct addrinfo hints, *list;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int g = getaddrinfo(host, port, &hints, &list);
	if (g) {
		if (errmsg)
			snprintf(errmsg, 256, "resolve %s:%s: %s", host, port, gai_strerror(g));
		return -EHOSTUNREACH;
	}
	int fd = -1, err = -EHOSTUNREACH;
	for (struct addrinfo *a = list; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
			err = -errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(list);
	if (fd < 0) {
		if (errmsg)
			snprintf(errmsg, 256, "connect %s:%s: %s", host, port, strerror(-err));
		return err;
	}
	int rc = tally_client_from_fd(fd, 0, out);
	if (rc)
		close(fd);
	return rc;
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

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
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
	req->request_id = c->next_id++;
	size_t size = tally__v1__request__get_packed_size(req);
	if (size > c->reader.limit)
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
	if (id)
		*id = req->request_id;
	return 0;
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
			*out = resp;
			return 0;
		}
		ssize_t r = recv(c->fd, c->in, CLIENT_READ_BYTES, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return c->failed = r == 0 ? -ECONNRESET : -errno;
		c->in_at = 0;
		c->in_size = (size_t)r;
	}
}

int tally_client_call(tally_client *c, Tally__V1__Request *req, Tally__V1__Response **out)
{
	*out = NULL;
	uint64_t id;
	int rc = tally_client_send(c, req, &id);
	if (rc)
		return rc;
	Tally__V1__Response *resp;
	if ((rc = tally_client_recv(c, &resp)))
		return rc;
	if (resp->request_id != id && resp->request_id != 0) {
		tally__v1__response__free_unpacked(resp, NULL);
		return c->failed = -EPROTO;
	}
	*out = resp;
	return 0;
}

int tally_client_hello(tally_client *c, const char *api_key, const char *client_name,
		       Tally__V1__Response **out, char *errmsg)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__Hello hello = TALLY__V1__HELLO__INIT;
	hello.api_key = (char *)api_key;
	hello.client = (char *)(client_name ? client_name : "");
	hello.protocol_version = 1;
	req.body_case = TALLY__V1__REQUEST__BODY_HELLO;
	req.hello = &hello;
	Tally__V1__Response *resp;
	int rc = tally_client_call(c, &req, &resp);
	*out = NULL;
	if (rc)
		return rc;
	if (resp->body_case == TALLY__V1__RESPONSE__BODY_HELLO) {
		*out = resp;
		return 0;
	}
	if (errmsg)
		snprintf(errmsg, 256, "%s",
			 resp->body_case == TALLY__V1__RESPONSE__BODY_ERROR && resp->error->message
				 ? resp->error->message
				 : "the server answered Hello with something else");
	tally__v1__response__free_unpacked(resp, NULL);
	return TALLY_CLIENT_REFUSED;
}
