#!/usr/bin/env python3
"""Summarises the cost-curve runs (run.sh) into a Markdown table: min / median / max over the
repetitions of each configuration, per offered rate."""
import json
import pathlib
import re
import statistics
import sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kt-curve")
runs = {}
for result in sorted(list(out.glob("rate*-r*/result.json")) + list(out.glob("runs/rate*-r*/result.json"))):
    m = re.match(r"rate(\d+)-(.+)-r(\d+)$", result.parent.name)
    rate, name = int(m.group(1)), m.group(2)
    runs.setdefault((rate, name), []).append(json.loads(result.read_text()))

ORDER = ["redis-only", "db-only", "kt-b1", "kt-b10", "kt-b100", "kt-w10", "kt-w100"]
LABEL = {
    "redis-only": "redis-only",
    "db-only": "db-only",
    "kt-b1": "kafka-transactions, batch 1",
    "kt-b10": "kafka-transactions, batch 10",
    "kt-b100": "kafka-transactions, batch 100",
    "kt-w10": "kafka-transactions, batch 100, 10 ms window",
    "kt-w100": "kafka-transactions, batch 100, 100 ms window",
}


def spread(values, fmt="{:.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def ms(us):
    return us / 1000.0


print("| offered | configuration | runs | processed msg/s | msg per transaction | "
      "end to end p50 ms | p99 ms | transaction p50 ms | commit_transaction p50 ms | "
      "CPU µs/msg idembench | CPU µs/msg kafka | exactly once / lost / doubled |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for rate in (100, 0):
    for name in ORDER:
        results = runs.get((rate, name), [])
        if not results:
            continue
        kt = [r.get("kafka_transactions") for r in results]
        cpu = [r["resources"].get("cpu_us_per_message", {}) for r in results]
        c = [r["correctness"] for r in results]
        exact = {(x["exactly_once"], x["lost"], x["double_applied"]) for x in c}
        complete = all(r["status"] == "complete" for r in results)
        print("| {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            "unthrottled" if rate == 0 else rate,
            LABEL[name],
            len(results),
            "" if complete else " (partial)",
            spread([r["throughput"]["processed_per_second"] for r in results]),
            spread([t and t["messages_per_transaction"] for t in kt], "{:.2f}") if kt[0] else "–",
            spread([ms(r["latency_us"]["end_to_end_from_intended"]["p50"]) for r in results], "{:.1f}"),
            spread([ms(r["latency_us"]["end_to_end_from_intended"]["p99"]) for r in results], "{:.1f}"),
            spread([t and ms(t["transaction_us"]["p50"]) for t in kt], "{:.1f}") if kt[0] else "–",
            spread([t and ms(t.get("transaction_commit_us", {}).get("p50", 0)) for t in kt], "{:.1f}") if kt[0] else "–",
            spread([x.get("idembench") for x in cpu]),
            spread([x.get("kafka") for x in cpu]),
            " ; ".join(f"{a} / {b} / {d}" for a, b, d in sorted(exact)),
        ))
