/*
 * tallyd.c — the tally server: main() around server.h.
 *
 * `tallyd` with no arguments serves ./data on 127.0.0.1:7411 with metrics
 * on 127.0.0.1:9411 (docs/operations.md lists every flag and INI key).
 * SIGTERM or SIGINT stops it cleanly: no new connections or requests,
 * requests in flight are finished and answered (acks only once durable),
 * the memtables are flushed, and it exits 0. Exit 1: the server failed
 * while running or while shutting down; exit 2: bad flags or it could not
 * start (the message says why).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "server_internal.h"

static server *running;

static void on_signal(int sig)
{
	(void)sig;
	if (running)
		server_stop(running); /* one write(2): async-signal-safe */
}

int main(int argc, char **argv)
{
	server_config config;
	config_default(&config);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = config_parse_args(&config, argc, argv, errmsg);
	if (rc == CONFIG_EXIT_HELP) {
		config_usage(stdout);
		return 0;
	}
	if (rc == CONFIG_EXIT_VERSION) {
		printf("tallyd %s (protocol %d)\n", SERVER_VERSION, PROTOCOL_VERSION);
		return 0;
	}
	if (rc < 0) {
		fprintf(stderr, "tallyd: %s (tallyd --help lists the options)\n", errmsg);
		return 2;
	}
	log_set_json(config.log_json);
	log_set_level((log_level)config.log_level);
	log_set_buffered(true); /* the loop flushes after every pass */
	/* A peer that vanishes must not kill the server: sends use
	 * MSG_NOSIGNAL, and SIGPIPE is ignored for anything else. */
	signal(SIGPIPE, SIG_IGN);
	server *s;
	if ((rc = server_open(&config, &s, errmsg))) {
		log_error("cannot start: %s", errmsg);
		return 2;
	}
	running = s;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	log_info("tallyd %s started (pid %d)", SERVER_VERSION, (int)getpid());
	int run_rc = server_run(s);
	running = NULL;
	int close_rc = server_close(s, errmsg);
	if (close_rc)
		log_error("shutdown: %s", errmsg);
	if (!run_rc && !close_rc)
		log_info("stopped cleanly");
	log_flush();
	return run_rc || close_rc ? 1 : 0;
}
