/*
 * worker.c — the worker pool (worker.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "latency.h"
#include "worker.h"

struct worker_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	worker_job *queue_head, *queue_tail; /* FIFO */
	worker_job *done;                     /* LIFO; the loop does not care about order */
	size_t busy;
	bool stop;
	int done_fd;
	uint32_t slice_us;
	unsigned threads;
	pthread_t *tids;
};

static void *worker_main(void *arg)
{
	worker_pool *p = arg;
	(void)latency_slice_set(p->slice_us); /* refused: only the kernel's default slice */
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->queue_head && !p->stop)
			pthread_cond_wait(&p->cond, &p->lock);
		worker_job *job = p->queue_head;
		if (!job)
			break; /* stopping and nothing left */
		p->queue_head = job->next;
		if (!p->queue_head)
			p->queue_tail = NULL;
		pthread_mutex_unlock(&p->lock);
		job->fn(job);
		pthread_mutex_lock(&p->lock);
		job->next = p->done;
		p->done = job;
		uint64_t one = 1;
		/* An eventfd write only fails if the counter would overflow. */
		ssize_t w = write(p->done_fd, &one, sizeof(one));
		(void)w;
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

void worker_pool_submit(worker_pool *p, worker_job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->queue_tail)
		p->queue_tail->next = job;
	else
		p->queue_head = job;
	p->queue_tail = job;
	p->busy++;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
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
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p->tids);
	free(p);
}
