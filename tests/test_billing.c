/*
 * test_billing.c — the billing schema (tools/billing/NNN_*.sql) on a real
 * PostgreSQL 15 started by support/pg_harness for each test:
 *
 *   migrations  apply from empty as a non-superuser owner, apply nothing a
 *               second time, resume after a partial set, refuse a newer
 *               database and roles that would defeat row security, and
 *               leave nothing behind when their transaction rolls back;
 *   security    row security enabled and forced on every tenant table, the
 *               reporting role unprivileged (catalog), a reporting session
 *               seeing only the tenant of app.tenant_id in every table and
 *               view and nothing without one, unable to write or escalate;
 *               the exporter writing and seeing every tenant with nothing
 *               more than it needs; the billing admin setting plans;
 *   invoices    pinned by hand, and equal to an independent computation
 *               in C over a two-month workload of five tenants; exact, and
 *               readable for every tenant, when one tenant's sums and
 *               prices pass bigint, also after upgrading a version 3
 *               database, whose view failed for all.
 *
 * The migrations are read from tools/billing: run the binary from the
 * repository root, as `make test` does.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/pg_harness.h"

#define MIGRATIONS_DIR "tools/billing"
#define MIGRATIONS_COUNT 5
#define OWNER "billing_owner"
#define DB "billing"
#define INSUFFICIENT_PRIVILEGE "42501"

static pg_harness pg;

static void setup(void)
{
	pg_harness_start(&pg, "billing");
}

static void teardown(void)
{
	pg_harness_stop(&pg);
}

TestSuite(billing, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers -------------------------------------------------------------- */

static PGconn *superuser(const char *dbname)
{
	return pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, dbname);
}

/* The owner role (LOGIN CREATEROLE, not a superuser) and its database,
 * without migrations. */
static void database_create(void)
{
	PGconn *su = superuser("postgres");
	pg_harness_exec(&pg, su, "CREATE ROLE " OWNER " LOGIN CREATEROLE");
	PQfinish(su);
	pg_harness_create_database(&pg, DB, OWNER);
}

/* Applies the missing migrations as the owner; returns how many. */
static int migrate(char *err, size_t err_size)
{
	PGconn *owner = pg_harness_connect(&pg, OWNER, DB);
	int applied = pg_harness_migrate(&pg, owner, MIGRATIONS_DIR, err, err_size);
	PQfinish(owner);
	return applied;
}

/* database_create, then every migration. */
static void billing_create(void)
{
	database_create();
	char err[512];
	int applied = migrate(err, sizeof(err));
	cr_assert_eq(applied, MIGRATIONS_COUNT, "migrate: %d: %s", applied, err);
}

static int64_t count_of(PGconn *conn, const char *sql)
{
	return pg_harness_query_int64(&pg, conn, sql);
}

/* Registers tenant on plan, as conn. */
static void tenant_insert(PGconn *conn, const char *tenant, const char *plan)
{
	char sql[160];
	snprintf(sql, sizeof(sql), "INSERT INTO billing.tenants (tenant, plan) VALUES ('%s', '%s')",
		 tenant, plan);
	pg_harness_exec(&pg, conn, sql);
}

/* The whole text of path, malloc'd (the caller frees it). */
static char *file_text(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "open %s", path);
	char *text = NULL;
	size_t size = 0;
	cr_assert_gt(getdelim(&text, &size, 0, f), 0, "read %s", path);
	fclose(f);
	return text;
}

static void versions_text(PGconn *conn, char *out, size_t out_size)
{
	pg_harness_query_text(&pg, conn, "SELECT string_agg(version::text, ',' ORDER BY version) FROM billing.schema_version",
			      out, out_size);
}

/* Asserts that sql fails with SQLSTATE state (and, when not NULL, exactly
 * this primary message). */
static void expect_error(PGconn *conn, const char *sql, const char *state, const char *message)
{
	char sqlstate[6], got[512];
	int rc = pg_harness_try_exec(conn, sql, sqlstate, got, sizeof(got));
	cr_expect_eq(rc, -1, "succeeded, should have failed: %s", sql);
	cr_expect_str_eq(sqlstate, state, "%s: %s", sql, got);
	if (message)
		cr_expect_str_eq(got, message, "%s", sql);
}

/* Two tenants on different plans, usage over two months, one export run;
 * written by the superuser (who is not subject to row security). */
static void seed_two_tenants(void)
{
	PGconn *su = superuser(DB);
	pg_harness_exec(&pg, su,
			"INSERT INTO billing.tenants (tenant, plan) VALUES ('acme', 'basic'), ('globex', 'pro');"
			"INSERT INTO billing.usage_daily VALUES"
			" ('acme', '2024-01-15', 'web', 'planner', 'gpt-4o', 'llm.call', 'ok', 100, 1000, 500, 2000, 12000, 0),"
			" ('acme', '2024-01-16', 'web', 'planner', 'gpt-4o', 'llm.call', 'error', 7, 70, 0, 0, 700, 7),"
			" ('acme', '2024-02-01', '', '', '', 'agent.run', 'ok', 3, 0, 0, 0, 300, 0),"
			" ('globex', '2024-01-15', 'etl', 'loader', 'claude', 'tool.call', 'ok', 50, 0, 0, 0, 5000, 0),"
			" ('globex', '2024-02-02', 'etl', 'loader', 'claude', 'tool.call', 'timeout', 2, 0, 0, 0, 60000, 2);"
			"INSERT INTO billing.export_runs VALUES ('2024-01-15', '2024-01-16 02:00:00+00',"
			" '2024-01-16 02:00:05+00', 2, '00000000deadbeef', 42)");
	PQfinish(su);
}

/* The relations of schema billing with a tenant column that the session
 * may select from, one per line. */
static void readable_tenant_relations(PGconn *conn, char *out, size_t out_size)
{
	pg_harness_query_text(&pg, conn,
			      "SELECT c.relname FROM pg_class c"
			      " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped"
			      " WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')"
			      " AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
			      out, out_size);
}

/* For a reporting session: every readable tenant relation shows no row of
 * another tenant than `tenant` (NULL: none at all) and exactly the given
 * numbers of rows of it. */
static void expect_reporting_rows(PGconn *conn, const char *tenant, int64_t tenants, int64_t usage_rows,
				  int64_t invoices)
{
	char relations[256];
	readable_tenant_relations(conn, relations, sizeof(relations));
	cr_assert_str_eq(relations, "invoices\ntenants\nusage_daily\n");
	const char *names[] = {"tenants", "usage_daily", "invoices"};
	const int64_t expected[] = {tenants, usage_rows, invoices};
	for (size_t i = 0; i < 3; i++) {
		char sql[256];
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM billing.%s WHERE tenant IS DISTINCT FROM '%s'",
			 names[i], tenant ? tenant : "");
		cr_expect_eq(count_of(conn, sql), 0, "%s shows other tenants' rows", names[i]);
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM billing.%s", names[i]);
		cr_expect_eq(count_of(conn, sql), expected[i], "billing.%s as %s", names[i], tenant ? tenant : "(none)");
	}
}

/* ---- migrations ----------------------------------------------------------- */

/* Description: from an empty database the runner applies 001..005 as a
 * non-superuser owner, schema_version lists 1,2,3,4,5, the schema holds
 * exactly the expected relations, all owned by the owner; a second run
 * applies nothing and changes nothing. */
Test(billing, migrations_apply_from_empty_then_nothing)
{
	billing_create();
	PGconn *su = superuser(DB);
	char text[1024];
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5\n");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM billing.schema_version WHERE applied_at IS NOT NULL"), 5);
	cr_expect_eq(count_of(su, "SELECT count(*) FROM billing.schema_version a JOIN billing.schema_version b"
				  " ON b.version = a.version + 1 WHERE b.applied_at < a.applied_at"),
		     0);
	pg_harness_query_text(&pg, su,
			      "SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) FROM pg_class c"
			      " WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')"
			      " ORDER BY 1",
			      text, sizeof(text));
	cr_expect_str_eq(text, "export_runs|r|billing_owner\n"
			       "invoices|v|billing_owner\n"
			       "plans|r|billing_owner\n"
			       "schema_version|r|billing_owner\n"
			       "tenants|r|billing_owner\n"
			       "usage_daily|r|billing_owner\n");

	char err[512];
	cr_expect_eq(migrate(err, sizeof(err)), 0, "%s", err);
	cr_expect_str_eq(err, "");
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5\n");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM billing.plans"), 4);
	PQfinish(su);
}

/* Description: a database left at version 1 (001 applied alone) gets
 * exactly 002, 003, 004 and 005. */
Test(billing, migrations_resume_after_a_partial_set)
{
	database_create();
	PGconn *owner = pg_harness_connect(&pg, OWNER, DB);
	pg_harness_exec(&pg, owner, "BEGIN");
	pg_harness_run_file(&pg, owner, MIGRATIONS_DIR "/001_schema.sql");
	pg_harness_exec(&pg, owner, "COMMIT");
	char text[64];
	versions_text(owner, text, sizeof(text));
	cr_expect_str_eq(text, "1\n");
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tally\\_%'"), 0);
	PQfinish(owner);

	char err[512];
	cr_expect_eq(migrate(err, sizeof(err)), 4, "%s", err);
	PGconn *su = superuser(DB);
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5\n");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM pg_views WHERE schemaname = 'billing' AND viewname = 'invoices'"),
		     1);
	PQfinish(su);
}

/* Description: a database whose schema_version is above the newest file
 * is refused with a message naming both versions, and left as it was. */
Test(billing, migrations_refuse_a_newer_database)
{
	billing_create();
	PGconn *su = superuser(DB);
	pg_harness_exec(&pg, su, "INSERT INTO billing.schema_version (version) VALUES (6)");
	char err[512];
	cr_expect_eq(migrate(err, sizeof(err)), -1);
	cr_expect_str_eq(err, "billing schema version 6 is newer than the newest migration in tools/billing (5)");
	char text[64];
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5,6\n");

	/* A hole in the recorded versions is refused as well. */
	pg_harness_exec(&pg, su, "DELETE FROM billing.schema_version WHERE version IN (2, 6)");
	cr_expect_eq(migrate(err, sizeof(err)), -1);
	cr_expect_str_eq(err, "billing.schema_version holds 4 rows up to version 5: versions are missing");
	PQfinish(su);
}

/* Description: the five files run in one transaction that is rolled
 * back leave no schema and no role behind (no statement in them escapes a
 * transaction); once applied, running 001 or 002 again by hand fails on
 * its first statement (the schema exists, the version is recorded) and
 * changes nothing. */
Test(billing, migrations_are_transactional_and_refuse_reapplying)
{
	database_create();
	PGconn *owner = pg_harness_connect(&pg, OWNER, DB);
	pg_harness_exec(&pg, owner, "BEGIN");
	pg_harness_run_file(&pg, owner, MIGRATIONS_DIR "/001_schema.sql");
	pg_harness_run_file(&pg, owner, MIGRATIONS_DIR "/002_security.sql");
	pg_harness_run_file(&pg, owner, MIGRATIONS_DIR "/003_invoices.sql");
	pg_harness_run_file(&pg, owner, MIGRATIONS_DIR "/004_invoices_numeric.sql");
	pg_harness_run_file(&pg, owner, MIGRATIONS_DIR "/005_usage_numeric.sql");
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM billing.schema_version"), 5);
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tally\\_%'"), 3);
	pg_harness_exec(&pg, owner, "ROLLBACK");
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM pg_namespace WHERE nspname = 'billing'"), 0);
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tally\\_%'"), 0);
	PQfinish(owner);

	char err[512];
	cr_assert_eq(migrate(err, sizeof(err)), MIGRATIONS_COUNT, "%s", err);
	owner = pg_harness_connect(&pg, OWNER, DB);
	char sqlstate[6], message[512];
	pg_harness_exec(&pg, owner, "BEGIN");
	char *sql = file_text(MIGRATIONS_DIR "/002_security.sql");
	cr_expect_eq(pg_harness_try_exec(owner, sql, sqlstate, message, sizeof(message)), -1);
	free(sql);
	cr_expect_str_eq(sqlstate, "23505", "%s", message);
	cr_expect_str_eq(message, "duplicate key value violates unique constraint \"schema_version_pkey\"");
	pg_harness_exec(&pg, owner, "ROLLBACK");

	sql = file_text(MIGRATIONS_DIR "/001_schema.sql");
	cr_expect_eq(pg_harness_try_exec(owner, sql, sqlstate, message, sizeof(message)), -1);
	free(sql);
	cr_expect_str_eq(sqlstate, "42P06", "%s", message);
	cr_expect_str_eq(message, "schema \"billing\" already exists");
	char text[64];
	versions_text(owner, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5\n");
	PQfinish(owner);
}

/* Description: 002 refuses to build row security on roles that would
 * defeat it — a tally_reporting made BYPASSRLS beforehand, or one that is
 * a member of the owner — and applies once the role is fixed. */
Test(billing, migrations_refuse_roles_that_defeat_rls)
{
	PGconn *su = superuser("postgres");
	pg_harness_exec(&pg, su, "CREATE ROLE tally_reporting NOLOGIN BYPASSRLS");
	database_create();
	char err[512];
	cr_expect_eq(migrate(err, sizeof(err)), -1);
	cr_expect_str_eq(err, "002_security.sql: tally_exporter, tally_reporting and tally_billing_admin must be "
			      "neither SUPERUSER nor BYPASSRLS (SQLSTATE P0001)");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tally\\_%'"), 1);

	pg_harness_exec(&pg, su, "ALTER ROLE tally_reporting NOBYPASSRLS; GRANT " OWNER " TO tally_reporting");
	cr_expect_eq(migrate(err, sizeof(err)), -1);
	cr_expect_str_eq(err, "002_security.sql: tally_reporting must not be a member of billing_owner, the owner of "
			      "the billing schema (SQLSTATE P0001)");

	pg_harness_exec(&pg, su, "REVOKE " OWNER " FROM tally_reporting");
	cr_expect_eq(migrate(err, sizeof(err)), 4, "%s", err);
	PQfinish(su);
	su = superuser(DB);
	char text[64];
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5\n");
	PQfinish(su);
}

/* ---- plans ---------------------------------------------------------------- */

/* The price list as the test knows it, independently of 001_schema.sql. */
typedef struct plan_terms {
	const char *plan;
	int64_t base_price_micros;
	int64_t included_executions;
	int64_t included_tokens;
	int64_t execution_overage_micros;
	int64_t token_overage_micros;
} plan_terms;

static const plan_terms PLANS[] = {
	{"free", 0, 1000, 1000000, 100000, 4},
	{"basic", 49000000, 10000, 20000000, 80000, 3},
	{"pro", 149000000, 50000, 100000000, 50000, 2},
	{"enterprise", 499000000, 250000, 1000000000, 20000, 1},
};
#define PLAN_COUNT (sizeof(PLANS) / sizeof(PLANS[0]))

static const plan_terms *plan_find(const char *plan)
{
	for (size_t i = 0; i < PLAN_COUNT; i++)
		if (strcmp(PLANS[i].plan, plan) == 0)
			return &PLANS[i];
	cr_assert_fail("no plan %s", plan);
	return NULL;
}

/* Description: the seeded plans are exactly free $0, basic $49, pro $149,
 * enterprise $499 with their included usage and overage prices (the
 * execution overage within $0.02-0.10), in micro-units. */
Test(billing, plans_are_seeded_exactly)
{
	billing_create();
	char expected[512] = "";
	size_t used = 0;
	for (size_t i = 0; i < PLAN_COUNT; i++) {
		const plan_terms *p = &PLANS[i];
		cr_assert(p->execution_overage_micros >= 20000 && p->execution_overage_micros <= 100000);
		used += (size_t)snprintf(expected + used, sizeof(expected) - used,
					 "%s|%" PRId64 "|%" PRId64 "|%" PRId64 "|%" PRId64 "|%" PRId64 "\n", p->plan,
					 p->base_price_micros, p->included_executions, p->included_tokens,
					 p->execution_overage_micros, p->token_overage_micros);
	}
	PGconn *su = superuser(DB);
	char text[512];
	pg_harness_query_text(&pg, su,
			      "SELECT plan, base_price_micros, included_executions, included_tokens,"
			      " execution_overage_micros, token_overage_micros FROM billing.plans"
			      " ORDER BY base_price_micros",
			      text, sizeof(text));
	cr_expect_str_eq(text, expected);
	cr_expect_str_eq(text, "free|0|1000|1000000|100000|4\n"
			       "basic|49000000|10000|20000000|80000|3\n"
			       "pro|149000000|50000|100000000|50000|2\n"
			       "enterprise|499000000|250000|1000000000|20000|1\n");
	expect_error(su, "INSERT INTO billing.plans VALUES ('cheap', 0, 0, 0, 10000, 0)", "23514", NULL);
	PQfinish(su);
}

/* ---- row security and roles ----------------------------------------------- */

/* Description: the catalog. Every table of schema billing with a tenant
 * column (exactly tenants and usage_daily), and export_runs, has row
 * security enabled and forced; the policies are exactly the documented
 * ones; invoices is security_invoker; the three group roles are NOLOGIN,
 * neither superuser nor BYPASSRLS; tally_reporting owns nothing in the
 * schema and is a member of no role; and the owner, not named by any
 * policy, sees no row of the forced tables. */
Test(billing, catalog_row_security_forced_and_reporting_unprivileged)
{
	billing_create();
	seed_two_tenants();
	PGconn *su = superuser(DB);
	char text[4096];
	pg_harness_query_text(&pg, su,
			      "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c"
			      " WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind IN ('r', 'p')"
			      " AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid"
			      " AND a.attname = 'tenant' AND NOT a.attisdropped) ORDER BY 1",
			      text, sizeof(text));
	cr_expect_str_eq(text, "tenants|t|t\nusage_daily|t|t\n");
	pg_harness_query_text(&pg, su,
			      "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'billing'::regnamespace"
			      " AND c.relkind IN ('r', 'p') AND c.relrowsecurity AND c.relforcerowsecurity ORDER BY 1",
			      text, sizeof(text));
	cr_expect_str_eq(text, "export_runs\ntenants\nusage_daily\n");

	pg_harness_query_text(&pg, su,
			      "SELECT tablename, policyname, cmd, array_to_string(roles, ','), qual, with_check"
			      " FROM pg_policies WHERE schemaname = 'billing' ORDER BY 1, 2",
			      text, sizeof(text));
	cr_expect_str_eq(text,
			 "export_runs|billing_admin_read|SELECT|tally_billing_admin|true|\\N\n"
			 "export_runs|exporter_all|ALL|tally_exporter|true|true\n"
			 "tenants|billing_admin_all|ALL|tally_billing_admin|true|true\n"
			 "tenants|exporter_all|ALL|tally_exporter|true|true\n"
			 "tenants|reporting_own_tenant|SELECT|tally_reporting|"
			 "(tenant = ( SELECT billing.reporting_tenant() AS reporting_tenant))|\\N\n"
			 "usage_daily|billing_admin_read|SELECT|tally_billing_admin|true|\\N\n"
			 "usage_daily|exporter_all|ALL|tally_exporter|true|true\n"
			 "usage_daily|reporting_own_tenant|SELECT|tally_reporting|"
			 "(tenant = ( SELECT billing.reporting_tenant() AS reporting_tenant))|\\N\n");
	/* The policies' function runs with the caller's rights, a pinned
	 * search_path, and only tally_reporting may call it. */
	pg_harness_query_text(&pg, su,
			      "SELECT p.prosecdef, p.provolatile, array_to_string(p.proconfig, ','),"
			      " has_function_privilege('public', p.oid, 'EXECUTE'),"
			      " has_function_privilege('tally_reporting', p.oid, 'EXECUTE')"
			      " FROM pg_proc p WHERE p.oid = 'billing.reporting_tenant()'::regprocedure",
			      text, sizeof(text));
	cr_expect_str_eq(text, "f|s|search_path=pg_catalog, pg_temp|f|t\n");

	pg_harness_query_text(&pg, su,
			      "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'billing.invoices'::regclass",
			      text, sizeof(text));
	cr_expect_str_eq(text, "security_invoker=true\n");

	pg_harness_query_text(&pg, su,
			      "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin, rolcreaterole, rolcreatedb"
			      " FROM pg_roles WHERE rolname LIKE 'tally\\_%' ORDER BY 1",
			      text, sizeof(text));
	cr_expect_str_eq(text, "tally_billing_admin|f|f|f|f|f\n"
			       "tally_exporter|f|f|f|f|f\n"
			       "tally_reporting|f|f|f|f|f\n");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM pg_class WHERE relnamespace = 'billing'::regnamespace"
				  " AND pg_has_role('tally_reporting', relowner, 'MEMBER')"),
		     0);
	cr_expect_eq(count_of(su, "SELECT count(*) FROM pg_namespace WHERE nspname = 'billing'"
				  " AND pg_has_role('tally_reporting', nspowner, 'MEMBER')"),
		     0);
	cr_expect_eq(count_of(su, "SELECT count(*) FROM pg_auth_members WHERE member = 'tally_reporting'::regrole"), 0);

	/* FORCE: the owner is subject to the policies, and none names it. */
	cr_expect_eq(count_of(su, "SELECT count(*) FROM billing.usage_daily"), 5);
	PGconn *owner = pg_harness_connect(&pg, OWNER, DB);
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM billing.tenants"), 0);
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM billing.usage_daily"), 0);
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM billing.export_runs"), 0);
	cr_expect_eq(count_of(owner, "SELECT count(*) FROM billing.invoices"), 0);
	expect_error(owner, "SET row_security = off; SELECT count(*) FROM billing.usage_daily", INSUFFICIENT_PRIVILEGE,
		     "query would be affected by row-level security policy for table \"usage_daily\"");
	PQfinish(owner);
	PQfinish(su);
}

/* Description: a login granted tally_reporting and bound to acme (ALTER
 * ROLE ... SET app.tenant_id) sees only acme's rows in tenants,
 * usage_daily and invoices, even when it asks for globex by name, and
 * nothing once its session names globex (SET, set_config, temporary
 * tables shadowing the catalogs the binding is read from); RESET brings
 * acme back. A login bound IN DATABASE sees only its tenant too; a login
 * without a binding that sets app.tenant_id in its session sees only
 * that tenant. All read every plan; none may read export_runs. */
Test(billing, reporting_sees_only_its_tenant)
{
	billing_create();
	seed_two_tenants();
	pg_harness_create_login(&pg, "bi_acme", "tally_reporting");
	pg_harness_create_login(&pg, "bi_globex", "tally_reporting");
	pg_harness_create_login(&pg, "bi_any", "tally_reporting");
	PGconn *su = superuser("postgres");
	pg_harness_exec(&pg, su, "ALTER ROLE bi_acme SET app.tenant_id = 'acme';"
				 "ALTER ROLE bi_globex IN DATABASE " DB " SET app.tenant_id = 'globex'");
	PQfinish(su);

	PGconn *acme = pg_harness_connect(&pg, "bi_acme", DB);
	expect_reporting_rows(acme, "acme", 1, 3, 2);
	cr_expect_eq(count_of(acme, "SELECT count(*) FROM billing.usage_daily WHERE tenant = 'globex'"), 0);
	cr_expect_eq(count_of(acme, "SELECT coalesce(sum(count), 0) FROM billing.usage_daily"), 110);
	char text[512];
	pg_harness_query_text(&pg, acme,
			      "SELECT tenant, month, plan, executions, total_micros FROM billing.invoices ORDER BY month",
			      text, sizeof(text));
	cr_expect_str_eq(text, "acme|2024-01-01|basic|107|49000000\nacme|2024-02-01|basic|3|49000000\n");
	cr_expect_eq(count_of(acme, "SELECT count(*) FROM billing.plans"), 4);
	expect_error(acme, "SELECT count(*) FROM billing.export_runs", INSUFFICIENT_PRIVILEGE,
		     "permission denied for table export_runs");

	/* Bound: naming another tenant in the session shows nothing. */
	pg_harness_exec(&pg, acme, "SET app.tenant_id = 'globex'");
	expect_reporting_rows(acme, NULL, 0, 0, 0);
	pg_harness_exec(&pg, acme, "RESET app.tenant_id");
	expect_reporting_rows(acme, "acme", 1, 3, 2);
	pg_harness_exec(&pg, acme, "SELECT set_config('app.tenant_id', 'globex', false)");
	expect_reporting_rows(acme, NULL, 0, 0, 0);
	pg_harness_exec(&pg, acme,
			"CREATE TEMPORARY TABLE pg_db_role_setting (setdatabase oid, setrole oid, setconfig text[]);"
			"CREATE TEMPORARY TABLE pg_roles (oid oid, rolname name)");
	expect_reporting_rows(acme, NULL, 0, 0, 0);
	pg_harness_exec(&pg, acme, "RESET app.tenant_id");
	expect_reporting_rows(acme, "acme", 1, 3, 2);
	PQfinish(acme);

	PGconn *globex = pg_harness_connect(&pg, "bi_globex", DB);
	expect_reporting_rows(globex, "globex", 1, 2, 2);
	pg_harness_exec(&pg, globex, "SET app.tenant_id = 'acme'");
	expect_reporting_rows(globex, NULL, 0, 0, 0);
	PQfinish(globex);

	PGconn *any = pg_harness_connect(&pg, "bi_any", DB);
	pg_harness_exec(&pg, any, "SET app.tenant_id = 'globex'");
	expect_reporting_rows(any, "globex", 1, 2, 2);
	cr_expect_eq(count_of(any, "SELECT coalesce(sum(count), 0) FROM billing.usage_daily"), 52);
	pg_harness_query_text(&pg, any, "SELECT tenant, plan FROM billing.tenants", text, sizeof(text));
	cr_expect_str_eq(text, "globex|pro\n");
	PQfinish(any);
}

/* Description: a reporting login without app.tenant_id sees no row of
 * any tenant table or view; nor with it set to '' or to a tenant that
 * does not exist; plans stay readable. */
Test(billing, reporting_sees_nothing_without_a_tenant)
{
	billing_create();
	seed_two_tenants();
	pg_harness_create_login(&pg, "bi_none", "tally_reporting");
	PGconn *none = pg_harness_connect(&pg, "bi_none", DB);
	cr_expect_eq(count_of(none, "SELECT (current_setting('app.tenant_id', true) IS NULL)::int"), 1);
	expect_reporting_rows(none, NULL, 0, 0, 0);
	pg_harness_exec(&pg, none, "SET app.tenant_id = ''");
	expect_reporting_rows(none, NULL, 0, 0, 0);
	pg_harness_exec(&pg, none, "SET app.tenant_id = 'initech'");
	expect_reporting_rows(none, NULL, 0, 0, 0);
	cr_expect_eq(count_of(none, "SELECT count(*) FROM billing.plans"), 4);
	PQfinish(none);
}

/* Description: a reporting session cannot insert, update, delete or
 * truncate any billing table, alter or drop row security, create objects,
 * replace the view or the policies' function, take another role or move
 * its own tenant binding; every attempt is permission denied (42501),
 * RESET ALL keeps the binding, and the data is unchanged. */
Test(billing, reporting_cannot_write_or_escalate)
{
	billing_create();
	seed_two_tenants();
	pg_harness_create_login(&pg, "bi_acme", "tally_reporting");
	PGconn *su = superuser("postgres");
	pg_harness_exec(&pg, su, "ALTER ROLE bi_acme SET app.tenant_id = 'acme'");
	PQfinish(su);
	PGconn *acme = pg_harness_connect(&pg, "bi_acme", DB);
	const char *forbidden[] = {
		"INSERT INTO billing.tenants (tenant) VALUES ('acme2')",
		"UPDATE billing.tenants SET plan = 'enterprise'",
		"DELETE FROM billing.tenants",
		"INSERT INTO billing.usage_daily VALUES ('acme', '2024-03-01', '', '', '', 'x', 'ok', 1, 0, 0, 0, 0, 0)",
		"UPDATE billing.usage_daily SET count = 1",
		"DELETE FROM billing.usage_daily",
		"TRUNCATE billing.usage_daily",
		"UPDATE billing.plans SET base_price_micros = 0",
		"INSERT INTO billing.export_runs VALUES ('2024-01-15', now(), now(), 0, '0000000000000000', 0)",
		"DELETE FROM billing.schema_version",
		"ALTER TABLE billing.usage_daily DISABLE ROW LEVEL SECURITY",
		"ALTER TABLE billing.tenants NO FORCE ROW LEVEL SECURITY",
		"DROP POLICY reporting_own_tenant ON billing.usage_daily",
		"CREATE POLICY mine ON billing.usage_daily FOR SELECT TO tally_reporting USING (true)",
		"CREATE TABLE billing.mine (x int)",
		"CREATE OR REPLACE VIEW billing.invoices AS SELECT 1",
		"SET ROLE tally_exporter",
		"ALTER ROLE bi_acme BYPASSRLS",
		"ALTER ROLE bi_acme SET app.tenant_id = 'globex'",
		"ALTER ROLE bi_acme RESET app.tenant_id",
		"ALTER ROLE bi_acme IN DATABASE billing SET app.tenant_id = 'globex'",
		"GRANT tally_exporter TO bi_acme",
		"CREATE OR REPLACE FUNCTION billing.reporting_tenant() RETURNS text LANGUAGE sql AS $$SELECT 'globex'$$",
	};
	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
		expect_error(acme, forbidden[i], INSUFFICIENT_PRIVILEGE, NULL);
	expect_error(acme, "UPDATE billing.usage_daily SET count = 1", INSUFFICIENT_PRIVILEGE,
		     "permission denied for table usage_daily");
	expect_error(acme, "ALTER TABLE billing.usage_daily DISABLE ROW LEVEL SECURITY", INSUFFICIENT_PRIVILEGE,
		     "must be owner of table usage_daily");
	expect_error(acme, "ALTER ROLE bi_acme SET app.tenant_id = 'globex'", INSUFFICIENT_PRIVILEGE,
		     "permission denied to set parameter \"app.tenant_id\"");
	pg_harness_exec(&pg, acme, "ALTER ROLE bi_acme RESET ALL");
	PQfinish(acme);
	acme = pg_harness_connect(&pg, "bi_acme", DB);
	expect_reporting_rows(acme, "acme", 1, 3, 2);
	pg_harness_exec(&pg, acme, "SET app.tenant_id = 'globex'");
	expect_reporting_rows(acme, NULL, 0, 0, 0);
	PQfinish(acme);

	su = superuser(DB);
	char text[256];
	pg_harness_query_text(&pg, su,
			      "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting"
			      " WHERE setrole = 'bi_acme'::regrole",
			      text, sizeof(text));
	cr_expect_str_eq(text, "app.tenant_id=acme\n");
	pg_harness_query_text(&pg, su,
			      "SELECT tenant, count(*), sum(count) FROM billing.usage_daily GROUP BY tenant ORDER BY 1",
			      text, sizeof(text));
	cr_expect_str_eq(text, "acme|3|110\nglobex|2|52\n");
	pg_harness_query_text(&pg, su, "SELECT tenant, plan FROM billing.tenants ORDER BY 1", text, sizeof(text));
	cr_expect_str_eq(text, "acme|basic\nglobex|pro\n");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM billing.export_runs"), 1);
	cr_expect_eq(count_of(su, "SELECT relrowsecurity::int + relforcerowsecurity::int FROM pg_class"
				  " WHERE oid = 'billing.usage_daily'::regclass"),
		     2);
	PQfinish(su);
}

/* Description: a login granted tally_exporter (not BYPASSRLS) sees every
 * tenant's rows and replaces a day the way tools/billing/README.md tells
 * the exporter to — in one transaction: register tenants, delete the day,
 * COPY its rows into a temporary table and INSERT ... SELECT them, add the
 * export run — leaving exactly the new rows of that day and the others
 * untouched. COPY straight into usage_daily is refused by PostgreSQL for
 * any session that row security applies to, whatever the policies say. */
Test(billing, exporter_replaces_days_and_sees_every_tenant)
{
	billing_create();
	seed_two_tenants();
	pg_harness_create_login(&pg, "exporter", "tally_exporter");
	PGconn *ex = pg_harness_connect(&pg, "exporter", DB);
	cr_expect_eq(count_of(ex, "SELECT rolbypassrls::int + rolsuper::int FROM pg_roles WHERE rolname = current_user"),
		     0);
	cr_expect_eq(count_of(ex, "SELECT count(*) FROM billing.tenants"), 2);
	cr_expect_eq(count_of(ex, "SELECT count(*) FROM billing.usage_daily"), 5);
	cr_expect_eq(count_of(ex, "SELECT count(*) FROM billing.export_runs"), 1);
	cr_expect_eq(count_of(ex, "SELECT max(version) FROM billing.schema_version"), 5);

	pg_harness_exec(&pg, ex, "BEGIN");
	cr_expect_eq(pg_harness_exec_rows(&pg, ex,
					  "INSERT INTO billing.tenants (tenant) VALUES ('acme'), ('initech')"
					  " ON CONFLICT (tenant) DO NOTHING"),
		     1);
	cr_expect_eq(pg_harness_exec_rows(&pg, ex, "DELETE FROM billing.usage_daily WHERE day = '2024-01-15'"), 2);
	const char rows[] = "acme\t2024-01-15\tweb\tplanner\tgpt-4o\tllm.call\tok\t120\t1200\t600\t2400\t14400\t0\n"
			    "initech\t2024-01-15\t\t\t\tagent.run\tcancelled\t9\t0\t0\t0\t90\t9\n";
	pg_harness_exec(&pg, ex, "CREATE TEMPORARY TABLE usage_load (LIKE billing.usage_daily) ON COMMIT DROP");
	pg_harness_copy_in(&pg, ex, "COPY usage_load FROM STDIN", rows, sizeof(rows) - 1);
	cr_expect_eq(pg_harness_exec_rows(&pg, ex, "INSERT INTO billing.usage_daily SELECT * FROM usage_load"), 2);
	pg_harness_exec(&pg, ex,
			"INSERT INTO billing.export_runs VALUES ('2024-01-15', '2024-01-17 02:00:00+00',"
			" '2024-01-17 02:00:03+00', 2, '0123456789abcdef', 43)");
	pg_harness_exec(&pg, ex, "COMMIT");
	cr_expect_eq(count_of(ex, "SELECT (to_regclass('pg_temp.usage_load') IS NULL)::int"), 1);
	expect_error(ex, "COPY billing.usage_daily FROM STDIN", "0A000", "COPY FROM not supported with row-level security");

	char text[512];
	pg_harness_query_text(&pg, ex,
			      "SELECT tenant, day, status, count FROM billing.usage_daily ORDER BY tenant, day, status", text,
			      sizeof(text));
	cr_expect_str_eq(text, "acme|2024-01-15|ok|120\n"
			       "acme|2024-01-16|error|7\n"
			       "acme|2024-02-01|ok|3\n"
			       "globex|2024-02-02|timeout|2\n"
			       "initech|2024-01-15|cancelled|9\n");
	pg_harness_query_text(&pg, ex, "SELECT tenant, plan, time_zone FROM billing.tenants ORDER BY 1", text,
			      sizeof(text));
	cr_expect_str_eq(text, "acme|basic|UTC\nglobex|pro|UTC\ninitech|free|UTC\n");
	pg_harness_query_text(&pg, ex, "SELECT day, rows, checksum, store_watermark FROM billing.export_runs ORDER BY started",
			      text, sizeof(text));
	cr_expect_str_eq(text, "2024-01-15|2|00000000deadbeef|42\n2024-01-15|2|0123456789abcdef|43\n");

	/* Bad rows are refused by the schema, not stored. */
	expect_error(ex, "INSERT INTO billing.usage_daily VALUES ('nobody', '2024-01-15', '', '', '', 'x', 'ok', 1, 0, 0, 0, 0, 0)",
		     "23503", NULL);
	expect_error(ex, "INSERT INTO billing.usage_daily VALUES ('acme', '2024-01-20', '', '', '', 'x', 'OK', 1, 0, 0, 0, 0, 0)",
		     "23514", NULL);
	expect_error(ex, "INSERT INTO billing.export_runs VALUES ('2024-01-20', now(), now(), 1, 'DEADBEEF', 1)", "23514",
		     NULL);
	PQfinish(ex);
}

/* Description: the exporter may not update usage rows, change plans or
 * tenants, delete tenants or export runs, read invoices, truncate, record
 * a schema version or touch row security: 42501 each, nothing changed. */
Test(billing, exporter_has_only_the_rights_it_needs)
{
	billing_create();
	seed_two_tenants();
	pg_harness_create_login(&pg, "exporter", "tally_exporter");
	PGconn *ex = pg_harness_connect(&pg, "exporter", DB);
	const char *forbidden[] = {
		"UPDATE billing.usage_daily SET count = 1",
		"UPDATE billing.tenants SET plan = 'enterprise'",
		"DELETE FROM billing.tenants WHERE tenant = 'globex'",
		"DELETE FROM billing.export_runs",
		"UPDATE billing.export_runs SET rows = 0",
		"INSERT INTO billing.plans VALUES ('cheap', 0, 0, 0, 20000, 0)",
		"UPDATE billing.plans SET base_price_micros = 0",
		"SELECT * FROM billing.invoices",
		"TRUNCATE billing.usage_daily",
		"INSERT INTO billing.schema_version (version) VALUES (99)",
		"ALTER TABLE billing.usage_daily NO FORCE ROW LEVEL SECURITY",
		"CREATE TABLE billing.mine (x int)",
		"SET ROLE tally_billing_admin",
	};
	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
		expect_error(ex, forbidden[i], INSUFFICIENT_PRIVILEGE, NULL);
	PQfinish(ex);

	PGconn *su = superuser(DB);
	char text[256];
	pg_harness_query_text(&pg, su,
			      "SELECT tenant, plan, (SELECT sum(count) FROM billing.usage_daily u WHERE u.tenant = t.tenant)"
			      " FROM billing.tenants t ORDER BY 1",
			      text, sizeof(text));
	cr_expect_str_eq(text, "acme|basic|110\nglobex|pro|52\n");
	cr_expect_eq(count_of(su, "SELECT count(*) FROM billing.export_runs"), 1);
	cr_expect_eq(count_of(su, "SELECT sum(base_price_micros) FROM billing.plans"), 697000000);
	PQfinish(su);
}

/* Description: a login granted tally_billing_admin reads every tenant's
 * invoices, moves acme to enterprise (its invoices follow: the current
 * plan prices every month) and sets its time zone, but cannot rename a
 * tenant or write usage. */
Test(billing, billing_admin_sets_plans_and_reads_all)
{
	billing_create();
	seed_two_tenants();
	pg_harness_create_login(&pg, "finance", "tally_billing_admin");
	PGconn *admin = pg_harness_connect(&pg, "finance", DB);
	cr_expect_eq(count_of(admin, "SELECT count(*) FROM billing.invoices"), 4);
	cr_expect_eq(count_of(admin, "SELECT count(*) FROM billing.export_runs"), 1);
	cr_expect_eq(pg_harness_exec_rows(&pg, admin,
					  "UPDATE billing.tenants SET plan = 'enterprise', time_zone = 'Europe/Paris'"
					  " WHERE tenant = 'acme'"),
		     1);
	char text[512];
	pg_harness_query_text(&pg, admin, "SELECT tenant, month, plan, total_micros FROM billing.invoices ORDER BY 1, 2",
			      text, sizeof(text));
	cr_expect_str_eq(text, "acme|2024-01-01|enterprise|499000000\n"
			       "acme|2024-02-01|enterprise|499000000\n"
			       "globex|2024-01-01|pro|149000000\n"
			       "globex|2024-02-01|pro|149000000\n");
	expect_error(admin, "UPDATE billing.tenants SET tenant = 'acme2' WHERE tenant = 'acme'", INSUFFICIENT_PRIVILEGE,
		     NULL);
	expect_error(admin, "DELETE FROM billing.usage_daily", INSUFFICIENT_PRIVILEGE, NULL);
	expect_error(admin, "INSERT INTO billing.usage_daily VALUES ('acme', '2024-03-01', '', '', '', 'x', 'ok', 1, 0, 0, 0, 0, 0)",
		     INSUFFICIENT_PRIVILEGE, NULL);
	expect_error(admin, "DELETE FROM billing.export_runs", INSUFFICIENT_PRIVILEGE, NULL);
	expect_error(admin, "UPDATE billing.tenants SET plan = 'platinum' WHERE tenant = 'acme'", "23503", NULL);
	PQfinish(admin);
}

/* ---- invoices ------------------------------------------------------------- */

/* Description: invoices worked out by hand. acme (basic) in January:
 * 10,500 executions and 21,000,000 tokens = $49 + 500 x $0.08 + 1,000,000
 * x 3 micros = $92; in February exactly the included 10,000 executions
 * and 20,000,000 tokens = $49. globex (free) one over each allowance =
 * $0.100004. initech (enterprise) on 31 January and 1 February: two
 * months of $499. Events of every status count. */
Test(billing, invoices_pinned_by_hand)
{
	billing_create();
	PGconn *su = superuser(DB);
	pg_harness_exec(&pg, su,
			"INSERT INTO billing.tenants (tenant, plan) VALUES"
			" ('acme', 'basic'), ('globex', 'free'), ('initech', 'enterprise');"
			"INSERT INTO billing.usage_daily VALUES"
			" ('acme', '2024-01-02', 'p', 'a', 'm', 'llm.call', 'ok', 10000, 15000000, 5000000, 0, 0, 0),"
			" ('acme', '2024-01-31', 'p', 'a', 'm', 'llm.call', 'error', 400, 0, 1000000, 0, 0, 400),"
			" ('acme', '2024-01-31', 'p', 'a', 'm', 'llm.call', 'cancelled', 100, 0, 0, 0, 0, 100),"
			" ('acme', '2024-02-01', 'p', 'a', 'm', 'llm.call', 'ok', 10000, 20000000, 0, 0, 0, 0),"
			" ('globex', '2024-01-10', '', '', '', 'tool.call', 'timeout', 1001, 1000001, 0, 0, 0, 1001),"
			" ('initech', '2024-01-31', '', '', '', 'agent.run', 'ok', 1, 0, 0, 0, 0, 0),"
			" ('initech', '2024-02-01', '', '', '', 'agent.run', 'error', 1, 0, 0, 0, 0, 1)");
	char text[1024];
	pg_harness_query_text(&pg, su, "SELECT * FROM billing.invoices ORDER BY tenant, month", text, sizeof(text));
	cr_expect_str_eq(text,
			 "acme|2024-01-01|basic|10500|21000000|49000000|500|40000000|1000000|3000000|92000000\n"
			 "acme|2024-02-01|basic|10000|20000000|49000000|0|0|0|0|49000000\n"
			 "globex|2024-01-01|free|1001|1000001|0|1|100000|1|4|100004\n"
			 "initech|2024-01-01|enterprise|1|0|499000000|0|0|0|0|499000000\n"
			 "initech|2024-02-01|enterprise|1|0|499000000|0|0|0|0|499000000\n");
	PQfinish(su);
}

/* The invoice workload: per tenant, executions per day and tokens_in per
 * execution in January and February 2024 (0: no usage that month). */
typedef struct workload_tenant {
	const char *tenant;
	const char *plan;
	int64_t executions_per_day[2];
	int64_t tokens_per_execution[2];
} workload_tenant;

static const workload_tenant WORKLOAD[] = {
	{"basic-1", "basic", {300, 400}, {1500, 2000}},  /* Feb: both overages */
	{"basic-2", "basic", {0, 5}, {0, 10}},           /* Feb only, under */
	{"ent-1", "enterprise", {9000, 100}, {4000, 50}}, /* Jan: both overages */
	{"free-1", "free", {40, 20}, {30, 30}},          /* Jan: executions over */
	{"pro-1", "pro", {1500, 2000}, {3000, 100}},     /* Jan: tokens over; Feb: executions over */
};
#define WORKLOAD_TENANTS (sizeof(WORKLOAD) / sizeof(WORKLOAD[0]))
static const int DAYS_IN_MONTH[2] = {31, 29}; /* 2024 is a leap year */

typedef struct invoice {
	int64_t executions, tokens;
	int64_t overage_executions, execution_overage_micros;
	int64_t overage_tokens, token_overage_micros;
	int64_t total_micros;
	bool seen;
} invoice;

static int64_t overage(int64_t used, int64_t included)
{
	return used > included ? used - included : 0;
}

/* Appends the workload's usage rows to data (COPY text) and adds them up
 * per tenant and month in invoices. Returns the bytes written. */
static size_t workload_rows(char *data, size_t size, invoice invoices[][2])
{
	static const char *const groups[3][2] = {{"llm.call", "ok"}, {"tool.call", "error"}, {"agent.run", "timeout"}};
	size_t used = 0;
	for (size_t t = 0; t < WORKLOAD_TENANTS; t++) {
		for (int month = 0; month < 2; month++) {
			if (WORKLOAD[t].executions_per_day[month] == 0)
				continue;
			for (int day = 1; day <= DAYS_IN_MONTH[month]; day++) {
				int64_t executions = WORKLOAD[t].executions_per_day[month] + day % 7 - 3;
				int64_t counts[3] = {executions - executions / 4 - executions / 10, executions / 4,
						     executions / 10};
				for (int g = 0; g < 3; g++) {
					int64_t count = counts[g];
					if (count == 0)
						continue;
					int64_t tokens_in = count * WORKLOAD[t].tokens_per_execution[month];
					int64_t tokens_out = count * (day % 3);
					int n = snprintf(data + used, size - used,
							 "%s\t2024-%02d-%02d\tproj\tagent-1\tmodel-a\t%s\t%s\t%" PRId64
							 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64
							 "\n",
							 WORKLOAD[t].tenant, month + 1, day, groups[g][0], groups[g][1],
							 count, tokens_in, tokens_out, count * 7, count * 120,
							 g == 0 ? 0 : count);
					cr_assert(n > 0 && (size_t)n < size - used, "workload buffer too small");
					used += (size_t)n;
					invoices[t][month].executions += count;
					invoices[t][month].tokens += tokens_in + tokens_out;
				}
			}
		}
	}
	return used;
}

/* Description: five tenants on the four plans over January and February
 * 2024 (about 800 usage rows, every branch: execution overage or not,
 * token overage or not, a month without usage); every row of the view,
 * read by a billing admin, equals the price computed here in C from the
 * rows sent and the test's own price list, and there are no other rows. */
Test(billing, invoices_match_an_independent_computation)
{
	billing_create();
	PGconn *su = superuser(DB);
	for (size_t t = 0; t < WORKLOAD_TENANTS; t++)
		tenant_insert(su, WORKLOAD[t].tenant, WORKLOAD[t].plan);
	invoice invoices[WORKLOAD_TENANTS][2];
	memset(invoices, 0, sizeof(invoices));
	size_t size = 1 << 18;
	char *data = malloc(size);
	cr_assert_not_null(data);
	size_t used = workload_rows(data, size, invoices);
	pg_harness_copy_in(&pg, su, "COPY billing.usage_daily FROM STDIN", data, used);
	free(data);
	PQfinish(su);

	/* The oracle, and a check that the workload covers every branch. */
	size_t expected_rows = 0;
	int branches[4] = {0}; /* execution overage yes/no, token overage yes/no */
	for (size_t t = 0; t < WORKLOAD_TENANTS; t++) {
		const plan_terms *p = plan_find(WORKLOAD[t].plan);
		for (int month = 0; month < 2; month++) {
			invoice *inv = &invoices[t][month];
			if (inv->executions == 0)
				continue;
			expected_rows++;
			inv->overage_executions = overage(inv->executions, p->included_executions);
			inv->execution_overage_micros = inv->overage_executions * p->execution_overage_micros;
			inv->overage_tokens = overage(inv->tokens, p->included_tokens);
			inv->token_overage_micros = inv->overage_tokens * p->token_overage_micros;
			inv->total_micros = p->base_price_micros + inv->execution_overage_micros + inv->token_overage_micros;
			branches[inv->overage_executions > 0 ? 0 : 1]++;
			branches[inv->overage_tokens > 0 ? 2 : 3]++;
		}
	}
	cr_assert_eq(expected_rows, 9);
	cr_assert(branches[0] && branches[1] && branches[2] && branches[3], "workload misses a branch: %d %d %d %d",
		  branches[0], branches[1], branches[2], branches[3]);

	pg_harness_create_login(&pg, "finance", "tally_billing_admin");
	PGconn *admin = pg_harness_connect(&pg, "finance", DB);
	PGresult *res = pg_harness_query(&pg, admin,
					 "SELECT tenant, month, plan, executions, tokens, base_price_micros,"
					 " overage_executions, execution_overage_micros, overage_tokens,"
					 " token_overage_micros, total_micros FROM billing.invoices ORDER BY tenant, month");
	cr_assert_eq((size_t)PQntuples(res), expected_rows);
	for (int row = 0; row < PQntuples(res); row++) {
		const char *tenant = PQgetvalue(res, row, 0);
		const char *month_text = PQgetvalue(res, row, 1);
		int month = strcmp(month_text, "2024-01-01") == 0 ? 0 : strcmp(month_text, "2024-02-01") == 0 ? 1 : -1;
		cr_assert_neq(month, -1, "unexpected month %s", month_text);
		size_t t = 0;
		while (t < WORKLOAD_TENANTS && strcmp(WORKLOAD[t].tenant, tenant) != 0)
			t++;
		cr_assert_lt(t, WORKLOAD_TENANTS, "unexpected tenant %s", tenant);
		invoice *inv = &invoices[t][month];
		const plan_terms *p = plan_find(WORKLOAD[t].plan);
		cr_assert(!inv->seen && inv->executions > 0, "%s %s: unexpected or repeated", tenant, month_text);
		inv->seen = true;
		cr_expect_str_eq(PQgetvalue(res, row, 2), WORKLOAD[t].plan);
		const int64_t expected[] = {inv->executions,         inv->tokens,         p->base_price_micros,
					    inv->overage_executions, inv->execution_overage_micros, inv->overage_tokens,
					    inv->token_overage_micros, inv->total_micros};
		for (int column = 3; column < 11; column++) {
			int64_t got = strtoll(PQgetvalue(res, row, column), NULL, 10);
			cr_expect_eq(got, expected[column - 3], "%s %s %s: %" PRId64 ", expected %" PRId64, tenant,
				     month_text, PQfname(res, column), got, expected[column - 3]);
		}
	}
	PQclear(res);
	PQfinish(admin);
}

/* ---- invoices beyond bigint ----------------------------------------------- */

/* Exact integers wider than any bigint sum or product the view can meet
 * here: each input is below 2^63, and a month holds two rows at most. */
typedef unsigned __int128 wide;

/* Three tenants, one month each: acme an ordinary invoice; bigprice a
 * token overage (tokens fit in bigint) whose price does not; bigsum two
 * rows whose count, and whose tokens_in + tokens_out even within one row,
 * pass 2^63 - 1. */
typedef struct huge_tenant {
	const char *tenant;
	const char *plan;
	const char *month;
} huge_tenant;

static const huge_tenant HUGE_TENANTS[] = {
	{"acme", "basic", "2024-01-01"},
	{"bigprice", "free", "2024-01-01"},
	{"bigsum", "enterprise", "2024-02-01"},
};
#define HUGE_TENANT_COUNT (sizeof(HUGE_TENANTS) / sizeof(HUGE_TENANTS[0]))

typedef struct huge_row {
	size_t tenant_index;
	const char *day;
	int64_t count, tokens_in, tokens_out;
} huge_row;

static const huge_row HUGE_ROWS[] = {
	{0, "2024-01-02", 10000, 15000000, 5000000},
	{0, "2024-01-31", 500, 0, 1000000},
	{1, "2024-01-10", 1000, 3000000000000000000, 2000000000000000000},
	{2, "2024-02-01", 9000000000000000000, 9000000000000000000, 9000000000000000000},
	{2, "2024-02-02", 9000000000000000000, 9000000000000000000, 9000000000000000000},
};
#define HUGE_ROW_COUNT (sizeof(HUGE_ROWS) / sizeof(HUGE_ROWS[0]))

/* The view's rows for that usage, worked out by hand (docs/billing.md's
 * formula):
 *   acme      49,000,000 + 500 x 80,000 + 1,000,000 x 3 = 92,000,000;
 *   bigprice  0 + 0 + (5e18 - 1e6) x 4 = 19,999,999,999,996,000,000;
 *   bigsum    499,000,000 + (1.8e19 - 250,000) x 20,000 + (3.6e19 - 1e9) x 1
 *             = 360,035,999,999,994,499,000,000. */
static const char HUGE_INVOICES[] =
	"acme|2024-01-01|basic|10500|21000000|49000000|500|40000000|1000000|3000000|92000000\n"
	"bigprice|2024-01-01|free|1000|5000000000000000000|0|0|0|4999999999999000000"
	"|19999999999996000000|19999999999996000000\n"
	"bigsum|2024-02-01|enterprise|18000000000000000000|36000000000000000000|499000000"
	"|17999999999999750000|359999999999995000000000|35999999999000000000|35999999999000000000"
	"|360035999999994499000000\n";

/* Appends value in decimal to out at *used. */
static void wide_append(char *out, size_t size, size_t *used, wide value, char separator)
{
	char digits[40];
	size_t n = 0;
	do {
		digits[n++] = (char)('0' + (int)(value % 10));
		value /= 10;
	} while (value != 0);
	cr_assert_lt(*used + n + 1, size, "invoice text too long");
	while (n > 0)
		out[(*used)++] = digits[--n];
	out[(*used)++] = separator;
	out[*used] = '\0';
}

static wide wide_overage(wide used, int64_t included)
{
	return used > (wide)included ? used - (wide)included : 0;
}

/* HUGE_INVOICES again, computed in C from HUGE_ROWS and the test's price
 * list in 128-bit integers, in the view's row and column order. */
static void huge_invoices_computed(char *out, size_t size)
{
	size_t used = 0;
	out[0] = '\0';
	for (size_t t = 0; t < HUGE_TENANT_COUNT; t++) {
		const plan_terms *p = plan_find(HUGE_TENANTS[t].plan);
		wide executions = 0, tokens = 0;
		for (size_t r = 0; r < HUGE_ROW_COUNT; r++) {
			if (HUGE_ROWS[r].tenant_index != t)
				continue;
			executions += (wide)HUGE_ROWS[r].count;
			tokens += (wide)HUGE_ROWS[r].tokens_in + (wide)HUGE_ROWS[r].tokens_out;
		}
		wide overage_executions = wide_overage(executions, p->included_executions);
		wide overage_tokens = wide_overage(tokens, p->included_tokens);
		wide execution_micros = overage_executions * (wide)p->execution_overage_micros;
		wide token_micros = overage_tokens * (wide)p->token_overage_micros;
		int n = snprintf(out + used, size - used, "%s|%s|%s|", HUGE_TENANTS[t].tenant,
				 HUGE_TENANTS[t].month, p->plan);
		cr_assert(n > 0 && (size_t)n < size - used, "invoice text too long");
		used += (size_t)n;
		wide base = (wide)p->base_price_micros;
		const wide columns[] = {executions, tokens, base, overage_executions, execution_micros,
					overage_tokens, token_micros, base + execution_micros + token_micros};
		const size_t count = sizeof(columns) / sizeof(columns[0]);
		for (size_t c = 0; c < count; c++)
			wide_append(out, size, &used, columns[c], c + 1 < count ? '|' : '\n');
	}
}

/* The tenants and usage above, written by the superuser. */
static void huge_usage_seed(void)
{
	PGconn *su = superuser(DB);
	for (size_t t = 0; t < HUGE_TENANT_COUNT; t++)
		tenant_insert(su, HUGE_TENANTS[t].tenant, HUGE_TENANTS[t].plan);
	for (size_t r = 0; r < HUGE_ROW_COUNT; r++) {
		const huge_row *row = &HUGE_ROWS[r];
		char sql[320];
		snprintf(sql, sizeof(sql),
			 "INSERT INTO billing.usage_daily VALUES ('%s', '%s', '', '', '',"
			 " 'llm.call', 'ok', %" PRId64 ", %" PRId64 ", %" PRId64 ", 0, 0, 0)",
			 HUGE_TENANTS[row->tenant_index].tenant, row->day, row->count,
			 row->tokens_in, row->tokens_out);
		pg_harness_exec(&pg, su, sql);
	}
	PQfinish(su);
}

/* Every invoice, as a billing admin reads them, equals HUGE_INVOICES, and
 * a reporting login bound to acme reads acme's alone. */
static void huge_invoices_expect(void)
{
	char computed[1024];
	huge_invoices_computed(computed, sizeof(computed));
	cr_expect_str_eq(computed, HUGE_INVOICES, "the hand-worked invoices disagree with C's");

	pg_harness_create_login(&pg, "finance", "tally_billing_admin");
	PGconn *admin = pg_harness_connect(&pg, "finance", DB);
	char text[1024];
	pg_harness_query_text(&pg, admin, "SELECT * FROM billing.invoices ORDER BY tenant, month",
			      text, sizeof(text));
	cr_expect_str_eq(text, HUGE_INVOICES);
	PQfinish(admin);

	pg_harness_create_login(&pg, "bi_acme", "tally_reporting");
	PGconn *su = superuser("postgres");
	pg_harness_exec(&pg, su, "ALTER ROLE bi_acme SET app.tenant_id = 'acme'");
	PQfinish(su);
	PGconn *acme = pg_harness_connect(&pg, "bi_acme", DB);
	expect_reporting_rows(acme, "acme", 1, 2, 1);
	pg_harness_query_text(&pg, acme, "SELECT * FROM billing.invoices", text, sizeof(text));
	cr_expect_str_eq(text, "acme|2024-01-01|basic|10500|21000000|49000000|500|40000000"
			       "|1000000|3000000|92000000\n");
	PQfinish(acme);
}

/* Description: one tenant's usage beyond bigint — a token overage whose
 * price passes 2^63 - 1 micro-units, a month whose executions and tokens
 * (and one row's tokens_in + tokens_out) pass it — leaves every tenant's
 * invoice readable: the view returns all three rows, the ordinary one
 * exactly $92 and the huge ones exact to the micro-unit (pinned by hand
 * and computed in 128-bit integers in C), never wrapped or rounded; the
 * sums and money columns are numeric, the plan's base price bigint. */
Test(billing, invoices_beyond_bigint_leave_every_tenant_readable)
{
	billing_create();
	huge_usage_seed();
	huge_invoices_expect();
	PGconn *su = superuser(DB);
	char text[512];
	pg_harness_query_text(&pg, su,
			      "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod)"
			      ", ', ' ORDER BY attnum) FROM pg_attribute"
			      " WHERE attrelid = 'billing.invoices'::regclass AND attnum > 0",
			      text, sizeof(text));
	cr_expect_str_eq(text, "tenant text, month date, plan text, executions numeric,"
			       " tokens numeric, base_price_micros bigint,"
			       " overage_executions numeric, execution_overage_micros numeric,"
			       " overage_tokens numeric, token_overage_micros numeric,"
			       " total_micros numeric\n");
	PQfinish(su);
}

/* Description: usage_daily's sums are numeric(39, 0) (migration 5): a
 * day's sums past 64 bits (an event's tokens alone may pass bigint) are
 * stored exactly and the invoices add them exactly; their CHECKs hold
 * (no negative tokens), and a value past 39 digits is refused, never
 * rounded. count and errors stay bigint. */
Test(billing, usage_sums_past_bigint_are_stored_exactly)
{
	billing_create();
	PGconn *su = superuser(DB);
	tenant_insert(su, "huge", "free");
	pg_harness_exec(&pg, su,
			"INSERT INTO billing.usage_daily VALUES ('huge', '2024-03-01', '', '', '', 'llm.call',"
			" 'ok', 2, 36893488147419103231, 18446744073709551615, -36893488147419103232,"
			" 36893488147419103230, 0)");
	char text[512];
	pg_harness_query_text(&pg, su,
			      "SELECT tokens_in, tokens_out, cost_micros, duration_ms FROM billing.usage_daily",
			      text, sizeof(text));
	cr_expect_str_eq(text, "36893488147419103231|18446744073709551615|-36893488147419103232"
			       "|36893488147419103230\n");
	pg_harness_query_text(&pg, su, "SELECT tokens FROM billing.invoices", text, sizeof(text));
	cr_expect_str_eq(text, "55340232221128654846\n");
	pg_harness_query_text(&pg, su,
			      "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod)"
			      ", ', ' ORDER BY attnum) FROM pg_attribute"
			      " WHERE attrelid = 'billing.usage_daily'::regclass AND attnum > 0",
			      text, sizeof(text));
	cr_expect_str_eq(text, "tenant text, day date, project text, agent text, model text, type text,"
			       " status text, count bigint, tokens_in numeric(39,0), tokens_out numeric(39,0),"
			       " cost_micros numeric(39,0), duration_ms numeric(39,0), errors bigint\n");
	expect_error(su,
		     "INSERT INTO billing.usage_daily VALUES ('huge', '2024-03-02', '', '', '', 'llm.call',"
		     " 'ok', 1, -1, 0, 0, 0, 0)",
		     "23514", NULL);
	expect_error(su,
		     "INSERT INTO billing.usage_daily VALUES ('huge', '2024-03-02', '', '', '', 'llm.call',"
		     " 'ok', 1, 1000000000000000000000000000000000000000, 0, 0, 0, 0)",
		     "22003", NULL);
	PQfinish(su);
}

/* Description: a database at version 3 holding such usage, whose 003 view
 * fails for every tenant with "bigint out of range", is upgraded by the
 * runner applying 004 and 005 (refused, changing nothing, while a view of
 * someone else's depends on the invoices); the view then answers exactly
 * for every tenant, is still security_invoker and still granted to the
 * reporting and billing-admin roles (a bound reporting login sees its
 * own row). */
Test(billing, invoices_upgrade_from_version_3_answers_for_every_tenant)
{
	database_create();
	PGconn *owner = pg_harness_connect(&pg, OWNER, DB);
	const char *files[] = {"001_schema.sql", "002_security.sql", "003_invoices.sql"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/%s", MIGRATIONS_DIR, files[i]);
		pg_harness_exec(&pg, owner, "BEGIN");
		pg_harness_run_file(&pg, owner, path);
		pg_harness_exec(&pg, owner, "COMMIT");
	}
	PQfinish(owner);
	huge_usage_seed();
	PGconn *su = superuser(DB);
	expect_error(su, "SELECT * FROM billing.invoices", "22003", "bigint out of range");

	/* A view of someone else's on the invoices stops 004, which changes
	 * nothing; once it is gone, 004 applies. */
	pg_harness_exec(&pg, su,
			"CREATE VIEW public.totals AS SELECT total_micros FROM billing.invoices");
	char err[512];
	cr_expect_eq(migrate(err, sizeof(err)), -1);
	cr_expect_str_eq(err, "004_invoices_numeric.sql: cannot drop view billing.invoices"
			      " because other objects depend on it (SQLSTATE 2BP01)");
	char text[256];
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3\n");
	pg_harness_exec(&pg, su, "DROP VIEW public.totals");
	cr_assert_eq(migrate(err, sizeof(err)), 2, "%s", err);
	versions_text(su, text, sizeof(text));
	cr_expect_str_eq(text, "1,2,3,4,5\n");
	pg_harness_query_text(&pg, su,
			      "SELECT array_to_string(reloptions, ','), pg_get_userbyid(relowner),"
			      " has_table_privilege('tally_reporting', oid, 'SELECT'),"
			      " has_table_privilege('tally_billing_admin', oid, 'SELECT'),"
			      " has_table_privilege('tally_exporter', oid, 'SELECT')"
			      " FROM pg_class WHERE oid = 'billing.invoices'::regclass",
			      text, sizeof(text));
	cr_expect_str_eq(text, "security_invoker=true|billing_owner|t|t|f\n");
	PQfinish(su);
	huge_invoices_expect();
}
