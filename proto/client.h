/*
 * client.h — the C client of the tally protocol (docs/protocol.md), used by
 * the CLI, the benchmark and the tests: a connection, framed and pipelined
 * requests, and one call per request kind.
 *
 * Blocking and single-threaded per connection. Two layers:
 *
 *   - Raw: tally_client_send any number of requests (each gets the next
 *     request id and is remembered as in flight), then tally_client_recv
 *     responses in whatever order the server sends them. A response whose
 *     id is neither in flight nor 0 is a protocol error.
 *   - Calls: tally_client_open (connect + Hello), pipelined ingest
 *     (tally_client_ingest_send / tally_client_ingest_recv), and one
 *     blocking call per other request (query, listing, tenants, keys,
 *     stats, ping), each checking that the answer is the right kind.
 *
 * Return codes, the same for every call:
 *   0                     done; outputs filled
 *   TALLY_CLIENT_REFUSED  the server answered with an Error: its code,
 *                         message and retry_after_ms are in
 *                         tally_client_last_error(c). The connection stays
 *                         usable, except after an Error about the
 *                         connection itself (request id 0), which the
 *                         server follows with a close: then every later
 *                         call returns TALLY_CLIENT_REFUSED with that error.
 *   -errno                a transport or protocol failure: -ECONNRESET (the
 *                         server closed), -ETIMEDOUT (see
 *                         tally_client_set_timeout), -EBADMSG (a frame that
 *                         is not a Response), -EMSGSIZE (a frame over a
 *                         limit), -EPROTO (an answer of the wrong kind, to a
 *                         request not in flight, or inconsistent), -ENOMEM,
 *                         or a socket error. These are final: the
 *                         connection is dead and every later call returns
 *                         the same code; close it.
 *   -EBUSY, -EAGAIN, -E2BIG, -EINVAL   refused before anything was sent (see
 *                         each call); the connection is unharmed.
 *
 * Outputs that are protobuf-c messages (Tally__V1__QueryResult, ...) are
 * owned by the caller and freed with their type's free_unpacked(x, NULL),
 * e.g. tally__v1__query_result__free_unpacked(result, NULL).
 */
#ifndef TALLY_CLIENT_H
#define TALLY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "tally.pb-c.h"

typedef struct tally_client tally_client;

#define TALLY_CLIENT_REFUSED (-20001)
#define TALLY_CLIENT_PORT_DEFAULT "7411"
/* errmsg buffers of this file's calls. */
#define TALLY_CLIENT_ERRMSG_SIZE 256
/* Requests one connection keeps in flight at most, whatever the server
 * allows (HelloOk.limits.inflight_requests_max lowers it). */
#define TALLY_CLIENT_INFLIGHT_MAX 256
/* Largest response frame accepted by tally_client_connect/open: a full
 * query result (100,000 rows with their group values) fits. */
#define TALLY_CLIENT_RESPONSE_BYTES_MAX (64u << 20)
/* After Hello, responses up to the server's frame limit are accepted when
 * that is larger, up to this (the largest frame limit tallyd takes). */
#define TALLY_CLIENT_FRAME_BYTES_CEILING (256u << 20)
#define TALLY_CLIENT_HOST_SIZE 256
#define TALLY_CLIENT_PORT_SIZE 16
#define TALLY_CLIENT_TENANT_SIZE 65   /* 64 bytes and the NUL */
#define TALLY_CLIENT_VERSION_SIZE 64
#define TALLY_CLIENT_LIST_PAGE 1000   /* tenants or keys per ListTenants / ListKeys page */

/* ---- connections ---------------------------------------------------------- */

/*
 * Connects to host:port (TCP; IPv4 or IPv6). 0 or -errno, or
 * -EHOSTUNREACH when the name resolves to nothing reachable; errmsg
 * (TALLY_CLIENT_ERRMSG_SIZE bytes, may be NULL) says which. Responses up to
 * TALLY_CLIENT_RESPONSE_BYTES_MAX are accepted (after Hello, up to the
 * server's frame limit if larger, at most TALLY_CLIENT_FRAME_BYTES_CEILING);
 * requests up to the protocol's default frame limit until Hello tells the
 * server's.
 */
int tally_client_connect(const char *host, const char *port, tally_client **out, char *errmsg);

/* Wraps a connected socket (the client owns it from then on); frame_limit
 * bounds frames both ways (0: FRAME_BYTES_MAX_DEFAULT) until Hello tells
 * the server's: then that bounds requests, and responses too if it is
 * larger (at most TALLY_CLIENT_FRAME_BYTES_CEILING). 0 or -ENOMEM. */
int tally_client_from_fd(int fd, uint32_t frame_limit, tally_client **out);

/* Closes the socket and frees c (NULL is fine). Responses still in flight
 * are dropped; an ingest batch whose ack was not received may or may not
 * be stored (resending it is safe: stored events come back DUPLICATE). */
void tally_client_close(tally_client *c);

/*
 * Splits "HOST:PORT", "[IPV6]:PORT" or "HOST" (port TALLY_CLIENT_PORT_DEFAULT)
 * into host (TALLY_CLIENT_HOST_SIZE) and port (TALLY_CLIENT_PORT_SIZE). 0, or
 * -EINVAL with errmsg saying what is wrong (empty host, a port that is not
 * 1..65535, an IPv6 address without brackets, a name too long).
 */
int tally_client_parse_server(const char *server, char *host, char *port, char *errmsg);

/*
 * A receive and send timeout for every later call (0: wait forever, the
 * default): the longest wait for the socket to take or give a byte
 * (SO_RCVTIMEO, SO_SNDTIMEO), not a bound on a whole call, which a peer
 * trickling bytes can keep going. A call that times out fails with
 * -ETIMEDOUT, final like any transport error (a late answer could not be
 * told from the next one). 0 or -errno from setsockopt.
 */
int tally_client_set_timeout(tally_client *c, uint32_t timeout_ms);

/* ---- raw requests ---------------------------------------------------------- */

/* Sends req (its request_id is set to the next id, returned in *id, may be
 * NULL) and remembers it as in flight. 0, -EAGAIN when the in-flight
 * limit is reached (receive first), -EMSGSIZE for a request over the
 * server's frame limit (nothing sent), or a final error. */
int tally_client_send(tally_client *c, Tally__V1__Request *req, uint64_t *id);

/* Receives the next response (free with tally__v1__response__free_unpacked)
 * and forgets its request as in flight. Its id is one in flight, or 0 (an
 * Error about the connection). 0, -ECONNRESET when the server closed,
 * -EBADMSG for a frame that is not a Response, -EMSGSIZE for one over the
 * limit, -EPROTO for an id not in flight, or -errno. */
int tally_client_recv(tally_client *c, Tally__V1__Response **out);

/* Requests sent whose responses have not been received. */
uint32_t tally_client_inflight(const tally_client *c);

/*
 * One request, one answer: sends req and receives its response (which may
 * be an Error, or have id 0: the caller looks). -EBUSY when other requests
 * are in flight (nothing sent); otherwise as send and recv.
 */
int tally_client_call(tally_client *c, Tally__V1__Request *req, Tally__V1__Response **out);

/* ---- errors -------------------------------------------------------------------- */

/* The server's last Error (after TALLY_CLIENT_REFUSED). */
typedef struct tally_client_error {
	uint64_t request_id;     /* of the refused request; 0: about the connection */
	int code;                /* Tally__V1__Error__Code */
	uint32_t retry_after_ms; /* with RESOURCE_EXHAUSTED and UNAVAILABLE */
	char message[TALLY_CLIENT_ERRMSG_SIZE];
} tally_client_error;

/* Valid until the next call on c; all zero before any Error. */
const tally_client_error *tally_client_last_error(const tally_client *c);

/* "BAD_REQUEST", "UNAUTHENTICATED", ...; "UNKNOWN" for other numbers. */
const char *tally_client_error_code_name(int code);

/* A static description of any return code of this file ("refused by the
 * server" for TALLY_CLIENT_REFUSED, strerror for -errno). */
const char *tally_client_strerror(int rc);

/* ---- session ---------------------------------------------------------------------- */

typedef struct tally_client_limits {
	uint32_t frame_bytes_max;
	uint32_t batch_events_max;
	uint32_t inflight_requests_max;
	uint32_t query_rows_max;
	uint32_t list_events_max;
} tally_client_limits;

/* What HelloOk said about this connection. */
typedef struct tally_session_info {
	char tenant[TALLY_CLIENT_TENANT_SIZE]; /* "" for an admin key */
	bool admin;
	char server_version[TALLY_CLIENT_VERSION_SIZE];
	uint32_t protocol_version;
	tally_client_limits limits;            /* 0 where the server sent none */
} tally_session_info;

/*
 * Authenticates with api_key (the first request of a connection). 0 with
 * *resp holding the HelloOk (free with tally__v1__response__free_unpacked),
 * or TALLY_CLIENT_REFUSED with the server's Error message in errmsg
 * (TALLY_CLIENT_ERRMSG_SIZE bytes) and in tally_client_last_error, or a
 * transport error as above. On 0 the server's frame and in-flight limits
 * apply to later requests (tally_client_session).
 */
int tally_client_hello(tally_client *c, const char *api_key, const char *client_name,
		       Tally__V1__Response **resp, char *errmsg);

/*
 * Connects to server ("HOST:PORT", "[IPV6]:PORT" or "HOST") and
 * authenticates with api_key; client_name (may be NULL) is for the
 * server's logs. 0 with *out connected and *info (may be NULL) filled;
 * otherwise *out is NULL and errmsg (TALLY_CLIENT_ERRMSG_SIZE bytes, may
 * be NULL) holds one line naming the server and the cause:
 * TALLY_CLIENT_REFUSED for a refused Hello ("... refused the key: MESSAGE
 * (CODE)" for UNAUTHENTICATED and PERMISSION_DENIED, "... refused the
 * hello: MESSAGE (CODE)" for another Error, UNAVAILABLE say), -EINVAL
 * for a malformed server string, or a transport error.
 */
int tally_client_open(const char *server, const char *api_key, const char *client_name,
		      tally_client **out, tally_session_info *info, char *errmsg);

/* tally_client_open with tally_client_set_timeout(timeout_ms) in force
 * from before the connect (each address a name resolves to is given that
 * long to connect) through the Hello and for every later call: a peer
 * that accepts and never answers fails it with -ETIMEDOUT instead of
 * holding it for good (0: wait forever, as tally_client_open). */
int tally_client_open_within(const char *server, const char *api_key, const char *client_name,
			     uint32_t timeout_ms, tally_client **out, tally_session_info *info,
			     char *errmsg);

/* The session of an opened connection (zeros before Hello). */
const tally_session_info *tally_client_session(const tally_client *c);

/* ---- ingest (pipelined) --------------------------------------------------------- */

/* An IngestAck, checked against its batch (one result per event, totals
 * equal to the results). Release with tally_ingest_ack_free. */
typedef struct tally_ingest_ack {
	uint64_t request_id;
	uint32_t event_count;   /* of the batch */
	uint32_t accepted, duplicate, conflict, rejected;
	const Tally__V1__IngestAck__Result *result; /* event_count entries, in batch order */
	const uint32_t *reason; /* event_count entries (engine/tally.h enum
				 * tally_reject_reason), or NULL when none is rejected */
	Tally__V1__Response *response; /* owns the above */
} tally_ingest_ack;

/*
 * Sends one batch (from builder_message, or built by hand) without waiting;
 * *id (may be NULL) is its request id, which its ack or Error will carry.
 * Keep at most tally_client_session(c)->limits.inflight_requests_max
 * requests in flight. 0; -EAGAIN when the in-flight limit is reached (call
 * tally_client_ingest_recv first); -E2BIG when the batch has more events
 * than the server's batch limit, -EMSGSIZE when it is over the server's
 * frame limit (both: nothing sent, cut the batch); or a final error.
 */
int tally_client_ingest_send(tally_client *c, const Tally__V1__IngestBatch *batch, uint64_t *id);

/*
 * Receives the answer to one batch in flight, whichever comes first (the
 * server may answer out of order), with ack->request_id naming it. 0 with
 * *ack filled; TALLY_CLIENT_REFUSED when the server refused that batch
 * (ack->request_id names it, tally_client_last_error says why; nothing of
 * it may be assumed stored, the other batches are unaffected); -EBUSY when
 * nothing is in flight or a request other than an ingest is; -EPROTO when
 * the ack does not match its batch; or a final error.
 */
int tally_client_ingest_recv(tally_client *c, tally_ingest_ack *ack);

/* Frees what ack holds (the ack struct itself is the caller's). */
void tally_ingest_ack_free(tally_ingest_ack *ack);

/* One batch, its ack: tally_client_ingest_send then _recv; -EBUSY when
 * other requests are in flight. */
int tally_client_ingest(tally_client *c, const Tally__V1__IngestBatch *batch, tally_ingest_ack *ack);

/* ---- blocking calls (-EBUSY when other requests are in flight) ------------------ */

/*
 * Aggregate query (docs/queries.md). *out is the QueryResult, checked: each
 * row has one group value per query->group_by entry, one quantile per
 * query->quantiles entry, and 0 or 4 status counts (ok, error, timeout,
 * cancelled).
 */
int tally_client_query(tally_client *c, const Tally__V1__Query *query, Tally__V1__QueryResult **out);

/* One page of raw events; (*out)->next_cursor is "" after the last page. */
int tally_client_list_events(tally_client *c, const Tally__V1__ListEvents *request,
			     Tally__V1__EventPage **out);

/* Admin: a tenant and its first key (shown once: (*out)->api_key). */
int tally_client_create_tenant(tally_client *c, const char *name, Tally__V1__TenantCreated **out);

/* Admin: every tenant, in creation order, asked for TALLY_CLIENT_LIST_PAGE
 * at a time (ListTenants.after) and handed back as one list. */
int tally_client_list_tenants(tally_client *c, Tally__V1__TenantList **out);

/* Admin: suspend (suspended true) or resume a tenant; out may be NULL. */
int tally_client_set_tenant_state(tally_client *c, const char *name, bool suspended,
				  Tally__V1__TenantStateSet **out);

/* Admin: a new key for tenant (NULL or "": a new admin key). */
int tally_client_issue_key(tally_client *c, const char *tenant, Tally__V1__KeyIssued **out);

/* Admin: the keys of tenant (NULL or "": every key), in issue order,
 * asked for TALLY_CLIENT_LIST_PAGE at a time and handed back as one list. */
int tally_client_list_keys(tally_client *c, const char *tenant, Tally__V1__KeyList **out);

/* Admin: revokes a key by id; out may be NULL. */
int tally_client_revoke_key(tally_client *c, const char *key_id, Tally__V1__KeyRevoked **out);

/* Store figures (admin: the whole store). */
int tally_client_stats(tally_client *c, Tally__V1__Stats **out);

/*
 * Billing export (admin): one page of a UTC day's usage of every tenant
 * (tenants after after_tenant, NULL or "" for the first page, at most
 * tenant_limit of them, 0 for the server's default; with after_row, not
 * NULL, after_tenant's rows after that row first). The rows are checked
 * against the page's checksum (-EPROTO if they do not add up); pass
 * (*out)->next_after_tenant and (*out)->next_after_row for the next page
 * until next_after_tenant is "".
 */
int tally_client_daily_usage(tally_client *c, int32_t day, const char *after_tenant,
			     const Tally__V1__UsageKey *after_row, uint32_t tenant_limit,
			     Tally__V1__DailyUsagePage **out);

/* Billing export (admin): the days whose events changed after watermark
 * since, with each day's change and the store's watermark now. */
int tally_client_changed_days(tally_client *c, uint64_t since, Tally__V1__ChangedDaysResult **out);

/* Liveness: the server must echo payload (size bytes) exactly, else -EPROTO. */
int tally_client_ping(tally_client *c, const void *payload, size_t size);

#endif /* TALLY_CLIENT_H */
