# bnfold — the two commands are `make demo` and `make test`; each installs
# what is missing first.

SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
PYTHON ?= python3
VENV := .venv-crosscheck
RELEASE_BIN := .build/release/bnfold
DEMO_FIXTURE := Fixtures/torch_resnet18.onnx

.PHONY: all deps build release demo test unit-test asan-test crosscheck conformance venv proto bench docs fuzz clean \
	static install uninstall dist wheel package-test

all: release

deps:
	@bash scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product bnfold

# Folds a bundled PyTorch ResNet-18 export, prints the report, keeps the
# fused model in demo-out/ and checks it against the original.
DEMO_OUT := demo-out
demo: release
	@mkdir -p $(DEMO_OUT)
	@echo "$$ $(RELEASE_BIN) $(DEMO_FIXTURE) -o $(DEMO_OUT)/resnet18-fused.onnx"
	@$(RELEASE_BIN) $(DEMO_FIXTURE) -o $(DEMO_OUT)/resnet18-fused.onnx
	@echo
	@echo "$$ $(RELEASE_BIN) check $(DEMO_FIXTURE) $(DEMO_OUT)/resnet18-fused.onnx"
	@$(RELEASE_BIN) check $(DEMO_FIXTURE) $(DEMO_OUT)/resnet18-fused.onnx
	@echo
	@echo "The binary is $(RELEASE_BIN) (make install puts a self-contained one on PATH);"
	@echo "the fused model stays in $(DEMO_OUT)/."

# The whole suite: Swift tests, the same under AddressSanitizer, the
# onnxruntime cross-check of every fixture, the ONNX node suite, then the
# shipped packages (install tree, tarball, wheel) run with the toolchain
# hidden. scripts/run-tests.sh runs every part even after a failure and ends
# with one `N passed, N failed` line over all of them (logs in
# .build/test-logs/).
test:
	@MAKE="$(MAKE)" bash scripts/run-tests.sh

unit-test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --disable-xctest

# The Swift tests built with AddressSanitizer (and LeakSanitizer) in their own
# build directory. The CLI tests run the bnfold found next to the test bundle,
# so the ASan build of the binary is exercised too. A malloc the system
# refuses returns NULL, as without ASan (the runtime's memory budget probes
# large blocks and turns a refusal into an error line). Linked with lld (gold
# warns about every ASan symbol); leaks inside the toolchain's XCTest and
# Foundation are suppressed (scripts/lsan-suppressions.txt).
ASAN_BUILD := .build-asan
# Under ASan, the CLI suites that only check report formats and option
# handling (plain Swift, already run by unit-test) are left out; every suite
# that reads hostile files, writes outputs, or runs the C reader, the
# runtime's unsafe kernels or the tensor code runs.
ASAN_SKIP := BnfoldCLITests\.(CLIConventionTests|StrictAndHintTests|FoldInputBindingTests|CommandLineTests|InspectTests|NodeLabelTests|OutputHygieneTests|AssumeConstantInputsTests|DisguisedConstantsCLITests)
ASAN_FLAGS := --sanitize=address --scratch-path $(ASAN_BUILD) -Xswiftc -use-ld=lld
asan-test: deps
	$(SWIFT) build --build-tests $(ASAN_FLAGS)
	SWIFT_BACKTRACE=enable=no LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan-suppressions.txt:print_suppressions=0 \
	  ASAN_OPTIONS=allocator_may_return_null=1 \
	  $(SWIFT) test --skip-build --disable-xctest --skip '$(ASAN_SKIP)' $(ASAN_FLAGS)

$(VENV)/.installed: Tests/CrossCheck/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r Tests/CrossCheck/requirements.txt
	touch $@

venv: $(VENV)/.installed

# onnxruntime is the oracle: every fixture folded by bnfold must give the
# original's outputs, and every reference-runtime kernel must agree with it;
# `bnfold check` must pass a ResNet-50 folded by onnxruntime's optimizer and
# fail one folded with epsilon = 0.
crosscheck: release venv
	$(VENV)/bin/python Tests/CrossCheck/crosscheck.py --bnfold $(RELEASE_BIN) --fixtures Fixtures
	$(SWIFT) build -c release --product RefRun
	$(VENV)/bin/python Tests/CrossCheck/runtime_oracle.py --refrun .build/release/RefRun
	$(VENV)/bin/python Tests/CrossCheck/check_ort_folded.py --bnfold $(RELEASE_BIN) --scratch bench-out

# The ONNX backend node suite (from the onnx wheel) through the reference
# runtime: counts per operator and a total; fails when a case of
# Tests/Conformance/expected-pass.txt stops passing or a result is wrong
# without a reason in Tests/Conformance/known-wrong.txt.
conformance: release venv
	$(SWIFT) build -c release --product RefRun
	$(VENV)/bin/python Tests/Conformance/conformance.py --refrun .build/release/RefRun

# Regenerates Sources/CONNX from Proto/onnx.proto (needs protoc-c, Debian
# protobuf-c-compiler). The output is committed; builds do not need protoc-c.
proto:
	protoc-c --proto_path=Proto --c_out=Sources/CONNX Proto/onnx.proto
	mv Sources/CONNX/onnx.pb-c.h Sources/CONNX/include/onnx.pb-c.h

bench: release venv
	bash bench/run.sh

# DocC for the library products (the API reference and the "Writing a pass"
# article) into .build/docs/<Target>; needs no network (swift-docc-plugin
# resolves like the other dependencies).
docs: deps
	mkdir -p .build/docs
	for t in GraphPasses ONNXGraph ONNXFile ReferenceRuntime Equivalence; do \
		$(SWIFT) package --allow-writing-to-directory .build/docs generate-documentation --target $$t --warnings-as-errors \
			--disable-indexing --output-path .build/docs/$$t || exit 1; \
	done

# Fuzzes the reader, validation, the passes and the encoder with libFuzzer
# (+ AddressSanitizer) for FUZZ_SECONDS, on a corpus seeded with Fixtures/.
# Crashes land in Fuzz/crashes/; fix them and move the input to
# Fuzz/regressions/, which the test suite replays.
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
fuzz: deps
	bash Fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_JOBS)

# MARK: Packaging
# The shipped binary is a separate release build (its own scratch path, so
# `make release` and the tests are not rebuilt): the Swift standard library,
# Foundation, libprotobuf-c and OpenBLAS linked statically, stripped; it needs
# only glibc, libstdc++ and libgcc_s at run time (scripts/build-static.sh).
PREFIX ?= /usr/local
DESTDIR ?=
STATIC_BUILD := .build-static
SHIP := $(STATIC_BUILD)/ship
DIST := dist

static: deps
	@SWIFT=$(SWIFT) bash scripts/build-static.sh $(STATIC_BUILD)

# The binary and its man page (made from its --help), nothing else.
install: static
	install -d "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(PREFIX)/share/man/man1"
	install -m 0755 $(SHIP)/bnfold "$(DESTDIR)$(PREFIX)/bin/bnfold"
	install -m 0644 $(SHIP)/bnfold.1 "$(DESTDIR)$(PREFIX)/share/man/man1/bnfold.1"

uninstall:
	rm -f "$(DESTDIR)$(PREFIX)/bin/bnfold" "$(DESTDIR)$(PREFIX)/share/man/man1/bnfold.1"

# dist/bnfold-VERSION-linux-ARCH.tar.gz (the install tree) and its .sha256.
dist: static
	@bash scripts/make-dist.sh $(SHIP) $(DIST)

# dist/bnfold-VERSION-py3-none-linux_ARCH.whl: the static binary, the
# `bnfold` console script and the Python API (python/). pip fetches the
# build backend (hatchling, pinned in python/pyproject.toml) from PyPI.
wheel: static
	@mkdir -p $(DIST) && rm -f $(DIST)/bnfold-*.whl
	BNFOLD_BINARY=$(CURDIR)/$(SHIP)/bnfold $(PYTHON) -m pip wheel -q --no-deps --disable-pip-version-check \
	  --wheel-dir $(DIST) ./python
	@ls -1 $(DIST)/bnfold-*.whl

# Builds all three and runs each with /opt/swift hidden (scripts/package-test.sh).
package-test: deps
	@SWIFT=$(SWIFT) PYTHON=$(PYTHON) MAKE="$(MAKE)" bash scripts/package-test.sh

clean:
	rm -rf .build $(DEMO_OUT) $(ASAN_BUILD) $(STATIC_BUILD) $(VENV) $(DIST) python/build
