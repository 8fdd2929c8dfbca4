-- 004_invoices_numeric.sql — the invoices view computed in numeric, so
-- that no tenant's usage can stop the view answering for the others.
--
-- 003's view summed and multiplied in bigint: one tenant whose token
-- overage times its price passed 2^63 - 1 micro-units (or whose month of
-- tokens_in + tokens_out, or of count, did) made every SELECT over the view
-- fail with "bigint out of range" (SQLSTATE 22003), for every tenant, and
-- billing staff could read no invoice at all. Here every sum and product is
-- numeric, PostgreSQL's exact arbitrary-precision decimal: sum(bigint) is
-- numeric already, and numeric times bigint is numeric. All values have
-- scale 0, so the money stays whole micro-units of USD, never rounded,
-- never wrapped, never a float, whatever the size.
--
-- The columns (the formula is 003's, unchanged):
--   tenant text, month date, plan text      as in 003
--   executions numeric                       sum(count)
--   tokens numeric                           sum(tokens_in) + sum(tokens_out)
--   base_price_micros bigint                 the plan's, as stored
--   overage_executions numeric               max(0, executions - included_executions)
--   execution_overage_micros numeric         overage_executions * execution_overage_micros
--   overage_tokens numeric                   max(0, tokens - included_tokens)
--   token_overage_micros numeric             overage_tokens * token_overage_micros
--   total_micros numeric                     base + both overages
-- A consumer that needs int64 must check the range and refuse a value
-- beyond it; the view itself always answers.
--
-- CREATE OR REPLACE VIEW cannot change a column's type, so the view is
-- dropped and created again in this one transaction (readers of the view
-- wait for it to commit). Dropping it drops its grants: they are
-- given again below. An object of someone else's built on the view makes
-- the DROP fail, and with it the whole migration, changing nothing: drop
-- or rebuild that object, then migrate again.

INSERT INTO billing.schema_version (version) VALUES (4);

DROP VIEW billing.invoices;

-- security_invoker: the view reads its tables with the rights and row
-- security of whoever queries it, so a tally_reporting session sees the
-- invoices of its own tenant only.
CREATE VIEW billing.invoices WITH (security_invoker = true) AS
WITH monthly AS (
	-- Summed apart: tokens_in + tokens_out of one row can pass bigint.
	SELECT u.tenant,
	       date_trunc('month', u.day::timestamp)::date AS month,
	       sum(u.count) AS executions,
	       sum(u.tokens_in) + sum(u.tokens_out) AS tokens
	FROM billing.usage_daily u
	GROUP BY u.tenant, date_trunc('month', u.day::timestamp)
), priced AS (
	SELECT m.tenant, m.month, t.plan, m.executions, m.tokens, p.base_price_micros,
	       greatest(m.executions - p.included_executions, 0) AS overage_executions,
	       p.execution_overage_micros,
	       greatest(m.tokens - p.included_tokens, 0) AS overage_tokens,
	       p.token_overage_micros
	FROM monthly m
	JOIN billing.tenants t ON t.tenant = m.tenant
	JOIN billing.plans p ON p.plan = t.plan
)
SELECT tenant, month, plan, executions, tokens, base_price_micros,
       overage_executions,
       overage_executions * execution_overage_micros AS execution_overage_micros,
       overage_tokens,
       overage_tokens * token_overage_micros AS token_overage_micros,
       base_price_micros + overage_executions * execution_overage_micros
                         + overage_tokens * token_overage_micros AS total_micros
FROM priced;

GRANT SELECT ON billing.invoices TO tally_reporting, tally_billing_admin;
