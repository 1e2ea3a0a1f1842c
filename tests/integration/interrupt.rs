//! Ctrl-C, as a user sends it: SIGINT to the real `idembench run`. Production stops, the run
//! drains (or abandons, by --on-interrupt), audits, writes a report marked partial and exits
//! 130. Needs the real services (`scripts/services up`).

use std::process::Command;
use std::time::{Duration, Instant};

fn interrupted_run(extra: &[&str]) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_idembench"))
        .args([
            "run", "--quiet", "--trades", "20000", "--rate", "500", "--seed", "61",
        ])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .spawn()
        .expect("idembench starts");
    // Interrupt once messages flow: a few seconds into a 40 s stream.
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: signalling our own child by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = child.wait().expect("idembench exits");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "an interrupted run ends promptly"
    );
    let result = std::fs::read_to_string(out.join("result.json"))
        .expect("an interrupted run still writes result.json");
    (
        status.code().expect("exited, not killed"),
        serde_json::from_str(&result).unwrap(),
    )
}

#[test]
fn ctrl_c_drains_what_was_produced_and_reports_partial() {
    let (code, result) = interrupted_run(&[]);
    assert_eq!(code, 130);
    assert_eq!(result["status"], "partial");
    let reason = result["partial_reason"].as_str().unwrap();
    assert!(reason.contains("drained"), "{reason}");
    let c = &result["correctness"];
    let produced = c["produced_unique"].as_u64().unwrap();
    assert!(
        produced > 0 && produced < 20_000,
        "production stopped early: {produced}"
    );
    assert_eq!(c["lost"], 0, "drained: every produced trade applied");
    assert_eq!(c["exactly_once"], produced);
    assert_eq!(c["identity_holds"], true);
}

#[test]
fn ctrl_c_with_abandon_stops_at_once_and_still_audits() {
    let (code, result) = interrupted_run(&["--on-interrupt", "abandon"]);
    assert_eq!(code, 130);
    assert_eq!(result["status"], "partial");
    let c = &result["correctness"];
    assert_eq!(c["identity_holds"], true);
    assert_eq!(
        c["exactly_once"].as_u64().unwrap() + c["lost"].as_u64().unwrap(),
        c["produced_unique"].as_u64().unwrap(),
        "whatever was not processed is counted, as lost"
    );
}
