/*
 * test_cli_remote.c — tools/remote.c: global options taken out of argv
 * wherever they stand, and the API key lookup order (--key, --key-file,
 * TALLY_KEY, ./data/admin.key) with its errors; and what `tally events
 * --all` does with a server's cursors (a scripted peer plays the server).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../tools/remote.h"
#include "support/cli_run.h"
#include "support/peer.h"

/* Description: global options before and after the command, in both
 * forms, leave the other arguments in order; "--" ends them. */
Test(remote, globals_extracted_anywhere)
{
	char *argv[] = {"tally", "--server", "db:9", "query", "--from", "-1d", "--key=k1", "--tenant", "acme",
			"--format", "csv", "--", "--key", "x", NULL};
	int argc = 14;
	cli_globals g = {0};
	char err[CLI_KEY_SOURCE_SIZE] = "";
	cr_assert_eq(cli_globals_extract(&g, &argc, argv, err), 0, "%s", err);
	cr_expect_str_eq(g.server, "db:9");
	cr_expect_str_eq(g.key, "k1");
	cr_expect_str_eq(g.tenant, "acme");
	cr_expect_null(g.key_file);
	const char *want[] = {"tally", "query", "--from", "-1d", "--format", "csv", "--", "--key", "x"};
	cr_assert_eq(argc, 9);
	for (int i = 0; i < argc; i++)
		cr_expect_str_eq(argv[i], want[i], "argv[%d]", i);
	cr_expect_null(argv[argc]);
}

/* Description: a global option without its value, or given twice, is an
 * error naming it; so is a --tenant that is not 1 to 64 bytes; --key-filex
 * is not --key-file. */
Test(remote, globals_errors)
{
	char *a1[] = {"tally", "stats", "--key-file", NULL};
	int argc = 3;
	cli_globals g = {0};
	char err[CLI_KEY_SOURCE_SIZE] = "";
	cr_expect_eq(cli_globals_extract(&g, &argc, a1, err), -EINVAL);
	cr_expect_str_eq(err, "option '--key-file' needs a value");
	char *a2[] = {"tally", "--tenant=a", "stats", "--tenant", "b", NULL};
	argc = 5;
	memset(&g, 0, sizeof(g));
	cr_expect_eq(cli_globals_extract(&g, &argc, a2, err), -EINVAL);
	cr_expect_str_eq(err, "option '--tenant' given twice");
	/* A tenant name is 1 to 64 bytes: 65 is refused, never cut to 64. */
	char long_name[66];
	memset(long_name, 'a', 65);
	long_name[65] = '\0';
	char *a4[] = {"tally", "--tenant", long_name, "ingest", "f.csv", NULL};
	argc = 5;
	memset(&g, 0, sizeof(g));
	cr_expect_eq(cli_globals_extract(&g, &argc, a4, err), -EINVAL);
	cr_expect_str_eq(err, "option '--tenant': not a tenant name (1 to 64 bytes)");
	char *a5[] = {"tally", "--tenant=", "stats", NULL};
	argc = 3;
	memset(&g, 0, sizeof(g));
	cr_expect_eq(cli_globals_extract(&g, &argc, a5, err), -EINVAL);
	cr_expect_str_eq(err, "option '--tenant': not a tenant name (1 to 64 bytes)");
	long_name[64] = '\0';
	char *a6[] = {"tally", "--tenant", long_name, "stats", NULL};
	argc = 4;
	memset(&g, 0, sizeof(g));
	cr_expect_eq(cli_globals_extract(&g, &argc, a6, err), 0, "%s", err);
	cr_expect_str_eq(g.tenant, long_name);
	char *a3[] = {"tally", "stats", "--key-filex", "f", NULL};
	argc = 4;
	memset(&g, 0, sizeof(g));
	cr_expect_eq(cli_globals_extract(&g, &argc, a3, err), 0);
	cr_expect_eq(argc, 4, "an unknown option is the command's to refuse");
}

static char dir[64];

static void write_file(const char *name, const char *text, char *path)
{
	sprintf(path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

/* Description: the key comes from --key, else --key-file (first line,
 * trimmed), else TALLY_KEY, else the admin key file if readable; the
 * source is named; empty, missing, absent, too long and unreadable keys
 * are exact errors. */
Test(remote, key_lookup_order)
{
	strcpy(dir, "/tmp/test_cli_remote_XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	char file[128], admin[128], empty[128], missing[128];
	write_file("key", "  tk_from_file \r\nsecond line\n", file);
	write_file("admin.key", "tk_admin\n", admin);
	write_file("empty", "\n\n", empty);
	sprintf(missing, "%s/none", dir);
	char key[CLI_KEY_SIZE_MAX + 1], source[CLI_KEY_SOURCE_SIZE], err[CLI_KEY_SOURCE_SIZE];

	cli_globals g = {.key = "tk_flag", .key_file = file};
	cr_assert_eq(cli_key_resolve(&g, "tk_env", admin, key, source, err), 0);
	cr_expect_str_eq(key, "tk_flag");
	cr_expect_str_eq(source, "--key");

	g.key = NULL;
	cr_assert_eq(cli_key_resolve(&g, "tk_env", admin, key, source, err), 0, "%s", err);
	cr_expect_str_eq(key, "tk_from_file");
	char want[CLI_KEY_SOURCE_SIZE];
	snprintf(want, sizeof(want), "--key-file %s", file);
	cr_expect_str_eq(source, want);

	g.key_file = NULL;
	cr_assert_eq(cli_key_resolve(&g, "tk_env", admin, key, source, err), 0);
	cr_expect_str_eq(key, "tk_env");
	cr_expect_str_eq(source, "TALLY_KEY");

	cr_assert_eq(cli_key_resolve(&g, NULL, admin, key, source, err), 0);
	cr_expect_str_eq(key, "tk_admin");
	cr_expect_str_eq(source, admin);

	cr_expect_eq(cli_key_resolve(&g, NULL, missing, key, source, err), -EINVAL);
	snprintf(want, sizeof(want),
		 "no API key: give --key KEY or --key-file FILE, or set TALLY_KEY (%s, tried last, is not readable)",
		 missing);
	cr_expect_str_eq(err, want);

	g.key_file = empty;
	cr_expect_eq(cli_key_resolve(&g, NULL, admin, key, source, err), -EINVAL);
	snprintf(want, sizeof(want), "key file %s is empty", empty);
	cr_expect_str_eq(err, want);

	g.key_file = missing;
	cr_expect_eq(cli_key_resolve(&g, NULL, admin, key, source, err), -EINVAL);
	snprintf(want, sizeof(want), "cannot read key file %s: No such file or directory", missing);
	cr_expect_str_eq(err, want);

	char longer[CLI_KEY_SIZE_MAX + 3], too_long[128];
	memset(longer, 'k', CLI_KEY_SIZE_MAX + 1);
	strcpy(longer + CLI_KEY_SIZE_MAX + 1, "\n");
	write_file("long", longer, too_long);
	g.key_file = too_long;
	cr_expect_eq(cli_key_resolve(&g, NULL, admin, key, source, err), -EINVAL);
	snprintf(want, sizeof(want), "key file %s: the key is longer than %u bytes", too_long,
		 CLI_KEY_SIZE_MAX);
	cr_expect_str_eq(err, want);

	g.key_file = dir; /* opens, but reading it fails (EISDIR) */
	cr_expect_eq(cli_key_resolve(&g, NULL, admin, key, source, err), -EINVAL);
	snprintf(want, sizeof(want), "cannot read key file %s: read error", dir);
	cr_expect_str_eq(err, want);

	g.key_file = NULL;
	g.key = "";
	cr_expect_eq(cli_key_resolve(&g, NULL, admin, key, source, err), -EINVAL);
	cr_expect_str_eq(err, "--key is empty");
	g.key = NULL;
	cr_expect_eq(cli_key_resolve(&g, "", admin, key, source, err), -EINVAL);
	cr_expect_str_eq(err, "TALLY_KEY is empty");

	unlink(file);
	unlink(admin);
	unlink(empty);
	unlink(too_long);
	rmdir(dir);
}

/* ---- events --all against a server whose cursors do not move ------------- */

#define CURSOR_PAGES_MAX 8

typedef struct cursor_peer {
	int listen_fd;
	const char *cursors[CURSOR_PAGES_MAX]; /* next_cursor of page k; then "" */
	int pages;                             /* ListEvents answered */
	char asked[CURSOR_PAGES_MAX][64];      /* the cursor each asked for */
} cursor_peer;

/* Answers Hello, then each ListEvents with one event (id "e<k>") and the
 * next cursor of its list, until the client closes. */
static void *cursor_peer_main(void *arg)
{
	cursor_peer *cp = arg;
	int fd = accept(cp->listen_fd, NULL, NULL);
	if (fd < 0)
		return NULL;
	frame_reader r;
	frame_reader_init(&r, 0);
	static uint8_t buf[4096];
	size_t at = 0, have = 0;
	Tally__V1__Request *req;
	while ((req = peer_recv(fd, &r, buf, sizeof(buf), &at, &have))) {
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		resp.request_id = req->request_id;
		Tally__V1__HelloOk ok = TALLY__V1__HELLO_OK__INIT;
		Tally__V1__EventPage page = TALLY__V1__EVENT_PAGE__INIT;
		Tally__V1__Event e = TALLY__V1__EVENT__INIT;
		Tally__V1__Event *events[1] = {&e};
		char id[16];
		if (req->body_case == TALLY__V1__REQUEST__BODY_HELLO) {
			ok.tenant = "acme";
			ok.protocol_version = 1;
			resp.body_case = TALLY__V1__RESPONSE__BODY_HELLO;
			resp.hello = &ok;
			peer_send(fd, &resp);
		} else if (req->body_case == TALLY__V1__REQUEST__BODY_LIST_EVENTS &&
			   cp->pages < CURSOR_PAGES_MAX) {
			snprintf(cp->asked[cp->pages], sizeof(cp->asked[0]), "%s",
				 req->list_events->cursor);
			snprintf(id, sizeof(id), "e%d", cp->pages);
			e.event_id = (ProtobufCBinaryData){strlen(id), (uint8_t *)id};
			e.time_us = INT64_C(1796119200000000) + cp->pages;
			page.n_events = 1;
			page.events = events;
			page.next_cursor = (char *)(cp->cursors[cp->pages] ? cp->cursors[cp->pages] : "");
			cp->pages++;
			resp.body_case = TALLY__V1__RESPONSE__BODY_EVENTS;
			resp.events = &page;
			peer_send(fd, &resp);
		}
		tally__v1__request__free_unpacked(req, NULL);
	}
	frame_reader_free(&r);
	close(fd);
	return NULL;
}

/* `tally events --all` against cp's server. */
static cli_run_result *events_all_against(cursor_peer *cp)
{
	char server[64];
	cp->listen_fd = peer_listen_loopback(server, sizeof(server));
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, cursor_peer_main, cp), 0);
	memset(&cli_globals_current, 0, sizeof(cli_globals_current));
	cli_globals_current.server = server;
	cli_globals_current.key = "tk_x";
	const char *argv[] = {"events", "--all", "--format", "csv"};
	cli_run_result *r = cli_run("/tmp/tally-test-events-cursor", &cli_command_events, 4, argv);
	pthread_join(th, NULL);
	close(cp->listen_fd);
	memset(&cli_globals_current, 0, sizeof(cli_globals_current));
	return r;
}

/* Description: `tally events --all` follows cursors only forward in
 * (time, id) order: a server (buggy or hostile) that gives the same next
 * cursor again, or one before the page it followed, stops it with exit
 * status 2 and a message naming both, after printing the pages it had
 * (before 2026-12-02 it asked for the same page for good, printing it
 * each time). Cursors that move forward are followed to the last page. */
Test(remote, events_all_follows_cursors_only_forward, .timeout = 30)
{
	cursor_peer same = {.cursors = {"stuck", "stuck", "stuck"}};
	cli_run_result *r = events_all_against(&same);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_eq(same.pages, 2);
	cr_expect_str_eq(same.asked[1], "stuck");
	cr_expect(strstr(r->err, "tally events: the server's next page (cursor stuck) does not come "
			 "after the page it followed (cursor stuck): stopping"), "%s", r->err);
	cr_expect(strstr(r->out, "\ne0,") && strstr(r->out, "\ne1,") && !strstr(r->out, "\ne2,"),
		  "%s", r->out);

	cursor_peer back = {.cursors = {"1796119200000001:6530", "1796119200000000:6531"}};
	r = events_all_against(&back);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_eq(back.pages, 2);
	cr_expect(strstr(r->err, "does not come after"), "%s", r->err);

	cursor_peer forward = {.cursors = {"1796119200000000:6530", "1796119200000000:653000",
					   "1796119200000001:00"}};
	r = events_all_against(&forward);
	cr_expect_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_eq(forward.pages, 4);
	cr_expect_str_eq(forward.asked[3], "1796119200000001:00");
	cr_expect(strstr(r->out, "\ne3,"), "%s", r->out);
}

/* Description: `tally events --user ''` is a usage error (exit 2): an
 * empty user is no filter to the server, so it listed every user's events
 * (before 2026-12-02). */
Test(remote, events_with_an_empty_user_is_a_usage_error)
{
	memset(&cli_globals_current, 0, sizeof(cli_globals_current));
	cli_globals_current.server = "127.0.0.1:1";
	cli_globals_current.key = "tk_x";
	const char *argv[] = {"events", "--user", ""};
	cli_run_result *r = cli_run("/tmp/tally-test-events-user", &cli_command_events, 3, argv);
	memset(&cli_globals_current, 0, sizeof(cli_globals_current));
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect(strstr(r->err, "--user needs a user: an empty one would select every user's events"),
		  "%s", r->err);
}
