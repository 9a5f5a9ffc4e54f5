#!/usr/bin/env bash
# scripts/test.sh: what `make test` runs. Every test against the real
# services, in stages; inside a stage, lanes run at once when the services
# they use allow it:
#
#   setup    services, check, tools                      one after another
#   go-test, then failover-tests                         the shared broker and PostgreSQL stay up; the
#                                                         failover packages run at once, each on its own
#                                                         PostgreSQL pair (beside go-test, measured: go-test
#                                                         went from 217 s to 363 s and an inbox failover
#                                                         test timed out, for 41 s saved)
#   stage 2  chaos-short,      | cluster-tests           the chaos runs restart the shared broker, one run
#            chaos-short-wal,  |                         after another; the cluster tests use their own
#            chaos-skew        |                         three-node cluster (and throwaway databases on the
#                                                        shared PostgreSQL). Measured at 4e111b0: chaos lane
#                                                        214 s + chaos-skew 68 s, cluster-tests 243 s
#   stage 3  fault-tests                                 restarts the shared broker and PostgreSQL: alone
#
# Each phase is timed; the times are printed at the end, or up to the
# failure. The first lane of a stage prints as it goes; the others write to
# a log that is printed when the stage ends. OUTBOXKIT_TEST_SERIAL=1 runs
# every phase one after another, the lanes' output printed live.
set -uo pipefail

MAKE=${MAKE:-make}
GO=${GO:-go}
GOOSE=${GOOSE:?set by the Makefile}
serial=${OUTBOXKIT_TEST_SERIAL:-0}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
total=$SECONDS

# phase NAME CMD... runs CMD and records its time in $logs/times.
phase() {
	local name=$1 t=$SECONDS rc
	shift
	echo "make test: --- $name"
	"$@"
	rc=$?
	if [ $rc = 0 ]; then
		printf '  %-16s %5ds\n' "$name" $((SECONDS - t)) >>"$logs/times"
	else
		printf '  %-16s %5ds FAILED\n' "$name" $((SECONDS - t)) >>"$logs/times"
	fi
	return $rc
}

times() {
	echo "make test: phase times (lanes of one stage overlap):"
	cat "$logs/times"
	printf '  %-16s %5ds\n' total $((SECONDS - total))
}

m() { $MAKE --no-print-directory "$@"; }

go_test() {
	env OUTBOXKIT_GOOSE="$GOOSE" $GO test -race -count=1 -timeout 20m ./... &&
		(cd deploy && $GO test -count=1 ./...) &&
		(cd bench/charts && $GO test -count=1 ./...)
}

# stage NAME LANE1 LANE2: LANE1 and LANE2 are shell functions; LANE2 runs in
# the background with its output in a log, printed after both end.
stage() {
	local name=$1 first=$2 second=$3 rc1 rc2 t=$SECONDS
	if [ "$serial" = 1 ]; then
		$first && $second
		return
	fi
	echo "make test: === $name: $first | $second (the second's output follows when both end)"
	$second >"$logs/$second.log" 2>&1 &
	local pid=$!
	$first
	rc1=$?
	wait $pid
	rc2=$?
	echo "make test: === $name: output of $second"
	cat "$logs/$second.log"
	printf '  %-16s %5ds\n' "($name)" $((SECONDS - t)) >>"$logs/times"
	[ $rc1 = 0 ] && [ $rc2 = 0 ]
}

lane_go_test() { phase go-test go_test; }
lane_failover() { phase failover-tests m failover-tests; }
lane_chaos() {
	phase chaos-short m chaos-short &&
		phase chaos-short-wal m chaos-short-wal &&
		phase chaos-skew m chaos-skew
}
lane_cluster() { phase cluster-tests m cluster-tests; }

if phase services m services &&
	phase check m check &&
	phase tools m goose-cli alerts-test &&
	lane_go_test &&
	lane_failover &&
	stage stage-2 lane_chaos lane_cluster &&
	phase fault-tests m fault-tests; then
	times
	exit 0
fi
times
echo "make test: FAILED (see the phase marked FAILED above)"
exit 1
