# engagehub: the two commands of the README's quick start are `make demo` and `make test`.
CARGO    ?= cargo
PYTHON   ?= python3
CBINDGEN ?= cbindgen
CBINDGEN_VERSION := 0.29.4
BUILD    := build
LIBNAME  := libengagehub.so

.PHONY: demo test lint header check-header rust-test loom-test lib-debug lib-release \
        c-test py-test py-ext py-fast bench bench-python clean install

## Build the release library and run the main job (the demo).
demo: lib-release
	@$(PYTHON) python/engagehub/_build_cffi.py --fast-only --optional --out python/engagehub
	ENGAGEHUB_LIB=$(CURDIR)/target/release/$(LIBNAME) PYTHONPATH=$(CURDIR)/python \
		$(PYTHON) -m engagehub demo

## Everything CI checks: formatting, lints, header drift, Rust, loom, C (ctest), Python (pytest).
test: lint check-header rust-test loom-test c-test py-test
	@echo "make test: all suites passed"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Regenerate include/engagehub.h from the Rust sources.
header:
	$(CBINDGEN) --config cbindgen.toml --crate engagehub --output include/engagehub.h

## Fail if the committed header differs from a fresh generation by the pinned cbindgen.
check-header:
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
## different cfg).
loom-test:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --lib -- \
		pipeline::ring pipeline::barrier

lib-debug:
	$(CARGO) build

lib-release:
	$(CARGO) build --release

c-test: lib-debug
	cmake -S tests/c -B $(BUILD)/c -DENGAGEHUB_LIB_DIR=$(CURDIR)/target/debug > /dev/null
	cmake --build $(BUILD)/c -j2
	ctest --test-dir $(BUILD)/c --output-on-failure

## ENGAGEHUB_EXPECT_FAST: tests fail unless the fast paths (update_user, push_event,
## push_many, batch delivery) are in use.
py-test: lib-debug py-fast
	ENGAGEHUB_EXPECT_FAST=1 ENGAGEHUB_LIB=$(CURDIR)/target/debug/$(LIBNAME) \
		PYTHONPATH=$(CURDIR)/python $(PYTHON) -m pytest -q tests/python

## Criterion benchmarks (release) and the Python benchmark script.
bench:
	$(CARGO) bench

bench-python: py-ext
	PYTHONPATH=$(CURDIR)/python $(PYTHON) benches/python_bench.py

## Compile the fast paths (engagehub._engagehub_fast, no Rust needed) into
## python/engagehub/; it serves the cffi API and ABI modes alike.
py-fast:
	$(PYTHON) python/engagehub/_build_cffi.py --fast-only --out python/engagehub

## Compile the cffi API-mode module (release static library linked in) and the fast
## path into python/engagehub/.
py-ext: lib-release
	$(PYTHON) python/engagehub/_build_cffi.py --header include/engagehub.h \
		--staticlib target/release/libengagehub.a --out python/engagehub

clean:
	rm -rf $(BUILD)
	$(CARGO) clean

## Install the C library: header, shared + static library and a pkg-config file.
## `make install PREFIX=/opt/eh`; DESTDIR stages (packaging); LIB_DIR picks the cargo
## output folder to install (default target/release, built first; any other folder,
## e.g. LIB_DIR=target/debug, is installed as it is, without building).
PREFIX  ?= /usr/local
DESTDIR ?=
LIB_DIR ?= target/release
VERSION := $(shell awk -F'"' '/^\[/ { pkg = ($$0 == "[package]") } pkg && /^version *=/ { print $$2; exit }' Cargo.toml)
INSTALL ?= install

install: $(if $(filter target/release $(CURDIR)/target/release,$(LIB_DIR)),lib-release)
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	$(INSTALL) -m 644 include/engagehub.h $(DESTDIR)$(PREFIX)/include/engagehub.h
	$(INSTALL) -m 755 $(LIB_DIR)/$(LIBNAME) $(DESTDIR)$(PREFIX)/lib/$(LIBNAME)
	$(INSTALL) -m 644 $(LIB_DIR)/libengagehub.a $(DESTDIR)$(PREFIX)/lib/libengagehub.a
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' engagehub.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/engagehub.pc
	@echo "installed engagehub $(VERSION) into $(DESTDIR)$(PREFIX)"
