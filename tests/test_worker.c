/*
 * test_worker.c — the server's worker pool (server/worker.c), on its own:
 * jobs run in the order they were queued, busy counts queued and running
 * jobs until the loop takes them back, the eventfd counts finished jobs,
 * stopping finishes every queued job and frees those never taken, the
 * threads run jobs at the same time, lanes (tenants) take turns, and a
 * lane leaves a thread to the others.
 *
 * A job here records its number in a shared log; a "gate" job first waits
 * until the test opens the gate, so the jobs behind it stay queued.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../server/worker.h"
#include "support/rng.h"

#define JOBS_MAX 64

typedef struct shared {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;        /* the gate */
	unsigned waiting; /* gate jobs waiting at it */
	int order[JOBS_MAX];
	unsigned ran;
	unsigned meeting; /* meet jobs arrived */
} shared;

static shared sh = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, {0}, 0, 0};
static bool stopped; /* stop_thread's worker_pool_stop returned */

/* Logs the job's number and gives it a frame of 8 bytes. (A worker
 * thread: no criterion assertion here; the test checks the log.) */
static void record(worker_job *job)
{
	pthread_mutex_lock(&sh.lock);
	if (sh.ran < JOBS_MAX)
		sh.order[sh.ran] = (int)(intptr_t)job->arg;
	sh.ran++;
	pthread_mutex_unlock(&sh.lock);
	job->frame = malloc(8);
	job->frame_size = job->frame ? 8 : 0;
}

static void gate_job(worker_job *job)
{
	pthread_mutex_lock(&sh.lock);
	sh.waiting++;
	pthread_cond_broadcast(&sh.cond);
	while (!sh.open)
		pthread_cond_wait(&sh.cond, &sh.lock);
	pthread_mutex_unlock(&sh.lock);
	record(job);
}

/* Waits until the other meet job has arrived too: finishes only when two
 * threads run the two jobs at once. */
static void meet_job(worker_job *job)
{
	pthread_mutex_lock(&sh.lock);
	sh.meeting++;
	pthread_cond_broadcast(&sh.cond);
	while (sh.meeting < 2)
		pthread_cond_wait(&sh.cond, &sh.lock);
	pthread_mutex_unlock(&sh.lock);
	record(job);
}

static void setup(void)
{
	sh.open = false;
	sh.waiting = sh.ran = sh.meeting = 0;
	stopped = false;
}

/* One timeout for the suite, long enough for its slowest test: with a
 * test of its own timeout beside the suite's, two tests at once (--jobs
 * 2) left one 48-byte allocation of criterion's timeout handling (libcriterion
 * 2.4) unfreed in the runner, and LeakSanitizer failed make asan on it. */
TestSuite(worker, .init = setup, .timeout = 120);

static worker_job *job_new(worker_fn fn, int number, const char *lane)
{
	worker_job *job = calloc(1, sizeof(*job));
	cr_assert_not_null(job);
	job->fn = fn;
	job->arg = (void *)(intptr_t)number;
	snprintf(job->lane, sizeof(job->lane), "%s", lane);
	return job;
}

static void submit(worker_pool *p, worker_job *job)
{
	cr_assert_eq(worker_pool_submit(p, job), 0);
}

static void gate_wait_for_one(void)
{
	pthread_mutex_lock(&sh.lock);
	while (sh.waiting < 1)
		pthread_cond_wait(&sh.cond, &sh.lock);
	pthread_mutex_unlock(&sh.lock);
}

static void gate_open(void)
{
	pthread_mutex_lock(&sh.lock);
	sh.open = true;
	pthread_cond_broadcast(&sh.cond);
	pthread_mutex_unlock(&sh.lock);
}

/* Reads the eventfd until it has counted `jobs` finished jobs. */
static void done_wait(int fd, unsigned jobs)
{
	uint64_t counted = 0;
	while (counted < jobs) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		cr_assert_eq(poll(&p, 1, 10000), 1, "%llu of %u jobs finished",
			     (unsigned long long)counted, jobs);
		uint64_t v;
		cr_assert_eq(read(fd, &v, sizeof(v)), (ssize_t)sizeof(v));
		counted += v;
	}
	cr_assert_eq(counted, jobs);
}

/* Frees a take_done list; returns how many jobs it held and the sum of
 * their numbers. */
static unsigned done_free(worker_job *list, int64_t *sum)
{
	unsigned n = 0;
	*sum = 0;
	for (worker_job *j = list, *next; j; j = next) {
		next = j->next;
		cr_expect_eq(j->frame_size, 8);
		*sum += (intptr_t)j->arg;
		free(j->frame);
		free(j);
		n++;
	}
	return n;
}

/* A pool of one thread held by a gate job (0), with jobs 1..queued queued
 * behind it; *fd is its eventfd. */
static worker_pool *gated_pool(int *fd, int queued)
{
	*fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(*fd, 0);
	worker_pool *p;
	cr_assert_eq(worker_pool_start(1, 0, *fd, &p), 0);
	submit(p, job_new(gate_job, 0, "acme"));
	gate_wait_for_one();
	for (int i = 1; i <= queued; i++)
		submit(p, job_new(record, i, "acme"));
	return p;
}

/* Description: one thread; a gate job holds it while jobs 1..5 queue
 * behind. busy counts all six; nothing is done yet. Once the gate opens,
 * the eventfd counts six finished jobs, they ran in the order they were
 * queued (0, 1, ..., 5), take_done returns all six with their frames, and
 * busy is 0; a second take_done returns nothing. */
Test(worker, jobs_run_in_queue_order_and_come_back_once)
{
	int fd;
	worker_pool *p = gated_pool(&fd, 5);
	cr_expect_eq(worker_pool_busy(p), 6);
	cr_expect_null(worker_pool_take_done(p), "nothing finished behind the gate");
	gate_open();
	done_wait(fd, 6);
	int64_t sum;
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 6);
	cr_expect_eq(sum, 0 + 1 + 2 + 3 + 4 + 5);
	cr_expect_eq(worker_pool_busy(p), 0);
	cr_expect_null(worker_pool_take_done(p));
	cr_assert_eq(sh.ran, 6);
	for (int i = 0; i < 6; i++)
		cr_expect_eq(sh.order[i], i, "position %d ran job %d", i, sh.order[i]);
	worker_pool_stop(p);
	close(fd);
}

static void *stop_thread(void *arg)
{
	worker_pool_stop(arg);
	__atomic_store_n(&stopped, true, __ATOMIC_RELEASE);
	return NULL;
}

/* Description: stopping a pool whose one thread is held by a gate job,
 * with jobs 1..4 queued: the stop waits, then every queued job runs (in
 * order) before the threads end, and the finished jobs nobody took are
 * freed with their frames by the stop (the sanitizer and memcheck runs
 * see no leak). */
Test(worker, stop_finishes_queued_jobs_and_frees_those_not_taken)
{
	int fd;
	worker_pool *p = gated_pool(&fd, 4);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, stop_thread, p), 0);
	struct timespec pause = {0, 20 * 1000 * 1000};
	nanosleep(&pause, NULL);
	cr_expect(!__atomic_load_n(&stopped, __ATOMIC_ACQUIRE), "the stop waits for the queued jobs");
	gate_open();
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(sh.ran, 5);
	for (int i = 0; i < 5; i++)
		cr_expect_eq(sh.order[i], i);
	uint64_t counted;
	cr_expect_eq(read(fd, &counted, sizeof(counted)), (ssize_t)sizeof(counted));
	cr_expect_eq(counted, 5);
	close(fd);
}

/* Description: two threads run two jobs of two tenants that each wait
 * for the other: both finish, so the pool runs jobs at the same time. */
Test(worker, threads_run_jobs_at_once)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	worker_pool *p;
	cr_assert_eq(worker_pool_start(2, 0, fd, &p), 0);
	submit(p, job_new(meet_job, 1, "acme"));
	submit(p, job_new(meet_job, 2, "globex"));
	done_wait(fd, 2);
	int64_t sum;
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 2);
	cr_expect_eq(sum, 3);
	worker_pool_stop(p);
	close(fd);
}

/* Description: one thread held by tenant acme's gate job (0); behind it
 * acme queues jobs 1..4, then globex job 5, then initech job 6. The lanes
 * take turns: acme's next job (queued before the others), then globex's,
 * initech's, and acme's rest: 0, 1, 5, 6, 2, 3, 4. In one queue first in,
 * first out, globex and initech waited for all of acme's. */
Test(worker, tenants_take_turns)
{
	int fd;
	worker_pool *p = gated_pool(&fd, 4);
	submit(p, job_new(record, 5, "globex"));
	submit(p, job_new(record, 6, "initech"));
	gate_open();
	done_wait(fd, 7);
	int64_t sum;
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 7);
	const int want[] = {0, 1, 5, 6, 2, 3, 4};
	cr_assert_eq(sh.ran, 7);
	for (int i = 0; i < 7; i++)
		cr_expect_eq(sh.order[i], want[i], "position %d ran job %d, not %d", i, sh.order[i],
			     want[i]);
	worker_pool_stop(p);
	close(fd);
}

/* Description: two threads; tenant acme's gate job (0) holds one, and
 * acme's second gate job (1) stays queued, as a tenant runs at most
 * threads - 1 jobs at once; so globex's job 2 runs on the other thread and
 * finishes while the gate is still shut (one gate job waiting at it). In
 * one first-in-first-out queue job 1 took the second thread and job 2
 * waited for the gate. Then 0 and 1 finish. */
Test(worker, a_tenant_leaves_a_thread_to_the_others)
{
	cr_assert_eq(WORKER_LANE_RUNNING_MAX(2u), 1u);
	cr_assert_eq(WORKER_LANE_RUNNING_MAX(1u), 1u);
	cr_assert_eq(WORKER_LANE_RUNNING_MAX(8u), 7u);
	int fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	worker_pool *p;
	cr_assert_eq(worker_pool_start(2, 0, fd, &p), 0);
	submit(p, job_new(gate_job, 0, "acme"));
	gate_wait_for_one();
	submit(p, job_new(gate_job, 1, "acme"));
	submit(p, job_new(record, 2, "globex"));
	done_wait(fd, 1);
	pthread_mutex_lock(&sh.lock);
	cr_expect_eq(sh.waiting, 1, "acme runs one job at once on two threads");
	cr_expect_eq(sh.ran, 1);
	cr_expect_eq(sh.order[0], 2);
	pthread_mutex_unlock(&sh.lock);
	gate_open();
	done_wait(fd, 2);
	int64_t sum;
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 3);
	cr_expect_eq(sum, 0 + 1 + 2);
	cr_assert_eq(sh.ran, 3);
	cr_expect_eq(sh.order[1], 0);
	cr_expect_eq(sh.order[2], 1);
	worker_pool_stop(p);
	close(fd);
}

static worker_job *serial_job_new(worker_fn fn, int number, const char *lane)
{
	worker_job *job = job_new(fn, number, lane);
	job->serial = true;
	return job;
}

/* Waits until `n` gate jobs wait at the gate. */
static void gate_wait_for(unsigned n)
{
	pthread_mutex_lock(&sh.lock);
	while (sh.waiting < n)
		pthread_cond_wait(&sh.cond, &sh.lock);
	pthread_mutex_unlock(&sh.lock);
}

/* Description: three threads, so a lane may run two jobs at once. acme's
 * serial gate job 0 (an aggregate query) holds one; acme's serial job 1
 * stays queued although the lane could run one more (the engine would
 * only keep it waiting for job 0), and globex's job 2 runs and finishes
 * meanwhile. Once job 0 is done, job 1 runs. A listing (not serial) of
 * acme does run beside a serial job: job 3 and job 4 both wait at the
 * second gate. */
Test(worker, a_tenant_runs_one_aggregate_query_at_once)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	worker_pool *p;
	cr_assert_eq(worker_pool_start(3, 0, fd, &p), 0);
	submit(p, serial_job_new(gate_job, 0, "acme"));
	gate_wait_for_one();
	submit(p, serial_job_new(gate_job, 1, "acme"));
	submit(p, job_new(record, 2, "globex"));
	done_wait(fd, 1);
	pthread_mutex_lock(&sh.lock);
	cr_expect_eq(sh.waiting, 1, "one serial job of acme at a time");
	cr_expect_eq(sh.ran, 1);
	cr_expect_eq(sh.order[0], 2);
	pthread_mutex_unlock(&sh.lock);
	gate_open();
	done_wait(fd, 2);
	cr_assert_eq(sh.ran, 3);
	cr_expect_eq(sh.order[1], 0);
	cr_expect_eq(sh.order[2], 1);
	int64_t sum;
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 3);
	pthread_mutex_lock(&sh.lock);
	sh.open = false;
	sh.waiting = 0;
	pthread_mutex_unlock(&sh.lock);
	submit(p, serial_job_new(gate_job, 3, "acme"));
	submit(p, job_new(gate_job, 4, "acme"));
	gate_wait_for(2); /* both at once: a listing beside a query */
	gate_open();
	done_wait(fd, 2);
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 2);
	cr_expect_eq(sum, 3 + 4);
	worker_pool_stop(p);
	close(fd);
}

/* ---- many lanes at once, against their rules ------------------------------- */

#define LANES 300u          /* tenants: the lane table grows past 512 slots */
#define LANE_JOBS 20000u    /* jobs over all of them */

typedef struct lane_log {
	pthread_mutex_t lock;
	unsigned running[LANES];  /* jobs of the lane running now */
	unsigned next[LANES];     /* the sequence number its next job must have */
	unsigned overlaps, out_of_order, ran;
} lane_log;

static lane_log lanes_seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* arg: lane * LANE_JOBS + the job's number within its lane. */
static void lane_job(worker_job *job)
{
	unsigned v = (unsigned)(uintptr_t)job->arg, lane = v / LANE_JOBS, seq = v % LANE_JOBS;
	pthread_mutex_lock(&lanes_seen.lock);
	lanes_seen.overlaps += lanes_seen.running[lane]++ != 0;
	lanes_seen.out_of_order += lanes_seen.next[lane] != seq;
	lanes_seen.next[lane] = seq + 1;
	pthread_mutex_unlock(&lanes_seen.lock);
	sched_yield(); /* a little time running, so others overlap */
	pthread_mutex_lock(&lanes_seen.lock);
	lanes_seen.running[lane]--;
	lanes_seen.ran++;
	pthread_mutex_unlock(&lanes_seen.lock);
	job->frame = malloc(8);
	job->frame_size = job->frame ? 8 : 0;
}

/* Description: seeded (SEED=N replays): 20,000 jobs over 300 tenants drawn
 * at random, submitted while two threads run them and the test takes the
 * finished ones back, so lanes come and go (their table grows, and lanes
 * leave it while others are looked up). Every job runs once; a tenant's
 * jobs run in the order submitted and never two at once (a lane lost in
 * its table would be made again beside itself and break both). */
Test(worker, many_tenants_come_and_go_in_order)
{
	test_rng rng;
	test_rng_seed(&rng, "test_worker", "many_tenants_come_and_go_in_order");
	memset(lanes_seen.running, 0, sizeof(lanes_seen.running));
	memset(lanes_seen.next, 0, sizeof(lanes_seen.next));
	lanes_seen.overlaps = lanes_seen.out_of_order = lanes_seen.ran = 0;
	static unsigned submitted[LANES];
	memset(submitted, 0, sizeof(submitted));
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert_geq(fd, 0);
	worker_pool *p;
	cr_assert_eq(worker_pool_start(2, 0, fd, &p), 0);
	unsigned back = 0;
	int64_t sum;
	for (unsigned i = 0; i < LANE_JOBS; i++) {
		/* Few tenants at a time for a while, then all: lanes empty
		 * and come back while others stay. */
		unsigned lane = (unsigned)test_rng_below(&rng, i % 2000 < 1000 ? 7 : LANES);
		char name[16];
		snprintf(name, sizeof(name), "t%u", lane);
		submit(p, job_new(lane_job, (int)(lane * LANE_JOBS + submitted[lane]++), name));
		if (test_rng_below(&rng, 4) == 0)
			back += done_free(worker_pool_take_done(p), &sum);
	}
	worker_pool_stop(p); /* runs what is queued */
	pthread_mutex_lock(&lanes_seen.lock);
	cr_expect_eq(lanes_seen.ran, LANE_JOBS);
	cr_expect_eq(lanes_seen.overlaps, 0, "a tenant's jobs ran at once %u times", lanes_seen.overlaps);
	cr_expect_eq(lanes_seen.out_of_order, 0, "%u jobs ran out of their tenant's order",
		     lanes_seen.out_of_order);
	for (unsigned l = 0; l < LANES; l++)
		cr_expect_eq(lanes_seen.next[l], submitted[l], "tenant t%u ran %u of %u", l,
			     lanes_seen.next[l], submitted[l]);
	pthread_mutex_unlock(&lanes_seen.lock);
	cr_expect_leq(back, LANE_JOBS);
	close(fd);
}
