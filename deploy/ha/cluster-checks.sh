# The checks of cluster-test.sh, sourced by it: `run_checks` once everything settled (uses its
# variables and functions: psql_rw, ACKED, GATEWAYS, KILL_MS, victim, converter_id, DIR, and
# fleet.sh's stored_per_gateway).
# Prints every figure; exits non-zero when a check fails.
# shellcheck shell=bash disable=SC2154

failed=0
fail() { log "FAIL: $*"; failed=1; }

run_checks() {
# --- 1. every acknowledged message of the fleet stored exactly once ------------------------
# Minus what the bootstrap run (relays reporting once) stored.
stored_per_gateway "$DIR/stored-total.txt" CTG
join "$DIR/stored-total.txt" "$DIR/stored-baseline.txt" | awk '{ printf "%s", $1;
    for (i = 2; i <= 7; i++) printf " %d", $i - $(i + 6); print "" }' >"$DIR/stored.txt"
dups=$(stored_twice)
acked_total=0 stored_total=0 readings_total=0 meas_total=0 relay_total=0 rejects_total=0
short=0 extra=0
while read -r s events meas ctr relay rejects partial; do
    acked=${ACKED[$s]:-0}
    stored=$((events + meas + ctr + relay + rejects))
    acked_total=$((acked_total + acked))
    stored_total=$((stored_total + stored))
    readings_total=$((readings_total + ctr))
    meas_total=$((meas_total + meas))
    relay_total=$((relay_total + relay))
    rejects_total=$((rejects_total + rejects + partial))
    if [ "$stored" -lt "$acked" ]; then
        fail "$s: $acked acknowledged, only $stored stored ($events events, $meas measurements, $ctr counter documents, $relay relay states, $rejects rejects)"
        short=$((short + 1))
    elif [ $((stored - acked)) -gt "$MAX_IN_FLIGHT" ]; then
        fail "$s: $stored stored, $acked acknowledged: more than $MAX_IN_FLIGHT in flight"
        extra=$((extra + 1))
    fi
done <"$DIR/stored.txt"
[ "$(wc -l <"$DIR/stored.txt")" -eq "$GATEWAYS" ] || fail "not every gateway counted"
[ "$dups" -eq 0 ] || fail "$dups keys stored twice"
log "fleet: $GATEWAYS gateways; messages acknowledged (PUBACK) $acked_total, stored $stored_total" \
    "(counter documents $readings_total, measurement rows $meas_total, relay states $relay_total," \
    "rejects $rejects_total); gateways short $short, with too many $extra; keys stored twice $dups"

# Journal replays: the killed instance replayed its journal at its restart; a replay that
# failed would leave pending records (checked above: drained) or log errors.
replay_errors=$(cat "$DIR"/h[123]/headend.log | grep -ciE 'ERROR.*(journal|ingest batch)' || true)
retries=$(cat "$DIR"/h[123]/headend.log | grep -ci 'kept in the journal and retried' || true)
# At its restart the killed instance's journal is recovered: records after the checkpoint are
# committed (replayed) before anything new.
replayed=$(grep 'journal recovered' "$DIR/$victim/headend.log" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' \
    | grep -oE 'checkpoint=[0-9]+ last_seq=[0-9]+' || true)
conflicts=$(psql_rw -c "SELECT count(*) FROM ingest_rejects WHERE reason ILIKE '%conflict%'")
log "journals: ingest errors logged $replay_errors, batches retried $retries, conflicting replays $conflicts; journal of $victim at its restart: ${replayed:-not found}"
[ "$replay_errors" -eq 0 ] || fail "ingest errors in the instances' logs"
[ "$conflicts" -eq 0 ] || fail "a replayed record conflicted with what was stored"

# --- 2. relay commands: every one confirmed or ended with a reason -------------------------
awk '{print $5}' "$DIR/commands.log" | sort | uniq -c | sort -rn | tr '\n' ' ' >"$DIR/command-codes.txt"
log "relay command requests (count HTTP status): $(cat "$DIR/command-codes.txt")"
# The reason a command ended is the detail of its final transition (superseded by command N,
# relay reported the other state, expired before delivery, ...).
ended_sql="SELECT c.id, c.status, (SELECT t.detail FROM relay_command_transitions t
    WHERE t.command_id = c.id AND t.status = c.status ORDER BY t.at DESC LIMIT 1) AS detail
    FROM relay_commands c"
psql_rw -F ' ' -c "SELECT status, count(*), count(*) FILTER (WHERE coalesce(detail, '') = '')
    FROM ($ended_sql) e GROUP BY status ORDER BY status" >"$DIR/commands-status.txt"
log "relay commands by status (status count without-reason): $(tr '\n' ';' <"$DIR/commands-status.txt")"
psql_rw -F ' ' -c "SELECT status, regexp_replace(detail, 'command [0-9]+', 'command N'), count(*)
    FROM ($ended_sql) e WHERE status <> 'confirmed' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 8" \
    >"$DIR/commands-reasons.txt"
log "reasons: $(tr '\n' ';' <"$DIR/commands-reasons.txt")"
open=$(psql_rw -c "SELECT count(*) FROM relay_commands WHERE status IN ('awaiting_approval', 'queued', 'sent')")
unexplained=$(psql_rw -c "SELECT count(*) FROM ($ended_sql) e
    WHERE status IN ('failed', 'expired', 'cancelled') AND coalesce(detail, '') = ''")
created=$(grep -c ' 201$' "$DIR/commands.log" || true)
rows=$(psql_rw -c "SELECT count(*) FROM relay_commands")
confirmed=$(psql_rw -c "SELECT count(*) FROM relay_commands WHERE status = 'confirmed'")
log "relay commands: created $created (rows $rows), confirmed $confirmed, still open $open, ended without a reason $unexplained"
[ "$open" -eq 0 ] || fail "$open relay commands left open"
[ "$unexplained" -eq 0 ] || fail "$unexplained relay commands ended without a reason"
[ "$rows" -ge "$created" ] || fail "$created commands created (201), only $rows rows"
[ "$confirmed" -gt 0 ] || fail "no relay command confirmed"

# --- 3. alarms: raised once per crossing, each notification sent once ----------------------
rule=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$DIR/peers/rule.json")
# Crossings of the converter meter's stored voltage, in time order, by the rule's hysteresis:
# above 250 V raises, under 245 V clears.
crossings=$(psql_rw <<SQL
WITH s AS (
    SELECT m.ts, m.u1 FROM measurements m JOIN devices d ON d.id = m.device_id
     WHERE d.gateway_id = $converter_id AND m.u1 IS NOT NULL),
t AS (SELECT ts, u1 FROM s WHERE u1 > 250 OR u1 < 245),
p AS (SELECT ts, u1 > 250 AS high, lag(u1 > 250) OVER (ORDER BY ts) AS was FROM t)
SELECT count(*) FROM p WHERE high AND coalesce(NOT was, true)
SQL
)
samples=$(psql_rw -c "SELECT count(*) FROM measurements m JOIN devices d ON d.id = m.device_id
    WHERE d.gateway_id = $converter_id")
raised=$(psql_rw -c "SELECT count(*) FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id
    WHERE a.rule_id = $rule AND e.kind = 'raised'")
reraised=$(psql_rw -c "SELECT count(*) FROM alarm_events e JOIN alarms a ON a.id = e.alarm_id
    WHERE a.rule_id = $rule AND e.kind = 'reraised'")
outbox=$(psql_rw -c "SELECT count(*) FROM alarm_outbox o JOIN alarms a ON a.id = o.alarm_id
    WHERE a.rule_id = $rule")
outbox_sent=$(psql_rw -c "SELECT count(*) FROM alarm_outbox o JOIN alarms a ON a.id = o.alarm_id
    WHERE a.rule_id = $rule AND o.status = 'sent'")
outbox_doubled=$(psql_rw -c "SELECT count(*) FROM (SELECT event_id FROM alarm_outbox
    GROUP BY event_id, channel HAVING count(*) > 1) d")
psql_rw -c "SELECT o.idempotency_key FROM alarm_outbox o JOIN alarms a ON a.id = o.alarm_id
    WHERE a.rule_id = $rule ORDER BY 1" >"$DIR/outbox-keys.txt"
awk '{print $2}' "$DIR/peers/webhook.log" | sort >"$DIR/sink-keys.txt"
sink_posts=$(wc -l <"$DIR/sink-keys.txt")
sink_distinct=$(sort -u "$DIR/sink-keys.txt" | wc -l)
sink_unmatched=$(sort -u "$DIR/sink-keys.txt" | comm -3 - "$DIR/outbox-keys.txt" | wc -l)
log "alarms: converter samples $samples, crossings above 250 V $crossings, raised $raised," \
    "re-raised (unacknowledged, not notified) $reraised; outbox rows $outbox, sent $outbox_sent," \
    "doubled $outbox_doubled; webhook sink received $sink_posts ($sink_distinct distinct), unmatched $sink_unmatched"
[ "$crossings" -gt 0 ] || fail "the converter's voltage never crossed the threshold"
[ $((raised + reraised)) -eq "$crossings" ] || fail "$crossings crossings but $((raised + reraised)) raises"
[ "$outbox" -eq "$raised" ] || fail "$raised alarms raised but $outbox notifications"
[ "$outbox_sent" -eq "$outbox" ] || fail "$((outbox - outbox_sent)) notifications not sent"
[ "$outbox_doubled" -eq 0 ] || fail "$outbox_doubled events notified twice"
[ "$sink_posts" -eq "$outbox" ] && [ "$sink_distinct" -eq "$outbox" ] && [ "$sink_unmatched" -eq 0 ] \
    || fail "the sink received $sink_posts notifications ($sink_distinct distinct) for $outbox sent"

# --- 4. the converter polled again within the takeover time -------------------------------
next_poll_ms=$(awk -v k="$KILL_MS" '$1 > k && $2 == 1 { print $1; exit }' "$DIR/peers/converter.log")
last_poll_ms=$(awk -v k="$KILL_MS" '$1 <= k && $2 == 1 { t = $1 } END { print t }' "$DIR/peers/converter.log")
gap_db_ms=$(psql_rw -c "SELECT round(extract(epoch FROM min(m.ts) - to_timestamp($KILL_MS / 1000.0)) * 1000)
    FROM measurements m JOIN devices d ON d.id = m.device_id
    WHERE d.gateway_id = $converter_id AND m.ts > to_timestamp($KILL_MS / 1000.0)")
owners=$(psql_rw -c "SELECT owner || ' (token ' || token || ')' FROM leases WHERE name = 'modbus:converter:$converter_id'")
takeover_ms=$((${next_poll_ms:-0} - KILL_MS))
log "converter: poller $victim killed; last poll before the kill $((KILL_MS - ${last_poll_ms:-0})) ms before it," \
    "next poll $takeover_ms ms after it (simulator's log), next stored sample ${gap_db_ms:-none} ms after it;" \
    "lease now held by $owners; limit $TAKEOVER_LIMIT_MS ms"
[ -n "$next_poll_ms" ] || fail "the converter was never polled after the kill"
[ "$takeover_ms" -le "$TAKEOVER_LIMIT_MS" ] || fail "the converter was polled again only after $takeover_ms ms"
[ -n "$gap_db_ms" ] && [ "${gap_db_ms%.*}" -le "$TAKEOVER_LIMIT_MS" ] \
    || fail "no sample stored within $TAKEOVER_LIMIT_MS ms of the kill"

# --- CONNECT throttle behind HAProxy (every gateway comes from HAProxy's address) ----------
throttled=0
for n in 1 2 3; do
    v=$(curl -sf -H "Authorization: Bearer $METRICS_TOKEN" "http://127.0.0.1:1808$n/metrics" \
        | awk '$1 ~ /^headend_auth_throttled/ && /mqtt/ { s += $2 } END { print s + 0 }')
    throttled=$((throttled + ${v%.*}))
done
throttled_logged=$(cat "$DIR"/h[123]/headend.log | grep -c 'MQTT CONNECT throttled' || true)
log "MQTT CONNECTs throttled since the restart: $throttled (log lines over the whole run: $throttled_logged)"

log "run took $((SECONDS - STARTED)) s"
[ "$failed" -eq 0 ] || die "see above"
log "PASS: acknowledged readings stored exactly once, relay commands settled, one raise per crossing and one notification per raise, converter taken over in $takeover_ms ms"
}
