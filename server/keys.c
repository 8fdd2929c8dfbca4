/*
 * keys.c — API keys (keys.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "fail.h"
#include "jsonfile.h"
#include "keys.h"
#include "tenants.h"

#define KEYS_FILE "keys.json"
#define KEYS_FILE_BYTES_MAX (256u << 20)
#define KEY_DRAWS_MAX 4 /* keys drawn for one issue before the random source is blamed */

struct keystore {
	const tally_io *io;
	char dir[4096];
	key_entry *entries;
	size_t count;
	size_t capacity;
	uint32_t *slots;  /* open addressing by digest prefix: entry + 1, 0 = empty */
	size_t slot_mask; /* slots - 1 (power of two), 0 when none */
	bool unsaved; /* a revocation's write failed: keys.json may be behind memory */
};

static uint64_t prefix_of(const uint8_t digest[KEY_DIGEST_SIZE])
{
	uint64_t v;
	memcpy(&v, digest, sizeof(v));
	return v;
}

/* Rebuilds the index for every entry (at least twice as many slots). 0,
 * -ENOMEM, or TALLY_E_CORRUPT when two entries have one id. */
static int index_build(keystore *ks)
{
	size_t slots = 64;
	while (slots < 2 * (ks->count + 1))
		slots *= 2;
	uint32_t *table = calloc(slots, sizeof(*table));
	if (!table)
		return -ENOMEM;
	for (size_t i = 0; i < ks->count; i++) {
		size_t k = (size_t)prefix_of(ks->entries[i].digest) & (slots - 1);
		while (table[k]) {
			/* Two entries of one id (its digest's first bytes): a
			 * keys.json that lists a key twice. */
			if (!memcmp(ks->entries[table[k] - 1].digest, ks->entries[i].digest, 8)) {
				free(table);
				return TALLY_E_CORRUPT;
			}
			k = (k + 1) & (slots - 1);
		}
		table[k] = (uint32_t)i + 1;
	}
	free(ks->slots);
	ks->slots = table;
	ks->slot_mask = slots - 1;
	return 0;
}

static void hex_put(char *out, const uint8_t *bytes, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < size; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * size] = 0;
}

static int hex_get(const char *text, uint8_t *out, size_t size)
{
	if (strlen(text) != 2 * size)
		return -1;
	for (size_t i = 0; i < 2 * size; i++) {
		char c = text[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (v < 0)
			return -1;
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)(v << 4);
		else
			out[i / 2] |= (uint8_t)v;
	}
	return 0;
}

static void digest_of(const char *key_text, uint8_t digest[KEY_DIGEST_SIZE])
{
	SHA256((const unsigned char *)key_text, strlen(key_text), digest);
}

static int grow(keystore *ks)
{
	if (ks->count < ks->capacity)
		return 0;
	size_t capacity = ks->capacity ? ks->capacity * 2 : 16;
	key_entry *e = realloc(ks->entries, sizeof(*e) * capacity);
	if (!e)
		return -ENOMEM;
	ks->entries = e;
	ks->capacity = capacity;
	return 0;
}

static int corrupt(char *errmsg, const keystore *ks, const char *what)
{
	if (errmsg)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s/%s: %s", ks->dir, KEYS_FILE, what);
	return TALLY_E_CORRUPT;
}

static int load(keystore *ks, char *errmsg)
{
	json_t *root;
	int rc = jsonfile_load(ks->io, ks->dir, KEYS_FILE, KEYS_FILE_BYTES_MAX, &root, errmsg);
	if (rc || !root)
		return rc;
	json_t *list = json_object_get(root, "keys");
	json_t *version = json_object_get(root, "version");
	if (!json_is_array(list) || !json_is_integer(version) || json_integer_value(version) != 1) {
		json_decref(root);
		return corrupt(errmsg, ks, "not a version 1 key list");
	}
	size_t i;
	json_t *item;
	json_array_foreach(list, i, item)
	{
		const char *id = json_string_value(json_object_get(item, "id"));
		const char *digest = json_string_value(json_object_get(item, "digest"));
		const char *tenant = json_string_value(json_object_get(item, "tenant"));
		json_t *created = json_object_get(item, "created_us");
		json_t *revoked = json_object_get(item, "revoked");
		if ((rc = grow(ks)))
			break;
		key_entry *e = &ks->entries[ks->count];
		memset(e, 0, sizeof(*e));
		uint8_t id_bytes[8];
		if (!id || !digest || !tenant || !json_is_integer(created) || !json_is_boolean(revoked) ||
		    (tenant[0] && !tenants_name_valid(tenant)) || hex_get(id, id_bytes, 8) ||
		    hex_get(digest, e->digest, KEY_DIGEST_SIZE) || memcmp(id_bytes, e->digest, 8) != 0) {
			rc = corrupt(errmsg, ks, "a malformed key entry");
			break;
		}

		snprintf(e->id, sizeof(e->id), "%s", id);
		snprintf(e->tenant, sizeof(e->tenant), "%s", tenant);
		e->created_us = json_integer_value(created);
		e->revoked = json_is_true(revoked);
		ks->count++;
	}
	json_decref(root);
	return rc;
}

int keys_open(const tally_io *io, const char *dir, keystore **out, char *errmsg)
{
	*out = NULL;
	keystore *ks = calloc(1, sizeof(*ks));
	if (!ks)
		return -ENOMEM;
	ks->io = io ? io : tally_io_default();
	snprintf(ks->dir, sizeof(ks->dir), "%s", dir);
	int rc = load(ks, errmsg);
	if (!rc && (rc = index_build(ks)) == TALLY_E_CORRUPT)
		/* A key live in one entry and revoked in the other. */
		corrupt(errmsg, ks, "a key listed twice");
	if (rc) {
		keys_close(ks);
		return rc;
	}
	*out = ks;
	return 0;
}

void keys_close(keystore *ks)
{
	if (!ks)
		return;
	OPENSSL_cleanse(ks->entries, sizeof(*ks->entries) * ks->count);
	free(ks->entries);
	free(ks->slots);
	free(ks);
}

/* Writes the whole list durably. */
static int save(keystore *ks, char *errmsg)
{
	json_t *root = json_object();
	json_t *list = json_array();
	int bad = !root || !list || json_object_set_new(root, "version", json_integer(1)) ||
		  json_object_set(root, "keys", list);
	for (size_t i = 0; i < ks->count && !bad; i++) {
		const key_entry *e = &ks->entries[i];
		if (e->ephemeral)
			continue;
		char digest[2 * KEY_DIGEST_SIZE + 1];
		hex_put(digest, e->digest, KEY_DIGEST_SIZE);
		json_t *item = json_pack("{s:s, s:s, s:s, s:I, s:b}", "id", e->id, "digest", digest,
					 "tenant", e->tenant, "created_us", (json_int_t)e->created_us,
					 "revoked", e->revoked);
		bad = !item || json_array_append_new(list, item);
	}
	int rc = bad ? server_fail(errmsg, -ENOMEM, "write %s/%s: out of memory", ks->dir, KEYS_FILE)
		     : jsonfile_save(ks->io, ks->dir, KEYS_FILE, root, errmsg);
	json_decref(list);
	json_decref(root);
	if (!rc)
		ks->unsaved = false; /* the file holds every entry as memory has it */
	return rc;
}

/* A key's hand-over before keys.json records it (keys_issue_delivered). */
typedef struct key_delivery {
	int (*deliver)(void *ctx, const char *key_text, char *errmsg);
	void *ctx;
} key_delivery;

static int issue(keystore *ks, const char *tenant, bool ephemeral, const key_delivery *delivery,
		 char *key_text, char *key_id, char *errmsg);

int keys_issue(keystore *ks, const char *tenant, char *key_text, char *key_id, char *errmsg)
{
	return issue(ks, tenant, false, NULL, key_text, key_id, errmsg);
}

int keys_issue_delivered(keystore *ks, int (*deliver)(void *ctx, const char *key_text, char *errmsg),
			 void *ctx, char *key_text, char *key_id, char *errmsg)
{
	key_delivery delivery = {deliver, ctx};
	return issue(ks, NULL, false, &delivery, key_text, key_id, errmsg);
}

int keys_issue_ephemeral(keystore *ks, char *key_text, char *key_id, char *errmsg)
{
	return issue(ks, NULL, true, NULL, key_text, key_id, errmsg);
}

/* Whether a key (revoked or not) has the id: ids name keys in listings
 * and revocations, so no two keys ever share one. */
static bool id_taken(const keystore *ks, const char *id)
{
	for (size_t i = 0; i < ks->count; i++)
		if (strcmp(ks->entries[i].id, id) == 0)
			return true;
	return false;
}

static int issue(keystore *ks, const char *tenant, bool ephemeral, const key_delivery *delivery,
		 char *key_text, char *key_id, char *errmsg)
{
	if (tenant && strlen(tenant) > TALLY_TENANT_SIZE_MAX)
		return server_fail(errmsg, TALLY_E_TENANT, "a tenant name over %d bytes",
				   TALLY_TENANT_SIZE_MAX);
	if (ks->count >= KEYS_MAX)
		return server_fail(errmsg, TALLY_E_LIMIT, "too many keys (%u)", (unsigned)KEYS_MAX);
	int rc = grow(ks);
	if (rc)
		return server_fail(errmsg, rc, "out of memory for a new key");
	key_entry *e = &ks->entries[ks->count];
	for (int draw = 0;; draw++) {
		if (draw == KEY_DRAWS_MAX) {
			OPENSSL_cleanse(key_text, KEY_TEXT_SIZE);
			return server_fail(errmsg, -EIO, "the random source gave %d keys whose ids "
					   "are taken: it is not random", KEY_DRAWS_MAX);
		}
		uint8_t secret[32];
		ks->io->random(ks->io, secret, sizeof(secret));
		memcpy(key_text, "tk_", 3);
		hex_put(key_text + 3, secret, sizeof(secret));
		OPENSSL_cleanse(secret, sizeof(secret));
		memset(e, 0, sizeof(*e));
		digest_of(key_text, e->digest);
		hex_put(e->id, e->digest, 8);
		if (!id_taken(ks, e->id))
			break;
	}
	if (delivery && (rc = delivery->deliver(delivery->ctx, key_text, errmsg))) {
		OPENSSL_cleanse(key_text, KEY_TEXT_SIZE); /* not delivered: not recorded */
		return rc;
	}
	snprintf(e->tenant, sizeof(e->tenant), "%s", tenant ? tenant : "");
	e->created_us = ks->io->now_us(ks->io);
	e->ephemeral = ephemeral;
	ks->count++;
	if (!ephemeral)
		rc = save(ks, errmsg);
	if (!rc && (rc = index_build(ks)))
		server_fail(errmsg, rc, "out of memory indexing the keys");
	if (rc) {
		ks->count--; /* not durable (or not findable): not issued */
		OPENSSL_cleanse(key_text, KEY_TEXT_SIZE);
		if (rc == -ENOMEM) /* the file has it: write the list without it again */
			save(ks, NULL);
		index_build(ks);
		return rc;
	}
	snprintf(key_id, KEY_ID_SIZE, "%s", e->id);
	return 0;
}

const key_entry *keys_lookup(const keystore *ks, const char *key_text)
{
	if (!key_text || strlen(key_text) != KEY_TEXT_SIZE - 1 || strncmp(key_text, "tk_", 3))
		return NULL;
	uint8_t digest[KEY_DIGEST_SIZE];
	digest_of(key_text, digest);
	if (!ks->slot_mask)
		return NULL;
	/* Found by the digest's first 8 bytes, confirmed on the whole digest in
	 * constant time. */
	for (size_t k = (size_t)prefix_of(digest) & ks->slot_mask; ks->slots[k];
	     k = (k + 1) & ks->slot_mask) {
		const key_entry *e = &ks->entries[ks->slots[k] - 1];
		if (CRYPTO_memcmp(e->digest, digest, KEY_DIGEST_SIZE) == 0)
			return e->revoked ? NULL : e;
	}
	return NULL;
}

int keys_revoke(keystore *ks, const char *key_id, char *errmsg)
{
	for (size_t i = 0; i < ks->count; i++) {
		key_entry *e = &ks->entries[i];
		if (strcmp(e->id, key_id) != 0)
			continue;
		if (e->revoked && !ks->unsaved)
			return 0;
		/* Failing closed: the key stays revoked here whether or not the
		 * file was replaced (a failed directory fsync comes after the
		 * rename); until a write succeeds, revoking it again writes. */
		e->revoked = true;
		int rc = save(ks, errmsg);
		if (rc)
			ks->unsaved = true;
		return rc;
	}
	return TALLY_E_NOTFOUND;
}

const key_entry *keys_list(const keystore *ks, size_t *count)
{
	*count = ks->count;
	return ks->entries;
}
