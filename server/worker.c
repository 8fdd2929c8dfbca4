/*
 * worker.c — the worker pool (worker.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "latency.h"
#include "worker.h"

/* A tenant's jobs while the pool holds some: queued or running. */
typedef struct worker_lane {
	char name[WORKER_LANE_SIZE];
	uint64_t hash;                    /* of name: its home in the table */
	worker_job *head, *tail;          /* queued, first in first out */
	unsigned running;
	unsigned running_serial; /* of them, serial jobs: 0 or 1 */
	struct worker_lane *prev, *next;  /* in the turn order, exactly while head != NULL */
} worker_lane;

#define LANE_TABLE_MIN 16u /* slots of the first lane table (a power of two) */

struct worker_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	worker_lane *turn_head, *turn_tail; /* lanes with queued jobs, next turn first */
	worker_lane **lanes;                /* linear probing by name, at most half full */
	size_t lane_mask, lane_count;
	size_t queued;
	worker_job *done; /* LIFO; the loop does not care about order */
	size_t busy;
	bool stop;
	int done_fd;
	uint32_t slice_us;
	unsigned threads, running_max;
	pthread_t *tids;
};

static void turn_unlink(worker_pool *p, worker_lane *l)
{
	*(l->prev ? &l->prev->next : &p->turn_head) = l->next;
	*(l->next ? &l->next->prev : &p->turn_tail) = l->prev;
	l->prev = l->next = NULL;
}

static void turn_push_back(worker_pool *p, worker_lane *l)
{
	l->next = NULL;
	l->prev = p->turn_tail;
	*(p->turn_tail ? &p->turn_tail->next : &p->turn_head) = l;
	p->turn_tail = l;
}

/* The slot of the lane named name, or the empty slot where it would go. */
static size_t lane_slot(const worker_pool *p, const char *name, uint64_t hash)
{
	size_t i = (size_t)hash & p->lane_mask;
	while (p->lanes[i] && strcmp(p->lanes[i]->name, name) != 0)
		i = (i + 1) & p->lane_mask;
	return i;
}

static int lanes_grow(worker_pool *p)
{
	size_t slots = p->lanes ? (p->lane_mask + 1) * 2 : LANE_TABLE_MIN;
	worker_lane **old = p->lanes;
	size_t old_slots = old ? p->lane_mask + 1 : 0;
	p->lanes = calloc(slots, sizeof(*p->lanes));
	if (!p->lanes) {
		p->lanes = old;
		return -ENOMEM;
	}
	p->lane_mask = slots - 1;
	for (size_t i = 0; i < old_slots; i++)
		if (old[i])
			p->lanes[lane_slot(p, old[i]->name, old[i]->hash)] = old[i];
	free(old);
	return 0;
}

/* The lane named name, made if it has no jobs in the pool; NULL when out
 * of memory. */
static worker_lane *lane_get(worker_pool *p, const char *name)
{
	size_t len = strnlen(name, WORKER_LANE_SIZE - 1);
	uint64_t hash = XXH3_64bits(name, len);
	size_t i = p->lanes ? lane_slot(p, name, hash) : 0;
	if (p->lanes && p->lanes[i])
		return p->lanes[i];
	if ((p->lane_count + 1) * 2 > (p->lanes ? p->lane_mask + 1 : 0)) {
		if (lanes_grow(p))
			return NULL;
		i = lane_slot(p, name, hash);
	}
	worker_lane *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	memcpy(l->name, name, len);
	l->hash = hash;
	p->lanes[i] = l;
	p->lane_count++;
	return l;
}

/* Frees a lane with no jobs left: its slot is emptied and the lanes after
 * it that probed past it move back (no tombstones). */
static void lane_drop(worker_pool *p, worker_lane *l)
{
	size_t i = lane_slot(p, l->name, l->hash);
	p->lanes[i] = NULL;
	for (size_t j = (i + 1) & p->lane_mask; p->lanes[j]; j = (j + 1) & p->lane_mask) {
		size_t home = (size_t)p->lanes[j]->hash & p->lane_mask;
		/* Moves back when its home is not cyclically within (i, j]. */
		bool stays = i < j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			p->lanes[i] = p->lanes[j];
			p->lanes[j] = NULL;
			i = j;
		}
	}
	p->lane_count--;
	free(l);
}

/* The first job of the first lane in turn that may run it (one more job,
 * and no second serial one), its lane sent to the back if it has more;
 * NULL when no lane may. */
static worker_job *job_pick(worker_pool *p)
{
	for (worker_lane *l = p->turn_head; l; l = l->next) {
		if (l->running >= p->running_max || (l->head->serial && l->running_serial))
			continue;
		worker_job *job = l->head;
		l->head = job->next;
		if (!l->head)
			l->tail = NULL;
		turn_unlink(p, l);
		if (l->head)
			turn_push_back(p, l);
		l->running++;
		l->running_serial += job->serial;
		p->queued--;
		return job;
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	worker_pool *p = arg;
	(void)latency_slice_set(p->slice_us); /* refused: only the kernel's default slice */
	pthread_mutex_lock(&p->lock);
	for (;;) {
		worker_job *job = job_pick(p);
		if (!job) {
			if (p->stop && !p->queued)
				break; /* stopping and nothing left */
			pthread_cond_wait(&p->cond, &p->lock);
			continue;
		}
		pthread_mutex_unlock(&p->lock);
		job->fn(job);
		pthread_mutex_lock(&p->lock);
		worker_lane *l = job->at;
		job->at = NULL;
		l->running_serial -= job->serial;
		if (!--l->running && !l->head)
			lane_drop(p, l);
		job->next = p->done;
		p->done = job;
		uint64_t one = 1;
		/* An eventfd write only fails if the counter would overflow. */
		ssize_t w = write(p->done_fd, &one, sizeof(one));
		(void)w;
		/* A lane this job held at its cap is this thread's to pick from
		 * next; a stop's waiters look again whether anything is left. */
		if (p->stop)
			pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int worker_pool_start(unsigned threads, uint32_t slice_us, int done_fd, worker_pool **out)
{
	*out = NULL;
	worker_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->tids = calloc(threads, sizeof(*p->tids));
	if (!p->tids) {
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->done_fd = done_fd;
	p->slice_us = slice_us;
	p->running_max = WORKER_LANE_RUNNING_MAX(threads);
	for (unsigned i = 0; i < threads; i++) {
		int rc = pthread_create(&p->tids[i], NULL, worker_main, p);
		if (rc) {
			p->threads = i;
			worker_pool_stop(p);
			return -rc;
		}
		p->threads = i + 1;
		char name[16]; /* the kernel keeps 15 bytes */
		snprintf(name, sizeof(name), "tally-query-%u", i);
		pthread_setname_np(p->tids[i], name); /* names show in top -H; failure is harmless */
	}
	*out = p;
	return 0;
}

int worker_pool_submit(worker_pool *p, worker_job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&p->lock);
	worker_lane *l = lane_get(p, job->lane);
	if (!l) {
		pthread_mutex_unlock(&p->lock);
		return -ENOMEM;
	}
	job->at = l;
	if (l->tail) {
		l->tail->next = job;
	} else {
		l->head = job;
		turn_push_back(p, l);
	}
	l->tail = job;
	p->queued++;
	p->busy++;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

worker_job *worker_pool_take_done(worker_pool *p)
{
	pthread_mutex_lock(&p->lock);
	worker_job *list = p->done;
	p->done = NULL;
	for (worker_job *j = list; j; j = j->next)
		p->busy--;
	pthread_mutex_unlock(&p->lock);
	return list;
}

size_t worker_pool_busy(worker_pool *p)
{
	pthread_mutex_lock(&p->lock);
	size_t busy = p->busy;
	pthread_mutex_unlock(&p->lock);
	return busy;
}

void worker_pool_stop(worker_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->threads; i++)
		pthread_join(p->tids[i], NULL);
	for (worker_job *j = p->done, *next; j; j = next) {
		next = j->next;
		free(j->frame);
		free(j);
	}
	free(p->lanes); /* every lane was dropped with its last job */
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->tids);
	free(p);
}
