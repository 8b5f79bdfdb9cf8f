#!/usr/bin/env bash
# recommender.sh — a small media recommender on AgentDB's HTTP API, with
# curl only: it registers an agent and a catalogue of 20 titles, then for
# a few hundred simulated visits asks for a decision (recommend_with_policy)
# and reports what the viewer did (record_interaction), and finally shows
# what the agent learned.
#
#   examples/recommender.sh                 against $ADB_URL (default
#                                           http://127.0.0.1:8080), or a
#                                           server it starts itself from
#                                           ./build/agentdb when none answers
#   ROUNDS=1000 ADB_KEY=secret examples/recommender.sh
#
# Simulated viewers: viewer N likes genre N % 3; a liked title is watched
# to 80-100 % and often clicked, any other to 0-30 %.
set -euo pipefail
ADB_URL=${ADB_URL:-http://127.0.0.1:8080}
ROUNDS=${ROUNDS:-600}
VIEWERS=${VIEWERS:-3} # viewer v likes genre v % 3
AGENT=${AGENT:-movies}
GENRES=(drama comedy documentary)
auth=()
[ -n "${ADB_KEY:-}" ] && auth=(-H "Authorization: Bearer $ADB_KEY")

started=""
cleanup() { [ -n "$started" ] && kill "$started" 2>/dev/null; [ -n "${tmp:-}" ] && rm -rf "$tmp"; true; }
trap cleanup EXIT
if ! curl -fs "$ADB_URL/healthz" >/dev/null 2>&1; then
  bin=${ADB_BIN:-./build/agentdb}
  [ -x "$bin" ] || { echo "no server at $ADB_URL and no $bin" >&2; exit 1; }
  tmp=$(mktemp -d)
  "$bin" serve --listen 127.0.0.1:0 --store "sqlite://$tmp/agentdb.db" >"$tmp/out" 2>"$tmp/log" &
  started=$!
  for _ in $(seq 100); do grep -q http:// "$tmp/out" 2>/dev/null && break; sleep 0.1; done
  ADB_URL=$(grep -o 'http://[0-9.:]*' "$tmp/out" | head -1)
  echo "started $bin at $ADB_URL"
fi

api() { # method path [json]
  curl -fsS -X "$1" "${auth[@]}" -H 'Content-Type: application/json' \
       ${3:+--data-binary "$3"} "$ADB_URL$2"
}
field() { # json key -> value of the first "key":"value" or "key":number
  grep -o "\"$2\":\"\{0,1\}[^\",}]*" <<<"$1" | head -1 | sed 's/^"[^"]*":"\{0,1\}//'
}

# 1. The agent: the state is the viewer's device; engagement weights.
api PUT "/v1/agents/$AGENT" '{"algorithm":"beta","context_keys":["device"],
  "reward_weights":{"watch":0.7,"click":0.1,"rating":0.2}}' >/dev/null

# 2. The catalogue: 20 titles in three genres.
items=() ; catalogue=""
for i in $(seq 0 19); do
  items+=("title-$i")
  catalogue+="${catalogue:+,}{\"id\":\"title-$i\",\"metadata\":{\"genre\":\"${GENRES[i % 3]}\"}}"
done
api POST "/v1/agents/$AGENT/actions" "{\"actions\":[$catalogue]}" >/dev/null
candidates=$(printf '"%s",' "${items[@]}"); candidates="[${candidates%,}]"

# The seed's two integration points, over HTTP.
recommend_with_policy() { # user device -> "event_id action"
  local d
  d=$(api POST "/v1/agents/$AGENT/decide" \
      "{\"user_id\":\"$1\",\"candidates\":$candidates,\"context\":{\"device\":\"$2\"},\"k\":5}")
  echo "$(field "$d" event_id) $(field "$d" action)"
}
record_interaction() { # reward_id event_id watch_s duration_s clicked
  api POST "/v1/agents/$AGENT/rewards" \
    "{\"reward_id\":\"$1\",\"event_id\":\"$2\",\"signals\":{\"watch_time_s\":$3,\"duration_s\":$4,\"clicked\":$5}}"
}

# 3. Visits.
liked=0
for r in $(seq 1 "$ROUNDS"); do
  viewer=$((RANDOM % VIEWERS)); device=$([ $((RANDOM % 2)) = 0 ] && echo tv || echo phone)
  read -r event action < <(recommend_with_policy "viewer-$viewer" "$device")
  n=${action#title-}
  if [ $((n % 3)) = $((viewer % 3)) ]; then
    watch=$((80 + RANDOM % 21)); clicked=$([ $((RANDOM % 4)) = 0 ] && echo false || echo true); liked=$((liked + 1))
  else
    watch=$((RANDOM % 31)); clicked=false
  fi
  record_interaction "visit-$r-$event" "$event" "$watch" 100 "$clicked" >/dev/null
  if [ $((r % 100)) = 0 ]; then
    echo "visits $((r - 99))-$r: $liked% of recommendations matched the viewer's taste (random: 33%)"
    liked=0
  fi
done

# 4. What the agent learned about viewer-0 (likes drama: titles 0, 3, 6, ...).
sk=$(field "$(api POST "/v1/agents/$AGENT/decide" \
      "{\"user_id\":\"viewer-0\",\"candidates\":$candidates,\"context\":{\"device\":\"tv\"}}")" state_key)
echo "viewer-0 on tv, posterior per title:"
api GET "/v1/agents/$AGENT/policies/viewer-0?state_key=$sk" | tr '{' '\n' | grep '"action"' |
  sed 's/"action":"\([^"]*\)","n":\([0-9]*\).*"mean":\([0-9.e-]*\).*/  \1  n=\2  mean=\3/' ||
  echo "  (no rewards for this state yet)"
echo "agent:"; api GET "/v1/agents/$AGENT"; echo
