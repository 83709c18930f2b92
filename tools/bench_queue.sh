#!/usr/bin/env bash
# Throughput of the Redis job queue (docs/deploy.md) with 1, 2, 4, ... workers:
# a fresh redis-server (temp dir, AOF appendfsync always) and front end per
# row, N workers, a warm-up job per worker (model load), then JOBS jobs
# submitted at once through the native API; images/s = JOBS / wall time from
# the first submit to the last job done. Prints a Markdown table.
#
# usage: tools/bench_queue.sh DIFFUSE REDIS_SERVER [options]
#   --workers "1 2 4 8"   worker counts (default "1 2 4")
#   --jobs N              timed jobs per row (default 24)
#   --steps S --size PX   per job (default 20 steps, 128 px: the demo model's native size)
#   --model M             model id/path given to workers and front end (default: the demo model)
#   --device D            worker device (default cpu); with cuda every worker shares that GPU
#   --threads T           CPU threads per worker (default: cores / workers, at least 1)
# Example (GPU machine, 16 cores): tools/bench_queue.sh build/diffuse /usr/bin/redis-server --workers "1 2 4 8"
#          (one H100, SD1.5): tools/bench_queue.sh build/diffuse redis-server --workers "1 2" --device cuda:0 \
#                               --model /models/sd15 --size 512 --steps 20 --jobs 16
set -euo pipefail
DIFFUSE=$(readlink -f "${1:?usage: bench_queue.sh DIFFUSE REDIS_SERVER [options]}")
REDIS=${2:?usage: bench_queue.sh DIFFUSE REDIS_SERVER [options]}
shift 2
WORKERS="1 2 4"; JOBS=24; STEPS=20; SIZE=128; MODEL=""; DEVICE=cpu; THREADS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
CORES=$(nproc)
TMP=$(mktemp -d /tmp/bench-queue.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
export OMP_WAIT_POLICY=PASSIVE

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Seconds since the epoch, with milliseconds.
now() { date +%s.%N; }

model_args=()
[ -n "$MODEL" ] && model_args=(--model "$MODEL")

# done_count PORT: the front end's diffuse_jobs{state="done"}.
done_count() { curl -sf "http://127.0.0.1:$1/metrics" | sed -n 's/^diffuse_jobs{state="done"} //p'; }

wait_done() {  # PORT TARGET TIMEOUT_S
  local deadline=$(( $(date +%s) + $3 ))
  while :; do
    local d; d=$(done_count "$1" || echo 0)
    [ "${d:-0}" -ge "$2" ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && { echo "timed out waiting for $2 jobs (done: $d)" >&2; return 1; }
    sleep 0.1
  done
}

submit() {  # PORT SEED
  local model_field=""
  [ -n "$MODEL_ID" ] && model_field="\"model\": \"$MODEL_ID\","
  curl -sf -o /dev/null -X POST "http://127.0.0.1:$1/api/jobs" -H 'Content-Type: application/json' \
    -d "{ $model_field \"prompt\": \"a red circle on a white background\", \"seed\": $2, \"steps\": $STEPS, \"width\": $SIZE, \"height\": $SIZE }"
}

echo "| workers | threads each | device | jobs | wall s | images/s | speed-up |"
echo "|---|---|---|---|---|---|---|"
BASE=""
for N in $WORKERS; do
  T=${THREADS:-$(( CORES / N > 0 ? CORES / N : 1 ))}
  RP=$(free_port)
  D="$TMP/run$N"; mkdir -p "$D/redis"
  "$REDIS" --port "$RP" --bind 127.0.0.1 --dir "$D/redis" --appendonly yes --appendfsync always --save "" \
    --daemonize no > "$D/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "Ready to accept" "$D/redis.log" && break; sleep 0.1; done
  URL="redis://127.0.0.1:$RP/0"
  "$DIFFUSE" serve --port 0 --no-hf-cache --threads 1 --data-dir "$D/front" --queue "$URL" "${model_args[@]}" \
    > "$D/front.log" 2>&1 &
  PIDS+=($!)
  FP=""
  for _ in $(seq 300); do
    FP=$(sed -n 's|.*http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$D/front.log" | head -1)
    [ -n "$FP" ] && break; sleep 0.1
  done
  [ -n "$FP" ] || { cat "$D/front.log" >&2; exit 1; }
  MODEL_ID=""
  if [ -n "$MODEL" ]; then
    # The registry's id of a model: its folder name or file stem (server/model_registry.h).
    MODEL_ID=$(basename "${MODEL%/}"); MODEL_ID=${MODEL_ID%.safetensors}; MODEL_ID=${MODEL_ID%.ckpt}
  fi
  for i in $(seq "$N"); do
    "$DIFFUSE" worker --queue "$URL" --name "w$i" --no-hf-cache --threads "$T" --device "$DEVICE" "${model_args[@]}" \
      > "$D/w$i.log" 2>&1 &
    PIDS+=($!)
  done
  # Warm-up: one job per worker (each loads the model once).
  for i in $(seq "$N"); do submit "$FP" "$i"; done
  wait_done "$FP" "$N" 600
  t0=$(now)
  for i in $(seq "$JOBS"); do submit "$FP" $(( 1000 + i )); done
  wait_done "$FP" $(( N + JOBS )) 3600
  t1=$(now)
  wall=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  ips=$(python3 -c "print(f'{$JOBS / ($t1 - $t0):.3f}')")
  [ -z "$BASE" ] && BASE=$ips
  speed=$(python3 -c "print(f'{$ips / $BASE:.2f}x')")
  echo "| $N | $T | $DEVICE | $JOBS | $wall | $ips | $speed |"
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
done
