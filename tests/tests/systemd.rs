//! vigild under a service manager: the test plays systemd's side of sd_notify (a datagram
//! socket in `NOTIFY_SOCKET`, a 400 ms `WATCHDOG_USEC`) and checks that vigild says READY once
//! it scores, pings the watchdog while it does, stops pinging when its scoring loop hangs, and
//! says STOPPING on SIGTERM.
//!
//! The hang is real: the scoring loop runs on vigild's main thread, and the test stops just that
//! thread with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT), as a stuck inference would; the other
//! threads (capture, sink, the notifier) keep running.

mod model_support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::workspace_bin;

const WATCHDOG: Duration = Duration::from_millis(400);

/// Every notification received within `d`.
fn collect(sock: &UnixDatagram, d: Duration) -> Vec<String> {
    let end = Instant::now() + d;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

fn pings(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| m.as_str() == "WATCHDOG=1").count()
}

fn ptrace(req: libc::c_uint, pid: i32) -> i64 {
    // SAFETY: SEIZE/INTERRUPT/DETACH take no pointers (addr and data are 0); pid is our child.
    unsafe { libc::ptrace(req, pid, 0usize, 0usize) }
}

#[test]
fn systemd_ready_watchdog_pings_stop_when_the_scorer_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_support::small_model(dir.path());
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();

    let mut child = Command::new(workspace_bin("vigild"))
        .arg("--model")
        .arg(&model)
        .args(["--source", "synthetic", "--fps", "30"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;

    let start = collect(&sock, Duration::from_secs(3));
    let ready = start.iter().find(|m| m.starts_with("READY=1"));
    let ready = ready.unwrap_or_else(|| panic!("no READY=1 within 3 s: {start:?}"));
    assert!(
        ready.contains("\nSTATUS="),
        "READY without a STATUS: {ready:?}"
    );
    // Half the interval: ~5 pings a second once ready.
    let running = collect(&sock, Duration::from_secs(2));
    assert!(
        pings(&running) >= 6,
        "too few watchdog pings in 2 s: {running:?}"
    );

    assert_eq!(ptrace(libc::PTRACE_SEIZE, pid), 0, "PTRACE_SEIZE vigild");
    assert_eq!(ptrace(libc::PTRACE_INTERRUPT, pid), 0, "PTRACE_INTERRUPT");
    let mut status = 0;
    // SAFETY: waits for our own child's main thread to enter the ptrace stop.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    // A ping already decided when the loop stopped may still come; none after that.
    let _ = collect(&sock, WATCHDOG / 2 + Duration::from_millis(50));
    let hung = collect(&sock, Duration::from_millis(1500));
    assert_eq!(ptrace(libc::PTRACE_DETACH, pid), 0, "PTRACE_DETACH");
    eprintln!(
        "watchdog pings: {} in 2 s running, {} in 1.5 s with the scoring loop stopped",
        pings(&running),
        pings(&hung)
    );
    assert_eq!(
        pings(&hung),
        0,
        "vigild pinged the watchdog with its scoring loop stopped: {hung:?}"
    );
    let resumed = collect(&sock, Duration::from_secs(1));
    assert!(
        pings(&resumed) >= 2,
        "pings did not resume with the loop: {resumed:?}"
    );

    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let end = collect(&sock, Duration::from_secs(3));
    let code = child.wait().unwrap();
    assert!(code.success(), "vigild exited with {code}");
    assert!(
        end.iter().any(|m| m.starts_with("STOPPING=1")),
        "no STOPPING=1 on SIGTERM: {end:?}"
    );
}
