//! Per-message costs that are idembench's own, with no service round trip: encoding and
//! decoding a trade, recording a latency into an HDR histogram, and recording a trace event.
//! They must stay far below the ~0.1 ms of a loopback round trip, or the suite measures itself.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idembench_loadgen::producer::new_histogram;
use idembench_loadgen::{Side, Trade};
use std::hint::black_box;

fn trade() -> Trade {
    Trade {
        trade_id: 123_456,
        account: 42,
        instrument: 7,
        side: Side::Buy,
        copy: 0,
        quantity: 100,
        price: 1_500_000,
        intended_send_us: 1_800_000_000_000_000,
        sent_us: 1_800_000_000_000_050,
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("trade");
    group.throughput(Throughput::Elements(1));
    let mut buffer = Vec::with_capacity(256);
    group.bench_function("encode_256B", |b| {
        b.iter(|| {
            buffer.clear();
            black_box(trade()).encode_into(256, &mut buffer);
            black_box(buffer.len())
        })
    });
    let bytes = trade().encode(256);
    group.bench_function("decode_256B", |b| {
        b.iter(|| Trade::decode(black_box(&bytes)).unwrap())
    });
    group.finish();
}

fn histogram(c: &mut Criterion) {
    let mut histogram = new_histogram();
    let mut value = 1u64;
    c.bench_function("hdr_record", |b| {
        b.iter(|| {
            value = value
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            histogram.saturating_record(black_box(value % 10_000_000 + 1));
        })
    });
}

/// Trace events (`faults::trace`), a handful of which a message records: they must stay far
/// below a round trip too. Each iteration records 1 000 into a fresh buffer.
fn trace(c: &mut Criterion) {
    use idembench::faults::trace::{Trace, What};
    let mut group = c.benchmark_group("trace");
    group.throughput(Throughput::Elements(1_000));
    let mut trade_id = 0u64;
    group.bench_function("record_event", |b| {
        b.iter_batched(
            Trace::default,
            |trace| {
                for _ in 0..1_000 {
                    trade_id += 1;
                    trace.record(
                        black_box(trade_id),
                        1,
                        What::Redis {
                            command: "GET",
                            reply: "nil",
                        },
                    );
                }
                trace
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, codec, histogram, trace);
criterion_main!(benches);
