# login-etl: a static AWS Lambda custom runtime (provided.al2023) in C.
#
#   make                  build/bootstrap, fully static (glibc, OpenSSL, libpq, cJSON inside)
#   make ARCH=arm64       build/arm64/bootstrap, cross-built (also ARCH=x86_64 on an arm64 machine)
#   make package          build/login-etl-<version>-<arch>.zip (and its copy build/function.zip):
#                         bootstrap and the RDS CA bundle at its root (build/arm64/... with ARCH);
#                         CA=none for a zip only for local work (LocalStack, no TLS)
#   make dist             build/login-etl-<version>.tar.gz: the source of HEAD with a VERSION file
#   build/bootstrap --version   the release and the OpenSSL, libpq and cJSON versions inside
#   make install-deps     the Debian packages the build and tests need (root; tools/test-deps.sh)
#                         and the pinned Python packages into build/venv (tools/venv.sh)
#   make test             every test: unit, integration, fuzz smoke, valgrind, and the other
#                         architecture's binary under qemu-user; ends "N passed, N failed";
#                         TEST_ARGS="--only integration -k NAME": the runner's selection (tests/run.py)
#   make demo / demo-stop the whole job end to end on a private Postgres; stop that Postgres
#   make invoke EVENT=events/batch.json   one event through bootstrap against the demo database
#   make bench            throughput and resource figures (reports, never gates);
#                         BENCH=fleet|history|rekey|throughput: that part alone
#   make fuzz             libFuzzer targets for FUZZ_SECONDS each
#   make fresh-check      make demo and make test in fresh Debian 12 and 13 chroots (root;
#                         tools/fresh-check.sh, FRESH_SUITES="bookworm trixie"; SUITE:part
#                         runs only the tests a fresh machine is apt to break)
#   V=1                   show the full commands instead of one line per step
#
# Builds of the same sources, each in its own directory:
#   build/release         -static, -O2: the deployable bootstrap
#   build/asan            dynamic, -fsanitize=address,undefined: unit and integration tests
#   build/plain           dynamic, -O1 -g, no sanitizer: valgrind runs (it cannot see a static malloc)
#   build/<arch>/release  -static, -O2, cross-compiled for the other architecture, and
#   build/<arch>/tests    its unit tests, static, run under qemu-user by `make test`

CC       ?= gcc
CLANG    ?= clang
PYTHON   ?= $(shell tools/python.sh)

# The target architecture: `make ARCH=arm64` (command line), else LOGIN_ETL_ARCH
# from the environment, else this machine's.  A variable named ARCH inherited
# from the environment is ignored on purpose: other tools use that name.
norm_arch = $(patsubst aarch64,arm64,$(patsubst amd64,x86_64,$(1)))
HOST_ARCH := $(call norm_arch,$(shell uname -m))
ifeq ($(origin ARCH),command line)
override ARCH := $(call norm_arch,$(ARCH))
else
ARCH := $(call norm_arch,$(or $(LOGIN_ETL_ARCH),$(HOST_ARCH)))
endif
ifeq ($(filter $(ARCH),x86_64 arm64),)
$(error ARCH=$(ARCH): x86_64 or arm64)
endif
OTHER_ARCH := $(if $(filter arm64,$(HOST_ARCH)),x86_64,arm64)
CROSS_arm64  := aarch64-linux-gnu
CROSS_x86_64 := x86_64-linux-gnu

# Where the static libraries live: build/deps for this machine's architecture,
# build/<arch>/deps for a cross build.  LOGIN_ETL_DEPS_ROOT moves them (the build
# image keeps them prebuilt in /opt/login-etl/build, outside SAM's copy of the source).
DEPS_ROOT := $(or $(LOGIN_ETL_DEPS_ROOT),build)
ifeq ($(ARCH),$(HOST_ARCH))
OUT      := build
DEPS     := $(DEPS_ROOT)/deps
XCC      := $(CC)
STRIP    := strip
else
OUT      := build/$(ARCH)
DEPS     := $(DEPS_ROOT)/$(ARCH)/deps
XCC      := $(CROSS_$(ARCH))-gcc
STRIP    := $(CROSS_$(ARCH))-strip
endif
DEPS_OK  := $(DEPS)/.done-v2
REL      := $(OUT)/release

# The release this tree is (tools/version.sh: `git describe --tags --dirty`, or
# the VERSION file of a source tarball).  build/version.txt is rewritten only
# when it changes, and only function/version.o depends on it, so a new commit
# recompiles one file.
VERSION  := $(shell tools/version.sh)
$(shell mkdir -p build && { [ "$$(cat build/version.txt 2>/dev/null)" = "$(VERSION)" ] || \
  printf '%s\n' "$(VERSION)" > build/version.txt; })
VERSION_OBJS := $(foreach d,$(REL) build/asan build/plain build/fuzz,$(d)/function/version.o)
$(VERSION_OBJS): build/version.txt
$(VERSION_OBJS): VERSION_DEF = -DLOGIN_ETL_VERSION='"$(VERSION)"'

# One line per step unless V=1: `$(call step,CC,$@)` in front of a command.
V ?= 0
step = $(if $(filter-out 0,$(V)),,@printf '  %-8s %s\n' '$(1)' '$(2)';)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wwrite-strings -Wformat=2 -Wconversion -Wno-sign-conversion
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L
INCLUDES := -Ibase -Iruntime -Ifunction -I$(DEPS)/include
LIBS_PG  := -L$(DEPS)/lib -lpq -lpgcommon -lpgport
# What this machine's static libcrypto.a needs besides, as its pkg-config file
# says: Debian 13's OpenSSL is built with zlib and zstd (certificate
# compression), Debian 12's with neither.  A cross build links Debian 12's
# libcrypto.a of the other architecture (tools/deps.sh), which needs none.
ifeq ($(ARCH),$(HOST_ARCH))
SSL_PRIVATE := $(filter-out -lcrypto -lssl,$(filter -l%,$(shell pkg-config --static --libs libcrypto 2>/dev/null)))
endif
LIBS     := $(LIBS_PG) -lssl -lcrypto $(SSL_PRIVATE) -lm -pthread

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
RIG_H        := $(wildcard tests/rig/*.h)
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))

# The object files of one build directory: the project's sources and cJSON.
objs = $(patsubst %.c,$(1)/%.o,$(LIB_SRC)) $(1)/cJSON.o

.PHONY: all deps install-deps package dist test unit test-build cross-test-build cross-test-build-here \
        fuzz fuzz-build \
        bench demo demo-deps demo-stop invoke psql format format-check lint clean distclean \
        fresh-check \
        build-LoginEtlFunction sam-artifacts print-sam-arch
.DELETE_ON_ERROR:
# Object files reached only through pattern rules stay (no rebuild of the fuzz
# build's objects on every run).
.SECONDARY:

all: $(OUT)/bootstrap

deps: $(DEPS_OK)

install-deps:
	tools/test-deps.sh test
	tools/venv.sh test

# What the demo alone needs: no cross toolchain, clang, valgrind, qemu or pgbouncer.
demo-deps:
	tools/test-deps.sh demo
	tools/venv.sh demo

$(DEPS_OK):
	$(call step,DEPS,$(DEPS) for $(ARCH) from Debian source packages (once)) tools/deps.sh $(DEPS) $(ARCH)

# --- object files, one pattern per build ---------------------------------------------------
$(REL)/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(call step,CC,$@) $(XCC) $(RELEASE_CFLAGS) $(VERSION_DEF) -MMD -MP -c $< -o $@
build/asan/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(call step,CC,$@) $(CC) $(ASAN_CFLAGS) $(VERSION_DEF) -MMD -MP -c $< -o $@
build/plain/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(call step,CC,$@) $(CC) $(PLAIN_CFLAGS) $(VERSION_DEF) -MMD -MP -c $< -o $@
build/fuzz/%.o: %.c $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(call step,CC,$@) $(CLANG) $(FUZZ_CFLAGS) $(VERSION_DEF) -MMD -MP -c $< -o $@

# cJSON is third-party code: compiled with each build's compiler, optimisation
# and sanitizers, but not with the project's warning set.  One rule for every
# build directory; the directory's last component picks the flags.
CJSON_CC_release := $(XCC)
CJSON_CC_asan    := $(CC)
CJSON_CC_plain   := $(CC)
CJSON_CC_fuzz    := $(CLANG)
CJSON_FLAGS_release := -O2 -g -fstack-protector-strong
CJSON_FLAGS_asan    := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
CJSON_FLAGS_plain   := -O1 -g
CJSON_FLAGS_fuzz    := -O1 -g -fsanitize=fuzzer-no-link,address,undefined
build/%/cJSON.o: $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(call step,CC,$@) $(CJSON_CC_$(notdir $*)) -std=c89 $(CJSON_FLAGS_$(notdir $*)) \
	  -I$(DEPS)/include -c $(DEPS)/src/cJSON.c -o $@

# --- the deployable binary -----------------------------------------------------------------
# glibc's static link warns that getaddrinfo (and getpwuid_r, which libpq calls
# only when no database user is named, and gethostbyname, in an OpenSSL BIO
# function bootstrap never calls) want glibc's shared NSS modules at run time.
# bootstrap only resolves host names through /etc/hosts and DNS
# (/etc/resolv.conf), which glibc does without those modules, and always names
# its database user (config.c refuses to start otherwise); Lambda provides both
# files, and tests/integration/test_chroot.py runs the binary in a directory
# holding nothing else.  The warning is therefore expected: it is replaced by a
# note that says so (V=1 prints the linker's own words too); any other linker
# message is printed as it is.
LINK_NOTE := note: glibc's static-link warnings (getaddrinfo, getpwuid_r, gethostbyname) are expected: /etc/hosts and DNS work without NSS modules (Makefile, V=1)
# $(call link_static,INPUTS[,note]): links $@ statically from INPUTS; with "note", prints
# LINK_NOTE when the linker gave the warnings it explains.
define link_static
	$(call step,LD,$@) $(XCC) -static -o $@ $(1) $(LIBS) 2>$@.ld || { cat $@.ld >&2; rm -f $@.ld; exit 1; }; \
	  if [ "$(V)" != 0 ]; then cat $@.ld; else grep -v -e 'statically linked applications requires at runtime' -e ': in function' $@.ld || true; fi; \
	  if [ -n "$(2)" ] && grep -q 'statically linked applications requires at runtime' $@.ld; then echo "  $(LINK_NOTE)"; fi; rm -f $@.ld
endef

$(REL)/bootstrap: $(call objs,$(REL)) $(REL)/function/main.o
	$(call link_static,$^,note)

$(OUT)/bootstrap: $(REL)/bootstrap
	$(call step,STRIP,$@) $(STRIP) -o $@ $<

build/asan/bootstrap: $(call objs,build/asan) build/asan/function/main.o
	$(call step,LD,$@) $(CC) -fsanitize=address,undefined -o $@ $^ $(LIBS)

build/plain/bootstrap: $(call objs,build/plain) build/plain/function/main.o
	$(call step,LD,$@) $(CC) -o $@ $^ $(LIBS)

# TLS to RDS with sslmode=verify-full needs Amazon's CA bundle next to the
# binary (/var/task/rds-global-bundle.pem; libpq 15 has no system trust store
# option).  RDS's bundle is downloaded once, or taken from RDS_CA_BUNDLE;
# tools/ca-bundle.sh appends the Amazon Trust Services roots that RDS Proxy
# endpoints present, taken from this machine's ca-certificates.
RDS_CA_URL    := https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
RDS_CA_BUNDLE ?= build/rds-global-bundle.pem
CA_HOWTO := make build/rds-global-bundle.pem downloads it from $(RDS_CA_URL); on a machine without internet access, fetch that file elsewhere and pass RDS_CA_BUNDLE=/path/to/global-bundle.pem; for a zip that is only for local work (LocalStack, a database without TLS): make package CA=none

build/rds-global-bundle.pem:
	@mkdir -p build
	@curl -fsSL --retry 3 -o $@.tmp $(RDS_CA_URL) && grep -q 'BEGIN CERTIFICATE' $@.tmp && mv $@.tmp $@ || \
	  { rm -f $@.tmp; echo "cannot download RDS's CA bundle ($(RDS_CA_URL)): without it TLS to RDS fails. $(CA_HOWTO)" >&2; exit 1; }

# A bundle named by RDS_CA_BUNDLE that is not there: say so, rather than make's
# bare "No rule to make target".
ifneq ($(RDS_CA_BUNDLE),build/rds-global-bundle.pem)
$(RDS_CA_BUNDLE):
	@echo "RDS_CA_BUNDLE=$@: no such file. $(CA_HOWTO)" >&2; exit 1
endif

# `make package`: build/login-etl-<version>-<arch>.zip (build/<arch>/... for a
# cross build) with bootstrap and rds-global-bundle.pem at its root, named by
# the release it holds (tools/version.sh), and a copy of it as function.zip
# beside it, the name LocalStack's init hook (tools/localstack) and manual
# uploads use.  The bundle must hold RDS's CAs: without them a zip uploaded to
# AWS fails TLS to RDS, so the package fails instead, saying how to get them.
# CA=none is the escape for local work (LocalStack, a database without TLS):
# the zip, named ...-local.zip so that it is not mistaken for a release,
# carries only RDS Proxy's roots.  Made afresh on every call (cheap), so that
# it never holds a stale bundle.
CA ?= rds
ifeq ($(CA),none)
ZIP    := $(OUT)/login-etl-$(VERSION)-$(ARCH)-local.zip
ZIP_CA :=
else ifeq ($(CA),rds)
ZIP    := $(OUT)/login-etl-$(VERSION)-$(ARCH).zip
ZIP_CA := $(RDS_CA_BUNDLE)
else
$(error CA=$(CA): rds (the default: RDS's CA bundle is required) or none (local work only))
endif

package: $(OUT)/bootstrap tools/ca-bundle.sh $(ZIP_CA)
	@rm -f $(ZIP) && rm -rf $(OUT)/pkg && mkdir -p $(OUT)/pkg
	@cp $(OUT)/bootstrap $(OUT)/pkg/bootstrap
	@tools/ca-bundle.sh $(OUT)/pkg/rds-global-bundle.pem $(ZIP_CA)
	$(call step,ZIP,$(ZIP)) cd $(OUT)/pkg && zip -q -X $(abspath $(ZIP)) bootstrap rds-global-bundle.pem
	@rm -rf $(OUT)/pkg
	@cp $(ZIP) $(OUT)/function.zip
	@echo "  $(ZIP): login-etl $(VERSION), $(ARCH), $$(stat -c %s $(ZIP)) bytes, CA bundle: $(if $(ZIP_CA),RDS's and RDS Proxy's,RDS Proxy's only (CA=none: local work only))"
	@echo "  $(OUT)/function.zip: a copy of it"

# AWS SAM `BuildMethod: makefile` runs `make build-<LogicalId>` with ARTIFACTS_DIR set,
# and tells make nothing about the function's Architectures (aws-sam-cli issue 3349).
# The architecture built is, first found: ARCH on make's command line, the
# environment variable LOGIN_ETL_ARCH (`LOGIN_ETL_ARCH=arm64 sam build`), the
# Architecture=... of samconfig.toml's parameter_overrides (what `sam deploy`
# deploys with that file), this machine's.  What goes to AWS must verify RDS's
# certificate, so the CA bundle is required here.
SAMCONFIG ?= samconfig.toml
SAMCONFIG_ARCH = $(shell sed -n 's/^ *parameter_overrides *=.*Architecture=\\\{0,1\}"\{0,1\}\([a-z0-9_]*\).*/\1/p' $(SAMCONFIG) 2>/dev/null | head -1)
SAM_ARCH = $(if $(filter command line,$(origin ARCH)),$(ARCH),$(call norm_arch,$(or $(LOGIN_ETL_ARCH),$(SAMCONFIG_ARCH),$(HOST_ARCH))))

build-LoginEtlFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 1; }
	@echo "  SAM      bootstrap for $(SAM_ARCH) into $(ARTIFACTS_DIR)"
	@$(MAKE) --no-print-directory ARCH=$(SAM_ARCH) sam-artifacts

print-sam-arch:
	@echo $(SAM_ARCH)

sam-artifacts: $(OUT)/bootstrap $(RDS_CA_BUNDLE)
	@mkdir -p $(ARTIFACTS_DIR)
	$(call step,CP,$(ARTIFACTS_DIR)/bootstrap) cp $(OUT)/bootstrap $(ARTIFACTS_DIR)/bootstrap
	$(call step,CA,$(ARTIFACTS_DIR)/rds-global-bundle.pem) tools/ca-bundle.sh $(ARTIFACTS_DIR)/rds-global-bundle.pem $(RDS_CA_BUNDLE)

# --- tests ---------------------------------------------------------------------------------
UNIT_BINS := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRC))
RIG_BINS  := $(patsubst tests/rig/%.c,build/asan/rig/%,$(RIG_SRC))
FUZZ_BINS := $(patsubst tests/fuzz/%.c,build/fuzz/bin/%,$(FUZZ_SRC))
# The unit tests of a cross build: static, no sanitizer (neither works under
# qemu-user), with the release objects, so they test the code that ships.
CROSS_UNIT_BINS := $(patsubst tests/unit/%.c,$(OUT)/tests/%,$(UNIT_SRC))

build/asan/tests/%: tests/unit/%.c tests/unit/check.h $(RIG_H) $(call objs,build/asan)
	@mkdir -p $(dir $@)
	$(call step,LD,$@) $(CC) $(ASAN_CFLAGS) -Itests/unit -o $@ $< $(call objs,build/asan) $(LIBS)

build/asan/rig/%: tests/rig/%.c $(call objs,build/asan)
	@mkdir -p $(dir $@)
	$(call step,LD,$@) $(CC) $(ASAN_CFLAGS) -o $@ $< $(call objs,build/asan) $(LIBS)

build/fuzz/bin/%: tests/fuzz/%.c $(call objs,build/fuzz)
	@mkdir -p $(dir $@)
	$(call step,LD,$@) $(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(call objs,build/fuzz) $(LIBS)

ifneq ($(ARCH),$(HOST_ARCH))
$(OUT)/tests/%: tests/unit/%.c tests/unit/check.h $(RIG_H) $(call objs,$(REL))
	@mkdir -p $(dir $@)
	$(call link_static,$(RELEASE_CFLAGS) -Itests/unit $< $(call objs,$(REL)))
endif

test-build: build/bootstrap build/asan/bootstrap build/plain/bootstrap $(UNIT_BINS) $(RIG_BINS)

# The other architecture's bootstrap and unit tests, for `make test` to run
# under qemu-user (make ARCH=arm64 cross-test-build on x86_64).
cross-test-build:
	@$(MAKE) --no-print-directory ARCH=$(OTHER_ARCH) cross-test-build-here
cross-test-build-here: $(OUT)/bootstrap $(CROSS_UNIT_BINS)

fuzz-build: $(FUZZ_BINS)

# The README's test command.  Its first step installs what a fresh machine
# lacks (tools/test-deps.sh, the same as `make install-deps`); then it builds
# every variant, the other architecture's binary, and runs everything through
# one runner.
TEST_ARGS ?=
test: install-deps
	@$(MAKE) --no-print-directory test-build fuzz-build cross-test-build
	$(PYTHON) tests/run.py $(TEST_ARGS)

unit: $(UNIT_BINS) cross-test-build
	$(PYTHON) tests/run.py --only unit

FUZZ_SECONDS ?= 60
fuzz: fuzz-build
	$(PYTHON) tests/run.py --only fuzz --fuzz-seconds $(FUZZ_SECONDS)

# The zip's size is one of the figures: with RDS's CA bundle when there is one.
BENCH ?=
bench: test-build
	@$(MAKE) --no-print-directory package $(if $(wildcard $(RDS_CA_BUNDLE)),,CA=none)
	$(PYTHON) tests/bench/bench.py $(if $(BENCH),--$(BENCH)) $(if $(BASELINE),--baseline $(BASELINE))

# The README's demo command: installs what a fresh machine lacks for the demo
# (less than `make test` needs), then builds and runs.
demo: demo-deps
	@$(MAKE) --no-print-directory build/bootstrap
	$(PYTHON) tools/demo.py

demo-stop:
	@$(PYTHON) tools/demo.py --stop

psql:
	@$(PYTHON) tools/demo.py --psql

# One event through the real bootstrap against the demo's database (started if
# needed), printed like `sam local invoke`: the answer JSON, then a REPORT line.
# The build's own lines go to stderr: stdout is the answer alone, as with sam.
EVENT ?= events/batch.json
invoke:
	@$(MAKE) --no-print-directory build/bootstrap >&2
	@$(PYTHON) tools/invoke.py $(EVENT)

# --- a source tarball ----------------------------------------------------------------------
# The committed tree of HEAD with a VERSION file holding its release, for a
# build without git (tools/version.sh reads VERSION when there is no checkout).
DIST := build/login-etl-$(VERSION).tar.gz
dist:
	@git diff --quiet HEAD -- || { echo "make dist: uncommitted changes: commit them first (the tarball holds HEAD)" >&2; exit 1; }
	@rm -rf build/dist && mkdir -p build/dist && printf '%s\n' "$(VERSION)" > build/dist/VERSION
	$(call step,DIST,$(DIST)) git archive --format=tar.gz --prefix=login-etl-$(VERSION)/ \
	  --add-file=build/dist/VERSION -o $(DIST) HEAD
	@rm -rf build/dist
	@echo "  $(DIST): login-etl $(VERSION)"

# --- hygiene -------------------------------------------------------------------------------
C_FILES = $(wildcard base/*.[ch] runtime/*.[ch] function/*.[ch] tests/unit/*.[ch] tests/rig/*.[ch] tests/rig/preload/*.c tests/fuzz/*.c tests/bench/*.c)

format:
	clang-format -i $(C_FILES)

format-check:
	clang-format --dry-run --Werror $(C_FILES)

lint:
	cfn-lint template.yaml

clean:
	rm -rf build/release build/asan build/plain build/fuzz build/bootstrap build/function.zip \
	  build/login-etl-*.zip build/login-etl-*.tar.gz build/version.txt \
	  $(foreach a,x86_64 arm64,build/$(a)/release build/$(a)/tests build/$(a)/bootstrap \
	    build/$(a)/function.zip build/$(a)/login-etl-*.zip)

distclean:
	rm -rf build

# The README's two commands in fresh minimal Debian chroots, as a new user runs
# them (root: debootstrap, chroot, mounts).
FRESH_SUITES ?= bookworm trixie
fresh-check:
	tools/fresh-check.sh $(FRESH_SUITES)

# (Not the fresh check's chroots, build/fresh, nor the earlier releases' own
# builds, build/releases: tests/rig/releases.py.)
-include $(shell find build \( -path build/fresh -o -path build/releases \) -prune -o -name '*.d' -type f -print 2>/dev/null)
