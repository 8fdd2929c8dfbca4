# tally — one hand-written build for everything.
#
#   make            build/libtally.a, build/tally, build/tally-bench, build/tallyd
#   make check      install missing Debian packages, build, run every test (and make tsan)
#   make asan       the same tests under AddressSanitizer + UBSan (build-asan/); a leak fails it
#   make tsan       the store's and tallyd's threads at once under ThreadSanitizer (build-tsan/, tests/tsan/)
#   make memcheck   the engine's and the tools' tests under valgrind's memcheck (about 30 minutes)
#   make deps       apt-get install only the packages that are missing
#   make run        build and run tallyd in the foreground (./data, 127.0.0.1:7411)
#   make demo       tally end to end on a temporary directory (tools/demo/demo.sh)
#
# -Wno-format-truncation: error messages are snprintf-ed into fixed buffers
# on purpose; a long path is cut, never overflowed.
#
# Variables: CRASH_ROUNDS (crash test kill rounds, default 50), CRASH_POWER_ROUNDS
# (power-cut rounds, default 30), KILL_ROUNDS (tallyd kill -9 rounds, default 5),
# SEED (property tests), DEMO_EVENTS (events per tenant in make demo).
export CRASH_ROUNDS CRASH_POWER_ROUNDS KILL_ROUNDS SEED DEMO_EVENTS

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
CFLAGS  += -std=c11 -Wall -Wextra -Werror -Wshadow -Wvla -Wno-format-truncation -g $(OPT) \
           -D_GNU_SOURCE -MMD -MP -Iengine -Iproto -Iserver -I$(BUILD)/proto -I/usr/include/postgresql -pthread $(EXTRA_CFLAGS)
LDLIBS  += -luring -lzstd -lxxhash -lpthread -lm
TEST_LDLIBS = -lcriterion -lcurl
# The wire side (protobuf-c) and the server's libraries: HTTP metrics, INI
# config, API-key digests, JSON files; the CLI adds CSV; the billing export
# talks to PostgreSQL (libpq; its header lives in /usr/include/postgresql).
NET_LDLIBS  = -lprotobuf-c -ljansson -lcrypto -lmicrohttpd -linih -lcsv -lpq

DEBIAN_PACKAGES = build-essential liburing-dev libzstd-dev libxxhash-dev \
                  libprotobuf-c-dev protobuf-c-compiler libcriterion-dev libjansson-dev tzdata libssl-dev \
                  clang libclang-rt-14-dev libtsan2 libmicrohttpd-dev libinih-dev libcsv-dev libcurl4-openssl-dev \
                  postgresql-15 libpq-dev

ENGINE_SRC  := $(sort $(wildcard engine/*.c))
PROTO_SRC   := $(sort $(wildcard proto/*.c))
# server/tallyd.c holds main(); every other server module goes in the library.
SERVER_SRC  := $(sort $(filter-out server/tallyd.c,$(wildcard server/*.c)))
# tools/tally.c holds main(); the command modules form libtallytools.a so
# tests can call their parsers and formatters directly.
TOOLS_SRC   := $(sort $(filter-out tools/tally.c,$(wildcard tools/*.c)))
BENCH_SRC   := $(sort $(wildcard bench/*.c))
SUPPORT_SRC := $(sort $(wildcard tests/support/*.c))
TEST_SRC    := $(sort $(wildcard tests/test_*.c))

ENGINE_OBJ  := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
# proto/tally.proto compiles (protoc-c) to build/proto/tally.pb-c.{c,h}; with
# proto/*.c it makes libtallyproto.a, the wire side (no engine in it).
PROTO_GEN   := $(BUILD)/proto/tally.pb-c.c
PROTO_OBJ   := $(PROTO_GEN:%.c=%.o) $(PROTO_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ  := $(SERVER_SRC:%.c=$(BUILD)/%.o)
TOOLS_OBJ   := $(TOOLS_SRC:%.c=$(BUILD)/%.o)
BENCH_OBJ   := $(BENCH_SRC:%.c=$(BUILD)/%.o)
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/%.o)
TEST_BIN    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all check test asan tsan memcheck coverage deps run demo clean fuzz fuzz-check prefetch-check
all: $(BUILD)/libtally.a $(BUILD)/libtallyproto.a $(BUILD)/libtallyserver.a $(BUILD)/tally \
     $(BUILD)/tally-bench $(BUILD)/tallyd

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/proto/tally.pb-c.c $(BUILD)/proto/tally.pb-c.h: proto/tally.proto
	@mkdir -p $(BUILD)/proto
	protoc-c --c_out=$(BUILD)/proto -Iproto proto/tally.proto

$(BUILD)/proto/tally.pb-c.o: $(BUILD)/proto/tally.pb-c.c
	$(CC) $(CFLAGS) -c $< -o $@

$(PROTO_SRC:%.c=$(BUILD)/%.o) $(SERVER_OBJ): $(BUILD)/proto/tally.pb-c.h

# The server's modules (the tallyd binary comes with them); tests link them.
$(BUILD)/libtallyserver.a: $(SERVER_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libtallyproto.a: $(PROTO_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libtally.a: $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# The billing migrations, built into the CLI (tools/billing_sql.h).
BILLING_SQL := $(sort $(wildcard tools/billing/*.sql))
$(BUILD)/tools/billing_sql.c: $(BILLING_SQL) tools/billing/embed.sh
	@mkdir -p $(dir $@)
	sh tools/billing/embed.sh $(BILLING_SQL) > $@.tmp && mv $@.tmp $@

$(BUILD)/tools/billing_sql.o: $(BUILD)/tools/billing_sql.c
	$(CC) $(CFLAGS) -Itools -c $< -o $@

$(BUILD)/libtallytools.a: $(TOOLS_OBJ) $(BUILD)/tools/billing_sql.o
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tally: $(BUILD)/tools/tally.o $(BUILD)/libtallytools.a $(BUILD)/libtallyproto.a $(BUILD)/libtally.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(NET_LDLIBS)

$(BUILD)/tally-bench: $(BENCH_OBJ) $(BUILD)/libtallyproto.a $(BUILD)/libtally.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(NET_LDLIBS)

# tallyd links the exporter of libtallytools for its nightly export schedule.
$(BUILD)/tallyd: $(BUILD)/server/tallyd.o $(BUILD)/libtallyserver.a $(BUILD)/libtallytools.a \
		 $(BUILD)/libtallyproto.a $(BUILD)/libtally.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(NET_LDLIBS)

# Libraries in dependency order: the server uses the tools' exporter; both
# use the engine and the wire side.
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(SUPPORT_OBJ) $(BUILD)/libtallyserver.a $(BUILD)/libtallytools.a \
		  $(BUILD)/libtally.a $(BUILD)/libtallyproto.a
	$(CC) $(CFLAGS) $(LDFLAGS) $(TEST_WRAP) -o $@ $^ $(TEST_LDLIBS) $(LDLIBS) $(NET_LDLIBS)

# test_oom fails the engine's allocations one at a time: its own
# definitions of these functions receive every call to them in the binary;
# test_server_oom does the same to tallyd's threads.
OOM_WRAP = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc \
	-Wl,--wrap=aligned_alloc,--wrap=mmap,--wrap=mremap
$(BUILD)/tests/test_oom $(BUILD)/tests/test_server_oom: TEST_WRAP = $(OOM_WRAP)

# Everything that may include the generated header waits for it.
$(TEST_SRC:%.c=$(BUILD)/%.o) $(TOOLS_OBJ) $(BUILD)/tools/tally.o $(BENCH_OBJ) $(BUILD)/server/tallyd.o: $(BUILD)/proto/tally.pb-c.h

# Each test binary runs on its own; criterion isolates every test in a process.
# A test process that leaks still reports success to criterion, so the
# output is kept and a LeakSanitizer report (make asan) fails the run.
test: all $(TEST_BIN) $(BUILD)/fuzz/segment_seed $(BUILD)/fuzz/wal_seed prefetch-check
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; \
	  $$t --jobs 2 > $$t.log 2>&1 || { cat $$t.log; exit 1; }; cat $$t.log; \
	  if grep -q "ERROR: LeakSanitizer" $$t.log; then \
	    echo "$$t: memory leaked (the LeakSanitizer report is above)"; exit 1; fi; done
	@echo "all tests passed"

# Every inline prefetch helper must compile to a prefetch instruction
# (tests/probe/prefetch_probe.c says why this is not a given).
prefetch-check: tests/probe/prefetch_probe.c
	@mkdir -p $(BUILD)/tests/probe
	$(CC) $(CFLAGS) -MF /dev/null -S $< -o $(BUILD)/tests/probe/prefetch_probe.s
	@grep -qE "^\s+prefetch(t0|t1|t2|nta|w)\s" $(BUILD)/tests/probe/prefetch_probe.s || \
	  { echo "prefetch-check: dedup_prefetch compiled to no prefetch instruction"; exit 1; }
	@echo "prefetch-check: the inline prefetch helpers emit their prefetches"

check: deps
	$(MAKE) test
	$(MAKE) tsan
	$(MAKE) fuzz-check

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" test

# Valgrind's memcheck over the tests that use no tallyd and no PostgreSQL
# (tests/memcheck.sh says why those are left out): it reports what the
# sanitizers do not, a branch on or a write to a file of bytes nobody set.
# Slow (about 30 minutes), so not in make check.
MEMCHECK_TESTS := test_backfill test_batch test_batchrec test_builder test_changes \
	test_cli_format test_cli_ingest test_cli_offline test_cli_query test_cli_remote \
	test_cli_rows test_client test_codec test_config test_convert test_dedup test_errors test_faults \
	test_grow test_inspect test_io test_keys test_log test_manifest test_memtable test_metrics \
	test_power_io test_proto test_query test_rollup test_sketch test_sort test_store \
	test_strdict test_tenants test_tz test_wal test_whitebox test_worker
memcheck: all $(TEST_BIN)
	sh tests/memcheck.sh $(BUILD) $(MEMCHECK_TESTS)

# Line coverage of make test, per source file, least covered first
# (tests/coverage.sh; gcov comes with gcc). Not in make check: a second
# full build and test run, about ten minutes.
coverage:
	rm -rf build-cov && mkdir build-cov
	$(MAKE) BUILD=build-cov OPT=-O1 EXTRA_CFLAGS=--coverage LDFLAGS=--coverage test \
	  > build-cov/test.log 2>&1 || { tail -50 build-cov/test.log; exit 1; }
	sh tests/coverage.sh build-cov

# Criterion's runner cannot start under ThreadSanitizer here, so the thread
# checks are plain programs (tests/tsan/: the store, and an in-process
# tallyd): any report fails them. setarch -R runs them without address
# randomisation: gcc 12's TSan cannot map its shadow memory on kernels that
# randomise with more bits (it aborts with "unexpected memory mapping").
TSAN_RUN = TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=tests/tsan/suppressions.txt" \
	   setarch $$(uname -m) -R
tsan:
	$(MAKE) BUILD=build-tsan OPT=-O1 EXTRA_CFLAGS="-fsanitize=thread" \
	  LDFLAGS="-fsanitize=thread" build-tsan/tests/tsan/stress build-tsan/tests/tsan/server_stress
	$(TSAN_RUN) build-tsan/tests/tsan/stress
	STRESS_BATCHES=1200 STRESS_FLUSH_ROWS=24000 $(TSAN_RUN) build-tsan/tests/tsan/stress
	$(TSAN_RUN) build-tsan/tests/tsan/server_stress

$(BUILD)/tests/tsan/stress: $(BUILD)/tests/tsan/stress.o $(BUILD)/tests/support/events.o \
			    $(BUILD)/libtally.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/tsan/server_stress: $(BUILD)/tests/tsan/server_stress.o $(BUILD)/libtallyserver.a \
				   $(BUILD)/libtallytools.a $(BUILD)/libtallyproto.a $(BUILD)/libtally.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(NET_LDLIBS)

$(BUILD)/tests/tsan/server_stress.o: $(BUILD)/proto/tally.pb-c.h

# ---- fuzzing (libFuzzer, clang, ASan + UBSan) ---------------------------------
# make fuzz runs each target for FUZZ_SECONDS (default 600); make check runs
# each for FUZZ_CHECK_SECONDS (default 20) on its seed corpus. Findings go to
# build-fuzz/ (TARGET-crash-*, TARGET-leak-*), and the run fails, its output
# ending with the finding's cause and the input in base64 (fuzz/run-target).
FUZZ_SECONDS ?= 600
FUZZ_CHECK_SECONDS ?= 20
FUZZ_CC     := clang
FUZZ_CFLAGS := -std=c11 -g -O1 -D_GNU_SOURCE -MMD -MP -Iengine -Iproto -Iserver -Itests -I$(BUILD)/proto -pthread \
               -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS := build-fuzz/fuzz_request build-fuzz/fuzz_segment build-fuzz/fuzz_wal \
		build-fuzz/fuzz_manifest build-fuzz/fuzz_rows build-fuzz/fuzz_ops
# The targets need the engine, the framing, the messages, the server's
# validation, the CLI's event file reader and the tests' fault_io (its
# clock) and power_io (its power failures), for fuzz_ops.
FUZZ_SRC    := $(ENGINE_SRC) $(PROTO_SRC) server/batch.c server/convert.c server/fail.c tools/rows.c \
	       tests/support/fault_io.c tests/support/power_io.c
FUZZ_OBJ    := $(FUZZ_SRC:%.c=build-fuzz/%.o) build-fuzz/proto/tally.pb-c.o

build-fuzz/%.o: %.c $(BUILD)/proto/tally.pb-c.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

build-fuzz/proto/tally.pb-c.o: $(BUILD)/proto/tally.pb-c.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_TARGETS): build-fuzz/%: fuzz/%.c $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c %.o,$^) $(LDLIBS) $(NET_LDLIBS)

# Six targets, each for the given seconds from its seed corpus
# (fuzz/corpus/ for requests, fuzz/corpus-segment/ for segment files,
# fuzz/corpus-wal/ for WAL records, fuzz/corpus-manifest/ for manifests,
# fuzz/corpus-rows/ for `tally ingest` files, fuzz/corpus-ops/ for programs
# of store operations).
define run_fuzz
	@mkdir -p build-fuzz/corpus build-fuzz/corpus-segment build-fuzz/corpus-wal build-fuzz/corpus-manifest \
	  build-fuzz/corpus-rows build-fuzz/corpus-ops
	cd build-fuzz && ../fuzz/run-target fuzz_request $(1) corpus ../fuzz/corpus
	cd build-fuzz && ../fuzz/run-target fuzz_segment $(1) corpus-segment ../fuzz/corpus-segment
	cd build-fuzz && ../fuzz/run-target fuzz_wal $(1) corpus-wal ../fuzz/corpus-wal
	cd build-fuzz && ../fuzz/run-target fuzz_manifest $(1) corpus-manifest ../fuzz/corpus-manifest
	cd build-fuzz && ../fuzz/run-target fuzz_rows $(1) corpus-rows ../fuzz/corpus-rows
	cd build-fuzz && ../fuzz/run-target fuzz_ops $(1) corpus-ops ../fuzz/corpus-ops
endef

fuzz: $(FUZZ_TARGETS)
	$(call run_fuzz,$(FUZZ_SECONDS))

fuzz-check: $(FUZZ_TARGETS)
	$(call run_fuzz,$(FUZZ_CHECK_SECONDS))

# Make the fuzz targets' seeds from real files (fuzz/segment_seed.c,
# fuzz/wal_seed.c); built with the tests so that they keep compiling.
$(BUILD)/fuzz/segment_seed $(BUILD)/fuzz/wal_seed: $(BUILD)/fuzz/%: $(BUILD)/fuzz/%.o $(BUILD)/libtally.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Installs only what is missing, so it costs one dpkg query when nothing is.
deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# tallyd in the foreground with the defaults: ./data, 127.0.0.1:7411,
# metrics on 127.0.0.1:9411; Ctrl-C stops it cleanly.
run: deps all
	$(BUILD)/tallyd

# A server on a fresh temporary directory, two tenants, a realistic sample
# loaded over the protocol, the five dashboard queries, isolation, a clean stop.
demo: deps all
	BUILD=$(BUILD) tools/demo/demo.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz build-cov

-include $(shell find $(BUILD) build-asan build-tsan build-fuzz -name '*.d' 2>/dev/null)
