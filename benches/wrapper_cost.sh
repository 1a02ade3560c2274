#!/usr/bin/env bash
# Instruction counts of the safe layer against raw KMCL calls, over a fake V5 table whose slots
# do no work (benches/wrapper_cost.rs; method and accounting in docs/wrapper-cost.md).
#
#   benches/wrapper_cost.sh [--iterations N] [--runs R] [--breakdown] [--keep DIR] [--check]
#
# Builds the bench in the bench profile (release, plus line tables so that callgrind_annotate
# can name source lines; the machine code is the same), then for each path (safe, raw) and
# operation (send, completion, receive) runs it under `valgrind --tool=callgrind`, collecting
# only inside the function that performs that operation, R times (default 2). Prints
# instructions per operation for both paths and their difference, whether every run gave the
# same count, and whether the measured region called an allocator or lock function.
#
#   --iterations N  operations per run (default 10000)
#   --runs R        runs per measurement, compared for equality (default 2)
#   --breakdown     also print instructions per operation by function (self cost)
#   --keep DIR      keep the callgrind output files in DIR (for callgrind_annotate)
#   --check         exit 1 when an operation costs more than 50 extra instructions
#
# Needs valgrind and callgrind_annotate. Honours CARGO_TARGET_DIR and VALGRIND.
set -euo pipefail

iterations=10000
runs=2
breakdown=0
keep=""
check=0
target=50
while [ $# -gt 0 ]; do
    case "$1" in
        --iterations) iterations=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --breakdown) breakdown=1; shift ;;
        --keep) keep=$2; shift 2 ;;
        --check) check=1; shift ;;
        -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "wrapper_cost.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
valgrind=${VALGRIND:-valgrind}
command -v "$valgrind" >/dev/null || { echo "wrapper_cost.sh: valgrind not found" >&2; exit 1; }
command -v callgrind_annotate >/dev/null || { echo "wrapper_cost.sh: callgrind_annotate not found" >&2; exit 1; }

src_hash() {
    find src -name '*.rs' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12
}
hash_before=$(src_hash)

export CARGO_PROFILE_BENCH_DEBUG=${CARGO_PROFILE_BENCH_DEBUG:-line-tables-only}
bin=$(cargo bench -p vmbus-kmcl --bench wrapper_cost --no-run \
    --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*wrapper_cost[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "wrapper_cost.sh: bench executable not found" >&2; exit 1; }

if [ -n "$keep" ]; then
    out=$keep
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

# The function whose inclusive cost is one operation (see benches/wrapper_cost.rs).
measured_fn() {
    case $2 in
        send) echo "wrapper_cost::$1_send_once" ;;
        completion) echo "wrapper_cost::kmcl_completes" ;;
        receive) echo "wrapper_cost::kmcl_delivers" ;;
    esac
}

# Allocator and lock entry points that must not appear in a measured region.
forbidden='(^|[^A-Za-z0-9_])(malloc|calloc|realloc|free|cfree|posix_memalign|aligned_alloc|__rust_alloc|__rust_dealloc|__rust_realloc|__rust_alloc_zeroed|__rdl_alloc|__rdl_dealloc|pthread_mutex_lock|pthread_mutex_trylock|pthread_spin_lock|pthread_rwlock_rdlock|pthread_rwlock_wrlock|__lll_lock_wait|futex|syscall)([^A-Za-z0-9_]|$)'

declare -A total forbidden_calls
ops="send completion receive"

# Function list of a callgrind file: "count function" per line (self cost, summed over the
# source files a function's inlined code comes from).
functions_of() {
    callgrind_annotate --threshold=100 --show-percs=no "$1" 2>/dev/null |
        awk '/file:function$/ { table = 1; next } table && /^$/ { table = 0; done = 1 } table && !done' |
        sed -n 's/^ *\([0-9,][0-9,]*\)  [^:]*:\(.*\)$/\1 \2/p' |
        sed 's/ \[[^]]*\]$//' |
        awk '{ n = $1; gsub(",", "", n); $1 = ""; sub(/^ /, ""); sum[$0] += n }
             END { for (f in sum) if (sum[f] > 0) print sum[f], f }' |
        sort -rn
}

measure() { # path op run
    local path=$1 op=$2 run=$3
    local file="$out/callgrind.$path.$op.$run.out"
    if ! "$valgrind" --tool=callgrind --collect-atstart=no --dump-instr=yes \
        --toggle-collect="$(measured_fn "$path" "$op")" --callgrind-out-file="$file" \
        "$bin" --path "$path" --iterations "$iterations" >"$out/log.$path.$op.$run" 2>&1; then
        echo "wrapper_cost.sh: the bench failed under callgrind ($path $op); log:" >&2
        cat "$out/log.$path.$op.$run" >&2
        exit 1
    fi
    total[$path,$op,$run]=$(sed -n 's/^totals: *//p' "$file")
    forbidden_calls[$path,$op,$run]=$(functions_of "$file" | cut -d' ' -f2- |
        grep -cE "$forbidden" || true)
}

for run in $(seq 1 "$runs"); do
    for op in $ops; do
        for path in safe raw; do
            measure "$path" "$op" "$run"
        done
    done
done

per_op() { # total -> instructions per operation (exact when divisible)
    awk -v t="$1" -v n="$iterations" 'BEGIN { if (t % n == 0) printf "%d", t / n; else printf "%.2f", t / n }'
}

hash_after=$(src_hash)
echo "wrapper_cost: $iterations operations per run, $runs runs; $("$valgrind" --version);" \
    "$(rustc --version | cut -d' ' -f1-2); src/ sha256 $hash_before"
if [ "$hash_after" != "$hash_before" ]; then
    echo "warning: src/ changed while this ran (now $hash_after); the counts are of the first build"
fi
echo "binary: $bin"
echo
printf '%-11s %8s %8s %8s  %-8s %s\n' operation safe raw extra "<= $target" "heap/lock calls"
over=0
repeat_ok=1
heap_ok=1
for op in $ops; do
    safe=$(per_op "${total[safe,$op,1]}")
    raw=$(per_op "${total[raw,$op,1]}")
    extra=$(awk -v s="$safe" -v r="$raw" 'BEGIN { d = s - r; if (d == int(d)) printf "%d", d; else printf "%.2f", d }')
    verdict=$(awk -v d="$extra" -v t="$target" 'BEGIN { print (d <= t) ? "yes" : "NO" }')
    [ "$verdict" = yes ] || over=1
    calls=0
    for run in $(seq 1 "$runs"); do
        for path in safe raw; do
            calls=$((calls + forbidden_calls[$path,$op,$run]))
            [ "${total[$path,$op,$run]}" = "${total[$path,$op,1]}" ] || repeat_ok=0
        done
    done
    [ "$calls" -eq 0 ] || heap_ok=0
    printf '%-11s %8s %8s %8s  %-8s %s\n' "$op" "$safe" "$raw" "$extra" "$verdict" "$calls"
done
echo
for run in $(seq 1 "$runs"); do
    line="run $run totals:"
    for op in $ops; do
        line="$line $op ${total[safe,$op,$run]}/${total[raw,$op,$run]}"
    done
    echo "$line (safe/raw instructions over $iterations operations)"
done
if [ "$repeat_ok" = 1 ]; then
    echo "repeatable: every run gave identical counts"
else
    echo "NOT repeatable: the runs differ (see the totals above)"
fi
if [ "$heap_ok" = 1 ]; then
    echo "no allocator or lock function was called in any measured region"
else
    echo "an allocator or lock function was called in a measured region (--breakdown shows which)"
fi

if [ "$breakdown" = 1 ]; then
    for op in $ops; do
        for path in safe raw; do
            echo
            echo "$op, $path: instructions per operation by function (self cost)"
            functions_of "$out/callgrind.$path.$op.1.out" |
                awk -v n="$iterations" '{ c = $1; $1 = ""; printf "%8.2f %s\n", c / n, substr($0, 2) }'
        done
    done
fi
if [ -n "$keep" ]; then
    echo
    echo "callgrind files kept in $out (callgrind_annotate --auto=yes FILE for source lines)"
fi

[ "$repeat_ok" = 1 ] && [ "$heap_ok" = 1 ] || exit 1
[ "$check" = 0 ] || [ "$over" = 0 ] || exit 1
