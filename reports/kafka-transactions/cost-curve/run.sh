#!/usr/bin/env bash
# The cost curve of kafka-transactions against transaction size (#16), next to redis-only and
# db-only, on the long-lived services (scripts/services up: one Kafka broker, Redis, Postgres).
# REPS repetitions; within each, the configurations run one after another, in a rotated order
# so no configuration always follows the same one. Build the release binary first
# (scripts/idembench builds it); OUT must not hold earlier runs. Then:
#   python3 reports/kafka-transactions/cost-curve/summarize.py "$OUT"
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/idembench/target}/release/idembench}
OUT=${OUT:-/tmp/kt-curve}
REPS=${REPS:-3}
mkdir -p "$OUT"
common="--partitions 4 --duplicate-rate 0.1 --seed 7 --quiet"
# name:strategy:batch:window-ms
configs=(
  "kt-b1:kafka-transactions:1:0"
  "kt-b10:kafka-transactions:10:0"
  "kt-b100:kafka-transactions:100:0"
  "kt-w10:kafka-transactions:100:10"
  "kt-w100:kafka-transactions:100:100"
  "redis-only:redis-only:1:0"
  "db-only:db-only:1:0"
)
n=${#configs[@]}
for rep in $(seq 1 "$REPS"); do
  for rate in 100 0; do
    trades=$([ "$rate" = 0 ] && echo 3000 || echo 2000)
    warm=$([ "$rate" = 0 ] && echo "" || echo "--warm-up-ms 3000")
    for k in $(seq 0 $((n - 1))); do
      spec=${configs[$(( (k + rep - 1) % n ))]}
      IFS=: read -r name strategy batch window <<<"$spec"
      extra=""
      [ "$batch" != 1 ] && extra="--batch-size $batch"
      [ "$window" != 0 ] && extra="$extra --transaction-interval-ms $window"
      dir="$OUT/rate$rate-$name-r$rep"
      echo "== $dir"
      $BIN run --strategy "$strategy" $extra --rate "$rate" --trades "$trades" $warm $common \
        --out "$dir" > "$dir.log" 2>&1
      echo "rc=$?"
    done
  done
done
