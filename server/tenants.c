/*
 * tenants.c — the tenant registry (tenants.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "fail.h"
#include "jsonfile.h"
#include "tenants.h"

#define TENANTS_FILE "tenants.json"
#define TENANTS_FILE_BYTES_MAX (256u << 20)

struct tenant_registry {
	const tally_io *io;
	char dir[4096];
	tenant_entry *entries;
	size_t count;
	size_t durable_count; /* entries [durable_count, count) are pending */
	bool state_unsaved;   /* a state change's write failed: the file may be behind */
	size_t capacity;
	uint32_t *slots;  /* open addressing by name hash: entry + 1, 0 = empty */
	size_t slot_mask; /* slots - 1 (power of two) */
};

bool tenants_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > TALLY_TENANT_SIZE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static size_t slot_of(const char *name, size_t mask)
{
	return (size_t)XXH3_64bits(name, strlen(name)) & mask;
}

/* Inserts every entry into the (zeroed) slots. */
static void index_fill(tenant_registry *r)
{
	for (size_t i = 0; i < r->count; i++) {
		size_t k = slot_of(r->entries[i].name, r->slot_mask);
		while (r->slots[k])
			k = (k + 1) & r->slot_mask;
		r->slots[k] = (uint32_t)i + 1;
	}
}

/* Rebuilds the index (at least twice as many slots as entries). */
static int index_build(tenant_registry *r)
{
	size_t slots = 64;
	while (slots < 2 * (r->count + 1))
		slots *= 2;
	uint32_t *table = calloc(slots, sizeof(*table));
	if (!table)
		return -ENOMEM;
	free(r->slots);
	r->slots = table;
	r->slot_mask = slots - 1;
	index_fill(r);
	return 0;
}

static int grow(tenant_registry *r)
{
	if (r->count < r->capacity)
		return 0;
	size_t capacity = r->capacity ? r->capacity * 2 : 64;
	tenant_entry *e = realloc(r->entries, sizeof(*e) * capacity);
	if (!e)
		return -ENOMEM;
	r->entries = e;
	r->capacity = capacity;
	return 0;
}

static int load(tenant_registry *r, char *errmsg)
{
	json_t *root;
	int rc = jsonfile_load(r->io, r->dir, TENANTS_FILE, TENANTS_FILE_BYTES_MAX, &root, errmsg);
	if (rc || !root)
		return rc;
	json_t *list = json_object_get(root, "tenants");
	json_t *version = json_object_get(root, "version");
	if (!json_is_array(list) || !json_is_integer(version) || json_integer_value(version) != 1) {
		json_decref(root);
		return server_fail(errmsg, TALLY_E_CORRUPT, "%s/%s: not a version 1 tenant list",
				   r->dir, TENANTS_FILE);
	}
	size_t i;
	json_t *item;
	json_array_foreach(list, i, item)
	{
		const char *name = json_string_value(json_object_get(item, "name"));
		json_t *created = json_object_get(item, "created_us");
		json_t *suspended = json_object_get(item, "suspended");
		if (!name || !tenants_name_valid(name) || !json_is_integer(created) ||
		    !json_is_boolean(suspended)) {
			rc = server_fail(errmsg, TALLY_E_CORRUPT, "%s/%s: entry %zu is malformed",
					 r->dir, TENANTS_FILE, i);
			break;
		}
		if ((rc = grow(r)))
			break;
		tenant_entry *e = &r->entries[r->count++];
		memset(e, 0, sizeof(*e));
		memcpy(e->name, name, strlen(name));
		e->created_us = json_integer_value(created);
		e->suspended = json_is_true(suspended);
	}
	json_decref(root);
	return rc;
}

int tenants_open(const tally_io *io, const char *dir, tenant_registry **out, char *errmsg)
{
	*out = NULL;
	tenant_registry *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->io = io ? io : tally_io_default();
	snprintf(r->dir, sizeof(r->dir), "%s", dir);
	int rc = load(r, errmsg);
	if (!rc && (rc = index_build(r)) == 0) {
		/* A name twice in the file is damage, not a choice to make silently. */
		for (size_t i = 0; i < r->count && !rc; i++)
			if (tenants_find(r, r->entries[i].name) != &r->entries[i])
				rc = server_fail(errmsg, TALLY_E_CORRUPT, "%s/%s: tenant %s listed twice",
						 r->dir, TENANTS_FILE, r->entries[i].name);
	}
	if (rc) {
		tenants_close(r);
		return rc;
	}
	r->durable_count = r->count;
	*out = r;
	return 0;
}

void tenants_close(tenant_registry *r)
{
	if (!r)
		return;
	free(r->entries);
	free(r->slots);
	free(r);
}

const tenant_entry *tenants_find(const tenant_registry *r, const char *name)
{
	for (size_t k = slot_of(name, r->slot_mask); r->slots[k]; k = (k + 1) & r->slot_mask) {
		const tenant_entry *e = &r->entries[r->slots[k] - 1];
		if (strcmp(e->name, name) == 0)
			return e;
	}
	return NULL;
}

static int save(tenant_registry *r, char *errmsg)
{
	json_t *root = json_object();
	json_t *list = json_array();
	int bad = !root || !list || json_object_set_new(root, "version", json_integer(1)) ||
		  json_object_set(root, "tenants", list);
	for (size_t i = 0; i < r->count && !bad; i++) {
		const tenant_entry *e = &r->entries[i];
		json_t *item = json_pack("{s:s, s:I, s:b}", "name", e->name, "created_us",
					 (json_int_t)e->created_us, "suspended", e->suspended);
		bad = !item || json_array_append_new(list, item);
	}
	int rc = bad ? server_fail(errmsg, -ENOMEM, "write %s/%s: out of memory", r->dir,
				   TENANTS_FILE)
		     : jsonfile_save(r->io, r->dir, TENANTS_FILE, root, errmsg);
	json_decref(list);
	json_decref(root);
	if (!rc)
		r->state_unsaved = false; /* the file holds every state as memory has it */
	return rc;
}

/* Inserts entry i into the index (the table has room: at least twice as
 * many slots as entries, kept by index_build when it grows). */
static int index_add(tenant_registry *r, size_t i)
{
	if (2 * (r->count + 1) > r->slot_mask + 1)
		return index_build(r);
	size_t k = slot_of(r->entries[i].name, r->slot_mask);
	while (r->slots[k])
		k = (k + 1) & r->slot_mask;
	r->slots[k] = (uint32_t)i + 1;
	return 0;
}

/* Rebuilds the index after entries were taken off the end. */
static void tenants_rollback_index(tenant_registry *r)
{
	if (index_build(r)) {
		/* No memory for a new table: the old one is big enough. */
		memset(r->slots, 0, (r->slot_mask + 1) * sizeof(*r->slots));
		index_fill(r);
	}
}

int tenants_check_new(const tenant_registry *r, const char *name, char *errmsg)
{
	if (!tenants_name_valid(name))
		return server_fail(errmsg, TALLY_E_TENANT,
				   "malformed tenant name '%.80s': 1..%d bytes of [A-Za-z0-9._-]", name,
				   TALLY_TENANT_SIZE_MAX);
	if (tenants_find(r, name))
		return server_fail(errmsg, -EEXIST, "tenant %s exists", name);
	if (r->count >= TENANTS_MAX)
		return server_fail(errmsg, TALLY_E_LIMIT, "at most %u tenants", TENANTS_MAX);
	return 0;
}

int tenants_add_pending(tenant_registry *r, const char *name, char *errmsg)
{
	int rc = tenants_check_new(r, name, errmsg);
	if (rc)
		return rc;
	rc = grow(r);
	if (rc)
		return server_fail(errmsg, rc, "out of memory");
	tenant_entry *e = &r->entries[r->count++];
	memset(e, 0, sizeof(*e));
	memcpy(e->name, name, strlen(name));
	e->created_us = r->io->now_us(r->io);
	if ((rc = index_add(r, r->count - 1))) {
		r->count--;
		index_build(r);
		return server_fail(errmsg, rc, "out of memory");
	}
	return 0;
}

int tenants_commit(tenant_registry *r, char *errmsg)
{
	if (r->durable_count == r->count && !r->state_unsaved)
		return 0;
	int rc = save(r, errmsg);
	if (!rc)
		r->durable_count = r->count;
	return rc;
}


void tenants_rollback(tenant_registry *r)
{
	if (r->durable_count == r->count)
		return;
	r->count = r->durable_count;
	tenants_rollback_index(r);
}

int tenants_create(tenant_registry *r, const char *name, char *errmsg)
{
	int rc = tenants_add_pending(r, name, errmsg);
	if (!rc && (rc = tenants_commit(r, errmsg))) {
		/* Not durable: not created. Only this one is taken back (it is
		 * the last entry); other pending ones stay pending. */
		r->count--;
		tenants_rollback_index(r);
	}
	return rc;
}

int tenants_set_suspended(tenant_registry *r, const char *name, bool suspended, char *errmsg)
{
	tenant_entry *e = (tenant_entry *)tenants_find(r, name);
	if (!e)
		return server_fail(errmsg, TALLY_E_NOTFOUND, "no tenant %.80s", name);
	if (e->suspended == suspended && !r->state_unsaved)
		return 0;
	e->suspended = suspended;
	int rc = save(r, errmsg);
	if (rc) {
		e->suspended = true; /* failing closed, whatever the file now holds */
		r->state_unsaved = true; /* setting it again writes, as tenants_commit does */
	} else
		r->durable_count = r->count; /* the file now holds the pending ones too */
	return rc;
}

const tenant_entry *tenants_list(const tenant_registry *r, size_t *count)
{
	*count = r->count;
	return r->entries;
}
