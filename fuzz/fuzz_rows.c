/*
 * fuzz_rows.c — libFuzzer target for the event files `tally ingest` reads:
 * CSV (libcsv) and JSON lines (jansson), every field checked (tools/rows.c).
 *
 * The input is a file's bytes, read in the format its first non-blank
 * character says (the CLI's default). Every row handed out is read
 * through. A finding is a sanitizer report, a crash, or a refusal whose
 * message does not name the file (the target aborts): a bad row must be
 * an error that says where it is, "FILE:LINE: ...".
 *
 * Seeds (fuzz/corpus-rows/) are small files of both formats.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/rows.h" /* not engine/rows.h */

static int touch(void *ctx, const rows_row *row)
{
	(void)ctx;
	volatile uint8_t sink = 0;
	const tally_client_event *e = &row->event;
	const tally_client_str *s[6] = {&e->event_id, &e->type, &e->project, &e->agent, &e->model, &e->user};
	for (int k = 0; k < 6; k++)
		for (size_t j = 0; s[k]->ptr && j < s[k]->len; j++)
			sink ^= (uint8_t)s[k]->ptr[j];
	for (uint32_t j = 0; row->tenant && j < row->tenant_len; j++)
		sink ^= (uint8_t)row->tenant[j];
	(void)sink;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	FILE *in = fmemopen((void *)data, size, "r");
	if (!in)
		return 0;
	char errmsg[ROWS_ERRMSG_SIZE] = "";
	int rc = rows_read(in, "fuzz", ROWS_FORMAT_AUTO, touch, NULL, errmsg);
	fclose(in);
	if (rc == ROWS_MALFORMED && strncmp(errmsg, "fuzz:", 5) != 0) {
		fprintf(stderr, "fuzz_rows: a malformed row's message does not say where: \"%s\"\n", errmsg);
		abort();
	}
	return 0;
}
