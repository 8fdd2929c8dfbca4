/*
 * client.h — the C client of the tally protocol (docs/protocol.md), used by
 * the CLI and the benchmark: a connection, framed and pipelined requests.
 *
 * Blocking and single-threaded per connection: send any number of requests
 * (each gets the next request id), then receive responses in whatever order
 * the server sends them and match them by id. A connection that saw an I/O
 * or framing error is dead: every later call fails with the same error.
 */
#ifndef TALLY_CLIENT_H
#define TALLY_CLIENT_H

#include <stdint.h>

#include "frame.h"
#include "tally.pb-c.h"

typedef struct tally_client tally_client;

/*
 * Connects to host:port (TCP; IPv4 or IPv6). 0 or -errno, or
 * -EHOSTUNREACH when the name resolves to nothing reachable; errmsg (256
 * bytes, may be NULL) says which.
 */
int tally_client_connect(const char *host, const char *port, tally_client **out, char *errmsg);

/* Wraps a connected socket (the client owns it from then on). */
int tally_client_from_fd(int fd, uint32_t frame_limit, tally_client **out);

void tally_client_close(tally_client *c);

/* Sends req (its request_id is set to the next id, returned in *id). 0 or
 * -errno / -ENOMEM / -EMSGSIZE (a request over the frame limit). */
int tally_client_send(tally_client *c, Tally__V1__Request *req, uint64_t *id);

/* Receives the next response (free with tally__v1__response__free_unpacked).
 * 0, -ECONNRESET when the server closed, -EBADMSG for a frame that is not a
 * Response, -EMSGSIZE for one over the limit, or -errno. */
int tally_client_recv(tally_client *c, Tally__V1__Response **out);

/*
 * One request, one answer: sends req and receives its response. For use
 * when nothing else is in flight on the connection: a response to another
 * request is -EPROTO (and the connection is dead). 0 or as above.
 */
int tally_client_call(tally_client *c, Tally__V1__Request *req, Tally__V1__Response **out);

/*
 * Authenticates with api_key (the first request of a connection). 0 with
 * *ok (free with tally__v1__response__free_unpacked(*resp)), or
 * TALLY_CLIENT_REFUSED with the server's Error message in errmsg (256
 * bytes), or a transport error as above.
 */
#define TALLY_CLIENT_REFUSED (-20001)
int tally_client_hello(tally_client *c, const char *api_key, const char *client_name,
		       Tally__V1__Response **resp, char *errmsg);

#endif /* TALLY_CLIENT_H */
