# pilotfish: build, run, test, bench.
#   make            build bin/pilotfish
#   make run        deps + build + demo origin on :3000 + pilotfish on :8080
#   make test       deps + build + unit and end-to-end tests
#   make test SANITIZE=1   the same under AddressSanitizer + UBSan
#   make bench      deps (+ nginx, haproxy, varnish, wrk) + bench/run.sh
#   make bench-micro  CPU cost of hot functions (bench/micro_*.c)
#   make fuzz       the long fuzz run (FUZZ_CASES, FUZZ_SEED; SANITIZE=1 works too)

CC      ?= cc
PREFIX  ?= /usr/local
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

PKGS    := libevent libevent_pthreads yaml-0.1 zlib hiredis
CFLAGS_BASE := -std=gnu11 -O2 -g -Wall -Wextra -Werror -pthread -iquote . \
               -D_GNU_SOURCE -DPF_VERSION='"$(VERSION)"'
LDLIBS_BASE := -lhttp_parser -lpthread -lm

ifeq ($(SANITIZE),1)
BUILD   := build/san
BIN     := bin/pilotfish-san
ORIGIN  := bin/pf-origin-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   := build/rel
BIN     := bin/pilotfish
ORIGIN  := bin/pf-origin
SANFLAGS :=
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  += $(CFLAGS_BASE) $(SANFLAGS) $(PKG_CFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) $(LDLIBS_BASE)

CORE_SRC := $(filter-out proxy/main.c,$(wildcard proxy/*.c proxy/*/*.c)) $(wildcard filters/*.c filters/*/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/proxy/main.o
LIB      := $(BUILD)/libpilotfish.a
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
MICRO_SRC := $(wildcard bench/micro_*.c)
MICRO_BIN := $(MICRO_SRC:bench/%.c=$(BUILD)/bench/%)


DEBS := libevent-dev libhttp-parser-dev libyaml-dev zlib1g-dev libhiredis-dev \
        libcmocka-dev pkg-config curl python3 python3-yaml redis-server prometheus nginx chromium
BENCH_DEBS := nginx haproxy varnish wrk

.PHONY: all deps bench-deps run test unit e2e fuzz bench bench-micro format lint clean check-format
all: $(BIN) $(ORIGIN)

# Install what is missing; as non-root, print the command instead.
define install_debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null)) || exit 1; \
	  else \
	    echo "missing packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

deps:
	$(call install_debs,$(DEBS))

bench-deps: deps
	$(call install_debs,$(BENCH_DEBS))

# the dashboard page is assembled into this object (.incbin)
$(BUILD)/proxy/admin_dash.o: proxy/dashboard.html

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(LIB)
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $(MAIN_OBJ) $(LIB) $(LDLIBS)

$(ORIGIN): $(BUILD)/tests/origin/origin.o
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/test_%: tests/unit/test_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) -lcmocka $(LDLIBS)

$(BUILD)/bench/micro_%: bench/micro_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

run: deps all
	@tests/origin/run-demo.sh $(BIN) $(ORIGIN)

# The micro benchmarks are built with the unit tests (so they keep compiling)
# but only run by make bench-micro.
unit: $(UNIT_BIN) $(MICRO_BIN)
	@fail=0; for t in $(UNIT_BIN); do $$t || fail=1; done; exit $$fail

# ASan's quarantine keeps freed memory out of reuse: keep it small so the
# tests that bound pilotfish's RSS measure pilotfish, not the quarantine.
e2e: all
	ASAN_OPTIONS=quarantine_size_mb=4:thread_local_quarantine_size_kb=64:$(ASAN_OPTIONS) \
	PILOTFISH_BIN=$(BIN) ORIGIN_BIN=$(ORIGIN) python3 tests/e2e/run.py

# The long fuzz run: many more cases than make test, a new seed each time
# unless FUZZ_SEED is given (the seed is printed; rerun with it to repeat).
FUZZ_CASES ?= 20000
FUZZ_SEED  ?= $(shell date +%s)
fuzz: all
	ASAN_OPTIONS=quarantine_size_mb=4:thread_local_quarantine_size_kb=64:$(ASAN_OPTIONS) \
	PF_FUZZ_CASES=$(FUZZ_CASES) PF_FUZZ_SEED=$(FUZZ_SEED) \
	PILOTFISH_BIN=$(BIN) ORIGIN_BIN=$(ORIGIN) python3 tests/e2e/run.py -v test_fuzz

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory e2e

bench: bench-deps all
	bench/run.sh

bench-micro: $(MICRO_BIN)
	@for b in $(MICRO_BIN); do $$b || exit 1; done

format:
	clang-format -i $(wildcard proxy/*.[ch] proxy/*/*.[ch] filters/*.[ch] filters/*/*.[ch] tests/unit/*.[ch] tests/origin/*.[ch] bench/*.c)

check-format:
	clang-format --dry-run --Werror $(wildcard proxy/*.[ch] proxy/*/*.[ch] filters/*.[ch] filters/*/*.[ch] tests/unit/*.[ch] tests/origin/*.[ch] bench/*.c)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr --std=c11 -I . $(PKG_CFLAGS) proxy filters tests/origin

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
