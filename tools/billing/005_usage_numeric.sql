-- 005_usage_numeric.sql — usage_daily's sums in numeric, so that every
-- day the store holds can be exported exactly, for every tenant.
--
-- In 001 tokens_in, tokens_out, cost_micros and duration_ms were bigint,
-- but they are sums the store keeps exactly past 64 bits: an event's
-- tokens_in and tokens_out are uint64 (up to 2^64 - 1, past bigint by
-- themselves), and a day's sum of them, of cost_micros or of duration_ms
-- may pass 2^64 (the store keeps how many times: its wraps). One such
-- group of one tenant made the exporter refuse the whole day, for every
-- tenant, night after night. numeric(39, 0) holds any of them exactly
-- (the store's sums are within ±2^127): whole micro-units of USD, whole
-- tokens and milliseconds, never rounded, never a float.
--
-- count and errors stay bigint: a group of one day counts its events, far
-- below 2^63.
--
-- The invoices view reads these columns, and a column a view reads cannot
-- change its type, so the view is dropped and created again (004's text,
-- unchanged: its sums were numeric already) in this one transaction, and
-- its grants given again. The ALTER rewrites usage_daily (it holds an
-- exclusive lock until COMMIT: readers and the exporter wait).

INSERT INTO billing.schema_version (version) VALUES (5);

DROP VIEW billing.invoices;

ALTER TABLE billing.usage_daily
	ALTER COLUMN tokens_in TYPE numeric(39, 0),
	ALTER COLUMN tokens_out TYPE numeric(39, 0),
	ALTER COLUMN cost_micros TYPE numeric(39, 0),
	ALTER COLUMN duration_ms TYPE numeric(39, 0);

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
