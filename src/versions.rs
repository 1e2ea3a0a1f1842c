//! Versions of what this build links, captured at build time (see `build.rs`).

pub const IDEMBENCH: &str = env!("CARGO_PKG_VERSION");
pub const REDIS_RS: &str = env!("IDEMBENCH_REDIS_RS_VERSION");
pub const FRED: &str = env!("IDEMBENCH_FRED_VERSION");
pub const RDKAFKA: &str = env!("IDEMBENCH_RDKAFKA_VERSION");
pub const SQLX: &str = env!("IDEMBENCH_SQLX_VERSION");
pub const HDRHISTOGRAM: &str = env!("IDEMBENCH_HDRHISTOGRAM_VERSION");
pub const GIT_COMMIT: &str = env!("IDEMBENCH_GIT_COMMIT");
