/*
 * billing_sql.h — the billing schema's migrations (tools/billing/NNN_name.sql),
 * built into the tally binary by tools/billing/embed.sh, in version order.
 * `tally export` applies the ones a database lacks (docs/billing.md).
 */
#ifndef TALLY_TOOLS_BILLING_SQL_H
#define TALLY_TOOLS_BILLING_SQL_H

typedef struct billing_migration {
	int version;       /* NNN of NNN_name.sql */
	const char *name;  /* the file name */
	const char *sql;   /* its whole text */
} billing_migration;

extern const billing_migration billing_migrations[];
extern const unsigned billing_migration_count;

#endif /* TALLY_TOOLS_BILLING_SQL_H */
