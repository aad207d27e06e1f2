//! vigild killed while it publishes: the broker (mosquitto, persistence on) is frozen with
//! SIGSTOP while vigild replays a line, vigild finishes scoring and is SIGKILLed while it waits
//! for the broker, the broker resumes, and a second vigild on the same spool delivers what the
//! first one scored. Write-ahead delivery (docs/mqtt.md, "What survives what") promises that a
//! crash of vigild loses nothing that was scored before it, so every frame id of the first run
//! must arrive; duplicates are allowed (at least once) and printed.

mod model_support;

mod mqtt_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mqtt_support::{free_port, wait_until, Mosquitto, Subscriber};
use vigil_host::data::write_line;
use vigil_shared::messages::FrameResult;
use vigil_shared::synth::SurfaceKind;
use vigil_tests::workspace_bin;

const FRAMES: u64 = 60;
const FPS: f64 = 10.0;
const SIZE: usize = 32;

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid is a child of this test.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// First-run results (from the line's files, not the second run's synthetic source) by
/// frame id, with how often each arrived.
fn first_run(sub: &Subscriber, topic: &str) -> BTreeMap<u64, usize> {
    let mut by_id = BTreeMap::new();
    for m in sub.on(topic) {
        let r: FrameResult = serde_json::from_slice(&m.payload).expect("a FrameResult");
        if !r.source.starts_with("synthetic:") {
            *by_id.entry(r.frame_id).or_insert(0) += 1;
        }
    }
    by_id
}

#[test]
fn mqtt_sigkill_while_the_broker_is_frozen_loses_no_scored_result() {
    let dir = tempfile::tempdir().unwrap();
    let line = dir.path().join("line");
    write_line(
        &line,
        SurfaceKind::BrushedMetal,
        FRAMES as usize,
        SIZE,
        1,
        0.2,
        1,
    )
    .unwrap();
    // Any model will do: this test counts deliveries, not verdicts.
    let model = model_support::small_model(dir.path());

    let mut broker = Mosquitto::new(dir.path(), free_port());
    broker.start();
    let device = "crash";
    let topic = format!("vigil/{device}/cam0/result");
    // Persistent: the broker keeps queueing for it if its connection drops during the freeze.
    let sub = Subscriber::start(broker.port, "crash-sub", &topic, true);
    assert!(sub.wait_connected(Duration::from_secs(10)));
    let spool = dir.path().join("spool");
    let vigild = |source: &str, frames: u64, fps: f64| {
        let mut c = Command::new(workspace_bin("vigild"));
        c.arg("--model")
            .arg(&model)
            .args(["--source", source])
            .args(["--frames", &frames.to_string(), "--fps", &fps.to_string()])
            .arg("--broker")
            .arg(format!("mqtt://127.0.0.1:{}", broker.port))
            .args(["--device-id", device, "--camera", "cam0", "--masks", "all"])
            .arg("--spool-dir")
            .arg(&spool)
            .stdin(Stdio::null());
        c
    };

    let mut first = vigild(&format!("folder:{}", line.display()), FRAMES, FPS)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || first_run(&sub, &topic).len()
            >= 5),
        "vigild's first results never arrived; broker log:\n{}",
        broker.log()
    );
    let frozen_at = Instant::now();
    let before = first_run(&sub, &topic).len();
    signal(broker.child_pid().unwrap(), libc::SIGSTOP);
    // Paced at FPS, the rest of the line is scored well within this; vigild then waits for
    // the frozen broker (its drain timeout is 5 s) and is killed while it waits.
    let rest = (FRAMES as f64 - before as f64).max(0.0) / FPS;
    std::thread::sleep(Duration::from_secs_f64(rest + 2.0));
    let exited_by_itself = first.try_wait().unwrap().is_some();
    signal(first.id(), libc::SIGKILL);
    let _ = first.wait();
    eprintln!(
        "broker frozen {:.1} s after {before} results; vigild killed{}",
        frozen_at.elapsed().as_secs_f64(),
        if exited_by_itself {
            " (it had already exited)"
        } else {
            ""
        }
    );
    assert!(
        !exited_by_itself,
        "vigild exited before the kill: nothing was tested"
    );
    signal(broker.child_pid().unwrap(), libc::SIGCONT);

    // The second run scores a few synthetic frames and, on the same spool, sends the first
    // run's backlog before them.
    let out = vigild("synthetic", 3, 0.0).output().unwrap();
    assert!(
        out.status.success(),
        "second vigild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), || {
        first_run(&sub, &topic).len() as u64 >= FRAMES
    });
    let got = first_run(&sub, &topic);
    let lost: Vec<u64> = (0..FRAMES).filter(|i| !got.contains_key(i)).collect();
    let dups: usize = got.values().map(|n| n - 1).sum();
    eprintln!(
        "SIGKILL while the broker was frozen: {} of {FRAMES} scored results arrived, {} lost \
         {lost:?}, {dups} duplicates",
        got.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "a crash of vigild must lose no scored result (write-ahead); lost {lost:?}"
    );
    assert!(got.keys().all(|&i| i < FRAMES), "unknown frame ids {got:?}");
}
