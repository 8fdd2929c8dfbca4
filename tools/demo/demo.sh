#!/bin/sh
# demo.sh — `make demo`: tally end to end on a fresh temporary directory.
# Starts tallyd, creates two tenants, loads a realistic sample for each over
# the protocol, shows the five dashboard queries as tables, shows that one
# tenant's key cannot read the other's data, and stops the server cleanly.
set -eu
BUILD=${BUILD:-build}
EVENTS=${DEMO_EVENTS:-100000}
here=$(cd "$(dirname "$0")" && pwd)
tally="$BUILD/tally"
dir=$(mktemp -d)
port=$((20000 + $$ % 20000))
server="127.0.0.1:$port"
pid=""
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting tallyd on $server with data in $dir/data"
"$BUILD/tallyd" --data "$dir/data" --listen "$server" --metrics off 2> "$dir/tallyd.log" &
pid=$!
i=0
until [ -s "$dir/data/admin.key" ] && "$tally" --server "$server" --key-file "$dir/data/admin.key" stats > /dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat "$dir/tallyd.log"; echo "tallyd did not start" >&2; exit 1; }
	sleep 0.1
done
admin="--server $server --key-file $dir/data/admin.key"

step "creating two tenants (each gets its own API key, shown once)"
acme_key=$("$tally" $admin tenant create acme)
globex_key=$("$tally" $admin tenant create globex)
echo "acme:   ${acme_key%????????????????????????????????????????????????????}... (key)"
echo "globex: ${globex_key%????????????????????????????????????????????????????}... (key)"
"$tally" $admin tenant list

now_us=$(date +%s)000000
step "loading $EVENTS events for each tenant over the protocol (30 days of agent runs)"
awk -v seed=1 -v events="$EVENTS" -v now_us="$now_us" -v prefix=acme -f "$here/sample.awk" > "$dir/acme.jsonl"
awk -v seed=2 -v events="$EVENTS" -v now_us="$now_us" -v prefix=globex -f "$here/sample.awk" > "$dir/globex.jsonl"
"$tally" --server "$server" --key "$acme_key" ingest "$dir/acme.jsonl"
"$tally" --server "$server" --key "$globex_key" ingest "$dir/globex.jsonl"
step "loading acme's file again: every event is a DUPLICATE, nothing is counted twice"
"$tally" --server "$server" --key "$acme_key" ingest "$dir/acme.jsonl"

acme="--server $server --key $acme_key"
step "acme: events, tokens and cost by day, last 7 days (daily_30d, shortened)"
"$tally" $acme query --from -7d --bucket day --agg count,tokens_in,tokens_out,cost_micros
step "acme: events and cost by hour and type, last 6 hours (hourly_type_24h, shortened)"
"$tally" $acme query --from -6h --bucket hour --group-by type --agg count,cost_micros
step "acme: by project and model, 30 days (project_model_30d)"
"$tally" $acme query --bucket none --group-by project,model --agg count,tokens_in,tokens_out,cost_micros --order cost_micros --limit 10
step "acme: latency by agent, 7 days (p95_agent_7d)"
"$tally" $acme query --from -7d --bucket none --group-by agent --agg count,p50_duration_ms,p95_duration_ms,p99_duration_ms
step "acme: daily active users, last 7 days (dau_30d, shortened)"
"$tally" $acme query --from -7d --bucket day --agg distinct_users,errors

step "isolation: acme's key asks for globex's data"
if "$tally" $acme --tenant globex query --bucket none 2> "$dir/refused.txt"; then
	echo "FAILED: acme read globex's data" >&2; exit 1
fi
sed 's/^/  refused: /' "$dir/refused.txt"
echo "acme's own total:   $("$tally" $acme query --bucket none --format csv | tail -1)"
echo "globex's own total: $("$tally" --server "$server" --key "$globex_key" query --bucket none --format csv | tail -1)"

step "server figures (admin)"
"$tally" $admin stats

step "stopping tallyd (SIGTERM: finishes requests, flushes, exits 0)"
kill -TERM "$pid"
wait "$pid"
echo "tallyd exited with status $?"
pid=""
