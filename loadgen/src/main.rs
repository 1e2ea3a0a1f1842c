//! `loadgen`: produce a seeded trade stream into an existing topic, on its own (for multi-host
//! runs, or to feed a consumer other than idembench's). Prints a JSON summary and can write the
//! ledger as CSV (`trade_id,account,instrument,signed_quantity,copies_acked`).

use std::io::Write;

use clap::Parser;
use idembench_loadgen::{SendSettings, StreamSpec, produce};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Produce a seeded, open-loop trade stream into Kafka"
)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "IDEMBENCH_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    kafka_brokers: String,
    /// Topic to produce into (it must exist).
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 10_000)]
    trades: u64,
    /// Messages per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    #[arg(long, default_value_t = 0.1)]
    duplicate_rate: f64,
    #[arg(long, default_value_t = 0.0)]
    late_duplicate_share: f64,
    #[arg(long, default_value_t = 1_000)]
    late_duplicate_delay_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    key_skew: f64,
    #[arg(long, default_value_t = 1_000)]
    accounts: u32,
    #[arg(long, default_value_t = 20)]
    instruments: u32,
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of trades followed by a malformed (non-trade) message.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    #[arg(long, default_value_t = 1)]
    linger_ms: u32,
    /// Send records without a key, for comparisons with producers that send none (Kafka's
    /// ProducerPerformance): per-account order is lost, so not for feeding a processor.
    #[arg(long)]
    no_keys: bool,
    /// Write the ledger here as CSV.
    #[arg(long)]
    ledger_csv: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(message) = run(args).await {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let spec = StreamSpec {
        trades: args.trades,
        accounts: args.accounts,
        instruments: args.instruments,
        duplicate_rate: args.duplicate_rate,
        late_duplicate_share: args.late_duplicate_share,
        late_duplicate_delay_ms: args.late_duplicate_delay_ms,
        key_skew: args.key_skew,
        payload_bytes: args.payload_bytes,
        seed: args.seed,
        malformed_rate: args.malformed_rate,
    };
    let plan = spec.plan().map_err(|e| e.to_string())?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", args.linger_ms.to_string())
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("cannot create a producer for {}: {e}", args.kafka_brokers))?;
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let settings = SendSettings {
        topic: args.topic.clone(),
        rate: args.rate,
        copies: Default::default(),
        acked: None,
        unkeyed: args.no_keys,
    };
    let report = produce(&producer, &settings, &spec, &plan, &cancel)
        .await
        .map_err(|e| e.to_string())?;
    let ledger = &report.ledger;
    if ledger.copies_sent() == 0 && ledger.copies_failed > 0 {
        return Err(format!(
            "the broker acknowledged none of {} messages: does topic {} exist on {}?",
            ledger.copies_failed, args.topic, args.kafka_brokers
        ));
    }
    if let Some(path) = &args.ledger_csv {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let write = |out: &mut std::io::BufWriter<std::fs::File>| -> std::io::Result<()> {
            writeln!(
                out,
                "trade_id,account,instrument,signed_quantity,copies_acked"
            )?;
            for (trade, copies) in ledger.trades() {
                writeln!(
                    out,
                    "{},{},{},{},{copies}",
                    trade.trade_id,
                    trade.account,
                    trade.instrument,
                    trade.signed_quantity()
                )?;
            }
            out.flush()
        };
        write(&mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let summary = serde_json::json!({
        "topic": args.topic,
        "produced_unique": ledger.produced_unique(),
        "copies_sent": ledger.copies_sent(),
        "copies_failed": ledger.copies_failed,
        "malformed_sent": ledger.malformed_acked,
        "seconds": report.elapsed.as_secs_f64(),
        "produced_per_second": ledger.copies_sent() as f64 / report.elapsed.as_secs_f64().max(1e-9),
        "send_ack_p99_us": report.send_ack_us.value_at_quantile(0.99),
        "cancelled": report.cancelled,
    });
    println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
    Ok(())
}
