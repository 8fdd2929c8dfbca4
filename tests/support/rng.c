/*
 * rng.c — seeding for rng.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rng.h"

void test_rng_seed(test_rng *r, const char *program, const char *test)
{
	const char *env = getenv("SEED");
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint64_t seed = env && env[0] ? strtoull(env, NULL, 10)
			    : (uint64_t)now.tv_sec * 1000000007u ^ (uint64_t)now.tv_nsec;
	r->state = seed;
	printf("%s seed=%llu (%s)\n", program, (unsigned long long)seed, test);
	fflush(stdout);
}
