/*
 * tenants.h — tallyd's tenant registry.
 *
 * The registry says which tenants exist and which are suspended. It lives
 * in DIR/tenants.json, replaced durably (jsonfile.h) on every change before
 * the change is reported done. A tenant key works only while its tenant is
 * in the registry and not suspended; ingest for an unknown tenant is refused
 * unless an admin asks for it to be created. The engine keeps the events and
 * knows nothing of this file: it only ever sees the tenant name the server
 * derived from the key (docs/protocol.md, "Tenants and keys").
 *
 * Names are 1..TALLY_TENANT_SIZE_MAX bytes of [A-Za-z0-9._-] (the engine's
 * rule, checked here first so an admin gets a clear message).
 */
#ifndef TALLY_SERVER_TENANTS_H
#define TALLY_SERVER_TENANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#define TENANTS_MAX 1000000u

typedef struct tenant_entry {
	char name[TALLY_TENANT_SIZE_MAX + 1];
	int64_t created_us;
	bool suspended;
} tenant_entry;

typedef struct tenant_registry tenant_registry;

/* Opens DIR/tenants.json (absent: no tenants). 0, -errno, -ENOMEM or
 * TALLY_E_CORRUPT with errmsg (TALLY_ERRMSG_SIZE) naming the file. */
int tenants_open(const tally_io *io, const char *dir, tenant_registry **out, char *errmsg);
void tenants_close(tenant_registry *r);

/* True when name is a well-formed tenant name. */
bool tenants_name_valid(const char *name);

/* The entry of name, or NULL. Valid until the next change. */
const tenant_entry *tenants_find(const tenant_registry *r, const char *name);

/* Creates name (and commits any pending ones). 0 (durable), TALLY_E_TENANT (malformed name), -EEXIST,
 * TALLY_E_LIMIT, or a write error (then nothing changed). */
int tenants_create(tenant_registry *r, const char *name, char *errmsg);

/* Whether name can be created now, without creating it: 0, TALLY_E_TENANT
 * (malformed name), -EEXIST or TALLY_E_LIMIT, with errmsg. Creating it
 * (tenants_create, tenants_add_pending) before the registry changes can then
 * fail only for want of memory or, with tenants_create, the write. */
int tenants_check_new(const tenant_registry *r, const char *name, char *errmsg);

/*
 * Creation in two steps, so that tenants created by ingest cost no write
 * on the request's path: tenants_add_pending makes name exist in memory at
 * once (tenants_find sees it; 0, TALLY_E_TENANT, -EEXIST, TALLY_E_LIMIT or
 * -ENOMEM), tenants_commit writes every pending addition, and a state
 * change whose write failed (0 when there is none; on failure they stay
 * pending), and tenants_rollback forgets the additions.
 * (tallyd commits them within a second, and at open adds back any tenant
 * the store holds events of: server/README.md.)
 */
int tenants_add_pending(tenant_registry *r, const char *name, char *errmsg);
int tenants_commit(tenant_registry *r, char *errmsg);
void tenants_rollback(tenant_registry *r);

/* Suspends or resumes name. 0 (durable), TALLY_E_NOTFOUND, or a write
 * error: the tenant is then left suspended while the registry is open
 * (it fails closed; the file may hold either state): set it again, which
 * writes the file again until a write of it succeeds (tenants_commit
 * does too). */
int tenants_set_suspended(tenant_registry *r, const char *name, bool suspended, char *errmsg);

/* Every entry in creation order. */
const tenant_entry *tenants_list(const tenant_registry *r, size_t *count);

#endif /* TALLY_SERVER_TENANTS_H */
