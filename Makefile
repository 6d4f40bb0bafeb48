# pilotfish: build, run, test, bench.
#   make            build bin/pilotfish
#   make run        deps + build + demo origin on :3000 + pilotfish on :8080
#   make test       deps + build + unit and end-to-end tests
#   make test SANITIZE=1   the same under AddressSanitizer + UBSan
#   make bench      deps (+ nginx, haproxy, varnish, wrk) + bench/run.sh
#   make bench-micro  CPU cost of hot functions (bench/micro_*.c)
#   make fuzz       the long fuzz run (FUZZ_CASES, FUZZ_SEED; SANITIZE=1 works too)
#   make install    binary, man pages, example config, systemd unit (PREFIX, DESTDIR)
#   make deb        a Debian package in bin/ (dpkg-deb)
#   make k8s-deps   the Kubernetes schemas the inject tests validate against (npm)
#   make image      the container image pilotfish:latest (buildah, else docker)
#   make image-base debian:12 and debian:12-slim built locally from Debian's packages

CC      ?= cc
PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/pilotfish
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
# the unit's TimeoutStopSec: drain_delay + drain_timeout of the example config, and a margin
STOP_TIMEOUT ?= 20s
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

PKGS    := libevent libevent_pthreads yaml-0.1 zlib hiredis
CFLAGS_BASE := -std=gnu11 -O2 -g -Wall -Wextra -Werror -pthread -iquote . \
               -D_GNU_SOURCE -DPF_VERSION='"$(VERSION)"'
LDLIBS_BASE := -lhttp_parser -lpthread -lm

# UBSan goes on after a report (the e2e harness fails the test from the
# report on stderr, and a run shows them all); the unit tests stop at the
# first one (UBSAN_OPTIONS below), as cmocka sees only the crash.
ifeq ($(SANITIZE),1)
BUILD   := build/san
BIN     := bin/pilotfish-san
ORIGIN  := bin/pf-origin-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
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

.PHONY: all deps bench-deps run test unit e2e fuzz bench bench-micro format lint clean check-format \
        install deb k8s-deps image image-base
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
	@fail=0; for t in $(UNIT_BIN); do \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:$(UBSAN_OPTIONS) $$t || fail=1; \
	done; exit $$fail

# ASan's quarantine keeps freed memory out of reuse: keep it small so the
# tests that bound pilotfish's RSS measure pilotfish, not the quarantine.
# tests/e2e/pf.py adds the rest of the sanitizer options (reports on stderr,
# exit status, UBSan stacks, suppressions) and fails a test on a report.
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

# The offline Kubernetes schemas for the inject tests (npm's kubernetes-models,
# in build/node): best effort, the tests say so when they are missing.
k8s-deps:
	@if [ ! -d build/node/node_modules/kubernetes-models ] && command -v npm >/dev/null; then \
	  mkdir -p build/node && npm install --prefix build/node --no-audit --no-fund \
	    kubernetes-models >/dev/null 2>&1 || echo "k8s-deps: npm install failed (no schema checks)"; \
	fi

test: deps
	@-$(MAKE) --no-print-directory k8s-deps
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

# The example configuration is not overwritten when one is there already
# (with DESTDIR, a fresh staging root, it always is installed).
install: $(BIN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/pilotfish
	install -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/pilotfish
	install -m 0644 docs/man/pilotfish.8 $(DESTDIR)$(MANDIR)/man8/pilotfish.8
	install -m 0644 docs/man/pilotfish.yaml.5 $(DESTDIR)$(MANDIR)/man5/pilotfish.yaml.5
	install -m 0644 conf/pilotfish.yaml conf/examples/*.yaml $(DESTDIR)$(DOCDIR)/examples/
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	  -e 's|@STOP_TIMEOUT@|$(STOP_TIMEOUT)|g' dist/pilotfish.service.in \
	  > $(DESTDIR)$(UNITDIR)/pilotfish.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/pilotfish.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/pilotfish/pilotfish.yaml ]; then \
	  echo "keeping $(DESTDIR)$(SYSCONFDIR)/pilotfish/pilotfish.yaml"; \
	else \
	  install -m 0644 conf/pilotfish.yaml $(DESTDIR)$(SYSCONFDIR)/pilotfish/pilotfish.yaml; \
	fi

# Debian package: the release build installed into a staging root with
# PREFIX=/usr; Depends from the packages that hold the libraries it links.
# (With SANITIZE=1 it packs the sanitizer build: for tests only.)
DEB_VERSION := 0.1.0+git$(subst -,.,$(VERSION))
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB_STAGE   ?= $(CURDIR)/build/deb
DEB_OUT     ?= bin
DEB         := $(DEB_OUT)/pilotfish_$(DEB_VERSION)_$(DEB_ARCH).deb
deb: $(BIN)
	rm -rf $(DEB_STAGE)
	@$(MAKE) --no-print-directory install DESTDIR=$(DEB_STAGE) PREFIX=/usr \
	  UNITDIR=/lib/systemd/system SYSCONFDIR=/etc
	gzip -9n $(DEB_STAGE)/usr/share/man/man8/pilotfish.8 \
	  $(DEB_STAGE)/usr/share/man/man5/pilotfish.yaml.5
	install -d $(DEB_STAGE)/DEBIAN $(DEB_OUT)
	dist/deb-control.sh $(BIN) $(DEB_VERSION) $(DEB_ARCH) $(DEB_STAGE) > $(DEB_STAGE)/DEBIAN/control
	echo /etc/pilotfish/pilotfish.yaml > $(DEB_STAGE)/DEBIAN/conffiles
	install -m 0755 dist/deb-postinst $(DEB_STAGE)/DEBIAN/postinst
	dpkg-deb --root-owner-group --build $(DEB_STAGE) $(DEB)

# buildah runs without a daemon (chroot isolation); HEALTHCHECK needs the docker format.
image:
	@if command -v buildah >/dev/null; then \
	  buildah bud --isolation=chroot --format docker -t pilotfish:latest . ; \
	else \
	  docker build -t pilotfish:latest . ; \
	fi

# For a machine without a registry: the base images the Dockerfile names, made
# by mmdebstrap from Debian's packages (minbase, so "slim" is only a name here).
image-base:
	$(call install_debs,mmdebstrap podman buildah)
	@mkdir -p build/oci
	mmdebstrap --variant=minbase bookworm build/oci/bookworm.tar
	podman import build/oci/bookworm.tar docker.io/library/debian:12
	podman tag docker.io/library/debian:12 docker.io/library/debian:12-slim

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
