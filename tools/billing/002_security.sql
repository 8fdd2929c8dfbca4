-- 002_security.sql — roles, privileges and row-level security.
--
-- Three NOLOGIN group roles, created here only if absent (they belong to
-- the cluster, so a second billing database finds them); deployments
-- grant them to login roles:
--   tally_exporter       the exporter: registers tenants, replaces days of
--                        usage_daily, records export_runs; sees every tenant.
--   tally_reporting      BI tools: read-only, and only the tenant named by
--                        the setting app.tenant_id (nothing when it is unset
--                        or empty; see billing.reporting_tenant below); never
--                        export_runs.
--   tally_billing_admin  billing staff: sets tenants' plans and time zones,
--                        edits plans; reads everything; never writes usage.
-- None of them is given BYPASSRLS: every tenant table has row security
-- enabled and forced, so even the owner of the tables (the role that ran
-- these migrations) sees no row unless it is a member of one of the roles
-- a policy names. Superusers and BYPASSRLS roles are not subject to it.
--
-- Creating the roles needs CREATEROLE; where a DBA created them already,
-- the migrating role only needs to own the database (or CREATE on it).

INSERT INTO billing.schema_version (version) VALUES (2);

DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tally_exporter') THEN
		CREATE ROLE tally_exporter NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tally_reporting') THEN
		CREATE ROLE tally_reporting NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tally_billing_admin') THEN
		CREATE ROLE tally_billing_admin NOLOGIN;
	END IF;
	-- Roles found already made must not defeat the policies below.
	IF EXISTS (SELECT FROM pg_catalog.pg_roles
	           WHERE rolname IN ('tally_exporter', 'tally_reporting', 'tally_billing_admin')
	             AND (rolsuper OR rolbypassrls)) THEN
		RAISE EXCEPTION 'tally_exporter, tally_reporting and tally_billing_admin must be neither SUPERUSER nor BYPASSRLS';
	END IF;
	IF pg_catalog.pg_has_role('tally_reporting', current_user, 'MEMBER') THEN
		RAISE EXCEPTION 'tally_reporting must not be a member of %, the owner of the billing schema', current_user;
	END IF;
END
$$;

REVOKE ALL ON SCHEMA billing FROM PUBLIC;
GRANT USAGE ON SCHEMA billing TO tally_exporter, tally_reporting, tally_billing_admin;

-- The exporter reads the schema version, the tenants it registered and
-- what it exported; it inserts tenants (never updates a plan), replaces
-- usage days (insert and delete, no update) and appends export runs.
GRANT SELECT ON billing.schema_version, billing.plans, billing.tenants,
                billing.usage_daily, billing.export_runs TO tally_exporter;
GRANT INSERT ON billing.tenants TO tally_exporter;
GRANT INSERT, DELETE ON billing.usage_daily TO tally_exporter;
GRANT INSERT ON billing.export_runs TO tally_exporter;

GRANT SELECT ON billing.plans, billing.tenants, billing.usage_daily TO tally_reporting;

GRANT SELECT ON billing.schema_version, billing.plans, billing.tenants,
                billing.usage_daily, billing.export_runs TO tally_billing_admin;
GRANT INSERT, UPDATE ON billing.plans TO tally_billing_admin;
GRANT INSERT, UPDATE (plan, time_zone) ON billing.tenants TO tally_billing_admin;

ALTER TABLE billing.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.tenants FORCE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.usage_daily FORCE ROW LEVEL SECURITY;
-- Not per tenant, but it counts every tenant's rows: forced too, and
-- readable by the exporter and the billing admins only.
ALTER TABLE billing.export_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing.export_runs FORCE ROW LEVEL SECURITY;

-- Privileges above decide which commands each role may run; the policies
-- decide which rows. Without a policy naming it, a role sees no row.
CREATE POLICY exporter_all ON billing.tenants
	FOR ALL TO tally_exporter USING (true) WITH CHECK (true);
CREATE POLICY exporter_all ON billing.usage_daily
	FOR ALL TO tally_exporter USING (true) WITH CHECK (true);
CREATE POLICY exporter_all ON billing.export_runs
	FOR ALL TO tally_exporter USING (true) WITH CHECK (true);

-- The tenant a reporting session may see: the session's app.tenant_id,
-- provided it equals every app.tenant_id default set on the login role
-- itself (ALTER ROLE login [IN DATABASE db] SET app.tenant_id = ...);
-- NULL, so no row, when it is unset, empty or differs from such a default.
-- In PostgreSQL 15 only a superuser may set or reset a role default of a
-- custom parameter, so a login bound to a tenant that way cannot read
-- another by SETting app.tenant_id (or calling set_config) in its session.
-- A login without such a default sees whatever tenant its session names:
-- for a trusted application or BI service that sets it per connection.
-- Every relation is schema-qualified and search_path pinned, so a
-- temporary table cannot stand in for a catalog.
CREATE FUNCTION billing.reporting_tenant() RETURNS text
	LANGUAGE sql STABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN coalesce(bool_and(c.setting = 'app.tenant_id=' || current_setting('app.tenant_id', true)), true)
	            THEN nullif(current_setting('app.tenant_id', true), '') END
	FROM pg_catalog.pg_db_role_setting s
	CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS c(setting)
	WHERE s.setrole = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
	  AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()))
	  AND starts_with(c.setting, 'app.tenant_id=')
$$;
REVOKE ALL ON FUNCTION billing.reporting_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.reporting_tenant() TO tally_reporting;

-- (SELECT ...): evaluated once per statement, not once per row.
CREATE POLICY reporting_own_tenant ON billing.tenants
	FOR SELECT TO tally_reporting
	USING (tenant = (SELECT billing.reporting_tenant()));
CREATE POLICY reporting_own_tenant ON billing.usage_daily
	FOR SELECT TO tally_reporting
	USING (tenant = (SELECT billing.reporting_tenant()));

CREATE POLICY billing_admin_all ON billing.tenants
	FOR ALL TO tally_billing_admin USING (true) WITH CHECK (true);
CREATE POLICY billing_admin_read ON billing.usage_daily
	FOR SELECT TO tally_billing_admin USING (true);
CREATE POLICY billing_admin_read ON billing.export_runs
	FOR SELECT TO tally_billing_admin USING (true);
