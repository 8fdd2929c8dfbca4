-- 001_schema.sql — the billing schema: price plans (seeded), tenants, daily
-- usage, export runs, and schema_version, in which every migration records
-- its own number.
--
-- Applied by the exporter inside one transaction (the protocol is in
-- tools/billing/README.md); this file holds no transaction control.
-- Money is bigint micro-units of USD everywhere ($1 = 1000000), never a
-- float. Day boundaries are UTC: a usage_daily.day is the UTC day of the
-- events it counts, as the store exports them.

CREATE SCHEMA billing;

CREATE TABLE billing.schema_version (
	version    integer     PRIMARY KEY CHECK (version > 0),
	applied_at timestamptz NOT NULL DEFAULT now()
);

-- Recorded first: a second application of this file fails here or on
-- CREATE SCHEMA, and a concurrent one waits on the key, then fails.
INSERT INTO billing.schema_version (version) VALUES (1);

-- A month of a plan costs base_price_micros and includes
-- included_executions executions (an execution is one event the store
-- accepted, whatever its type and status) and included_tokens tokens
-- (tokens_in + tokens_out). Beyond them each execution costs
-- execution_overage_micros and each token token_overage_micros.
CREATE TABLE billing.plans (
	plan                     text   PRIMARY KEY CHECK (plan ~ '^[a-z][a-z0-9_]{0,31}$'),
	base_price_micros        bigint NOT NULL CHECK (base_price_micros >= 0),
	included_executions      bigint NOT NULL CHECK (included_executions >= 0),
	included_tokens          bigint NOT NULL CHECK (included_tokens >= 0),
	execution_overage_micros bigint NOT NULL
		CHECK (execution_overage_micros BETWEEN 20000 AND 100000),
	token_overage_micros     bigint NOT NULL CHECK (token_overage_micros >= 0)
);

INSERT INTO billing.plans (plan, base_price_micros, included_executions, included_tokens,
                           execution_overage_micros, token_overage_micros) VALUES
	('free',               0,   1000,       1000000, 100000, 4),
	('basic',       49000000,  10000,      20000000,  80000, 3),
	('pro',        149000000,  50000,     100000000,  50000, 2),
	('enterprise', 499000000, 250000,    1000000000,  20000, 1);

-- One row per tenant of the store, registered by the exporter the first
-- time it exports the tenant's usage (plan 'free'); plans and time zones
-- are changed by tally_billing_admin.
CREATE TABLE billing.tenants (
	tenant     text        PRIMARY KEY CHECK (tenant ~ '^[A-Za-z0-9._-]{1,64}$'),
	plan       text        NOT NULL DEFAULT 'free' REFERENCES billing.plans (plan),
	time_zone  text        NOT NULL DEFAULT 'UTC' CHECK (time_zone <> ''),
	created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per tenant, UTC day and group (project, agent, model, type,
-- status): the store's daily aggregate. An absent dimension is ''. status
-- is the store's name of the event status. count is the number of events,
-- tokens_in, tokens_out, cost_micros and duration_ms their sums, errors
-- the number of them whose status is not 'ok'.
CREATE TABLE billing.usage_daily (
	tenant      text   NOT NULL REFERENCES billing.tenants (tenant),
	day         date   NOT NULL,
	project     text   NOT NULL CHECK (octet_length(project) <= 128),
	agent       text   NOT NULL CHECK (octet_length(agent) <= 128),
	model       text   NOT NULL CHECK (octet_length(model) <= 128),
	type        text   NOT NULL CHECK (octet_length(type) <= 64),
	status      text   NOT NULL CHECK (status IN ('ok', 'error', 'timeout', 'cancelled')),
	count       bigint NOT NULL CHECK (count > 0),
	tokens_in   bigint NOT NULL CHECK (tokens_in >= 0),
	tokens_out  bigint NOT NULL CHECK (tokens_out >= 0),
	cost_micros bigint NOT NULL,
	duration_ms bigint NOT NULL CHECK (duration_ms >= 0),
	errors      bigint NOT NULL CHECK (errors >= 0 AND errors <= count),
	PRIMARY KEY (tenant, day, project, agent, model, type, status)
);

-- The exporter replaces a whole day (DELETE ... WHERE day = $1).
CREATE INDEX usage_daily_day ON billing.usage_daily (day);

-- One row per completed export of a day, written in the transaction that
-- replaced the day's usage rows: rows is how many usage_daily rows that
-- day then had, checksum the exporter's 64-bit checksum of them as 16
-- lower-case hex digits, store_watermark the store's change position the
-- export read up to. Not per tenant: it describes the whole day.
CREATE TABLE billing.export_runs (
	day             date        NOT NULL,
	started         timestamptz NOT NULL,
	finished        timestamptz NOT NULL,
	rows            bigint      NOT NULL CHECK (rows >= 0),
	checksum        text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{16}$'),
	store_watermark bigint      NOT NULL CHECK (store_watermark >= 0),
	PRIMARY KEY (day, started),
	CHECK (finished >= started)
);
