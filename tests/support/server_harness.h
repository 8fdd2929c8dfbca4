/*
 * server_harness.h — a tallyd running in a thread of the test process, on
 * a fresh temporary data directory, 127.0.0.1 and a free port, metrics off,
 * and clients for it. Every failure is a criterion assertion.
 */
#ifndef TALLY_TEST_SERVER_HARNESS_H
#define TALLY_TEST_SERVER_HARNESS_H

#include <pthread.h>
#include <stdint.h>

#include "builder.h"
#include "client.h"
#include "config.h"
#include "server.h"
#include "test_dir.h"

/* How long a harness client waits for any answer. */
#define HARNESS_TIMEOUT_MS 30000

typedef struct harness {
	test_dir dir;
	server_config config;
	server *server;
	pthread_t thread;
	int run_rc;
	char address[64]; /* "HOST:PORT": the listen address's host, the port taken */
	char admin_key[80];
	/* Set before harness_start: server_test_submit_hooks's. */
	void (*submit_hook)(void *arg);
	void (*submit_done_hook)(void *arg);
	void *submit_hook_arg;
} harness;

/* Defaults for a test: the config tallyd would use, with the harness's
 * directory, port 0 and metrics off. Change fields before harness_start. */
void harness_init(harness *h, const char *name);
/* Opens the server on h->config and runs it in a thread. */
void harness_start(harness *h);
/* server_stop, join, server_close (asserting 0). The directory stays. */
void harness_stop(harness *h);
/* harness_stop if running, then removes the directory. */
void harness_finish(harness *h);

/* A connection authenticated with key (asserts success). */
tally_client *harness_connect(const harness *h, const char *key);
/* A raw TCP socket to the server (for hostile tests). */
int harness_socket(const harness *h);

/* Creates tenant name through the admin key; writes its key into key
 * (80 bytes). */
void harness_create_tenant(const harness *h, const char *name, char *key);

/* A deterministic event: id "<prefix>-<i>", time base + i seconds, values
 * from i. Strings point into the calling thread's storage: use it before
 * that thread's next call (builder_add copies). */
tally_client_event harness_event(const char *prefix, int i, int64_t base_us);

#endif /* TALLY_TEST_SERVER_HARNESS_H */
