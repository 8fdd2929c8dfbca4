/*
 * keys.h — tallyd's API keys.
 *
 * A key is "tk_" followed by 64 hex digits of 32 random bytes (256 bits),
 * shown once when issued. The store keeps only its SHA-256 digest (OpenSSL
 * libcrypto), an id (the first 8 bytes of the digest, in hex: public, for
 * listing and revoking; a key whose id is taken is drawn again, so no two
 * keys share one), the tenant it is bound to (empty for an admin key)
 * and whether it is revoked. A lookup hashes the presented key, finds the
 * entry by its digest's first 8 bytes and confirms the whole digest in
 * constant time (CRYPTO_memcmp). The key list is DIR/keys.json (jansson), replaced
 * durably (tally_io_durable_replace) on every change, before the change is
 * reported done: an issued key survives a crash once keys_issue returned,
 * and a revoked key stays revoked.
 */
#ifndef TALLY_SERVER_KEYS_H
#define TALLY_SERVER_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#define KEY_TEXT_SIZE 68 /* "tk_" + 64 hex digits + NUL */
#define KEY_ID_SIZE 17   /* 16 hex digits + NUL */
#define KEY_DIGEST_SIZE 32
#define KEYS_MAX 1000000u

typedef struct key_entry {
	char id[KEY_ID_SIZE];
	uint8_t digest[KEY_DIGEST_SIZE];
	char tenant[TALLY_TENANT_SIZE_MAX + 1]; /* "" for an admin key */
	int64_t created_us;
	bool revoked;
	bool ephemeral; /* never written: lives until the process ends */
} key_entry;

typedef struct keystore keystore;

/* Opens DIR/keys.json (absent: no keys). 0, -errno, -ENOMEM or
 * TALLY_E_CORRUPT with errmsg (TALLY_ERRMSG_SIZE) naming the file. */
int keys_open(const tally_io *io, const char *dir, keystore **out, char *errmsg);
void keys_close(keystore *ks);

/* Issues a key for tenant (NULL or "": an admin key); writes the key text
 * (KEY_TEXT_SIZE) and its id (KEY_ID_SIZE). Durable before it returns 0. */
int keys_issue(keystore *ks, const char *tenant, char *key_text, char *key_id, char *errmsg);

/* Issues an admin key as keys_issue does, handing it over first:
 * deliver(ctx, key_text, errmsg) runs once the key is drawn and before
 * keys.json records it, and when it fails (its code returned) nothing is
 * recorded. So no key is ever recorded that was not delivered first
 * (tallyd's first admin key, staged in admin.key.tmp). */
int keys_issue_delivered(keystore *ks, int (*deliver)(void *ctx, const char *key_text, char *errmsg),
			 void *ctx, char *key_text, char *key_id, char *errmsg);

/* An admin key that is never written to keys.json and dies with the
 * process (tallyd's own connections, e.g. the nightly export). */
int keys_issue_ephemeral(keystore *ks, char *key_text, char *key_id, char *errmsg);

/* The live (not revoked) entry of key text, or NULL. The entry is valid
 * until the next change of the store. */
const key_entry *keys_lookup(const keystore *ks, const char *key_text);

/* Revokes key id. 0, TALLY_E_NOTFOUND, or a write error: the key is then
 * refused all the same while the store is open (it fails closed), but
 * keys.json may still hold it live (the write failed before its rename)
 * or revoked (its directory fsync failed after): revoke it again, which
 * writes the file again until a write of it succeeds. */
int keys_revoke(keystore *ks, const char *key_id, char *errmsg);

/* Every entry (revoked and ephemeral ones too), in issue order. */
const key_entry *keys_list(const keystore *ks, size_t *count);

#endif /* TALLY_SERVER_KEYS_H */
