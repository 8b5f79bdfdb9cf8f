# The user's verbs. Each installs missing Debian packages first.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= $(if $(CI),-DADB_WERROR=ON)

.PHONY: all deps build run simulate test test-asan bench clean format install install-files

PREFIX ?= /usr/local
DESTDIR ?=

all: build

deps:
	@bash scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The main job on the embedded default: the HTTP server over ./data/.
run: build
	./$(BUILD)/agentdb serve

# The learning benchmark: seeded media workload vs baselines.
simulate: build
	./$(BUILD)/agentdb simulate --seed 1

# Unit, conformance, server and fault tests, then the same under ASan+UBSan.
test: deps
	@bash scripts/test.sh all

test-asan: deps
	@bash scripts/test.sh asan

# The binary, both libraries, agentdb.h, agentdb.pc, the man page and the
# docs under $(PREFIX), staged under $(DESTDIR) when given.
install: build
	@$(MAKE) --no-print-directory install-files

# The same from an existing build (what the install test runs).
install-files:
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

bench: build
	@bash scripts/bench.sh $(BUILD)

format:
	clang-format -i include/*.h src/*.[ch] cli/*.[ch] tests/*.[ch] bench/*.c bench/*.cpp

clean:
	rm -rf build build-asan build-tsan data
