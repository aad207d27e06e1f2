//! `Spool::open` on arbitrary spool directories (an `acked` file and up to three segment
//! files cut from the input), then drained, acked, appended to and reopened: never a panic,
//! records come out in seq order, and everything the first open kept survives a reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_appliance::publish::Spool;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    // Layout of the input: [n_acked u8][acked bytes][seg count u8] then per segment
    // [first_seq u8][len u16 LE][bytes]; whatever is left is the last segment.
    let mut d = data;
    let mut take = |n: usize| {
        let (a, b) = d.split_at(n.min(d.len()));
        d = b;
        a
    };
    let n_acked = take(1).first().copied().unwrap_or(0) as usize % 16;
    let acked = take(n_acked).to_vec();
    if !acked.is_empty() {
        std::fs::write(dir.path().join("acked"), &acked).expect("write acked");
    }
    let segs = take(1).first().copied().unwrap_or(1) % 4;
    for i in 0..segs {
        let first = u64::from(take(1).first().copied().unwrap_or(0));
        let len = take(2);
        let len = if i + 1 == segs || len.len() < 2 {
            usize::MAX
        } else {
            usize::from(u16::from_le_bytes([len[0], len[1]]))
        };
        let body = take(len).to_vec();
        std::fs::write(dir.path().join(format!("{first:020}.seg")), body).expect("write seg");
    }
    let Ok(mut s) = Spool::open(dir.path(), 1 << 16) else {
        return;
    };
    let mut seqs = Vec::new();
    while let Ok(Some(r)) = s.next_unsent() {
        seqs.push(r.seq);
        if seqs.len() > 100_000 {
            break;
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    let appended = s.append(false, "fuzz/t", b"x").ok();
    if let Some(&mid) = seqs.get(seqs.len() / 2) {
        s.ack_through(mid).expect("ack");
    }
    s.sync().expect("sync");
    let len = s.len();
    drop(s);
    let mut s = Spool::open(dir.path(), 1 << 16).expect("a spool we wrote reopens");
    assert_eq!(s.dropped(), 0, "nothing torn after a clean close");
    assert_eq!(s.len(), len);
    let mut again = Vec::new();
    while let Ok(Some(r)) = s.next_unsent() {
        again.push(r.seq);
    }
    if let Some(a) = appended {
        assert_eq!(again.last(), Some(&a), "{again:?}");
    }
});
