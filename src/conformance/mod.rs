//! The Kafka conformance suite: what idembench needs of a broker, checked the same way against
//! every candidate (Apache Kafka, librdkafka's mock cluster, an embedded broker). A broker that
//! fails a check here would make a run's counts wrong, so only what passes everything may stand
//! in for Apache Kafka.
//!
//! Every check counts records by id: a record delivered twice, late or never is a failure, not
//! a flake. The crash check abandons a real consumer process (SIGKILL), since any in-process
//! "abandon" still runs librdkafka's background threads, which keep the member alive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// Partitions of the suite's topics.
pub const PARTITIONS: i32 = 4;
/// Longest a consumer close may take and still pass.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    pub candidate: String,
    pub brokers: String,
    pub records: u64,
    pub checks: Vec<Check>,
    /// Records acknowledged per second with acks=all (the produce check).
    pub produce_per_second: Option<f64>,
    /// Records delivered per second to one consumer of a group (the delivery check).
    pub consume_per_second: Option<f64>,
}

impl SuiteReport {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// The names of the checks, in order; the table in `reports/conformance` has one row each.
pub const CHECKS: [&str; 8] = [
    "topic with several partitions",
    "produce with acks=all (and list offsets)",
    "consumer group, manual commits, every record once",
    "resume from committed offsets after a close",
    "resume from committed offsets after an abandoned consumer (SIGKILL)",
    "two consumers split the partitions",
    "seek",
    "consumer close returns within 10 s",
];

/// How the suite creates a topic when the broker's CreateTopics fails (the mock cluster has its
/// own call); the failure is still reported.
pub type TopicFallback<'a> = &'a dyn Fn(&str, i32) -> Result<(), String>;

struct Suite<'a> {
    brokers: String,
    member_exe: &'a Path,
    records: u64,
    run: String,
    fallback: Option<TopicFallback<'a>>,
    /// Copies of each partition the suite's topics are created with.
    replication: i32,
    checks: Vec<Check>,
    close_times: Vec<Duration>,
}

/// Runs every check against `brokers`. `member_exe` is the `idembench` binary (its hidden
/// `conformance-member` command is the consumer the crash check kills).
pub fn run_suite(
    candidate: &str,
    brokers: &str,
    records: u64,
    member_exe: &Path,
    fallback: Option<TopicFallback<'_>>,
) -> SuiteReport {
    run_replicated_suite(candidate, brokers, records, member_exe, fallback, 1)
}

/// [`run_suite`] with topics of `replication` copies each (a cluster candidate).
pub fn run_replicated_suite(
    candidate: &str,
    brokers: &str,
    records: u64,
    member_exe: &Path,
    fallback: Option<TopicFallback<'_>>,
    replication: i32,
) -> SuiteReport {
    let mut suite = Suite {
        brokers: brokers.to_string(),
        member_exe,
        records,
        run: format!("{:08x}", rand::random::<u32>()),
        fallback,
        replication,
        checks: Vec::new(),
        close_times: Vec::new(),
    };
    let topic = suite.topic_name("main");
    suite.check(CHECKS[0], |s| s.create_topic(&topic, true));
    // A topic the candidate's own call made after CreateTopics failed still carries the rest.
    let created = suite.topic_exists(&topic);
    let mut produce_per_second = None;
    let mut consume_per_second = None;
    if created {
        suite.check(CHECKS[1], |s| {
            let rate = s.produce(&topic, records)?;
            produce_per_second = Some(rate.0);
            Ok(rate.1)
        });
        suite.check(CHECKS[2], |s| {
            let (rate, detail) = s.group_delivers_every_record(&topic)?;
            consume_per_second = Some(rate);
            Ok(detail)
        });
        suite.check(CHECKS[3], |s| s.resume_after_close(&topic));
        suite.check(CHECKS[4], |s| s.resume_after_crash(&topic));
        suite.check(CHECKS[5], |s| s.two_consumers_split());
        suite.check(CHECKS[6], |s| s.seek(&topic));
        let closes = suite.close_times.clone();
        suite.check(CHECKS[7], move |_| {
            let slowest = closes.iter().max().copied().unwrap_or_default();
            if closes.is_empty() {
                return Err("no consumer was closed".into());
            }
            let detail = format!(
                "{} closes, slowest {:.2} s",
                closes.len(),
                slowest.as_secs_f64()
            );
            if slowest <= CLOSE_LIMIT {
                Ok(detail)
            } else {
                Err(detail)
            }
        });
    } else {
        for name in &CHECKS[1..] {
            suite.checks.push(Check {
                name: name.to_string(),
                passed: false,
                detail: "not run: no topic".into(),
                seconds: 0.0,
            });
        }
    }
    SuiteReport {
        candidate: candidate.to_string(),
        brokers: brokers.to_string(),
        records,
        checks: suite.checks,
        produce_per_second,
        consume_per_second,
    }
}

type Outcome = Result<String, String>;
/// How often each record id was delivered.
type Seen = HashMap<u64, u32>;
/// The next offset to read, per partition.
type Committed = BTreeMap<i32, i64>;

fn ids_detail(expected: u64, seen: &HashMap<u64, u32>) -> Outcome {
    let missing = (0..expected).filter(|id| !seen.contains_key(id)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    let detail = format!(
        "{} of {expected} delivered, {missing} missing, {twice} more than once",
        seen.len()
    );
    if missing == 0 && twice == 0 && seen.len() as u64 == expected {
        Ok(detail)
    } else {
        Err(detail)
    }
}

fn id_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<u64> {
    let payload = message.payload()?;
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

impl Suite<'_> {
    fn check(&mut self, name: &str, body: impl FnOnce(&mut Self) -> Outcome) {
        let started = Instant::now();
        let outcome = body(self);
        let passed = outcome.is_ok();
        let detail = outcome.unwrap_or_else(|e| e);
        self.checks.push(Check {
            name: name.to_string(),
            passed,
            detail,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    fn topic_name(&self, what: &str) -> String {
        format!("idembench.conformance.{}.{what}", self.run)
    }

    fn config(&self) -> ClientConfig {
        client(&self.brokers)
    }

    fn consumer(&self, group: &str) -> Result<BaseConsumer, String> {
        group_consumer(&self.brokers, group)
    }

    fn topic_exists(&self, topic: &str) -> bool {
        self.partitions_with_leader(topic) == Some(PARTITIONS as usize)
    }

    fn partitions_with_leader(&self, topic: &str) -> Option<usize> {
        let consumer: BaseConsumer = self.config().create().ok()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let topic = metadata.topics().first()?;
        if topic.error().is_some() {
            return None;
        }
        Some(
            topic
                .partitions()
                .iter()
                .filter(|p| p.leader() >= 0 && p.error().is_none())
                .count(),
        )
    }

    /// CreateTopics, then metadata shows every partition with a leader within 30 s.
    fn create_topic(&self, topic: &str, report_fallback: bool) -> Outcome {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = self
            .config()
            .create()
            .map_err(|e| format!("cannot create an admin client: {e}"))?;
        let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(self.replication));
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        let created = futures::executor::block_on(admin.create_topics([&new], &options))
            .map_err(|e| e.to_string())
            .and_then(|results| match results.into_iter().next() {
                Some(Ok(_)) => Ok(()),
                Some(Err((_, code))) => Err(format!("{code:?}")),
                None => Err("no result".into()),
            });
        let mut detail = match &created {
            Ok(()) => "CreateTopics succeeded".to_string(),
            Err(e) => format!("CreateTopics failed: {e}"),
        };
        if created.is_err() {
            match self.fallback {
                Some(fallback) => {
                    fallback(topic, PARTITIONS)?;
                    detail.push_str("; created with the candidate's own call instead");
                }
                None => return Err(detail),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders = self.partitions_with_leader(topic);
            if leaders == Some(PARTITIONS as usize) {
                detail.push_str(&format!("; {PARTITIONS} partitions with a leader"));
                return if created.is_ok() || !report_fallback {
                    Ok(detail)
                } else {
                    Err(detail)
                };
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{detail}; metadata shows {leaders:?} partitions with a leader after 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Produces `count` keyed records (ids 0..count) with acks=all; every one acknowledged, and
    /// the high watermarks sum to `count`. Returns (records per second, detail).
    fn produce(&self, topic: &str, count: u64) -> Result<(f64, String), String> {
        produce_ids(&self.brokers, topic, 0..count).and_then(|(rate, acked)| {
            let consumer: BaseConsumer = self
                .config()
                .create()
                .map_err(|e| format!("cannot create a client: {e}"))?;
            let mut total = 0i64;
            for partition in 0..PARTITIONS {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .map_err(|e| format!("ListOffsets on partition {partition}: {e}"))?;
                total += high - low;
            }
            let detail = format!(
                "{acked} of {count} acknowledged at {rate:.0}/s; watermarks sum to {total}"
            );
            if acked == count && total == count as i64 {
                Ok((rate, detail))
            } else {
                Err(detail)
            }
        })
    }

    /// One group member reads everything; returns (records per second, detail).
    fn group_delivers_every_record(&self, topic: &str) -> Result<(f64, String), String> {
        let consumer = self.consumer(&format!("{}.all", self.topic_name("group")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| format!("subscribe: {e}"))?;
        let mut seen = HashMap::new();
        let mut first = None;
        let deadline = Instant::now() + Duration::from_secs(90);
        while (seen.len() as u64) < self.records && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                first.get_or_insert_with(Instant::now);
                if let Some(id) = id_of(&message) {
                    *seen.entry(id).or_insert(0u32) += 1;
                }
            }
        }
        let rate = self.records as f64 / first.map_or(f64::INFINITY, |f| f.elapsed().as_secs_f64());
        // A little longer: anything delivered twice shows up now.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
                && let Some(id) = id_of(&message)
            {
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .map_err(|e| format!("commit: {e}"))?;
        ids_detail(self.records, &seen).map(|d| (rate, format!("{d}; {rate:.0}/s")))
    }

    /// A reads about half and commits what it processed, then closes; B in the same group must
    /// start at exactly A's committed offsets and read the rest.
    fn resume_after_close(&mut self, topic: &str) -> Outcome {
        let group = format!("{}.close", self.topic_name("group"));
        let a = self.consumer(&group)?;
        a.subscribe(&[topic])
            .map_err(|e| format!("subscribe: {e}"))?;
        let (mut seen, committed) =
            consume_and_commit(&a, self.records / 2, Duration::from_secs(60))?;
        let started = Instant::now();
        close(a)?;
        self.close_times.push(started.elapsed());
        self.resume(topic, &group, &mut seen, &committed)
    }

    /// A child process reads about a third, committing each record, and is killed with SIGKILL
    /// (no close, no leave); a new member must start at exactly the committed offsets once the
    /// dead member's session expires.
    fn resume_after_crash(&mut self, topic: &str) -> Outcome {
        let group = format!("{}.crash", self.topic_name("group"));
        let mut child = std::process::Command::new(self.member_exe)
            .args([
                "conformance-member",
                "--brokers",
                &self.brokers,
                "--topic",
                topic,
            ])
            .args([
                "--group",
                &group,
                "--records",
                &(self.records / 3).to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.member_exe.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        // SIGKILL: the member neither commits again nor leaves the group.
        let _ = child.kill();
        let _ = child.wait();
        read.map_err(|e| format!("reading the member: {e}"))?;
        let report: MemberReport = serde_json::from_str(line.trim())
            .map_err(|e| format!("the member reported {line:?}: {e}"))?;
        let committed: BTreeMap<i32, i64> = report.committed;
        let seen: HashMap<u64, u32> = report.ids.into_iter().map(|id| (id, 1)).collect();
        let mut seen = seen;
        let started = Instant::now();
        let outcome = self.resume(topic, &group, &mut seen, &committed);
        outcome.map(|d| {
            format!(
                "{d}; the new member took over {:.1} s after the kill",
                started.elapsed().as_secs_f64()
            )
        })
    }

    /// Checks the broker holds `committed`, then a new member of `group` reads from exactly
    /// there to the end; together with `seen`, every record exactly once.
    fn resume(
        &mut self,
        topic: &str,
        group: &str,
        seen: &mut HashMap<u64, u32>,
        committed: &BTreeMap<i32, i64>,
    ) -> Outcome {
        let b = self.consumer(group)?;
        let mut wanted = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            wanted.add_partition(topic, partition);
        }
        let stored = b
            .committed_offsets(wanted, Duration::from_secs(10))
            .map_err(|e| format!("reading committed offsets: {e}"))?;
        let stored: BTreeMap<i32, i64> = stored
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        if &stored != committed {
            return Err(format!(
                "the broker holds committed offsets {stored:?}, the consumer committed {committed:?}"
            ));
        }
        b.subscribe(&[topic])
            .map_err(|e| format!("subscribe: {e}"))?;
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match b.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    first.entry(message.partition()).or_insert(message.offset());
                    if let Some(id) = id_of(&message) {
                        *seen.entry(id).or_insert(0) += 1;
                    }
                    quiet_since = Instant::now();
                }
                _ if seen.len() as u64 >= self.records
                    && quiet_since.elapsed() > Duration::from_millis(500) =>
                {
                    break;
                }
                _ => {}
            }
        }
        let started = Instant::now();
        close(b)?;
        self.close_times.push(started.elapsed());
        // A partition the first reader never committed starts at its beginning (0, a new topic).
        let wrong: Vec<String> = first
            .iter()
            .filter_map(|(p, o)| {
                let expected = committed.get(p).copied().unwrap_or(0);
                (expected != *o)
                    .then(|| format!("partition {p} resumed at {o}, committed {expected}"))
            })
            .collect();
        let ids = ids_detail(self.records, seen);
        if !wrong.is_empty() {
            return Err(format!(
                "{}; {}",
                wrong.join(", "),
                ids.unwrap_or_else(|e| e)
            ));
        }
        ids.map(|detail| {
            format!(
                "{} partitions resumed at the committed offsets; {detail}",
                first.len()
            )
        })
    }

    /// Two members of one group: each assigned a disjoint, non-empty share of the partitions;
    /// records produced after both hold their share reach exactly the owner, once.
    fn two_consumers_split(&mut self) -> Outcome {
        let topic = self.topic_name("split");
        self.create_topic(&topic, false)?;
        let group = format!("{}.split", self.topic_name("group"));
        let members = [self.consumer(&group)?, self.consumer(&group)?];
        for member in &members {
            member
                .subscribe(&[&topic])
                .map_err(|e| format!("subscribe: {e}"))?;
        }
        let assigned = |c: &BaseConsumer| -> HashSet<i32> {
            c.assignment()
                .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stable_since: Option<Instant> = None;
        loop {
            for member in &members {
                if let Some(Ok(message)) = member.poll(Duration::from_millis(100)) {
                    return Err(format!(
                        "a record arrived before any was produced: {:?}",
                        message.offset()
                    ));
                }
            }
            let (a, b) = (assigned(&members[0]), assigned(&members[1]));
            let split = !a.is_empty()
                && !b.is_empty()
                && a.is_disjoint(&b)
                && a.len() + b.len() == PARTITIONS as usize;
            match (split, stable_since) {
                (true, None) => stable_since = Some(Instant::now()),
                (true, Some(since)) if since.elapsed() > Duration::from_secs(1) => break,
                (false, _) => stable_since = None,
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!("no disjoint split within 60 s: {a:?} and {b:?}"));
            }
        }
        let shares = [assigned(&members[0]), assigned(&members[1])];
        let count = self.records.min(10_000);
        produce_ids(&self.brokers, &topic, 0..count)?;
        let mut seen = HashMap::new();
        let mut strays = 0;
        let mut per_member = [0u64; 2];
        let deadline = Instant::now() + Duration::from_secs(60);
        while (seen.len() as u64) < count && Instant::now() < deadline {
            for (index, member) in members.iter().enumerate() {
                if let Some(Ok(message)) = member.poll(Duration::from_millis(50)) {
                    if !shares[index].contains(&message.partition()) {
                        strays += 1;
                    }
                    per_member[index] += 1;
                    if let Some(id) = id_of(&message) {
                        *seen.entry(id).or_insert(0) += 1;
                    }
                }
            }
        }
        for member in members {
            let started = Instant::now();
            close(member)?;
            self.close_times.push(started.elapsed());
        }
        let detail = ids_detail(count, &seen);
        let split = format!(
            "partitions {:?} / {:?}, records {} / {}",
            sorted(&shares[0]),
            sorted(&shares[1]),
            per_member[0],
            per_member[1]
        );
        match detail {
            Ok(d) if strays == 0 => Ok(format!("{split}; {d}")),
            Ok(d) | Err(d) => Err(format!("{split}; {strays} to a non-owner; {d}")),
        }
    }

    /// Assign partition 0, seek to its middle and then back to 1: each next record is exactly
    /// the one sought.
    fn seek(&self, topic: &str) -> Outcome {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", format!("{}.seek", self.topic_name("group")))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("cannot create a consumer: {e}"))?;
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .map_err(|e| format!("ListOffsets: {e}"))?;
        if high - low < 10 {
            return Err(format!("partition 0 holds only {} records", high - low));
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Offset(low))
            .map_err(|e| e.to_string())?;
        consumer
            .assign(&assignment)
            .map_err(|e| format!("assign: {e}"))?;
        let next = |consumer: &BaseConsumer| -> Result<i64, String> {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(message)) => return Ok(message.offset()),
                    Some(Err(e)) => return Err(format!("poll: {e}")),
                    None => {}
                }
            }
            Err("no record within 10 s".into())
        };
        let first = next(&consumer)?;
        let mut results = vec![format!("assigned at {low}, got {first}")];
        let mut ok = first == low;
        for target in [low + (high - low) / 2, low + 1] {
            consumer
                .seek(topic, 0, Offset::Offset(target), Duration::from_secs(10))
                .map_err(|e| format!("seek to {target}: {e}"))?;
            let got = next(&consumer)?;
            ok &= got == target;
            results.push(format!("sought {target}, got {got}"));
        }
        drop(consumer);
        if ok {
            Ok(results.join("; "))
        } else {
            Err(results.join("; "))
        }
    }
}

/// Every client of the suite: the brokers, IPv4 (tansu advertises 127.0.0.1), errors only.
fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    config
}

/// A member of `group` with manual commits, from the start of the topic, whose session
/// expires 6 s after it stops heartbeating (the broker's minimum).
fn group_consumer(brokers: &str, group: &str) -> Result<BaseConsumer, String> {
    client(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .map_err(|e| format!("cannot create a consumer: {e}"))
}

fn sorted(set: &HashSet<i32>) -> Vec<i32> {
    let mut v: Vec<i32> = set.iter().copied().collect();
    v.sort();
    v
}

/// Closes a consumer (librdkafka leaves the group) on a thread of its own, so a close that hangs
/// is reported rather than hanging the suite.
fn close(consumer: BaseConsumer) -> Result<(), String> {
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = done.send(());
    });
    wait.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "a consumer close did not return within 30 s".to_string())
}

/// Produces records whose payload is the id (8 bytes, big endian) and whose key spreads them
/// over partitions, with acks=all; returns (acknowledged per second, acknowledged).
fn produce_ids(
    brokers: &str,
    topic: &str,
    ids: std::ops::Range<u64>,
) -> Result<(f64, u64), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    struct Acks(Arc<AtomicU64>, Arc<AtomicU64>);
    impl rdkafka::ClientContext for Acks {}
    impl rdkafka::producer::ProducerContext for Acks {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {
            match result {
                Ok(_) => self.0.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.1.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Acks> = client(brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Acks(acked.clone(), failed.clone()))
        .map_err(|e| format!("cannot create a producer: {e}"))?;
    let started = Instant::now();
    let count = ids.end - ids.start;
    for id in ids {
        let key = format!("account-{}", id % 97);
        let payload = id.to_be_bytes();
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("flush: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} of {count} records failed to deliver"));
    }
    Ok((acked as f64 / seconds, acked))
}

/// Reads until `target` records, committing synchronously every 100 and at the end; returns
/// the ids read and the committed offsets (next offset per partition).
fn consume_and_commit(
    consumer: &BaseConsumer,
    target: u64,
    limit: Duration,
) -> Result<(Seen, Committed), String> {
    let mut seen = HashMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut read = 0u64;
    let deadline = Instant::now() + limit;
    let commit = |next: &BTreeMap<i32, i64>, topic: &str| -> Result<(), String> {
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| e.to_string())?;
        }
        consumer
            .commit(&offsets, CommitMode::Sync)
            .map_err(|e| format!("commit: {e}"))
    };
    let mut topic = String::new();
    while read < target {
        if Instant::now() > deadline {
            return Err(format!("read only {read} of {target} records"));
        }
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            topic = message.topic().to_string();
            next.insert(message.partition(), message.offset() + 1);
            if let Some(id) = id_of(&message) {
                *seen.entry(id).or_insert(0) += 1;
            }
            read += 1;
            if read.is_multiple_of(100) {
                commit(&next, &topic)?;
            }
        }
    }
    commit(&next, &topic)?;
    Ok((seen, next))
}

/// What `idembench conformance-member` prints once it has read and committed its share.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemberReport {
    pub committed: BTreeMap<i32, i64>,
    pub ids: Vec<u64>,
}

/// The consumer the crash check kills: joins `group`, reads `records` records committing as it
/// goes, prints a [`MemberReport`] line and then waits to be killed (heartbeats continue, as a
/// live process's would, until SIGKILL).
pub fn member(brokers: &str, topic: &str, group: &str, records: u64) -> Result<(), String> {
    let consumer = group_consumer(brokers, group)?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| format!("subscribe: {e}"))?;
    let (seen, committed) = consume_and_commit(&consumer, records, Duration::from_secs(60))?;
    let report = MemberReport {
        committed,
        ids: seen.into_keys().collect(),
    };
    println!("{}", serde_json::to_string(&report).expect("serializable"));
    // Not polling any more: librdkafka's own threads keep the membership alive until the kill.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A broker to check.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Candidate {
    /// Apache Kafka at --kafka-brokers.
    Apache,
    /// A 3-broker Apache Kafka cluster (3-voter KRaft quorum) started for the check, topics
    /// replicated 3 times.
    ApacheCluster,
    /// librdkafka's in-process mock cluster (rdkafka::mocking::MockCluster).
    Mock,
    /// The tansu broker embedded in-process with SQLite storage (cargo feature `tansu`).
    Tansu,
}

/// What `idembench conformance` checks.
#[derive(Clone, Debug)]
pub struct ConformanceSettings {
    /// Brokers to check, in table order.
    pub candidates: Vec<Candidate>,
    /// Records produced and counted by each check.
    pub records: u64,
    /// Directory for conformance.json and conformance.md; `None`: reports/conformance/<time>.
    pub out: Option<std::path::PathBuf>,
    /// Apache Kafka's bootstrap servers (the `apache` candidate).
    pub kafka_brokers: String,
}

/// `idembench conformance`: runs the suite against each candidate in turn and writes
/// `conformance.json` and `conformance.md` into the output directory.
pub async fn execute(
    args: ConformanceSettings,
    command: String,
) -> Result<(Vec<SuiteReport>, std::path::PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = args.out.clone().unwrap_or_else(|| {
        std::path::PathBuf::from("reports/conformance")
            .join(crate::config::stamp(std::time::SystemTime::now()))
    });
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut reports = Vec::new();
    for candidate in &args.candidates {
        let records = args.records;
        let report = match candidate {
            Candidate::Apache => {
                let brokers = args.kafka_brokers.clone();
                let exe = exe.clone();
                let version = std::env::var("IDEMBENCH_KAFKA_VERSION").ok();
                let name = match version {
                    Some(v) => format!("Apache Kafka {v}"),
                    None => "Apache Kafka".to_string(),
                };
                tokio::task::spawn_blocking(move || run_suite(&name, &brokers, records, &exe, None))
                    .await
                    .map_err(|e| format!("the suite panicked: {e}"))?
            }
            Candidate::Mock => {
                let exe = exe.clone();
                tokio::task::spawn_blocking(move || {
                    let cluster = rdkafka::mocking::MockCluster::new(1)
                        .map_err(|e| format!("cannot start librdkafka's mock cluster: {e}"))?;
                    let create = |topic: &str, partitions: i32| {
                        cluster
                            .create_topic(topic, partitions, 1)
                            .map_err(|e| format!("MockCluster::create_topic: {e}"))
                    };
                    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
                    Ok::<_, String>(run_suite(
                        &format!("librdkafka {librdkafka} MockCluster"),
                        &cluster.bootstrap_servers(),
                        records,
                        &exe,
                        Some(&create),
                    ))
                })
                .await
                .map_err(|e| format!("the suite panicked: {e}"))??
            }
            Candidate::Tansu => tansu_suite(records, &exe).await?,
            Candidate::ApacheCluster => cluster_suite(records, &exe).await?,
        };
        eprintln!(
            "[idembench] conformance: {} {}",
            report.candidate,
            if report.passed() {
                "passes every check"
            } else {
                "FAILS at least one check"
            }
        );
        reports.push(report);
    }
    let json = serde_json::to_string_pretty(&reports).expect("serializable");
    std::fs::write(dir.join("conformance.json"), json + "\n")
        .map_err(|e| format!("cannot write conformance.json: {e}"))?;
    let env = crate::results::environment::Environment::read();
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let markdown = format!(
        "# Kafka conformance\n\nWhat idembench needs of a broker, checked the same way against each \
         candidate with {} records per check; librdkafka {librdkafka} is the client throughout.\n\n\
         {}\n\
         Machine: {} × {} CPUs, {} GiB, {}; idembench {} at commit {}.\n\n\
         Reproduce: `{command}`\n",
        args.records,
        table(&reports),
        env.cpu_model,
        env.cpus,
        env.memory_gib,
        env.os,
        env.idembench_version,
        env.git_commit,
    );
    std::fs::write(dir.join("conformance.md"), markdown)
        .map_err(|e| format!("cannot write conformance.md: {e}"))?;
    Ok((reports, dir))
}

/// The suite against a 3-broker cluster the stack starts for it (and stops after).
async fn cluster_suite(records: u64, exe: &Path) -> Result<SuiteReport, String> {
    let stack = crate::stack::kafka_cluster(3)
        .await
        .map_err(|e| e.to_string())?;
    let brokers = stack.connections.kafka_brokers.clone();
    let name = match &stack.info.kafka_version {
        Some(version) => format!("Apache Kafka {version}, 3 brokers, RF 3"),
        None => "Apache Kafka, 3 brokers, RF 3".to_string(),
    };
    let exe = exe.to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        run_replicated_suite(&name, &brokers, records, &exe, None, 3)
    })
    .await
    .map_err(|e| format!("the suite panicked: {e}"))?;
    drop(stack);
    Ok(report)
}

#[cfg(not(feature = "tansu"))]
async fn tansu_suite(_records: u64, _exe: &Path) -> Result<SuiteReport, String> {
    Err("this build has no embedded tansu broker: build with `cargo build --release --features tansu`".into())
}

#[cfg(feature = "tansu")]
async fn tansu_suite(records: u64, exe: &Path) -> Result<SuiteReport, String> {
    let broker = crate::stack::tansu::Tansu::start().await?;
    let brokers = broker.bootstrap_servers();
    let exe = exe.to_path_buf();
    let name = format!("tansu {} (SQLite)", crate::stack::tansu::TANSU_VERSION);
    tokio::task::spawn_blocking(move || run_suite(&name, &brokers, records, &exe, None))
        .await
        .map_err(|e| format!("the suite panicked: {e}"))
}

/// The conformance table for `reports/conformance/README.md`: one column per candidate.
pub fn table(reports: &[SuiteReport]) -> String {
    let mut out = String::from("| check |");
    for report in reports {
        out.push_str(&format!(" {} |", report.candidate));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(reports.len()));
    out.push('\n');
    for (index, name) in CHECKS.iter().enumerate() {
        out.push_str(&format!("| {name} |"));
        for report in reports {
            let cell = report.checks.get(index).map_or("not run".to_string(), |c| {
                format!(
                    "{} {}",
                    if c.passed { "pass:" } else { "**FAIL**:" },
                    c.detail
                )
            });
            out.push_str(&format!(" {} |", cell.replace('|', "/")));
        }
        out.push('\n');
    }
    let mut rate_row = |label: &str, rate: fn(&SuiteReport) -> Option<f64>| {
        out.push_str(label);
        for report in reports {
            let cell = rate(report).map_or("—".into(), |r| format!("{r:.0}"));
            out.push_str(&format!(" {cell} |"));
        }
    };
    rate_row("| produce, acks=all (records/s) |", |r| {
        r.produce_per_second
    });
    rate_row("\n| consume, one group member (records/s) |", |r| {
        r.consume_per_second
    });
    out.push_str("\n| **passes everything** |");
    for report in reports {
        out.push_str(if report.passed() {
            " **yes** |"
        } else {
            " **no** |"
        });
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_detail_fails_on_a_missing_or_a_doubled_record() {
        let all: HashMap<u64, u32> = (0..5).map(|id| (id, 1)).collect();
        assert!(ids_detail(5, &all).is_ok());
        let mut doubled = all.clone();
        doubled.insert(3, 2);
        assert_eq!(
            ids_detail(5, &doubled).unwrap_err(),
            "5 of 5 delivered, 0 missing, 1 more than once"
        );
        let mut missing = all;
        missing.remove(&0);
        assert!(ids_detail(5, &missing).is_err());
    }

    #[test]
    fn the_table_has_a_row_per_check_and_says_who_passes() {
        let report = |candidate: &str, passed: bool| SuiteReport {
            candidate: candidate.into(),
            brokers: String::new(),
            records: 1,
            checks: CHECKS
                .iter()
                .map(|name| Check {
                    name: name.to_string(),
                    passed,
                    detail: "x | y".into(),
                    seconds: 0.0,
                })
                .collect(),
            produce_per_second: Some(1000.4),
            consume_per_second: None,
        };
        let table = table(&[report("a", true), report("b", false)]);
        assert_eq!(table.lines().count(), 2 + CHECKS.len() + 3);
        assert!(
            table.contains("| seek | pass: x / y | **FAIL**: x / y |"),
            "{table}"
        );
        assert!(
            table.contains("| **passes everything** | **yes** | **no** |"),
            "{table}"
        );
        assert!(table.contains("| 1000 | 1000 |"), "{table}");
    }
}
