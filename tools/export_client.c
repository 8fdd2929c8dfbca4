/*
 * export_client.c — the exporter's source over the protocol (export.h,
 * export_source_client): the DailyUsage and ChangedDays requests over an
 * admin tally_client. Used by `tally export` and by tallyd's nightly
 * schedule (server/schedule.c), which connects to itself.
 */
#include <stdio.h>

#include "export.h"

static void client_error(tally_client *c, int rc, const char *what, char *errmsg)
{
	if (rc != TALLY_CLIENT_REFUSED) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: %s", what, tally_client_strerror(rc));
		return;
	}
	const tally_client_error *e = tally_client_last_error(c);
	snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: refused by the server: %s (%s)", what, e->message,
		 tally_client_error_code_name(e->code));
}

static int client_daily_usage(void *ctx, int32_t day, const char *after_tenant,
			      const Tally__V1__UsageKey *after_row, uint32_t limit,
			      Tally__V1__DailyUsagePage **page_out, char *errmsg)
{
	int rc = tally_client_daily_usage(ctx, day, after_tenant, after_row, limit, page_out);
	if (rc)
		client_error(ctx, rc, "DailyUsage", errmsg);
	/* TOO_LARGE: a tenant-day over the store's query limits, a limit of
	 * that day's own data (export.h): the day fails, not the source. */
	if (rc == TALLY_CLIENT_REFUSED &&
	    tally_client_last_error(ctx)->code == TALLY__V1__ERROR__CODE__TOO_LARGE)
		return EXPORT_E_LIMIT;
	return rc;
}

static int client_changed_days(void *ctx, uint64_t since, Tally__V1__ChangedDaysResult **result_out, char *errmsg)
{
	int rc = tally_client_changed_days(ctx, since, result_out);
	if (rc)
		client_error(ctx, rc, "ChangedDays", errmsg);
	return rc;
}

void export_source_client(export_source *source, tally_client *c)
{
	source->ctx = c;
	source->daily_usage = client_daily_usage;
	source->changed_days = client_changed_days;
}

