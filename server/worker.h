/*
 * worker.h — the server's worker pool: a few threads that run the requests
 * that may take a while (queries, event listings) so the event loop never
 * waits on them. A job is a function and its argument; its result is a
 * finished, framed response that the loop thread collects through
 * worker_pool_take_done after the pool's eventfd fires.
 *
 * Fairness. Each job belongs to a lane, the tenant whose data it reads
 * ("" for the billing export). Lanes with queued jobs take turns: a thread
 * takes the first job of the first lane in turn, and that lane, if it has
 * more, goes to the back. A lane runs at most WORKER_LANE_RUNNING_MAX jobs
 * at once (threads - 1, at least 1), so with two threads or more one is
 * always left for the other lanes, and at most one serial job (an
 * aggregate query: the engine runs one of a tenant at a time); a lane
 * whose next job must wait for either gives its turn to the next lane. One tenant's 64 pipelined heavy
 * listings once put every other tenant's one-event query 17.5 s behind
 * them in one first-in-first-out queue; now such a query waits for at most
 * one job of each lane in turn before it, and for none on a free thread.
 */
#ifndef TALLY_SERVER_WORKER_H
#define TALLY_SERVER_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#define WORKER_LANE_SIZE (TALLY_TENANT_SIZE_MAX + 1) /* a lane's name, NUL included */
/* The jobs one lane may run at once on a pool of `threads`. */
#define WORKER_LANE_RUNNING_MAX(threads) ((threads) > 1 ? (threads) - 1 : 1)

typedef struct worker_job worker_job;
/* Runs on a worker thread: fills job->frame / job->frame_size (malloc-ed,
 * framed) or leaves them NULL to mean "out of memory". */
typedef void (*worker_fn)(worker_job *job);

struct worker_job {
	worker_fn fn;
	void *arg;         /* owned by fn's caller conventions; freed by fn */
	uint32_t slot, gen; /* the conn that asked */
	uint64_t request_id;
	uint64_t frame_bytes;
	char lane[WORKER_LANE_SIZE]; /* the tenant it reads; "" for the billing export */
	int kind;          /* for metrics */
	bool serial;       /* at most one serial job of a lane runs at once: an
			    * aggregate query (the engine runs one query of a
			    * tenant at a time, so a second would only hold a
			    * thread waiting) */
	int64_t started_us;
	uint8_t *frame;    /* out */
	size_t frame_size; /* out */
	worker_job *next;
	struct worker_lane *at; /* the pool's, while it holds the job */
};

typedef struct worker_pool worker_pool;

/* Starts threads workers, each with a scheduler slice of slice_us
 * (latency.h; 0: the kernel's default). done_fd is an eventfd written (1)
 * whenever a job finishes. 0 or -errno. */
int worker_pool_start(unsigned threads, uint32_t slice_us, int done_fd, worker_pool **out);
/* Queues a job in the lane job->lane names (the pool owns it until it
 * comes back from take_done). 0, or -ENOMEM (a new lane had no memory;
 * the caller keeps the job). */
int worker_pool_submit(worker_pool *p, worker_job *job);
/* Every finished job, in a list (NULL when none). */
worker_job *worker_pool_take_done(worker_pool *p);
/* Jobs queued or running. */
size_t worker_pool_busy(worker_pool *p);
/* Finishes the queued jobs, joins the threads, frees the pool (finished
 * jobs not taken are freed with their frames). */
void worker_pool_stop(worker_pool *p);

#endif /* TALLY_SERVER_WORKER_H */
