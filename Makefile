# login-etl: a static AWS Lambda custom runtime (provided.al2023) in C.
#
#   make            build/bootstrap, fully static (glibc, OpenSSL, libpq, cJSON inside)
#   make package    build/function.zip with bootstrap at its root
#   make test       every test: unit, integration, fuzz smoke, valgrind; ends "N passed, N failed"
#   make demo       the whole job end to end on a private Postgres and the sample data
#   make bench      throughput and resource figures (reports, never gates)
#   make fuzz       libFuzzer targets for FUZZ_SECONDS each
#
# Three builds of the same sources, each in its own directory:
#   build/release  -static, -O2: the deployable bootstrap
#   build/asan     dynamic, -fsanitize=address,undefined: unit and integration tests
#   build/plain    dynamic, -O1 -g, no sanitizer: valgrind runs (it cannot see a static malloc)

CC       ?= gcc
CLANG    ?= clang
PYTHON   ?= $(shell tools/python.sh)
DEPS     := build/deps
DEPS_OK  := $(DEPS)/.done-v2
ARCH     := $(shell uname -m)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wwrite-strings -Wformat=2 -Wconversion -Wno-sign-conversion
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L
INCLUDES := -Ibase -Iruntime -Ifunction -I$(DEPS)/include
LIBS_PG  := -L$(DEPS)/lib -lpq -lpgcommon -lpgport
LIBS     := $(LIBS_PG) -lssl -lcrypto -lm -pthread

RELEASE_CFLAGS := $(CSTD) $(WARN) -O2 -g -fstack-protector-strong -D_FORTIFY_SOURCE=2 $(INCLUDES)
ASAN_CFLAGS    := $(CSTD) $(WARN) -O1 -g -fno-omit-frame-pointer \
                  -fsanitize=address,undefined -fno-sanitize-recover=all $(INCLUDES)
PLAIN_CFLAGS   := $(CSTD) $(WARN) -O1 -g $(INCLUDES)
FUZZ_CFLAGS    := $(CSTD) -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
                  -fno-sanitize-recover=all -DFUZZING $(INCLUDES)

BASE_SRC     := $(sort $(wildcard base/*.c))
RUNTIME_SRC  := $(sort $(wildcard runtime/*.c))
FUNCTION_SRC := $(sort $(filter-out function/main.c,$(wildcard function/*.c)))
LIB_SRC      := $(BASE_SRC) $(RUNTIME_SRC) $(FUNCTION_SRC)
UNIT_SRC     := $(sort $(wildcard tests/unit/test_*.c))
RIG_SRC      := $(sort $(wildcard tests/rig/*.c))
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))

objs = $(patsubst %.c,build/$(1)/%.o,$(LIB_SRC)) build/$(1)/cJSON.o

.PHONY: all deps package test unit test-build fuzz fuzz-build bench demo psql format \
        format-check lint clean distclean
.DELETE_ON_ERROR:

all: build/bootstrap

deps: $(DEPS_OK)

$(DEPS_OK):
	tools/deps.sh $(DEPS)

# --- object files, one pattern per build ---------------------------------------------------
build/release/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(RELEASE_CFLAGS) -MMD -MP -c $< -o $@
build/asan/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -MMD -MP -c $< -o $@
build/plain/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(PLAIN_CFLAGS) -MMD -MP -c $< -o $@
build/fuzz/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

# cJSON is third-party code: compiled with each build's optimisation and
# sanitizers, but not with the project's warning set.
build/release/cJSON.o: $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) -std=c89 -O2 -g -fstack-protector-strong -I$(DEPS)/include -c $(DEPS)/src/cJSON.c -o $@
build/asan/cJSON.o: $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) -std=c89 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -I$(DEPS)/include -c $(DEPS)/src/cJSON.c -o $@
build/plain/cJSON.o: $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) -std=c89 -O1 -g -I$(DEPS)/include -c $(DEPS)/src/cJSON.c -o $@
build/fuzz/cJSON.o: $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CLANG) -std=c89 -O1 -g -fsanitize=fuzzer-no-link,address,undefined -I$(DEPS)/include -c $(DEPS)/src/cJSON.c -o $@

# --- the deployable binary -----------------------------------------------------------------
# glibc warns that getaddrinfo in a static program wants NSS modules at run time;
# with /etc/hosts and /etc/resolv.conf (which Lambda provides) the built-in
# "files" and "dns" paths work, which tests/integration/test_chroot.py checks.
build/release/bootstrap: $(call objs,release) build/release/function/main.o
	$(CC) -static -o $@ $^ $(LIBS)

build/bootstrap: build/release/bootstrap
	cp $< $@
	strip -o $@ $<

build/asan/bootstrap: $(call objs,asan) build/asan/function/main.o
	$(CC) -fsanitize=address,undefined -o $@ $^ $(LIBS)

build/plain/bootstrap: $(call objs,plain) build/plain/function/main.o
	$(CC) -o $@ $^ $(LIBS)

# TLS to RDS with sslmode=verify-full needs Amazon's CA bundle next to the
# binary (/var/task/rds-global-bundle.pem; libpq 15 has no system trust store
# option).  RDS's bundle is downloaded once, or taken from RDS_CA_BUNDLE;
# tools/ca-bundle.sh appends the Amazon Trust Services roots that RDS Proxy
# endpoints present, taken from this machine's ca-certificates.
RDS_CA_URL    := https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
RDS_CA_BUNDLE ?= build/rds-global-bundle.pem

build/rds-global-bundle.pem:
	@mkdir -p build
	@curl -fsSL --retry 3 -o $@.tmp $(RDS_CA_URL) && grep -q 'BEGIN CERTIFICATE' $@.tmp && mv $@.tmp $@ || \
	  { rm -f $@.tmp; echo "cannot download $(RDS_CA_URL): set RDS_CA_BUNDLE=/path/to/global-bundle.pem" >&2; exit 1; }

# The zip for LocalStack and manual uploads: the CA bundle goes in when there
# is one (a local database without TLS does not need it).
package: build/function.zip

build/function.zip: build/bootstrap tools/ca-bundle.sh
	rm -f $@
	cd build && zip -q -X function.zip bootstrap
	@mkdir -p build/pkg && tools/ca-bundle.sh build/pkg/rds-global-bundle.pem $(wildcard $(RDS_CA_BUNDLE)) && \
	  (cd build/pkg && zip -q -X ../function.zip rds-global-bundle.pem) && rm -rf build/pkg
	@[ -f "$(RDS_CA_BUNDLE)" ] || echo "note: the zip's CA bundle lacks RDS's CAs, only RDS Proxy's (make build/rds-global-bundle.pem, or RDS_CA_BUNDLE=...)"
	@echo "$@: $$(stat -c %s $@) bytes"

# AWS SAM `BuildMethod: makefile` runs `make build-<LogicalId>` with ARTIFACTS_DIR set.
# What goes to AWS must verify RDS's certificate, so the bundle is required here.
build-LoginEtlFunction: build/bootstrap $(RDS_CA_BUNDLE)
	cp build/bootstrap $(ARTIFACTS_DIR)/bootstrap
	tools/ca-bundle.sh $(ARTIFACTS_DIR)/rds-global-bundle.pem $(RDS_CA_BUNDLE)

# --- tests ---------------------------------------------------------------------------------
UNIT_BINS := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRC))
RIG_BINS  := $(patsubst tests/rig/%.c,build/asan/rig/%,$(RIG_SRC))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/bin/%,$(FUZZ_SRC))

build/asan/tests/%: tests/unit/%.c tests/unit/check.h $(call objs,asan)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -Itests/unit -o $@ $< $(call objs,asan) $(LIBS)

build/asan/rig/%: tests/rig/%.c $(call objs,asan)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $< $(call objs,asan) $(LIBS)

build/fuzz/bin/%: tests/fuzz/%.c $(call objs,fuzz)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(call objs,fuzz) $(LIBS)

test-build: build/bootstrap build/asan/bootstrap build/plain/bootstrap $(UNIT_BINS) $(RIG_BINS)

fuzz-build: $(FUZZ_BINS)

# The README's test command: installs what a fresh machine lacks, builds
# every variant, and runs everything through one runner.
test:
	tools/test-deps.sh
	$(MAKE) --no-print-directory test-build fuzz-build
	$(PYTHON) tests/run.py

unit: $(UNIT_BINS)
	$(PYTHON) tests/run.py --only unit

FUZZ_SECONDS ?= 60
fuzz: fuzz-build
	$(PYTHON) tests/run.py --only fuzz --fuzz-seconds $(FUZZ_SECONDS)

bench: test-build package
	$(PYTHON) tests/bench/bench.py

demo:
	tools/test-deps.sh
	$(MAKE) --no-print-directory build/bootstrap
	$(PYTHON) tools/demo.py

psql:
	@$(PYTHON) tools/demo.py --psql

# --- hygiene -------------------------------------------------------------------------------
C_FILES = $(wildcard base/*.[ch] runtime/*.[ch] function/*.[ch] tests/unit/*.[ch] tests/rig/*.c tests/rig/preload/*.c tests/fuzz/*.c tests/bench/*.c)

format:
	clang-format -i $(C_FILES)

format-check:
	clang-format --dry-run --Werror $(C_FILES)

lint:
	cfn-lint template.yaml

clean:
	rm -rf build/release build/asan build/plain build/fuzz build/bootstrap build/function.zip

distclean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
