/*
 * peer.h — a scripted protocol peer for client and CLI tests: a loopback
 * listener, and whole frames sent and received on a socket the test's
 * own thread plays the server on.
 */
#ifndef TALLY_TEST_PEER_H
#define TALLY_TEST_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "tally.pb-c.h"

/* A TCP listener on 127.0.0.1 with a free port (backlog 4); its address
 * ("127.0.0.1:PORT") into server. Returns the listening fd. */
int peer_listen_loopback(char *server, size_t size);

/* Sends resp as one frame (the whole of it written, or the test fails). */
void peer_send(int fd, Tally__V1__Response *resp);

/* The next request, or NULL when the client closed (or sent a frame the
 * reader refuses). buf (size bytes), *at and *have keep the bytes read
 * past it for the next call; start them at 0. Free the request with
 * tally__v1__request__free_unpacked. */
Tally__V1__Request *peer_recv(int fd, frame_reader *r, uint8_t *buf, size_t size, size_t *at,
			      size_t *have);

#endif /* TALLY_TEST_PEER_H */
