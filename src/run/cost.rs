//! What the run cost each part of the system in CPU: this process and the processor
//! processes (from `getrusage`, in [`super::assemble`]), and each service, sampled at the
//! run's start and end — from /proc where the stack knows the service's processes, from
//! Redis's `INFO cpu` where it does not, and otherwise said to be unmeasured, with why.

use std::collections::BTreeMap;

use crate::config::RunConfig;
use crate::results::Resources;
use crate::stack::usage::{self, ServiceUsage, TreeSample};

/// The services' first samples.
pub(super) struct Meter {
    trees: BTreeMap<&'static str, TreeSample>,
    /// `INFO cpu` at the start, for a Redis whose processes are not known.
    redis_info: Option<Result<(f64, f64, usize), String>>,
}

const SERVICES: [&str; 3] = ["redis", "postgres", "kafka"];

/// The processes of each service now, sampled, plus what faults' kills left behind.
fn sample_trees(config: &RunConfig) -> BTreeMap<&'static str, TreeSample> {
    let Some(services) = &config.services else {
        return BTreeMap::new();
    };
    let mut pids: BTreeMap<&'static str, Vec<u32>> = BTreeMap::new();
    for node in services.nodes() {
        pids.entry(node.service).or_default().extend(node.pid);
    }
    pids.into_iter()
        .map(|(service, pids)| {
            let mut sample = usage::sample(&pids);
            let spent = services.spent(service);
            sample.cpu_user_seconds += spent.cpu_user_seconds;
            sample.cpu_system_seconds += spent.cpu_system_seconds;
            (service, sample)
        })
        .collect()
}

impl Meter {
    pub(super) async fn start(config: &RunConfig) -> Meter {
        let trees = sample_trees(config);
        let redis_info = (!trees.contains_key("redis")
            && config.strategy.capabilities().uses_redis)
            .then_some(redis_info(config).await);
        Meter { trees, redis_info }
    }

    /// Fills `resources`' service figures and every part's CPU per message.
    pub(super) async fn finish(self, config: &RunConfig, resources: &mut Resources, messages: u64) {
        let end = sample_trees(config);
        for (service, start) in &self.trees {
            let end = end.get(service).copied().unwrap_or_default();
            resources
                .services
                .insert(service.to_string(), ServiceUsage::between(*start, end));
        }
        match self.redis_info {
            Some(Ok(start)) => match redis_info(config).await {
                Ok(end) => {
                    let round = |x: f64| (x.max(0.0) * 1000.0).round() / 1000.0;
                    resources.services.insert(
                        "redis".into(),
                        ServiceUsage {
                            source: "redis INFO cpu".into(),
                            processes: end.2,
                            cpu_user_seconds: round(end.0 - start.0),
                            cpu_system_seconds: round(end.1 - start.1),
                            pss_mib: None,
                        },
                    );
                }
                Err(cause) => unmeasured(resources, "redis", format!("INFO cpu failed: {cause}")),
            },
            Some(Err(cause)) => unmeasured(resources, "redis", format!("INFO cpu failed: {cause}")),
            None => {}
        }
        for service in SERVICES {
            // Postgres (the audit reads it) and Kafka serve every run.
            let used = service != "redis" || config.strategy.capabilities().uses_redis;
            if used
                && !resources.services.contains_key(service)
                && !resources.services_unmeasured.contains_key(service)
            {
                unmeasured(
                    resources,
                    service,
                    "an external server: its processes are not this machine's to read \
                     (or not known), and it reports no CPU time of its own"
                        .into(),
                );
            }
        }
        if messages == 0 {
            return;
        }
        let per_message = |seconds: f64| {
            let us = seconds * 1e6 / messages.max(1) as f64;
            (us * 10.0).round() / 10.0
        };
        let mut cpu = BTreeMap::new();
        let this = &resources.this_process;
        cpu.insert(
            "idembench".to_string(),
            per_message(this.cpu_user_seconds + this.cpu_system_seconds),
        );
        if let Some(fleet) = &resources.processor_processes {
            cpu.insert(
                "processor_processes".to_string(),
                per_message(fleet.cpu_user_seconds + fleet.cpu_system_seconds),
            );
        }
        for (service, used) in &resources.services {
            cpu.insert(service.clone(), per_message(used.cpu_seconds()));
        }
        resources.cpu_us_per_message = cpu;
    }
}

fn unmeasured(resources: &mut Resources, service: &str, why: String) {
    resources
        .services_unmeasured
        .insert(service.to_string(), why);
}

async fn redis_info(config: &RunConfig) -> Result<(f64, f64, usize), String> {
    crate::redis::admin::cpu_seconds(&config.connections.redis_url, config.connect_timeout())
        .await
        .map_err(|e| e.to_string())
}
