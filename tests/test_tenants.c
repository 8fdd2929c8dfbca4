/*
 * test_tenants.c — server/tenants.c: the tenant registry is created,
 * suspended and resumed durably, refuses bad names and duplicates,
 * changes nothing when its file cannot be written, and refuses a damaged
 * tenant list, naming the file and the damage.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tenants.h"

/* Description: created tenants are found by name, listed in creation order
 * and keep their suspension across a reopen; a second create is -EEXIST;
 * suspending an unknown tenant is NOTFOUND. tenants_check_new answers as a
 * creation would (0, -EEXIST, TALLY_E_TENANT, with the same messages) and
 * creates nothing, in memory or in the file. */
Test(tenants, create_find_suspend_and_persist)
{
	test_dir dir;
	test_dir_make(&dir, "tenants");
	char err[TALLY_ERRMSG_SIZE] = "";
	tenant_registry *r;
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	cr_expect_null(tenants_find(r, "acme"));
	cr_assert_eq(tenants_create(r, "acme", err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "globex.eu-1", err), 0, "%s", err);
	cr_expect_eq(tenants_create(r, "acme", err), -EEXIST);
	cr_expect_str_eq(err, "tenant acme exists");
	cr_expect_eq(tenants_check_new(r, "ghost", err), 0, "%s", err);
	cr_expect_null(tenants_find(r, "ghost"));
	cr_expect_eq(tenants_check_new(r, "acme", err), -EEXIST);
	cr_expect_str_eq(err, "tenant acme exists");
	cr_expect_eq(tenants_check_new(r, "gh ost", err), TALLY_E_TENANT);
	cr_expect_str_eq(err, "malformed tenant name 'gh ost': 1..64 bytes of [A-Za-z0-9._-]");
	cr_assert_eq(tenants_set_suspended(r, "globex.eu-1", true, err), 0, "%s", err);
	cr_expect_eq(tenants_set_suspended(r, "nobody", true, err), TALLY_E_NOTFOUND);
	cr_expect_str_eq(err, "no tenant nobody");
	tenants_close(r);

	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	size_t n;
	const tenant_entry *list = tenants_list(r, &n);
	cr_assert_eq(n, 2, "acme and globex.eu-1, no ghost");
	cr_expect_str_eq(list[0].name, "acme");
	cr_expect_not(list[0].suspended);
	cr_expect_str_eq(list[1].name, "globex.eu-1");
	cr_expect(list[1].suspended);
	cr_expect_gt(list[0].created_us, 0);
	cr_expect_eq(tenants_find(r, "globex.eu-1"), &list[1]);
	cr_assert_eq(tenants_set_suspended(r, "globex.eu-1", false, err), 0, "%s", err);
	cr_expect_not(tenants_find(r, "globex.eu-1")->suspended);
	tenants_close(r);
	test_dir_remove(&dir);
}

/* Description: malformed names are refused with the rule in the message. */
Test(tenants, names)
{
	cr_expect(tenants_name_valid("a"));
	cr_expect(tenants_name_valid("Acme_Corp.eu-1"));
	char long_name[TALLY_TENANT_SIZE_MAX + 2];
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	cr_expect_not(tenants_name_valid(long_name));
	long_name[TALLY_TENANT_SIZE_MAX] = 0;
	cr_expect(tenants_name_valid(long_name));
	cr_expect_not(tenants_name_valid(""));
	cr_expect_not(tenants_name_valid("a b"));
	cr_expect_not(tenants_name_valid("a/b"));
	cr_expect_not(tenants_name_valid("ümlaut"));

	test_dir dir;
	test_dir_make(&dir, "tenants-names");
	char err[TALLY_ERRMSG_SIZE];
	tenant_registry *r;
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	cr_expect_eq(tenants_create(r, "a/b", err), TALLY_E_TENANT);
	cr_expect_str_eq(err, "malformed tenant name 'a/b': 1..64 bytes of [A-Za-z0-9._-]");
	size_t n;
	tenants_list(r, &n);
	cr_expect_eq(n, 0);
	tenants_close(r);
	test_dir_remove(&dir);
}

/* Description: when the registry file cannot be written (fsync EIO), the
 * create fails with the error and the tenant does not exist, in memory or
 * after a reopen; 600 tenants are all found after a reopen. */
Test(tenants, failed_write_changes_nothing_and_many_tenants)
{
	test_dir dir;
	test_dir_make(&dir, "tenants-fail");
	fault_io *f = fault_io_create();
	char err[TALLY_ERRMSG_SIZE];
	tenant_registry *r;
	cr_assert_eq(tenants_open(fault_io_table(f), dir.path, &r, err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "first", err), 0, "%s", err);
	fault_io_fsync_fail_nth(f, 1, EIO);
	cr_expect_eq(tenants_create(r, "second", err), -EIO);
	cr_expect_null(tenants_find(r, "second"));
	cr_expect_eq(tenants_set_suspended(r, "first", true, err), 0, "%s", err);
	tenants_close(r);
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	cr_expect_null(tenants_find(r, "second"));
	cr_assert_not_null(tenants_find(r, "first"));
	cr_expect(tenants_find(r, "first")->suspended);
	for (int i = 0; i < 600; i++) {
		char name[32];
		snprintf(name, sizeof(name), "t%04d", i);
		cr_assert_eq(tenants_create(r, name, err), 0, "%s", err);
	}
	tenants_close(r);
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	for (int i = 0; i < 600; i++) {
		char name[32];
		snprintf(name, sizeof(name), "t%04d", i);
		cr_assert_not_null(tenants_find(r, name), "%s", name);
	}
	cr_expect_null(tenants_find(r, "t600"));
	tenants_close(r);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

/* Description: pending additions are found at once, cost one write for
 * all of them at commit, and vanish on rollback after a failed commit
 * (also after a reopen); a create commits earlier pending ones too. */
Test(tenants, pending_commit_and_rollback)
{
	test_dir dir;
	test_dir_make(&dir, "tenants-pending");
	fault_io *f = fault_io_create();
	char err[TALLY_ERRMSG_SIZE];
	tenant_registry *r;
	cr_assert_eq(tenants_open(fault_io_table(f), dir.path, &r, err), 0, "%s", err);
	cr_assert_eq(tenants_commit(r, err), 0, "nothing pending: nothing to do");
	for (int i = 0; i < 100; i++) {
		char name[16];
		snprintf(name, sizeof(name), "p%03d", i);
		cr_assert_eq(tenants_add_pending(r, name, err), 0, "%s", err);
		cr_assert_not_null(tenants_find(r, name));
	}
	cr_expect_eq(tenants_add_pending(r, "p007", err), -EEXIST);
	fault_io_fsync_fail_nth(f, 1, EIO);
	cr_expect_eq(tenants_commit(r, err), -EIO);
	tenants_rollback(r);
	cr_expect_null(tenants_find(r, "p000"));
	cr_expect_null(tenants_find(r, "p099"));
	size_t n;
	tenants_list(r, &n);
	cr_expect_eq(n, 0);
	cr_assert_eq(tenants_add_pending(r, "kept", err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "created", err), 0, "%s", err);
	tenants_close(r);
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	const tenant_entry *list = tenants_list(r, &n);
	cr_assert_eq(n, 2, "acme and globex.eu-1, no ghost");
	cr_expect_str_eq(list[0].name, "kept");
	cr_expect_str_eq(list[1].name, "created");
	cr_expect_null(tenants_find(r, "p050"));
	tenants_close(r);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

/* Writes text to DIR/tenants.json. */
static void tenants_file_write(const test_dir *dir, const char *text)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/tenants.json", dir->path);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

/* Description: a damaged tenant list stops the open with
 * TALLY_E_CORRUPT and a message naming the file and what is wrong: not
 * JSON, not a version 1 list, a malformed entry (by its index), a name
 * listed twice, a file over TENANTS_FILE_BYTES_MAX (256 MiB, by its size
 * alone); a directory in its place is a read error. */
Test(tenants, a_damaged_tenant_list_is_refused_naming_it)
{
	test_dir dir;
	test_dir_make(&dir, "tenants-bad");
	char path[128], want[400], err[TALLY_ERRMSG_SIZE] = "";
	snprintf(path, sizeof(path), "%s/tenants.json", dir.path);
	static const char good[] = "{\"name\": \"acme\", \"created_us\": 1, \"suspended\": false}";
	static const struct {
		const char *text; /* %s: the good entry */
		const char *says; /* after "DIR/tenants.json" */
	} cases[] = {
		{"{\"version\": 1, \"tenants\": [", ": not JSON (line 1: "},
		{"{\"version\": 2, \"tenants\": []}", ": not a version 1 tenant list"},
		{"{\"version\": 1}", ": not a version 1 tenant list"},
		{"{\"version\": \"1\", \"tenants\": []}", ": not a version 1 tenant list"},
		{"[]", ": not a version 1 tenant list"},
		{"{\"version\": 1, \"tenants\": [%s, {\"name\": \"bad name\", \"created_us\": 1, "
		 "\"suspended\": false}]}", ": entry 1 is malformed"},
		{"{\"version\": 1, \"tenants\": [{\"name\": \"acme\", \"created_us\": 1}]}",
		 ": entry 0 is malformed"},
		{"{\"version\": 1, \"tenants\": [%s, {\"name\": \"b\", \"created_us\": \"1\", "
		 "\"suspended\": true}]}", ": entry 1 is malformed"},
		{"{\"version\": 1, \"tenants\": [%s, %s]}", ": tenant acme listed twice"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[400];
		snprintf(text, sizeof(text), cases[i].text, good, good);
		tenants_file_write(&dir, text);
		tenant_registry *r;
		cr_expect_eq(tenants_open(NULL, dir.path, &r, err), TALLY_E_CORRUPT, "case %zu", i);
		snprintf(want, sizeof(want), "%s%s", path, cases[i].says);
		cr_expect_eq(strncmp(err, want, strlen(want)), 0, "case %zu: %s", i, err);
	}

	cr_assert_eq(truncate(path, (256 << 20) + 1), 0);
	tenant_registry *r;
	cr_expect_eq(tenants_open(NULL, dir.path, &r, err), TALLY_E_CORRUPT);
	snprintf(want, sizeof(want), "%s: unreadable or larger than %u bytes", path, 256u << 20);
	cr_expect_str_eq(err, want);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(mkdir(path, 0700), 0);
	cr_expect_eq(tenants_open(NULL, dir.path, &r, err), -EISDIR);
	snprintf(want, sizeof(want), "read %s: %s", path, strerror(EISDIR));
	cr_expect_str_eq(err, want);
	cr_assert_eq(rmdir(path), 0);
	test_dir_remove(&dir);
}

/* Description: a suspension or a resumption whose write fails (a full
 * disk) leaves the tenant suspended, failing closed: a suspension that did
 * not reach the file still refuses the tenant, and a resumption that did
 * not lets it stay refused. tenants.json keeps what it held. Setting the
 * state again, as the error advises, writes the file again (it would have
 * found the state set in memory and written nothing), and so does
 * tenants_commit, tallyd's periodic save: after it, a reopen finds the
 * suspension. Before 2026-12-02 a failed suspension left the tenant live. */
Test(tenants, a_failed_state_change_leaves_the_tenant_suspended)
{
	test_dir dir;
	test_dir_make(&dir, "tenants-state-fail");
	fault_io *f = fault_io_create();
	char err[TALLY_ERRMSG_SIZE];
	tenant_registry *r;
	cr_assert_eq(tenants_open(fault_io_table(f), dir.path, &r, err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "live", err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "held", err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "third", err), 0, "%s", err);
	cr_assert_eq(tenants_set_suspended(r, "held", true, err), 0, "%s", err);
	fault_io_disk_limit_set(f, 0);
	cr_expect_eq(tenants_set_suspended(r, "live", true, err), -ENOSPC);
	cr_expect(tenants_find(r, "live")->suspended, "a failed suspension suspends");
	cr_expect_eq(tenants_set_suspended(r, "held", false, err), -ENOSPC);
	cr_expect(tenants_find(r, "held")->suspended, "a failed resumption keeps it suspended");
	cr_expect_eq(tenants_set_suspended(r, "live", true, err), -ENOSPC,
		     "setting it again writes (and fails) again");
	fault_io_disk_limit_clear(f);
	tenants_close(r);
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	cr_expect(!tenants_find(r, "live")->suspended, "the file was not replaced");
	cr_expect(tenants_find(r, "held")->suspended);
	tenants_close(r);
	/* In one process: the advised retry, then the periodic save. */
	cr_assert_eq(tenants_open(fault_io_table(f), dir.path, &r, err), 0, "%s", err);
	fault_io_disk_limit_set(f, 0);
	cr_expect_eq(tenants_set_suspended(r, "live", true, err), -ENOSPC);
	fault_io_disk_limit_clear(f);
	cr_assert_eq(tenants_set_suspended(r, "live", true, err), 0, "%s", err);
	fault_io_disk_limit_set(f, 0);
	cr_expect_eq(tenants_set_suspended(r, "third", true, err), -ENOSPC);
	fault_io_disk_limit_clear(f);
	cr_assert_eq(tenants_commit(r, err), 0, "%s", err);
	tenants_close(r);
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	cr_expect(tenants_find(r, "live")->suspended, "the retried suspension was written");
	cr_expect(tenants_find(r, "third")->suspended, "the periodic save wrote the suspension");
	tenants_close(r);
	fault_io_destroy(f);
	test_dir_remove_tree(dir.path);
}

/* Description: tenants.json with a member given twice ("suspended": true,
 * then false; JSON keeps the last) is refused at open, naming the file. */
Test(tenants, a_member_given_twice_is_refused)
{
	test_dir dir;
	test_dir_make(&dir, "tenants-dup");
	char err[TALLY_ERRMSG_SIZE] = "", path[600];
	tenant_registry *r;
	cr_assert_eq(tenants_open(NULL, dir.path, &r, err), 0, "%s", err);
	cr_assert_eq(tenants_create(r, "acme", err), 0, "%s", err);
	cr_assert_eq(tenants_set_suspended(r, "acme", true, err), 0, "%s", err);
	tenants_close(r);
	snprintf(path, sizeof(path), "%s/tenants.json", dir.path);
	FILE *file = fopen(path, "r");
	cr_assert_not_null(file);
	char text[4096];
	size_t n = fread(text, 1, sizeof(text) - 1, file);
	fclose(file);
	text[n] = 0;
	char *at = strstr(text, "\"suspended\": true");
	cr_assert_not_null(at, "%s", text);
	char changed[4200];
	snprintf(changed, sizeof(changed), "%.*s\"suspended\": true, \"suspended\": false%s",
		 (int)(at - text), text, at + strlen("\"suspended\": true"));
	file = fopen(path, "w");
	cr_assert_not_null(file);
	fputs(changed, file);
	fclose(file);
	r = NULL;
	cr_expect_eq(tenants_open(NULL, dir.path, &r, err), TALLY_E_CORRUPT);
	cr_expect_null(r);
	cr_expect_not_null(strstr(err, "tenants.json: not JSON (line "), "%s", err);
	cr_expect_not_null(strstr(err, "duplicate object key"), "%s", err);
	test_dir_remove_tree(dir.path);
}
