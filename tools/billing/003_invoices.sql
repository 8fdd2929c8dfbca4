-- 003_invoices.sql — the monthly invoices view.
--
-- One row per tenant and calendar month of usage_daily.day (UTC days, as
-- exported) with at least one usage row:
--   executions   = sum(count): every event is one execution, whatever its
--                  type and status
--   tokens       = sum(tokens_in + tokens_out)
--   overage_executions = max(0, executions - plan.included_executions)
--   overage_tokens     = max(0, tokens - plan.included_tokens)
--   total_micros = base_price_micros
--                + overage_executions * execution_overage_micros
--                + overage_tokens * token_overage_micros
-- all integers (micro-units of USD); an overflow is an error, never a
-- wrapped amount. The plan is the tenant's current plan: the view does
-- not prorate, and a month is billed at the plan in force when it is read.
--
-- security_invoker: the view reads its tables with the rights and row
-- security of whoever queries it, so a tally_reporting session sees the
-- invoices of its own tenant only.

INSERT INTO billing.schema_version (version) VALUES (3);

CREATE VIEW billing.invoices WITH (security_invoker = true) AS
WITH monthly AS (
	SELECT u.tenant,
	       date_trunc('month', u.day::timestamp)::date AS month,
	       sum(u.count)::bigint AS executions,
	       sum(u.tokens_in + u.tokens_out)::bigint AS tokens
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
