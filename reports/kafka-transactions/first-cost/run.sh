#!/usr/bin/env bash
# Preliminary cost of kafka-transactions against redis-only and db-only, on the long-lived
# services (scripts/services up: one Kafka broker, Redis, Postgres), one run each, in order.
# Build first (scripts/idembench builds the release binary); OUT must not hold earlier runs.
set -u
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/idembench/target}/release/idembench}
OUT=${OUT:-/tmp/kt-cost}
mkdir -p "$OUT"
common="--partitions 4 --duplicate-rate 0.1 --seed 7 --quiet"
for rate in 100 0; do
  trades=$([ "$rate" = 0 ] && echo 4000 || echo 2500)
  warm=$([ "$rate" = 0 ] && echo "" || echo "--warm-up-ms 3000")
  for spec in "kafka-transactions:1" "kafka-transactions:10" "kafka-transactions:100" "redis-only:1" "db-only:1" "db-only:10"; do
    s=${spec%%:*}; b=${spec##*:}
    name="rate${rate}-${s}-b${b}"
    batch=""; [ "$b" != 1 ] && batch="--batch-size $b"
    echo "== $name"
    $BIN run --strategy $s $batch --rate $rate --trades $trades $warm $common --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    echo "rc=$?"; grep -E "throughput|end-to-end|transactions|correctness|oracle" "$OUT/$name.log" | head -6
  done
done
