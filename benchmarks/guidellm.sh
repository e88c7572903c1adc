#!/usr/bin/env bash
# guidellm (the vLLM project's load tool, PyPI `guidellm` 0.8.x) through FirstToken, offline.
#
#   benchmarks/guidellm.sh [--seconds 30] [--rate 8] [--direct] [--out DIR]
#
# Starts a vLLM-like simulated engine (`firsttoken sim --scenario demo`, its local-a) and
# `firsttoken serve` in front of it, then runs `guidellm run` at a constant rate of
# synthetic chat turns through the router (and with --direct, straight at the engine,
# for comparison). guidellm needs a tokenizer for its synthetic prompts: one is built
# here with the `tokenizers` library (tests/vllm/tinymodel.py), nothing is downloaded
# (HF_HUB_OFFLINE=1). guidellm probes GET /health first, which the router answers as
# vLLM does. Prints guidellm's own tables, then one line per run from its JSON.
#
# guidellm pulls torch (about 6 GB), so it lives in its own venv, not the dev one:
# $GUIDELLM_VENV (default .venv-guidellm), created on first use. The router runs
# from .venv ($FIRSTTOKEN_VENV), as `make install` made it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUIDELLM_VENV=${GUIDELLM_VENV:-$ROOT/.venv-guidellm}
FIRSTTOKEN_VENV=${FIRSTTOKEN_VENV:-$ROOT/.venv}
GUIDELLM_VERSION=0.8.1
SECONDS_OF_LOAD=30
RATE=8
DIRECT=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_OF_LOAD=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --direct) DIRECT=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$GUIDELLM_VENV/bin/guidellm" ]; then
  echo "# creating $GUIDELLM_VENV (guidellm==$GUIDELLM_VERSION and torch: several minutes)"
  python3 -m venv "$GUIDELLM_VENV"
  "$GUIDELLM_VENV/bin/pip" install -q "guidellm==$GUIDELLM_VERSION" tokenizers
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ft-guidellm.XXXXXX")
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
PIDS=()
cleanup() {
  local code=$?
  # TERM: a background job of a script ignores SIGINT
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # the results went to --out; on a failure the logs stay
  if [ "$code" = 0 ] && [ "$OUT" != "$WORK" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Ports below the ephemeral range, reserved against every other pick of ours
# (router/sim/ports.py); the demo's servers take four consecutive ones from B.
read -r ENGINE_PORT ROUTER_PORT < <("$FIRSTTOKEN_VENV/bin/python" - <<'EOF'
from router.sim.ports import free_block, free_port

print(free_block(4)[0], free_port())
EOF
)

"$GUIDELLM_VENV/bin/python" "$ROOT/tests/vllm/tinymodel.py" "$WORK/tokenizer" tokenizer >/dev/null

cat >"$WORK/policy.yaml" <<EOF
server: {host: 127.0.0.1, port: $ROUTER_PORT, drain_s: 0}
targets:
  - name: local-a
    kind: vllm
    base_url: http://127.0.0.1:$ENGINE_PORT/v1
    model: llama-3.1-8b-instruct
routes:
  - {name: chat, targets: [local-a]}
EOF

"$FIRSTTOKEN_VENV/bin/firsttoken" sim --scenario demo --serve --base-port "$ENGINE_PORT" \
  >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
"$FIRSTTOKEN_VENV/bin/firsttoken" serve --config "$WORK/policy.yaml" --log-level warning \
  >"$WORK/router.log" 2>&1 &
PIDS+=($!)

wait_http() {
  for _ in $(seq 1 300); do
    if "$FIRSTTOKEN_VENV/bin/python" -c "import sys, httpx; sys.exit(httpx.get('$1').status_code != 200)" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "$1 did not answer; logs in $WORK" >&2
  exit 1
}
wait_http "http://127.0.0.1:$ENGINE_PORT/v1/models"
wait_http "http://127.0.0.1:$ROUTER_PORT/health"

run() {  # run NAME TARGET_ROOT MODEL
  echo "# guidellm: $1, constant $RATE turns/s for $SECONDS_OF_LOAD s"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$GUIDELLM_VENV/bin/guidellm" run \
    --backend "kind=openai_http,target=$2,model=$3" \
    --profile "kind=constant,rate=$RATE" \
    --constraint "kind=max_duration,seconds=$SECONDS_OF_LOAD" \
    --tokenizer "kind=hf_auto,model=$WORK/tokenizer" \
    --data "kind=synthetic_text,prompt_tokens=64,output_tokens=32" \
    --output "kind=json,path=$OUT/$1.json" \
    --disable-console-interactive
}

run firsttoken "http://127.0.0.1:$ROUTER_PORT" chat
NAMES=(firsttoken)
if [ "$DIRECT" = 1 ]; then
  run direct "http://127.0.0.1:$ENGINE_PORT" llama-3.1-8b-instruct
  NAMES+=(direct)
fi

"$FIRSTTOKEN_VENV/bin/python" - "$OUT" "${NAMES[@]}" <<'EOF'
import json
import sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
print("\n| run | requests ok / errored | req/s | TTFT p50 / p95 ms | ITL p50 ms | output tok/s |")
print("|---|---|---|---|---|---|")
for name in names:
    m = json.loads((out / f"{name}.json").read_text())["benchmarks"][0]["metrics"]
    totals = m["request_totals"]
    ttft = m["time_to_first_token_ms"]["successful"]
    itl = m["inter_token_latency_ms"]["successful"]
    print(
        f"| {name} | {totals['successful']} / {totals['errored']} "
        f"| {m['requests_per_second']['successful']['mean']:.2f} "
        f"| {ttft['median']:.1f} / {ttft['percentiles']['p95']:.1f} "
        f"| {itl['median']:.1f} | {m['output_tokens_per_second']['successful']['mean']:.1f} |"
    )
print(f"\nguidellm's JSON: {out}")
EOF
