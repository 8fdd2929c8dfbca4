/*
 * test_convert.c — server/convert.c: protocol queries become engine
 * queries, and engine results become protocol results that survive a
 * pack/unpack round trip with group values in the request's order.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "support/fault_io.h"
#include "support/test_dir.h"

#define NOW_US (INT64_C(1794227696) * TALLY_US_PER_SECOND)
#define MINUTE_US (INT64_C(60) * TALLY_US_PER_SECOND)

/* Description: every field maps across; protocol-level mistakes (unknown
 * enum values, a dimension grouped twice, too many filters, values or
 * quantiles) are TALLY_E_INVALID with the field named. */
Test(convert, query_fields_and_protocol_errors)
{
	Tally__V1__Query m = TALLY__V1__QUERY__INIT;
	Tally__V1__Dimension group[2] = {TALLY__V1__DIMENSION__MODEL, TALLY__V1__DIMENSION__PROJECT};
	ProtobufCBinaryData vals[2] = {{3, (uint8_t *)"web"}, {3, (uint8_t *)"api"}};
	Tally__V1__Filter f = TALLY__V1__FILTER__INIT;
	f.dimension = TALLY__V1__DIMENSION__PROJECT;
	f.values = vals;
	f.n_values = 2;
	Tally__V1__Filter *filters[1] = {&f};
	double ranks[2] = {0.5, 0.99};
	m.from_us = 10;
	m.to_us = 20;
	m.bucket = TALLY__V1__BUCKET__HOUR;
	m.time_zone = "Europe/Paris";
	m.group_by = group;
	m.n_group_by = 2;
	m.filters = filters;
	m.n_filters = 1;
	m.quantiles = ranks;
	m.n_quantiles = 2;
	m.distinct_users = 1;
	m.order_by_aggregate = 1;
	m.order_aggregate = TALLY__V1__AGGREGATE__COST;
	m.descending = 1;
	m.limit = 7;
	tally_query q;
	static query_storage st;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(convert_query(&m, &q, &st, err), 0, "%s", err);
	cr_expect_eq(q.from_us, 10);
	cr_expect_eq(q.to_us, 20);
	cr_expect_eq(q.bucket, TALLY_BUCKET_HOUR);
	cr_expect_str_eq(q.time_zone, "Europe/Paris");
	cr_expect_eq(q.group_by, (1u << TALLY_DIM_MODEL) | (1u << TALLY_DIM_PROJECT));
	cr_assert_eq(q.filter_count, 1);
	cr_expect_eq(q.filters[0].dim, TALLY_DIM_PROJECT);
	cr_expect_eq(q.filters[0].value_count, 2);
	cr_expect_eq(memcmp(q.filters[0].values[1].ptr, "api", 3), 0);
	cr_expect_eq(q.quantile_count, 2);
	cr_expect_eq(q.quantiles[1], 0.99);
	cr_expect(q.distinct_users && q.order_by_agg && q.descending);
	cr_expect_eq(q.order_agg, TALLY_AGG_COST);
	cr_expect_eq(q.limit, 7);

	m.bucket = (Tally__V1__Bucket)9;
	cr_expect_eq(convert_query(&m, &q, &st, err), TALLY_E_INVALID);
	cr_expect_neq(strstr(err, "bucket"), NULL, "%s", err);
	m.bucket = TALLY__V1__BUCKET__DAY;
	group[1] = TALLY__V1__DIMENSION__MODEL;
	cr_expect_eq(convert_query(&m, &q, &st, err), TALLY_E_INVALID);
	cr_expect_neq(strstr(err, "twice"), NULL, "%s", err);
	group[1] = (Tally__V1__Dimension)7;
	cr_expect_eq(convert_query(&m, &q, &st, err), TALLY_E_INVALID);
	cr_expect_neq(strstr(err, "group_by"), NULL, "%s", err);
	group[1] = TALLY__V1__DIMENSION__PROJECT;
	f.n_values = 0;
	cr_expect_eq(convert_query(&m, &q, &st, err), TALLY_E_INVALID);
	cr_expect_neq(strstr(err, "values"), NULL, "%s", err);
	f.n_values = 2;
	m.n_quantiles = TALLY_QUANTILES_MAX + 1;
	cr_expect_eq(convert_query(&m, &q, &st, err), TALLY_E_INVALID);
	cr_expect_neq(strstr(err, "quantiles"), NULL, "%s", err);
	m.n_quantiles = 2;
	m.n_filters = TALLY_FILTERS_MAX + 1;
	cr_expect_eq(convert_query(&m, &q, &st, err), TALLY_E_INVALID);
	cr_expect_neq(strstr(err, "filters"), NULL, "%s", err);
}

/* Description: a protocol query runs on the engine and its result, packed
 * and unpacked, carries the engine's rows with the group values in the
 * request's group_by order (model before project here). */
Test(convert, engine_result_round_trips_with_group_order)
{
	test_dir dir;
	test_dir_make(&dir, "convert");
	fault_io *fio = fault_io_create();
	fault_io_clock_set_us(fio, NOW_US);
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(dir.path, &o, &s, err), 0, "%s", err);
	const char *projects[3] = {"web", "api", "web"};
	const char *models[3] = {"m1", "m1", "m2"};
	char ids[3][8];
	tally_event ev[3];
	for (int i = 0; i < 3; i++) {
		snprintf(ids[i], sizeof(ids[i]), "id%d", i);
		memset(&ev[i], 0, sizeof(ev[i]));
		ev[i].event_id = (tally_str){ids[i], (uint32_t)strlen(ids[i])};
		ev[i].time_us = NOW_US - (i + 1) * MINUTE_US;
		ev[i].project = (tally_str){projects[i], 3};
		ev[i].model = (tally_str){models[i], 2};
		ev[i].cost_micros = 100 * (i + 1);
	}
	tally_ingest_result res[3];
	cr_assert_eq(tally_ingest(s, "acme", ev, 3, res), 0);

	Tally__V1__Query m = TALLY__V1__QUERY__INIT;
	Tally__V1__Dimension group[2] = {TALLY__V1__DIMENSION__MODEL, TALLY__V1__DIMENSION__PROJECT};
	m.from_us = NOW_US - 60 * MINUTE_US;
	m.to_us = NOW_US + MINUTE_US;
	m.group_by = group;
	m.n_group_by = 2;
	tally_query q;
	static query_storage st;
	cr_assert_eq(convert_query(&m, &q, &st, err), 0, "%s", err);
	tally_result *r;
	cr_assert_eq(tally_query_run(s, "acme", &q, &r, err), 0, "%s", err);
	cr_assert_eq(r->row_count, 3);
	Tally__V1__QueryResult out;
	cr_assert_eq(convert_query_result(&m, r, &out), 0);
	size_t size = tally__v1__query_result__get_packed_size(&out);
	uint8_t *buf = malloc(size);
	tally__v1__query_result__pack(&out, buf);
	convert_query_result_free(&out);
	Tally__V1__QueryResult *back = tally__v1__query_result__unpack(NULL, size, buf);
	cr_assert_not_null(back);
	cr_assert_eq(back->n_rows, 3);
	for (size_t i = 0; i < 3; i++) {
		const Tally__V1__Row *row = back->rows[i];
		cr_assert_eq(row->n_group, 2);
		tally_str model = r->rows[i].group[TALLY_DIM_MODEL];
		tally_str project = r->rows[i].group[TALLY_DIM_PROJECT];
		cr_expect(row->group[0].len == model.len && !memcmp(row->group[0].data, model.ptr, model.len),
			  "row %zu: model first", i);
		cr_expect(row->group[1].len == project.len &&
				  !memcmp(row->group[1].data, project.ptr, project.len),
			  "row %zu: project second", i);
		cr_expect_eq(row->count, r->rows[i].count);
		cr_expect_eq(row->cost_micros, r->rows[i].cost_micros);
		cr_expect_eq(row->n_status_count, TALLY_STATUS_COUNT);
		cr_expect_eq(row->status_count[0], r->rows[i].count);
	}
	cr_expect_eq(back->truncated, 0);
	tally__v1__query_result__free_unpacked(back, NULL);
	free(buf);
	tally_result_free(r);
	cr_assert_eq(tally_store_close(s), 0);
	fault_io_destroy(fio);
	test_dir_remove_tree(dir.path);
}

/* Description: a row whose sums passed their 64-bit range carries their
 * wraps on the wire (cost's negative), and a row whose sums did not
 * carries no Wraps message at all. */
Test(convert, wraps_go_on_the_wire_only_for_a_row_whose_sums_wrapped)
{
	tally_row rows[2];
	memset(rows, 0, sizeof(rows));
	rows[0].count = rows[1].count = 3;
	rows[0].tokens_in = UINT64_MAX - 2;
	rows[0].cost_micros = INT64_MIN;
	rows[0].wraps = (tally_wraps){.tokens_in = 2, .cost_micros = -1};
	rows[1].tokens_in = 7;
	tally_result r = {.rows = rows, .row_count = 2};
	Tally__V1__Query m = TALLY__V1__QUERY__INIT;
	Tally__V1__QueryResult out;
	cr_assert_eq(convert_query_result(&m, &r, &out), 0);
	size_t size = tally__v1__query_result__get_packed_size(&out);
	uint8_t *buf = malloc(size);
	cr_assert_not_null(buf);
	tally__v1__query_result__pack(&out, buf);
	convert_query_result_free(&out);
	Tally__V1__QueryResult *back = tally__v1__query_result__unpack(NULL, size, buf);
	cr_assert_not_null(back);
	cr_assert_eq(back->n_rows, 2);
	cr_expect_eq(back->rows[0]->tokens_in, UINT64_MAX - 2);
	cr_assert_not_null(back->rows[0]->wraps);
	cr_expect_eq(back->rows[0]->wraps->tokens_in, 2);
	cr_expect_eq(back->rows[0]->wraps->tokens_out, 0);
	cr_expect_eq(back->rows[0]->wraps->cost_micros, -1);
	cr_expect_eq(back->rows[0]->wraps->duration_ms, 0);
	cr_expect_null(back->rows[1]->wraps);
	tally__v1__query_result__free_unpacked(back, NULL);
	free(buf);
}
