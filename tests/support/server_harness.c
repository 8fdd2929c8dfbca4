/*
 * server_harness.c — an in-process tallyd for tests (server_harness.h).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_harness.h"

void harness_init(harness *h, const char *name)
{
	memset(h, 0, sizeof(*h));
	test_dir_make(&h->dir, name);
	config_default(&h->config);
	snprintf(h->config.data_dir, sizeof(h->config.data_dir), "%s/data", h->dir.path);
	snprintf(h->config.listen, sizeof(h->config.listen), "127.0.0.1:0");
	snprintf(h->config.metrics, sizeof(h->config.metrics), "off");
}

static void *run(void *arg)
{
	harness *h = arg;
	h->run_rc = server_run(h->server);
	return NULL;
}

void harness_start(harness *h)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(server_open(&h->config, &h->server, err), 0, "server_open: %s", err);
	if (h->submit_hook || h->submit_done_hook)
		server_test_submit_hooks(h->server, h->submit_hook, h->submit_done_hook,
					 h->submit_hook_arg);
	/* The listen address's host (127.0.0.1, or [::1] for a test on IPv6)
	 * with the port the server took. */
	int host_len = (int)(strrchr(h->config.listen, ':') - h->config.listen);
	snprintf(h->address, sizeof(h->address), "%.*s:%u", host_len, h->config.listen,
		 server_port(h->server));
	char path[sizeof(h->config.data_dir) + 16];
	snprintf(path, sizeof(path), "%s/admin.key", h->config.data_dir);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	cr_assert_not_null(fgets(h->admin_key, sizeof(h->admin_key), f));
	fclose(f);
	h->admin_key[strcspn(h->admin_key, "\n")] = 0;
	cr_assert_eq(pthread_create(&h->thread, NULL, run, h), 0);
}

void harness_stop(harness *h)
{
	if (!h->server)
		return;
	server_stop(h->server);
	pthread_join(h->thread, NULL);
	cr_expect_eq(h->run_rc, 0, "server_run returned %d", h->run_rc);
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(server_close(h->server, err), 0, "server_close: %s", err);
	h->server = NULL;
}

void harness_finish(harness *h)
{
	harness_stop(h);
	test_dir_remove_tree(h->dir.path);
}

tally_client *harness_connect(const harness *h, const char *key)
{
	tally_client *c;
	char err[TALLY_CLIENT_ERRMSG_SIZE] = "";
	int rc = tally_client_open(h->address, key, "test", &c, NULL, err);
	cr_assert_eq(rc, 0, "connect: %s", err);
	/* A server bug shows as a failed test, not as a hang. */
	cr_assert_eq(tally_client_set_timeout(c, HARNESS_TIMEOUT_MS), 0);
	return c;
}

int harness_socket(const harness *h)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(server_port(h->server))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

void harness_create_tenant(const harness *h, const char *name, char *key)
{
	tally_client *c = harness_connect(h, h->admin_key);
	Tally__V1__TenantCreated *tc;
	int rc = tally_client_create_tenant(c, name, &tc);
	cr_assert_eq(rc, 0, "create tenant %s: %s %s", name, tally_client_strerror(rc),
		     tally_client_last_error(c)->message);
	snprintf(key, 80, "%s", tc->api_key);
	tally__v1__tenant_created__free_unpacked(tc, NULL);
	tally_client_close(c);
}

tally_client_event harness_event(const char *prefix, int i, int64_t base_us)
{
	/* Per thread: producers of several threads build events at once (a
	 * shared buffer could be read while another thread writes it, NUL and
	 * all, and a NUL is refused: TALLY_REASON_NOT_UTF8). */
	static _Thread_local char id[96];
	static const char *models[] = {"gpt-5", "claude-4", "llama-4"};
	static const char *projects[] = {"alpha", "beta"};
	static _Thread_local char user[32];
	snprintf(id, sizeof(id), "%s-%d", prefix, i);
	snprintf(user, sizeof(user), "user-%d", i % 7);
	const char *model = models[i % 3];
	const char *project = projects[i % 2];
	tally_client_event e = {0};
	e.event_id = (tally_client_str){id, (uint32_t)strlen(id)};
	e.time_us = base_us + (int64_t)i * 1000000;
	e.type = (tally_client_str){"llm_call", 8};
	e.project = (tally_client_str){project, (uint32_t)strlen(project)};
	e.agent = (tally_client_str){"planner", 7};
	e.model = (tally_client_str){model, (uint32_t)strlen(model)};
	e.user = (tally_client_str){user, (uint32_t)strlen(user)};
	e.status = (uint32_t)(i % 5 == 0);
	e.duration_ms = (uint32_t)(100 + i % 50);
	e.tokens_in = (uint64_t)(10 + i);
	e.tokens_out = (uint64_t)(20 + i);
	e.cost_micros = 1000 + i;
	return e;
}
