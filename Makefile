# engagehub: the two commands of the README's quick start are `make demo` and `make test`.
# Both set themselves up: scripts/setup.sh installs what is missing into the project
# (.tools/: cbindgen, cargo-fuzz; .venv/: cmake and the Python packages), and the
# project-local folders come first on PATH for every recipe.
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/.venv/bin:$(PATH)
CARGO    ?= cargo
PYTHON   ?= python3
CBINDGEN ?= cbindgen
CBINDGEN_VERSION := 0.29.4
NIGHTLY  ?= nightly
export NIGHTLY
SETUP    := $(CURDIR)/scripts/setup.sh
BUILD    := build
LIBNAME  := libengagehub.so
FUZZ_TARGETS := snapshot sketch_bytes leaderboard_ops journal

.PHONY: demo test lint header check-header rust-test loom-test lib-debug lib-release \
        c-test py-test typecheck py-ext py-fast bench bench-python bench-shared-faults bench-journal bench-history clean install uninstall \
        fuzz-smoke fuzz-explore fuzz-run asan-test tsan-test setup-rust setup-cbindgen setup-venv setup-demo \
        setup-nightly setup-fuzz setup-cc setup-services setup-test wheel wheel-test

setup-rust setup-cbindgen setup-venv setup-nightly setup-fuzz setup-cc setup-services:
	@$(SETUP) $(patsubst setup-%,%,$@)
setup-demo:
	@$(SETUP) demo-venv

## Build the release library and run the main job (the demo). Options go in ARGS,
## e.g. `make demo ARGS="--events 100000 --resume"` (`ARGS=--help` lists them). Each
## run writes into a new folder of its own, ./engagehub-demo/run-*/ (the newest five
## are kept), so demos running at the same time never share a file.
ARGS ?=
demo: setup-demo lib-release
	@$(PYTHON) python/engagehub/_build_cffi.py --fast-only --optional --out python/engagehub
	ENGAGEHUB_LIB=$(CURDIR)/target/release/$(LIBNAME) PYTHONPATH=$(CURDIR)/python \
		$(PYTHON) -m engagehub demo $(ARGS)

## Everything CI checks, one suite after another: set-up, formatting and lints, header
## drift, Rust, loom, C (ctest), Python (pytest), types (mypy). scripts/run-suites.sh
## stops at the first failure and prints each suite's time at the end. (PostgreSQL
## and redis-server are installed when root; .ci/run starts PostgreSQL.)
TEST_SUITES := setup=setup-test lint=lint header=check-header rust=rust-test loom=loom-test \
	c=c-test python=py-test types=typecheck
test:
	@MAKE="$(MAKE)" $(CURDIR)/scripts/run-suites.sh $(TEST_SUITES)

## What the suites install when missing (scripts/setup.sh), timed as a suite of its own.
setup-test:
	@$(SETUP) rust cbindgen venv cc services

lint: setup-rust
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Regenerate include/engagehub.h from the Rust sources.
header: setup-cbindgen
	$(CBINDGEN) --config cbindgen.toml --crate engagehub --output include/engagehub.h

## Fail if the committed header differs from a fresh generation by the pinned cbindgen.
check-header: setup-cbindgen
	@$(CBINDGEN) --version | grep -q " $(CBINDGEN_VERSION)$$" || \
		{ echo "need cbindgen $(CBINDGEN_VERSION): cargo install cbindgen --version $(CBINDGEN_VERSION) --locked"; exit 1; }
	@mkdir -p $(BUILD)
	@$(CBINDGEN) --config cbindgen.toml --crate engagehub --output $(BUILD)/engagehub.h 2>/dev/null
	@diff -u include/engagehub.h $(BUILD)/engagehub.h && echo "header: up to date" || \
		{ echo "include/engagehub.h is stale: run 'make header' and commit it"; exit 1; }

rust-test:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

## Model-check the lock-free ring and the flush barrier with loom (own target dir:
## different cfg; the loom profile: see Cargo.toml).
loom-test:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --profile loom --lib -- \
		pipeline::ring pipeline::barrier

lib-debug:
	$(CARGO) build

lib-release:
	$(CARGO) build --release

c-test: setup-cc setup-venv lib-debug
	cmake -S tests/c -B $(BUILD)/c -DENGAGEHUB_LIB_DIR=$(CURDIR)/target/debug > /dev/null
	cmake --build $(BUILD)/c -j2
	ctest --test-dir $(BUILD)/c --output-on-failure

## ENGAGEHUB_EXPECT_FAST: tests fail unless the fast paths (update_user, push_event,
## push_many, batch delivery) are in use. Then the binding and differential tests
## on every other CPython 3.9+ found (scripts/pythons.sh: each absent one of
## 3.9-3.13 is skipped with one line), 3.12+ all on the one abi3 fast module.
py-test: setup-venv lib-debug py-fast
	ENGAGEHUB_EXPECT_FAST=1 ENGAGEHUB_LIB=$(CURDIR)/target/debug/$(LIBNAME) \
		PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q -rs tests/python
	ENGAGEHUB_LIB=$(CURDIR)/target/debug/$(LIBNAME) PYTHON=$(PYTHON) $(CURDIR)/scripts/pythons.sh test

## mypy --strict over every Python example of the README and docs/ and over
## tests/typing/wrong_calls.py, whose marked lines must each be refused
## (tests/typing/check_types.py).
typecheck: setup-venv
	$(PYTHON) tests/typing/check_types.py

## Criterion benchmarks (release) and the Python benchmark script.
bench:
	$(CARGO) bench

bench-python: py-ext
	PYTHONPATH=$(CURDIR)/python $(PYTHON) benches/python_bench.py

## Issue 20's figures (rebase latency, publish rates), before/after in one run:
## BASELINE_REF is the commit to compare with (built under build/baseline-REF).
BASELINE_REF ?= 72550a4
bench-shared-faults: setup-venv lib-release
	$(PYTHON) benches/shared_faults_bench.py --baseline-ref $(BASELINE_REF) $(ARGS)

## Issue 23's figures: what journal= costs against no journal, in one run.
bench-journal: py-ext
	PYTHONPATH=$(CURDIR)/python $(PYTHON) benches/journal_bench.py $(ARGS)

## Issue 22's figures: the daily history's push cost, queries, memory, SQL side by side.
bench-history: py-ext
	PYTHONPATH=$(CURDIR)/python $(PYTHON) benches/history_bench.py $(ARGS)

## Compile the fast paths (engagehub._engagehub_fast, no Rust needed) for $(PYTHON)
## into python/engagehub/ (warnings are errors); it serves the cffi API and ABI modes
## alike. `make test` builds it for every CPython found (scripts/pythons.sh).
py-fast: setup-venv
	$(PYTHON) python/engagehub/_build_cffi.py --fast-only --out python/engagehub

## Compile the cffi API-mode module (release static library linked in) and the fast
## path into python/engagehub/.
py-ext: setup-venv lib-release
	$(PYTHON) python/engagehub/_build_cffi.py --header include/engagehub.h \
		--staticlib target/release/libengagehub.a --out python/engagehub

## The manylinux2014 (glibc 2.17) x86_64 wheel, cp39-abi3, into dist/: zig and
## cargo-zigbuild (PyPI, into .venv/) build it, auditwheel checks and tags it
## (scripts/wheel.sh; the fast module: one abi3 file for CPython 3.12+, built with the
## headers of a 3.12+ found here, and one per version for each 3.9-3.11 found here).
wheel:
	@$(CURDIR)/scripts/wheel.sh build

## Installs dist/'s wheel into fresh venvs of the oldest and newest CPython found and
## runs scripts/wheel_smoke.py in each (skips, saying why, with fewer than two;
## EH_REQUIRE_WHEEL=1 makes that a failure). Run `make wheel` first.
wheel-test:
	@$(CURDIR)/scripts/wheel.sh test

## Each cargo-fuzz target (fuzz/, nightly), deterministically (what CI runs): the
## seeds of fuzz/seeds.py plus every reproducer kept under fuzz/regressions/<target>/
## are replayed, then FUZZ_RUNS inputs (default 200000; leaderboard_ops, whose every
## input drives a board against a model, 8000) mutated with the fixed FUZZ_SEED
## (default 1), so a run finds what the last one found and nothing new.
## A finding is saved under fuzz/artifacts/<target>/ and fails the run. Logs in
## build/fuzz/. `make fuzz-explore` is the random search for sessions (below).
FUZZ_RUNS ?= 200000
FUZZ_RUNS_leaderboard_ops ?= 8000
FUZZ_SEED ?= 1
fuzz-smoke: setup-fuzz
	@$(PYTHON) fuzz/seeds.py $(BUILD)/fuzz/seeds
	@FUZZ_MODE="-seed=$(FUZZ_SEED)" FUZZ_PLAN="$(foreach t,$(FUZZ_TARGETS),$(t):$(or $(FUZZ_RUNS_$(t)),$(FUZZ_RUNS)))" \
		CORPUS=$(BUILD)/fuzz/seeds $(MAKE) -s fuzz-run

## The random search: each target for FUZZ_SECONDS (default 300) from fuzz/corpus/
## (kept between runs, git-ignored). Commit what it finds: the fix, and the input
## under fuzz/regressions/<target>/ so that fuzz-smoke replays it from then on.
FUZZ_SECONDS ?= 300
fuzz-explore: setup-fuzz
	@$(PYTHON) fuzz/seeds.py fuzz/corpus
	@FUZZ_MODE="-max_total_time=$(FUZZ_SECONDS)" FUZZ_PLAN="$(FUZZ_TARGETS)" CORPUS=fuzz/corpus $(MAKE) -s fuzz-run

fuzz-run:
	@mkdir -p $(BUILD)/fuzz
	$(CARGO) +$(NIGHTLY) fuzz build --fuzz-dir fuzz --debug-assertions
	@for plan in $$FUZZ_PLAN; do \
		t=$${plan%%:*}; runs=; case $$plan in *:*) runs=-runs=$${plan#*:};; esac; \
		dict=; [ -f fuzz/$$t.dict ] && dict=-dict=fuzz/$$t.dict; \
		log=$(BUILD)/fuzz/$$t.log; \
		regressions=; [ -d fuzz/regressions/$$t ] && regressions=fuzz/regressions/$$t; \
		if $(CARGO) +$(NIGHTLY) fuzz run --fuzz-dir fuzz --debug-assertions $$t $$CORPUS/$$t $$regressions -- \
			$$FUZZ_MODE $$runs -timeout=60 -rss_limit_mb=3072 -print_final_stats=1 \
			$$dict > $$log 2>&1; then \
			echo "fuzz $$t: $$(grep -Eo '^Done [0-9]+ runs in [0-9]+ second' $$log | tail -n 1)s, no finding"; \
		else \
			tail -n 60 $$log; echo "fuzz $$t: FAILED (log $$log; reproducer under fuzz/artifacts/$$t/)"; exit 1; \
		fi; \
	done

## The library built with -Zsanitizer=address / thread (nightly), the C tests linked
## against it with -fsanitize=..., and the Rust pipeline stress test under the same
## sanitizer (scripts/sanitizer-test.sh; target/asan, target/tsan).
asan-test: setup-nightly setup-cc setup-venv
	@$(CURDIR)/scripts/sanitizer-test.sh address
tsan-test: setup-nightly setup-cc setup-venv
	@$(CURDIR)/scripts/sanitizer-test.sh thread

clean:
	rm -rf $(BUILD)
	$(CARGO) clean

## Install the C library: header, shared + static library and a pkg-config file.
## `make install PREFIX=/opt/eh`; DESTDIR stages (packaging); LIB_DIR picks the cargo
## output folder to install (default target/release, built first; any other folder,
## e.g. LIB_DIR=target/debug, is installed as it is, without building).
## The shared library is installed as lib/libengagehub.so.<version> with the links
## lib/$(SONAME) (its SONAME, what programs load) and lib/libengagehub.so (what -l
## finds). SOVERSION follows build.rs: the major version, or 0.<minor> while it is 0.x.
## `make uninstall` with the same PREFIX and DESTDIR removes those files again
## (directories are left, as automake does).
PREFIX  ?= /usr/local
DESTDIR ?=
LIB_DIR ?= target/release
VERSION := $(shell awk -F'"' '/^\[/ { pkg = ($$0 == "[package]") } pkg && /^version *=/ { print $$2; exit }' Cargo.toml)
VERSION_MAJOR := $(word 1,$(subst ., ,$(VERSION)))
VERSION_MINOR := $(word 2,$(subst ., ,$(VERSION)))
SOVERSION := $(if $(filter 0,$(VERSION_MAJOR)),0.$(VERSION_MINOR),$(VERSION_MAJOR))
SONAME  := $(LIBNAME).$(SOVERSION)
INSTALL ?= install
READELF ?= readelf
INSTALL_LIB := $(DESTDIR)$(PREFIX)/lib
INSTALLED_FILES := $(DESTDIR)$(PREFIX)/include/engagehub.h \
	$(INSTALL_LIB)/$(LIBNAME).$(VERSION) $(INSTALL_LIB)/$(SONAME) $(INSTALL_LIB)/$(LIBNAME) \
	$(INSTALL_LIB)/libengagehub.a $(INSTALL_LIB)/pkgconfig/engagehub.pc

install: $(if $(filter target/release $(CURDIR)/target/release,$(LIB_DIR)),lib-release)
	@for f in $(LIB_DIR)/$(LIBNAME) $(LIB_DIR)/libengagehub.a; do \
		[ -f "$$f" ] || { echo "install: $$f not found: build it (cargo build, or LIB_DIR=target/release)"; exit 1; }; \
	done
	@command -v $(READELF) >/dev/null || { echo "install: $(READELF) not found (binutils): it checks the library's SONAME"; exit 1; }
	@soname=$$($(READELF) -d $(LIB_DIR)/$(LIBNAME) | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p'); \
	if [ "$$soname" != "$(SONAME)" ]; then \
		echo "install: $(LIB_DIR)/$(LIBNAME) has SONAME '$$soname', expected $(SONAME) (a build older than build.rs, or another version: rebuild it)"; \
		exit 1; \
	fi
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/include $(INSTALL_LIB)/pkgconfig
	$(INSTALL) -m 644 include/engagehub.h $(DESTDIR)$(PREFIX)/include/engagehub.h
	$(INSTALL) -m 755 $(LIB_DIR)/$(LIBNAME) $(INSTALL_LIB)/$(LIBNAME).$(VERSION)
	ln -sfn $(LIBNAME).$(VERSION) $(INSTALL_LIB)/$(SONAME)
	ln -sfn $(SONAME) $(INSTALL_LIB)/$(LIBNAME)
	$(INSTALL) -m 644 $(LIB_DIR)/libengagehub.a $(INSTALL_LIB)/libengagehub.a
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' engagehub.pc.in \
		> $(INSTALL_LIB)/pkgconfig/engagehub.pc
	@echo "installed engagehub $(VERSION) ($(SONAME)) into $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(INSTALLED_FILES)
	@echo "uninstalled engagehub $(VERSION) from $(DESTDIR)$(PREFIX)"
