/*
 * server.h — tallyd as a library: open a server on a configuration, run
 * its event loop until stopped, close it. tallyd.c is main() around this;
 * tests run a server in a thread of their own process the same way.
 */
#ifndef TALLY_SERVER_H
#define TALLY_SERVER_H

#include <stdint.h>

#include "config.h"

typedef struct server server;

/*
 * Opens the data directory (creating it), the engine store, the key store
 * and tenant registry, the metrics endpoint and the listening socket; on a
 * first start issues the admin key into DATA/admin.key (mode 0600). 0 or a
 * negative code with errmsg (TALLY_ERRMSG_SIZE) saying what failed.
 */
int server_open(const server_config *config, server **out, char *errmsg);

/* The TCP port listened on (useful with port 0). */
uint16_t server_port(const server *s);
/* The metrics port, or 0 when metrics are off. */
uint16_t server_metrics_port(const server *s);

/*
 * Runs the event loop on the calling thread until server_stop: then stops
 * accepting and reading, finishes every request in flight (acks included),
 * sends what is queued (for at most SHUTDOWN_DRAIN_MS), closes every
 * connection without a reset (SHUTDOWN_LINGER_MS for the kernel to send
 * what it holds), and returns 0, or a negative code if the loop itself
 * failed.
 */
int server_run(server *s);

/* Asks server_run to stop. Async-signal-safe (one write to an eventfd). */
void server_stop(server *s);

/* The engine's options of a config: tally_options_default, then the
 * settings tallyd hands to the engine (the io seam is left to the
 * caller). */
void server_store_options(const server_config *config, tally_options *options);

/* Tests only: `before` runs on the submitter thread before each group of
 * ingest goes to the engine, `after` once the engine has taken it and
 * before the event loop hears of it (set before server_run; NULL: none). */
void server_test_submit_hooks(server *s, void (*before)(void *arg), void (*after)(void *arg),
			      void *arg);

/* Flushes the engine's memtables, closes everything and frees s. Returns 0
 * or the first error (flush or close). */
int server_close(server *s, char *errmsg);

#endif /* TALLY_SERVER_H */
