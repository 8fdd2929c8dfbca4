/*
 * schedule.h — tallyd's nightly billing export (schedule.c).
 */
#ifndef TALLY_SERVER_SCHEDULE_H
#define TALLY_SERVER_SCHEDULE_H

#include <stdint.h>

typedef struct server server;
typedef struct export_schedule export_schedule;

/* Starts the export thread for s (its config names the PostgreSQL and the
 * time; s must be listening). Its first run waits for export_schedule_go,
 * which server_run calls when its loop starts. 0 or a negative code with
 * errmsg. */
int export_schedule_start(server *s, export_schedule **out, char *errmsg);
void export_schedule_go(export_schedule *sc);

/* Waits until at least `runs` runs (successful or not) have finished or
 * timeout_ms passed; returns the number finished (for tests). */
uint64_t export_schedule_wait_runs(export_schedule *sc, uint64_t runs, int timeout_ms);

/* Stops the thread (after the run in progress, if any) and frees sc. */
void export_schedule_stop(export_schedule *sc);

#endif /* TALLY_SERVER_SCHEDULE_H */
