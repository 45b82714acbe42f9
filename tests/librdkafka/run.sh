#!/usr/bin/env bash
# Runs librdkafka's own integration tests (the tests/ directory of the librdkafka source that the
# rdkafka-sys crate ships) against `weir serve`. Only the tests named in allowlist.txt are run, and
# each must pass. Builds librdkafka and its test runner once into target/librdkafka-build (plain
# TCP: no SSL, SASL, curl or zstd; RapidJSON's headers, if installed, add the statistics tests),
# starts weir on free 127.0.0.1 ports with a fresh data directory, runs each test in its own runner
# with a time limit, a few at a time, and stops weir. Prints PASS/FAIL per test and a last line
# `librdkafka: N passed, M failed`.
#
# allowlist.txt: one test number a line, optionally followed by a librdkafka test scenario
# (`0107 noautocreate`: the tests of that number written for a cluster without topic
# auto-creation, run against a second weir with it off); `#` starts a comment.
#
# Environment: WEIR (binary, default target/debug/weir), LIBRDKAFKA_SRC (source directory, default
# the rdkafka-sys crate's in the cargo registry), LRK_BUILD_DIR (default target/librdkafka-build),
# LRK_ALLOWLIST (default tests/librdkafka/allowlist.txt), LRK_TESTS (entries to run instead of the
# allow-list, `NNNN` or `NNNN:scenario`, space-separated), LRK_JOBS (runners at a time, default 3),
# LRK_TIMEOUT (seconds per test, default 180), LRK_REBALANCE_DELAY_MS (weir's initial rebalance
# delay, default Kafka's 3000, which the group tests expect), LRK_LOG_DIR (keep the per-test and
# weir logs there), RUST_LOG (weir's, default warn).
set -euo pipefail
cd "$(dirname "$0")/../.."
WEIR=${WEIR:-target/debug/weir}
ALLOWLIST=${LRK_ALLOWLIST:-tests/librdkafka/allowlist.txt}
TIMEOUT=${LRK_TIMEOUT:-180}
REBALANCE_DELAY_MS=${LRK_REBALANCE_DELAY_MS:-3000}
BUILD=${LRK_BUILD_DIR:-target/librdkafka-build}
CONFIGURE_FLAGS="--disable-ssl --disable-gssapi --disable-curl --disable-zstd --disable-lz4-ext \
--disable-optimization --no-download --no-cache"

# -- the librdkafka source: that of the rdkafka-sys version in Cargo.lock, in the cargo registry
SRC=${LIBRDKAFKA_SRC:-}
if [ -z "$SRC" ]; then
  ver=$(grep -A1 '^name = "rdkafka-sys"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p' | head -1)
  [ -n "$ver" ] || { echo "rdkafka-sys is not in Cargo.lock"; exit 1; }
  find_src() {
    ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$ver"/librdkafka 2>/dev/null |
      head -1
  }
  SRC=$(find_src)
  if [ -z "$SRC" ]; then
    cargo fetch --locked >/dev/null # downloads the sources, builds nothing
    SRC=$(find_src)
  fi
  [ -n "$SRC" ] || { echo "librdkafka source of rdkafka-sys $ver not found"; exit 1; }
fi
[ -x "$SRC/configure" ] && [ -f "$SRC/tests/test.c" ] || { echo "no librdkafka source at $SRC"; exit 1; }

# -- build, once: a copy of the source, configured and built; the stamp names what was built. With
# RapidJSON's headers (Debian: rapidjson-dev) the tests that parse statistics JSON run too.
rapidjson=no
[ ! -f /usr/include/rapidjson/document.h ] || rapidjson=yes
stamp="$SRC $CONFIGURE_FLAGS rapidjson=$rapidjson"
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
LRK="$BUILD/librdkafka"
TOPICS_SH="$BUILD/kafka/bin/kafka-topics.sh"
start=$(date +%s)
if [ "$(cat "$BUILD/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$LRK/tests/test-runner" ]; then
  echo "== librdkafka: building $SRC in $LRK"
  rm -rf "$LRK" "$BUILD/stamp" "$TOPICS_SH"
  cp -a "$SRC" "$LRK"
  # Its log goes outside the tree: mklove loads every ./configure.* file as a module.
  (cd "$LRK" && ./configure $CONFIGURE_FLAGS) >"$BUILD/configure.out" 2>&1 ||
    { tail -30 "$BUILD/configure.out"; echo "librdkafka configure failed"; exit 1; }
  # Only the libraries and the test runner (whose test.o make always rebuilds, hence the stamp).
  (make -C "$LRK" -j2 libs && make -C "$LRK/tests" -j2 test-runner) >"$BUILD/make.out" 2>&1 ||
    { tail -40 "$BUILD/make.out"; echo "librdkafka build failed"; exit 1; }
  echo "$stamp" >"$BUILD/stamp"
fi
# kafka-topics.sh: some tests create, delete or grow topics with it (through KAFKA_PATH).
if [ ! -x "$TOPICS_SH" ] || [ tests/librdkafka/kafka-topics.c -nt "$TOPICS_SH" ]; then
  mkdir -p "$(dirname "$TOPICS_SH")"
  cc -O0 -Wall -I"$LRK/src" -o "$TOPICS_SH" tests/librdkafka/kafka-topics.c \
    "$LRK/src/librdkafka.a" -lm -lz -ldl -lpthread -lrt
fi
echo "== librdkafka: built in $(($(date +%s) - start))s"

# -- the tests to run: NNNN or NNNN:scenario
if [ -n "${LRK_TESTS:-}" ]; then
  tests=$LRK_TESTS
else
  tests=$(sed -e 's/#.*//' "$ALLOWLIST" | awk 'NF == 1 {print $1} NF == 2 {print $1 ":" $2}')
fi
[ -n "$tests" ] || { echo "no tests to run"; exit 1; }
for t in $tests; do
  [[ $t =~ ^[0-9]{4}(:[a-z0-9]+)?$ ]] || { echo "bad test entry: $t"; exit 1; }
done

# -- weir: one per scenario the tests need. librdkafka's scenarios
# (tests/scenarios/*.json) are clusters with 4 partitions per auto-created topic, with topic
# auto-creation on ("default") or off ("noautocreate"); replication factor 3 cannot be had.
[ -x "$WEIR" ] || cargo build -p weir-broker --bin weir
LOGS=${LRK_LOG_DIR:-$(mktemp -d)}
mkdir -p "$LOGS"
LOGS=$(cd "$LOGS" && pwd)
declare -A PIDS=() DATAS=() CONFS=() BROKERS=()
RUNNING=()
cleanup() {
  local f s
  for f in "$LOGS"/*.pid; do
    [ ! -f "$f" ] || kill "$(cat "$f")" 2>/dev/null || true
  done
  for s in "${RUNNING[@]}"; do
    kill "$s" 2>/dev/null || true
  done
  for s in "${!PIDS[@]}"; do
    kill "${PIDS[$s]}" 2>/dev/null || true
    wait "${PIDS[$s]}" 2>/dev/null || true
    [ -z "${LRK_LOG_DIR:-}" ] || cp "${DATAS[$s]}.out" "$LOGS/weir-$s.log"
    rm -rf "${DATAS[$s]}" "${DATAS[$s]}.out"
  done
  [ -n "${LRK_LOG_DIR:-}" ] || rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_weir() { # scenario
  local s=$1 auto data kafka
  case "$s" in
  default) auto=true ;;
  noautocreate) auto=false ;;
  *) echo "unknown scenario $s"; return 1 ;;
  esac
  data=$(mktemp -d)
  DATAS[$s]=$data
  # Ports 0: the OS picks free ones and weir prints the bound addresses on its first line.
  # Key compaction every 2 s, not 15 s (Kafka's and weir's default): 0077 waits a fixed 20 s after
  # filling the segment, which a 15 s timer plus the compaction itself overran on a loaded machine.
  WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS=$REBALANCE_DELAY_MS WEIR_DEFAULT_PARTITIONS=4 WEIR_AUTO_CREATE_TOPICS=$auto \
    WEIR_KEY_COMPACTION_INTERVAL_MS=2000 \
    RUST_LOG=${RUST_LOG:-warn} "$WEIR" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --data-dir "$data" >"$data.out" 2>&1 &
  PIDS[$s]=$!
  for _ in $(seq 1 300); do
    grep -q '^weir serving' "$data.out" 2>/dev/null && break
    sleep 0.1
  done
  kafka=$(sed -n 's/^weir serving kafka=\([^ ]*\) admin=.*/\1/p' "$data.out")
  [ -n "$kafka" ] || { cat "$data.out"; echo "weir serve did not start"; return 1; }
  # Read by every client the runner creates.
  CONFS[$s]="$LOGS/test-$s.conf"
  BROKERS[$s]=$kafka
  printf 'bootstrap.servers=%s\nbroker.address.family=v4\n' "$kafka" >"${CONFS[$s]}"
}

# TEST_KAFKA_VERSION picks the code paths of version-gated tests: 3.9.0 is the newest Apache Kafka
# whose protocol surface Weir serves (classic consumer groups; 4.0 adds KIP-848 and drops the
# pre-v2 message formats).
export TEST_KAFKA_VERSION=3.9.0
export RDKAFKA_GITVER=weir
unset CI TEST_DEBUG TEST_LEVEL TESTS SUBTESTS TESTS_SKIP TEST_SCENARIO

# -- run: one runner per entry, with all its sub-tests (no -Q: quick mode silently skips most of
# them); -L skips the broker-less (mock cluster) tests that share a number. LRK_JOBS runners at a
# time (librdkafka's own `make` runs its tests in parallel against one cluster too): most tests
# spend their time waiting on timers, not on the CPU.
for t in $tests; do
  s=default
  [ "${t%%:*}" = "$t" ] || s=${t#*:}
  [ -n "${PIDS[$s]:-}" ] || start_weir "$s"
done

# Runs one entry; prints its PASS/FAIL block and leaves PASS or FAIL in $LOGS/<entry>.result.
run_one() {
  local t=$1 num=${1%%:*} scenario=default name=${1/:/-} rc=0 start ran why result
  [ "$num" = "$t" ] || scenario=${t#*:}
  local log="$LOGS/$name.log"
  start=$(date +%s)
  (cd "$LRK/tests" && TESTS=$num RDKAFKA_TEST_CONF=${CONFS[$scenario]} \
    KAFKA_PATH="$BUILD/kafka" BROKERS=${BROKERS[$scenario]} \
    LD_LIBRARY_PATH="$LRK/src:$LRK/src-cpp" \
    exec timeout -k 10 "$TIMEOUT" ./test-runner -p1 -L -s "$scenario") >"$log" 2>&1 &
  echo $! >"$LOGS/$name.pid"
  wait $! 2>/dev/null || rc=$?
  rm -f "$LOGS/$name.pid"
  local secs=$(($(date +%s) - start))
  # A test whose sub-tests were all skipped (not applicable here) showed nothing.
  ran=$(grep -cE '^\|[^|]*[0-9]{4}_[^|]*\|[[:space:]]+PASSED' "$log" || true)
  if [ "$rc" -eq 0 ] && [ "$ran" -gt 0 ]; then
    result=PASS
    echo "PASS $t (${secs}s)" >"$LOGS/$name.report"
  else
    result=FAIL
    why="exit $rc"
    [ "$rc" -ne 124 ] || why="timed out after ${TIMEOUT}s"
    if [ "$rc" -eq 0 ]; then
      why="all sub-tests skipped: $(sed 's/\x1b\[[0-9;]*m//g' "$log" |
        sed -n 's/^| [0-9]\{4\}_[^|]*| *SKIPPED |[^|]*| //p' | sort -u | paste -sd ';')"
    fi
    {
      echo "FAIL $t (${secs}s, $why)"
      # The runner reports `### Test "NAME" failed at FILE:LINE:FUNC() at DATE: ###`, then why.
      sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -A1 '^### Test .* failed at' | grep -v '^--$' |
        head -4 | sed 's/^/    /' || true
    } >"$LOGS/$name.report"
  fi
  echo "$result" >"$LOGS/$name.result"
  cat "$LOGS/$name.report"
}

JOBS=${LRK_JOBS:-3}
start=$(date +%s)
for t in $tests; do
  rm -f "$LOGS/${t/:/-}.result"
  while [ "${#RUNNING[@]}" -ge "$JOBS" ]; do
    wait -n "${RUNNING[@]}" 2>/dev/null || true
    alive=()
    for p in "${RUNNING[@]}"; do
      ! kill -0 "$p" 2>/dev/null || alive+=("$p")
    done
    RUNNING=("${alive[@]}")
  done
  run_one "$t" &
  RUNNING+=($!)
done
wait "${RUNNING[@]}" 2>/dev/null || true
RUNNING=()

passed=0
failed=0
failed_names=""
for t in $tests; do
  if [ "$(cat "$LOGS/${t/:/-}.result" 2>/dev/null)" = PASS ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failed_names="$failed_names $t"
  fi
done
data_mb=0
for s in "${!DATAS[@]}"; do
  data_mb=$((data_mb + $(du -sm "${DATAS[$s]}" | cut -f1)))
done
echo "ran in $(($(date +%s) - start))s, $JOBS at a time; weir stored ${data_mb} MB"
if [ "$failed" -ne 0 ]; then
  for s in "${!DATAS[@]}"; do
    if [ -s "${DATAS[$s]}.out" ]; then
      echo "weir ($s scenario) log, last lines:"
      tail -n 20 "${DATAS[$s]}.out" | sed 's/^/    /'
    fi
  done
  if [ -n "${LRK_LOG_DIR:-}" ]; then
    echo "failed:$failed_names (logs in $LOGS)"
  else
    echo "failed:$failed_names (set LRK_LOG_DIR to keep the logs)"
  fi
fi
echo "librdkafka: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
