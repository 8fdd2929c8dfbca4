/*
 * test_worker.c — the server's worker pool (server/worker.c), on its own:
 * jobs run in the order they were queued, busy counts queued and running
 * jobs until the loop takes them back, the eventfd counts finished jobs,
 * stopping finishes every queued job and frees those never taken, and the
 * threads run jobs at the same time.
 *
 * A job here records its number in a shared log; a "gate" job first waits
 * until the test opens the gate, so the jobs behind it stay queued.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../server/worker.h"

#define JOBS_MAX 16

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

TestSuite(worker, .init = setup, .timeout = 30);

static worker_job *job_new(worker_fn fn, int number)
{
	worker_job *job = calloc(1, sizeof(*job));
	cr_assert_not_null(job);
	job->fn = fn;
	job->arg = (void *)(intptr_t)number;
	return job;
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
static unsigned done_free(worker_job *list, int *sum)
{
	unsigned n = 0;
	*sum = 0;
	for (worker_job *j = list, *next; j; j = next) {
		next = j->next;
		cr_expect_eq(j->frame_size, 8);
		*sum += (int)(intptr_t)j->arg;
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
	worker_pool_submit(p, job_new(gate_job, 0));
	gate_wait_for_one();
	for (int i = 1; i <= queued; i++)
		worker_pool_submit(p, job_new(record, i));
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
	int sum;
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

/* Description: two threads run two jobs that each wait for the other:
 * both finish, so the pool runs jobs at the same time. */
Test(worker, threads_run_jobs_at_once)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	worker_pool *p;
	cr_assert_eq(worker_pool_start(2, 0, fd, &p), 0);
	worker_pool_submit(p, job_new(meet_job, 1));
	worker_pool_submit(p, job_new(meet_job, 2));
	done_wait(fd, 2);
	int sum;
	cr_expect_eq(done_free(worker_pool_take_done(p), &sum), 2);
	cr_expect_eq(sum, 3);
	worker_pool_stop(p);
	close(fd);
}
