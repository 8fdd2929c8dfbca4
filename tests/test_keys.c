/*
 * test_keys.c — server/keys.c: API keys issued, looked up, revoked,
 * persisted durably as digests only.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#include "keys.h"
#include "support/fault_io.h"
#include "support/test_dir.h"

static char *slurp(const char *dir)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/keys.json", dir);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

/* Description: an issued key works at once, is bound to its tenant (admin
 * keys to none), survives a reopen, is stored only as a digest, and once
 * revoked is refused, also after a reopen; unknown and malformed keys are
 * refused. */
Test(keys, issue_lookup_revoke_and_persist)
{
	test_dir dir;
	test_dir_make(&dir, "keys");
	char err[TALLY_ERRMSG_SIZE] = "";
	keystore *ks;
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	char acme[KEY_TEXT_SIZE], admin[KEY_TEXT_SIZE], acme_id[KEY_ID_SIZE], admin_id[KEY_ID_SIZE];
	cr_assert_eq(keys_issue(ks, "acme", acme, acme_id, err), 0, "%s", err);
	cr_assert_eq(keys_issue(ks, NULL, admin, admin_id, err), 0, "%s", err);
	cr_expect_eq(strlen(acme), KEY_TEXT_SIZE - 1);
	cr_expect_eq(strncmp(acme, "tk_", 3), 0);
	cr_expect_str_neq(acme, admin);
	const key_entry *e = keys_lookup(ks, acme);
	cr_assert_not_null(e);
	cr_expect_str_eq(e->tenant, "acme");
	cr_expect_str_eq(e->id, acme_id);
	e = keys_lookup(ks, admin);
	cr_assert_not_null(e);
	cr_expect_str_eq(e->tenant, "");

	char wrong[KEY_TEXT_SIZE];
	memcpy(wrong, acme, KEY_TEXT_SIZE);
	wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
	cr_expect_null(keys_lookup(ks, wrong), "one digit off");
	cr_expect_null(keys_lookup(ks, "tk_short"));
	cr_expect_null(keys_lookup(ks, ""));
	cr_expect_null(keys_lookup(ks, NULL));

	const char *file = slurp(dir.path);
	cr_expect_null(strstr(file, acme + 3), "the key text is not stored");
	cr_expect_null(strstr(file, admin + 3), "the key text is not stored");
	cr_expect_neq(strstr(file, acme_id), NULL, "the id is");
	keys_close(ks);

	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_assert_not_null(keys_lookup(ks, acme), "survives a reopen");
	cr_assert_eq(keys_revoke(ks, acme_id, err), 0, "%s", err);
	cr_expect_null(keys_lookup(ks, acme), "revoked: refused at once");
	cr_expect_not_null(keys_lookup(ks, admin));
	cr_expect_eq(keys_revoke(ks, "0000000000000000", err), TALLY_E_NOTFOUND);
	size_t n;
	const key_entry *all = keys_list(ks, &n);
	cr_expect_eq(n, 2);
	cr_expect(all[0].revoked && !all[1].revoked);
	keys_close(ks);

	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_expect_null(keys_lookup(ks, acme), "still revoked after a reopen");
	cr_expect_not_null(keys_lookup(ks, admin));
	keys_close(ks);
	test_dir_remove_tree(dir.path);
}

/* Description: a key list that is not valid is refused at open with the
 * file named, and a failed write leaves the key unissued. */
Test(keys, corrupt_file_and_failed_write)
{
	test_dir dir;
	test_dir_make(&dir, "keys-bad");
	char path[600], err[TALLY_ERRMSG_SIZE] = "";
	snprintf(path, sizeof(path), "%s/keys.json", dir.path);
	FILE *f = fopen(path, "w");
	fputs("{\"version\": 1, \"keys\": [{\"id\": \"zz\"}]}", f);
	fclose(f);
	keystore *ks = NULL;
	cr_expect_eq(keys_open(NULL, dir.path, &ks, err), TALLY_E_CORRUPT);
	cr_expect_null(ks);
	cr_expect_neq(strstr(err, "keys.json"), NULL, "%s", err);
	unlink(path);

	fault_io *fio = fault_io_create();
	cr_assert_eq(keys_open(fault_io_table(fio), dir.path, &ks, err), 0, "%s", err);
	fault_io_fsync_fail_nth(fio, 1, EIO);
	char key[KEY_TEXT_SIZE], id[KEY_ID_SIZE];
	cr_expect_eq(keys_issue(ks, "acme", key, id, err), -EIO);
	size_t n;
	keys_list(ks, &n);
	cr_expect_eq(n, 0, "not durable, not issued");
	keys_close(ks);
	fault_io_destroy(fio);
	test_dir_remove_tree(dir.path);
}

/* Description: with 300 keys (the index grows several times) every key
 * finds its own entry, before and after a reopen, and revoking one leaves
 * the others working. */
Test(keys, many_keys_each_finds_its_entry)
{
	test_dir dir;
	test_dir_make(&dir, "keys-many");
	char err[TALLY_ERRMSG_SIZE] = "";
	keystore *ks;
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	enum { MANY = 300 };
	static char text[MANY][KEY_TEXT_SIZE], id[MANY][KEY_ID_SIZE], tenant[MANY][16];
	for (int i = 0; i < MANY; i++) {
		snprintf(tenant[i], sizeof(tenant[i]), "t%d", i);
		cr_assert_eq(keys_issue(ks, tenant[i], text[i], id[i], err), 0, "%s", err);
	}
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < MANY; i++) {
			const key_entry *e = keys_lookup(ks, text[i]);
			cr_assert_not_null(e, "key %d, pass %d", i, pass);
			cr_expect_str_eq(e->tenant, tenant[i]);
			cr_expect_str_eq(e->id, id[i]);
		}
		keys_close(ks);
		cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	}
	cr_assert_eq(keys_revoke(ks, id[150], err), 0, "%s", err);
	for (int i = 0; i < MANY; i++)
		cr_expect((keys_lookup(ks, text[i]) == NULL) == (i == 150), "key %d", i);
	keys_close(ks);
	test_dir_remove_tree(dir.path);
}

/* Description: an ephemeral admin key works at once but is never written:
 * keys.json does not name it, and after a reopen it is unknown, while a
 * key issued after it is kept. */
Test(keys, ephemeral_keys_are_never_written)
{
	test_dir dir;
	test_dir_make(&dir, "keys-ephemeral");
	char err[TALLY_ERRMSG_SIZE] = "";
	keystore *ks;
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	char eph[KEY_TEXT_SIZE], eph_id[KEY_ID_SIZE], kept[KEY_TEXT_SIZE], kept_id[KEY_ID_SIZE];
	cr_assert_eq(keys_issue_ephemeral(ks, eph, eph_id, err), 0, "%s", err);
	const key_entry *e = keys_lookup(ks, eph);
	cr_assert_not_null(e);
	cr_expect(e->ephemeral);
	cr_expect_str_eq(e->tenant, "");
	cr_assert_eq(keys_issue(ks, "acme", kept, kept_id, err), 0, "%s", err);
	cr_expect_null(strstr(slurp(dir.path), eph_id), "the ephemeral key's id is in keys.json");
	cr_expect_not_null(strstr(slurp(dir.path), kept_id));
	keys_close(ks);
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_expect_null(keys_lookup(ks, eph));
	cr_expect_not_null(keys_lookup(ks, kept));
	keys_close(ks);
	test_dir_remove(&dir);
}

/* Description: a key whose id is taken is drawn again. The random source
 * is made to repeat the stream that drew the first key (the same key, the
 * same id); the second key gets a new id and both work. A source that only
 * ever repeats is refused with -EIO and issues nothing. */
Test(keys, a_taken_id_is_drawn_again)
{
	test_dir dir;
	test_dir_make(&dir, "keys-taken-id");
	char err[TALLY_ERRMSG_SIZE] = "";
	fault_io *fio = fault_io_create();
	keystore *ks;
	cr_assert_eq(keys_open(fault_io_table(fio), dir.path, &ks, err), 0, "%s", err);
	char one[KEY_TEXT_SIZE], two[KEY_TEXT_SIZE], one_id[KEY_ID_SIZE], two_id[KEY_ID_SIZE];
	fault_io_random_seed(fio, 42);
	cr_assert_eq(keys_issue(ks, "acme", one, one_id, err), 0, "%s", err);
	fault_io_random_seed(fio, 42);
	cr_assert_eq(keys_issue(ks, "beta", two, two_id, err), 0, "%s", err);
	cr_expect_str_neq(one_id, two_id);
	cr_expect_str_neq(one, two);
	const key_entry *e = keys_lookup(ks, one);
	cr_assert_not_null(e);
	cr_expect_str_eq(e->tenant, "acme");
	e = keys_lookup(ks, two);
	cr_assert_not_null(e);
	cr_expect_str_eq(e->tenant, "beta");
	size_t n;
	keys_list(ks, &n);
	cr_expect_eq(n, 2);

	char three[KEY_TEXT_SIZE], three_id[KEY_ID_SIZE];
	fault_io_random_repeat(fio, 42);
	cr_expect_eq(keys_issue(ks, "gamma", three, three_id, err), -EIO);
	cr_expect_str_eq(err, "the random source gave 4 keys whose ids are taken: it is not random");
	keys_list(ks, &n);
	cr_expect_eq(n, 2, "nothing issued");
	keys_close(ks);
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	keys_list(ks, &n);
	cr_expect_eq(n, 2, "nothing written");
	cr_expect_not_null(keys_lookup(ks, two));
	keys_close(ks);
	fault_io_destroy(fio);
	test_dir_remove_tree(dir.path);
}

static void write_key_list(const char *dir, const char *text)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/keys.json", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

/* The digest keys.json stores for the only key issued in dir. */
static void only_digest(const char *dir, char digest[65])
{
	const char *d = strstr(slurp(dir), "\"digest\": \"");
	cr_assert_not_null(d);
	snprintf(digest, 65, "%.64s", d + strlen("\"digest\": \""));
}

/* Description: keys.json damage that would revive a revoked key or name
 * no real tenant is refused at open (TALLY_E_CORRUPT, the file named):
 * one key listed twice, live then revoked; an entry with "revoked" given
 * twice, true then false (JSON keeps the last); a key whose tenant is not
 * a tenant name. Before 2026-12-02 each opened, the key live. */
Test(keys, damaged_lists_that_could_revive_a_key_are_refused)
{
	test_dir dir;
	test_dir_make(&dir, "keys-damaged");
	char err[TALLY_ERRMSG_SIZE] = "", key[KEY_TEXT_SIZE], id[KEY_ID_SIZE], digest[65];
	keystore *ks;
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_assert_eq(keys_issue(ks, "acme", key, id, err), 0, "%s", err);
	keys_close(ks);
	only_digest(dir.path, digest);
	static const char *const lists[][2] = {
		{"{\"version\":1,\"keys\":[{\"id\":\"%s\",\"digest\":\"%s\",\"tenant\":\"acme\","
		 "\"created_us\":1,\"revoked\":false},{\"id\":\"%s\",\"digest\":\"%s\",\"tenant\":"
		 "\"acme\",\"created_us\":1,\"revoked\":true}]}",
		 "keys.json: a key listed twice"},
		{"{\"version\":1,\"keys\":[{\"id\":\"%s\",\"digest\":\"%s\",\"tenant\":\"acme\","
		 "\"created_us\":1,\"revoked\":true,\"revoked\":false}]}%.0s%.0s",
		 "keys.json: not JSON (line 1: duplicate object key"},
		{"{\"version\":1,\"keys\":[{\"id\":\"%s\",\"digest\":\"%s\",\"tenant\":\"ac me/../x\","
		 "\"created_us\":1,\"revoked\":false}]}%.0s%.0s",
		 "keys.json: a malformed key entry"},
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		char text[1024];
		snprintf(text, sizeof(text), lists[i][0], id, digest, id, digest);
		write_key_list(dir.path, text);
		ks = NULL;
		cr_expect_eq(keys_open(NULL, dir.path, &ks, err), TALLY_E_CORRUPT, "list %zu", i);
		cr_expect_null(ks);
		cr_expect_not_null(strstr(err, lists[i][1]), "list %zu: \"%s\" does not say \"%s\"", i,
				   err, lists[i][1]);
	}
	test_dir_remove_tree(dir.path);
}

typedef struct hand_over {
	int fail;       /* the code the hand-over returns */
	int calls;
	char key[KEY_TEXT_SIZE];
} hand_over;

static int hand_over_key(void *ctx, const char *key_text, char *errmsg)
{
	hand_over *h = ctx;
	h->calls++;
	snprintf(h->key, sizeof(h->key), "%s", key_text);
	if (h->fail)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "the hand-over failed");
	return h->fail;
}

/* Description: keys_issue_delivered hands the key over before keys.json
 * records it. A hand-over that fails records nothing (its code and
 * message returned, no key listed, also after a reopen); one that
 * succeeds is given the very key issued, which is then an admin key. */
Test(keys, a_delivered_key_is_recorded_only_after_its_hand_over)
{
	test_dir dir;
	test_dir_make(&dir, "keys-delivered");
	char err[TALLY_ERRMSG_SIZE] = "", key[KEY_TEXT_SIZE], id[KEY_ID_SIZE];
	keystore *ks;
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	hand_over h = {.fail = -ENOSPC};
	cr_expect_eq(keys_issue_delivered(ks, hand_over_key, &h, key, id, err), -ENOSPC);
	cr_expect_str_eq(err, "the hand-over failed");
	size_t n;
	keys_list(ks, &n);
	cr_expect_eq(n, 0);
	cr_expect_null(keys_lookup(ks, h.key));
	h.fail = 0;
	cr_assert_eq(keys_issue_delivered(ks, hand_over_key, &h, key, id, err), 0, "%s", err);
	cr_expect_eq(h.calls, 2);
	cr_expect_str_eq(h.key, key, "the key handed over is the key issued");
	keys_close(ks);
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	keys_list(ks, &n);
	cr_expect_eq(n, 1, "only the delivered key is recorded");
	const key_entry *e = keys_lookup(ks, key);
	cr_assert_not_null(e);
	cr_expect_str_eq(e->tenant, "");
	keys_close(ks);
	test_dir_remove_tree(dir.path);
}

/* Description: a revocation whose write fails fails closed: the key is
 * refused at once all the same. When the directory fsync failed (after
 * the rename), a reopen finds it revoked; when the write failed before
 * the rename (a full disk), a reopen finds it live, as keys.h says.
 * Revoking it again, as the error advises, writes the file again (it
 * would have found the key revoked in memory and written nothing): the
 * retry on a full disk fails too, and once there is room it succeeds and
 * sticks. Before 2026-12-02 the key stayed usable after either failure,
 * and the first came back revoked after a reopen. */
Test(keys, a_failed_revocation_fails_closed)
{
	test_dir dir;
	test_dir_make(&dir, "keys-revoke-fail");
	char err[TALLY_ERRMSG_SIZE] = "", a[KEY_TEXT_SIZE], b[KEY_TEXT_SIZE];
	char a_id[KEY_ID_SIZE], b_id[KEY_ID_SIZE];
	fault_io *fio = fault_io_create();
	keystore *ks;
	cr_assert_eq(keys_open(fault_io_table(fio), dir.path, &ks, err), 0, "%s", err);
	cr_assert_eq(keys_issue(ks, "acme", a, a_id, err), 0, "%s", err);
	cr_assert_eq(keys_issue(ks, "acme", b, b_id, err), 0, "%s", err);
	fault_io_fsync_dir_fail(fio, EIO);
	cr_expect_eq(keys_revoke(ks, a_id, err), -EIO);
	fault_io_fsync_dir_fail(fio, 0);
	cr_expect_null(keys_lookup(ks, a), "refused after a failed directory fsync");
	fault_io_disk_limit_set(fio, 0);
	cr_expect_eq(keys_revoke(ks, b_id, err), -ENOSPC);
	cr_expect_eq(keys_revoke(ks, b_id, err), -ENOSPC, "the retry writes (and fails) again");
	fault_io_disk_limit_clear(fio);
	cr_expect_null(keys_lookup(ks, b), "refused after a failed write");
	keys_close(ks);
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_expect_null(keys_lookup(ks, a), "the replaced file has it revoked");
	cr_expect_not_null(keys_lookup(ks, b), "the file was not replaced");
	keys_close(ks);
	/* The advised retry in the same process, once there is room. */
	cr_assert_eq(keys_open(fault_io_table(fio), dir.path, &ks, err), 0, "%s", err);
	fault_io_disk_limit_set(fio, 0);
	cr_expect_eq(keys_revoke(ks, b_id, err), -ENOSPC);
	fault_io_disk_limit_clear(fio);
	cr_assert_eq(keys_revoke(ks, b_id, err), 0, "%s", err);
	keys_close(ks);
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_expect_null(keys_lookup(ks, b));
	keys_close(ks);
	fault_io_destroy(fio);
	test_dir_remove_tree(dir.path);
}
