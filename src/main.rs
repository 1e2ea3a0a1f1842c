//! `idembench`: build the runtime, hand the command line to [`idembench::cli::main`], exit with
//! its code (the exit codes are documented there and in the README).

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDEMBENCH_LOG")
                .unwrap_or_else(|_| "warn,librdkafka=error,rdkafka=error,sqlx=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(idembench::cli::main());
    // librdkafka threads left behind by an abandoned consumer must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}
