/*
 * test_cli_remote.c — tools/remote.c: global options taken out of argv
 * wherever they stand, and the API key lookup order (--key, --key-file,
 * TALLY_KEY, ./data/admin.key) with its errors.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../tools/remote.h"

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
