#!/bin/sh
# Prints the schedule seed and the step kinds of every whole_stack input in the given files or
# directories (default: seeds/whole_stack), then which step kinds none of them has.
# Needs the target built: cargo +nightly fuzz build whole_stack
set -eu
cd "$(dirname "$0")"
bin=target/x86_64-unknown-linux-gnu/release/whole_stack
[ -x "$bin" ] || { echo "build first: cargo +nightly fuzz build whole_stack" >&2; exit 1; }
[ $# -gt 0 ] || set -- seeds/whole_stack
out=$(mktemp)
for f in $(find "$@" -type f | sort); do
    line=$(WHOLE_STACK_KINDS=1 "$bin" -detect_leaks=0 "$f" 2>&1 | sed -n 's/^whole_stack kinds: //p')
    echo "$f: $line" | tee -a "$out"
done
missing=""
for kind in Guest:Open Guest:Ping Guest:Burst Guest:Notifications Guest:Bulk Guest:Sync \
    Guest:Pause Guest:Resume Guest:Close Guest:NewChannel Guest:HoldAcks Host:Send \
    Host:Message Host:SendExternal Host:Raw Host:Completion Host:Stall Host:Rescind \
    Host:Reoffer Host:CorruptIncomingWriteIndex Host:CorruptOutgoingReadIndex Host:FailNth \
    Host:CompletionStatus Host:DeferExternal During; do
    # A guest operation or host action counts in any step that runs it (Guest:X, During:X[..],
    # Host:Y or inside a During's list).
    name=${kind#*:}
    case $kind in
        Guest:*) pattern="(Guest|During):$name\\b" ;;
        Host:*) pattern="Host:$name\\b|[[,]$name[],]" ;;
        *) pattern="During:" ;;
    esac
    grep -Eq "$pattern" "$out" || missing="$missing $kind"
done
rm -f "$out"
echo "not covered:${missing:- nothing}"
