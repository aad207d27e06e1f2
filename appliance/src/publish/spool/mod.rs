//! Bounded on-disk spool: an ordered log of MQTT messages waiting for the broker.
//!
//! Layout: `DIR/<first_seq:020>.seg` segment files, each a run of records
//! `[len u32 LE][crc32 u32 LE][body]`, body = `[seq u64 LE][retain u8][topic_len u16 LE][topic][payload]`,
//! and `DIR/acked` (`[seq u64 LE][crc32 u32 LE]`): every record with a smaller seq was
//! acknowledged by the broker (PubAck) and is deleted logically; whole segments below it are
//! deleted from disk. Within a segment, seqs are consecutive from `first_seq`.
//!
//! Guarantees and their limits:
//! - Order: records are read back in append (seq) order; [`Spool::rewind`] restarts from the
//!   oldest unacknowledged record after a lost connection.
//! - Bounded: when an append would exceed `max_bytes`, whole oldest segments are deleted and
//!   their unacknowledged records added to [`Spool::dropped`] (segments are `max_bytes / 8`,
//!   so at most an eighth of the spool goes at once). Never silent.
//! - Durability: writes go straight to the file (no user-space buffer), so a killed process
//!   loses nothing; [`Spool::sync_data`] (the publisher calls it every 100 ms while records
//!   come in) fsyncs the tail segment, so a power cut loses at most those last records.
//!   [`Spool::sync`] (every second and on exit) also rewrites the `acked` file (write, fsync,
//!   rename, directory fsync),
//!   so after a crash the records acknowledged in the last second before it are delivered
//!   again: the one at-least-once edge. The directory is fsynced after a segment is created,
//!   so a synced segment does not vanish with its directory entry in a power cut.
//! - Faults are counted, never silent, all in [`Spool::dropped`] (`spool_dropped` in the
//!   stats): a failed append (disk full, I/O error) is cut back off the segment so the log
//!   stays readable and the next append can succeed, and the record is counted; a torn or
//!   corrupt record found when the spool opens is cut off with what follows it in its
//!   segment, counted and logged with the file's name; a segment file that is corrupt from its
//!   first byte is counted and removed; a record found corrupt while reading is skipped with
//!   the rest of its segment and counted, so publishing never stalls on it.
//! - Not detectable: a power cut that reverts a segment to an earlier record boundary (records
//!   appended since the last [`Spool::sync`]); that is the sync interval's loss above.

mod error;
mod format;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use error::io_err;
pub use error::{report, SpoolError};
pub use format::scan_records;
use format::{
    crc32, list_segments, read_acked, read_record, remove_segment, salvage_end, scan_prefix,
    segment_path, sync_dir, HEADER, MAX_RECORD,
};

/// A spooled MQTT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub retain: bool,
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Records in the file (acknowledged or not).
    records: u64,
    bytes: u64,
    path: PathBuf,
}

impl Segment {
    /// One past the last seq in the file.
    fn end(&self) -> u64 {
        self.first_seq + self.records
    }
}

/// Where the next unsent record is.
#[derive(Debug, Clone, Copy)]
struct ReadPos {
    /// Index into `segments`.
    seg: usize,
    offset: u64,
    /// The seq of the record at `offset`.
    seq: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Open for append: the last segment.
    tail: Option<File>,
    /// Set when a failed append could not be cut back off the tail: its good length. No
    /// record is written after the garbage until the cut succeeds.
    tail_uncut: Option<u64>,
    next_seq: u64,
    /// All records below this seq are acknowledged.
    acked: u64,
    /// The next record to hand out by [`Spool::next_unsent`] has seq >= this.
    read_seq: u64,
    read_pos: Option<ReadPos>,
    bytes: u64,
    dropped: u64,
    /// Records below this were already counted as lost by a corrupt-record skip.
    skipped_through: u64,
    failed_in_a_row: u64,
    dirty: bool,
    acked_dirty: bool,
    /// Tests: the next append writes only this many bytes, then fails with ENOSPC.
    #[cfg(test)]
    fail_next_write: Option<usize>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`, recovering what a previous run left: torn or
    /// corrupt records are cut off and counted in [`Spool::dropped`].
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        if max_bytes < 4096 {
            return Err(SpoolError::TooSmall { max_bytes });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked = read_acked(dir);
        let firsts = list_segments(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).max(2048),
            segments: VecDeque::new(),
            tail: None,
            tail_uncut: None,
            next_seq: acked,
            acked,
            read_seq: acked,
            read_pos: None,
            bytes: 0,
            dropped: 0,
            skipped_through: 0,
            failed_in_a_row: 0,
            dirty: false,
            acked_dirty: false,
            #[cfg(test)]
            fail_next_write: None,
        };
        for (i, &first) in firsts.iter().enumerate() {
            spool.recover_segment(first, firsts.get(i + 1).copied())?;
        }
        spool.rewind();
        Ok(spool)
    }

    /// Takes one segment file into the spool: cuts what is not whole records, counting the
    /// unacknowledged records that goes with it, and removes files with nothing left to send.
    fn recover_segment(&mut self, first: u64, next_first: Option<u64>) -> Result<(), SpoolError> {
        let path = segment_path(&self.dir, first);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let s = scan_prefix(&mut f, first).map_err(io_err(&path))?;
        if s.good < s.len {
            // The records the cut takes: up to the next segment's first (segments follow on
            // without gaps), or for the last segment up to the highest whole record after
            // the cut (at least the torn one).
            let expected = s.last.map_or(first, |l| l + 1);
            let end = match next_first {
                Some(n) => n,
                None => salvage_end(&mut f, s.good, s.len)
                    .map_err(io_err(&path))?
                    .unwrap_or(0)
                    .max(expected + 1),
            };
            let lost = end.saturating_sub(expected.max(self.acked));
            self.dropped += lost;
            log_warn!(
                "spool {}: cutting {} byte(s) of torn or corrupt records at byte {}: \
                 {lost} unacknowledged record(s) lost, counted in spool_dropped",
                path.display(),
                s.len - s.good,
                s.good
            );
            f.set_len(s.good).map_err(io_err(&path))?;
            f.sync_data().map_err(io_err(&path))?;
        }
        match s.last {
            Some(last) if last >= self.acked => {
                self.next_seq = self.next_seq.max(last + 1);
                self.bytes += s.good;
                self.segments.push_back(Segment {
                    first_seq: first,
                    records: s.records,
                    bytes: s.good,
                    path,
                });
            }
            // Empty, fully acknowledged, or nothing whole in it (counted above).
            _ => remove_segment(&path)?,
        }
        Ok(())
    }

    /// Unacknowledged records (sent or not).
    pub fn len(&self) -> u64 {
        self.next_seq - self.acked.min(self.next_seq)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes on disk, acknowledged records of live segments included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Unacknowledged records lost since the spool was opened, all counted here: deleted
    /// because the spool was full, appends that failed (disk full, I/O error) or could never
    /// fit, and torn or corrupt records cut at open or skipped while reading.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    /// True when every record has been handed out by [`Spool::next_unsent`].
    pub fn all_sent(&self) -> bool {
        self.read_seq >= self.next_seq
    }

    /// Appends a record (not yet sent); returns its seq. On failure the record is counted in
    /// [`Spool::dropped`] and the segment is left as it was before the append.
    pub fn append(&mut self, retain: bool, topic: &str, payload: &[u8]) -> Result<u64, SpoolError> {
        let r = self.try_append(retain, topic, payload);
        if r.is_err() {
            self.dropped += 1;
        }
        r
    }

    /// [`Spool::append`] without counting a failure in [`Spool::dropped`]: for a caller that
    /// still holds the message and delivers it another way (or counts it with
    /// [`Spool::count_dropped`]).
    pub fn try_append(
        &mut self,
        retain: bool,
        topic: &str,
        payload: &[u8],
    ) -> Result<u64, SpoolError> {
        let body_len = 11 + topic.len() + payload.len();
        let rec_len = (HEADER + body_len) as u64;
        let result = if body_len > MAX_RECORD
            || topic.len() > usize::from(u16::MAX)
            || rec_len > self.max_bytes
        {
            Err(SpoolError::Io {
                path: self.dir.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a {rec_len}-byte record on {topic:?} can never fit (spool {} bytes, \
                         record limit {MAX_RECORD})",
                        self.max_bytes
                    ),
                ),
            })
        } else {
            self.append_record(retain, topic, payload, body_len)
        };
        match result {
            Ok(seq) => {
                self.failed_in_a_row = 0;
                Ok(seq)
            }
            Err(SpoolError::Io { path, source }) => {
                self.failed_in_a_row += 1;
                Err(SpoolError::Append {
                    path,
                    source,
                    in_a_row: self.failed_in_a_row,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A message that [`Spool::try_append`] could not take is lost after all: counted.
    pub fn count_dropped(&mut self) {
        self.dropped += 1;
    }

    fn append_record(
        &mut self,
        retain: bool,
        topic: &str,
        payload: &[u8],
        body_len: usize,
    ) -> Result<u64, SpoolError> {
        let rec_len = (HEADER + body_len) as u64;
        while self.bytes + rec_len > self.max_bytes && !self.segments.is_empty() {
            self.drop_oldest()?;
        }
        let seq = self.next_seq;
        self.open_tail(seq, rec_len)?;
        let buf = format::encode(seq, retain, topic, payload);
        let (Some(seg), Some(f)) = (self.segments.back_mut(), self.tail.as_mut()) else {
            return Err(io_err(&self.dir)(io::Error::other("no tail segment")));
        };
        #[cfg(test)]
        let fault = self.fail_next_write.take();
        #[cfg(not(test))]
        let fault: Option<usize> = None;
        let written = match fault {
            Some(n) => f
                .write_all(&buf[..n.min(buf.len())])
                .and(Err(io::Error::from_raw_os_error(libc::ENOSPC))),
            None => f.write_all(&buf),
        };
        if let Err(e) = written {
            // A partial record would stay in the log and, with O_APPEND, every later record
            // would land behind it at offsets the index does not know: cut it off now, or
            // before the next write if even that fails.
            if f.set_len(seg.bytes).is_err() {
                self.tail_uncut = Some(seg.bytes);
            }
            return Err(io_err(&seg.path)(e));
        }
        seg.records += 1;
        seg.bytes += rec_len;
        self.bytes += rec_len;
        self.next_seq += 1;
        self.dirty = true;
        Ok(seq)
    }

    /// The tail segment and its open file, ready for a `rec_len`-byte record numbered `seq`:
    /// a new segment when the tail is full, and a cut left over by a failed write done first.
    fn open_tail(&mut self, seq: u64, rec_len: u64) -> Result<(), SpoolError> {
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => s.bytes + rec_len > self.segment_bytes && s.records > 0,
        };
        if need_new {
            self.seal_tail()?;
            let path = segment_path(&self.dir, seq);
            self.segments.push_back(Segment {
                first_seq: seq,
                records: 0,
                bytes: 0,
                path,
            });
        }
        let Some(seg) = self.segments.back() else {
            return Err(io_err(&self.dir)(io::Error::other("no tail segment")));
        };
        if self.tail.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&seg.path)
                .map_err(io_err(&seg.path))?;
            if seg.records == 0 {
                // A new file: its directory entry must survive a power cut too.
                sync_dir(&self.dir)?;
            }
            self.tail = Some(f);
        }
        if let (Some(good), Some(f)) = (self.tail_uncut, self.tail.as_ref()) {
            f.set_len(good).map_err(io_err(&seg.path))?;
            self.tail_uncut = None;
        }
        Ok(())
    }

    /// Appends a record that is already in flight (sent on the current connection, awaiting
    /// its PubAck): it is not handed out again unless the connection is lost ([`Spool::rewind`]).
    /// Only valid while every earlier record has been handed out.
    pub fn append_sent(
        &mut self,
        retain: bool,
        topic: &str,
        payload: &[u8],
    ) -> Result<u64, SpoolError> {
        let was_all_sent = self.all_sent();
        let seq = self.append(retain, topic, payload)?;
        if was_all_sent {
            self.read_seq = self.next_seq;
            self.read_pos = None;
        }
        Ok(seq)
    }

    fn seal_tail(&mut self) -> Result<(), SpoolError> {
        if let (Some(f), Some(seg)) = (self.tail.take(), self.segments.back()) {
            if let Some(good) = self.tail_uncut.take() {
                f.set_len(good).map_err(io_err(&seg.path))?;
            }
            f.sync_data().map_err(io_err(&seg.path))?;
        }
        Ok(())
    }

    fn drop_oldest(&mut self) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.pop_front() else {
            return Ok(());
        };
        if self.segments.is_empty() {
            self.tail = None;
            self.tail_uncut = None;
        }
        let end = seg.end();
        let unacked = end.saturating_sub(self.acked.max(seg.first_seq));
        self.dropped += unacked;
        self.bytes -= seg.bytes;
        self.acked = self.acked.max(end);
        self.acked_dirty = true;
        if self.read_seq < end {
            self.read_seq = end;
        }
        self.read_pos = None;
        remove_segment(&seg.path)
    }

    /// Restarts reading from the oldest unacknowledged record (after a lost connection).
    pub fn rewind(&mut self) {
        self.read_seq = self.acked;
        self.read_pos = None;
    }

    /// The next record not yet handed out, in order. A corrupt record (the disk changed
    /// under the spool after it opened) is skipped with the rest of its segment, counted in
    /// [`Spool::dropped`] once and logged, so that publishing goes on.
    pub fn next_unsent(&mut self) -> Result<Option<Record>, SpoolError> {
        while !self.all_sent() {
            let pos = match self.read_pos {
                Some(p) => p,
                None => {
                    // The last segment starting at or before read_seq.
                    let Some(seg) = self
                        .segments
                        .iter()
                        .rposition(|s| s.first_seq <= self.read_seq)
                        .or((!self.segments.is_empty()).then_some(0))
                    else {
                        return Ok(None);
                    };
                    ReadPos {
                        seg,
                        offset: 0,
                        seq: self.segments[seg].first_seq,
                    }
                }
            };
            let Some(seg) = self.segments.get(pos.seg) else {
                return Ok(None);
            };
            if pos.offset >= seg.bytes {
                let Some(next) = self.segments.get(pos.seg + 1) else {
                    return Ok(None);
                };
                self.read_pos = Some(ReadPos {
                    seg: pos.seg + 1,
                    offset: 0,
                    seq: next.first_seq,
                });
                continue;
            }
            let path = seg.path.clone();
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.skip_segment_rest(pos, "the file is gone");
                    continue;
                }
                Err(e) => return Err(io_err(&path)(e)),
            };
            f.seek(SeekFrom::Start(pos.offset)).map_err(io_err(&path))?;
            let (rec, n) = match read_record(&mut f) {
                Ok(Some((rec, n))) if rec.seq == pos.seq => (rec, n),
                _ => {
                    self.skip_segment_rest(pos, &format!("corrupt record at byte {}", pos.offset));
                    continue;
                }
            };
            self.read_pos = Some(ReadPos {
                seg: pos.seg,
                offset: pos.offset + n,
                seq: rec.seq + 1,
            });
            if rec.seq < self.read_seq {
                continue;
            }
            self.read_seq = rec.seq + 1;
            return Ok(Some(rec));
        }
        Ok(None)
    }

    /// Gives up on the records of segment `pos.seg` from `pos` on: counted, logged, and the
    /// reader moves to the next segment.
    fn skip_segment_rest(&mut self, pos: ReadPos, why: &str) {
        let Some(seg) = self.segments.get(pos.seg) else {
            return;
        };
        let end = seg.end();
        let from = pos
            .seq
            .max(self.read_seq)
            .max(self.acked)
            .max(self.skipped_through);
        let lost = end.saturating_sub(from);
        if lost > 0 {
            self.dropped += lost;
            self.skipped_through = end;
            log_warn!(
                "spool {}: {why}: skipping {lost} record(s) to the end of the segment, \
                 counted in spool_dropped",
                seg.path.display()
            );
        }
        self.read_seq = self.read_seq.max(end);
        self.read_pos = Some(ReadPos {
            seg: pos.seg,
            offset: seg.bytes,
            seq: end,
        });
    }

    /// Marks every record up to and including `seq` as acknowledged; deletes segments that
    /// hold nothing else.
    pub fn ack_through(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq < self.acked {
            return Ok(());
        }
        self.acked = (seq + 1).min(self.next_seq);
        self.acked_dirty = true;
        while let Some(seg) = self.segments.front() {
            let end = seg.end();
            let is_tail = self.segments.len() == 1;
            if end > self.acked || (is_tail && end < self.next_seq) {
                break;
            }
            let seg = self.segments.pop_front().expect("front exists");
            if self.segments.is_empty() {
                self.tail = None;
                self.tail_uncut = None;
            }
            self.bytes -= seg.bytes;
            remove_segment(&seg.path)?;
            // Indices shifted by one.
            self.read_pos = self.read_pos.and_then(|p| {
                p.seg.checked_sub(1).map(|seg| ReadPos {
                    seg,
                    offset: p.offset,
                    seq: p.seq,
                })
            });
        }
        Ok(())
    }

    /// fsyncs the tail segment and persists the acknowledged position, if they changed.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.sync_data()?;
        if self.acked_dirty {
            let path = self.dir.join("acked");
            let tmp = self.dir.join("acked.tmp");
            let mut b = self.acked.to_le_bytes().to_vec();
            b.extend_from_slice(&crc32(&b).to_le_bytes());
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&b).map_err(io_err(&tmp))?;
            f.sync_data().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
            self.acked_dirty = false;
        }
        Ok(())
    }

    /// fsyncs the tail segment if records were appended since the last sync: what a power cut
    /// can take is what came after the last call. Cheap when nothing changed.
    pub fn sync_data(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            if let (Some(f), Some(seg)) = (self.tail.as_ref(), self.segments.back()) {
                f.sync_data().map_err(io_err(&seg.path))?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Spool) -> Vec<Record> {
        let mut v = Vec::new();
        while let Some(r) = s.next_unsent().unwrap() {
            v.push(r);
        }
        v
    }

    #[test]
    fn crc_matches_the_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn reads_in_order_rewinds_and_acks() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..100u32 {
            s.append(false, "t/result", format!("{i}").as_bytes())
                .unwrap();
        }
        let got = drain(&mut s);
        assert_eq!(got.len(), 100);
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, r)| r.payload == i.to_string().as_bytes()));
        s.ack_through(39).unwrap();
        s.rewind();
        let again = drain(&mut s);
        assert_eq!(again.first().unwrap().seq, 40);
        assert_eq!(again.len(), 60);
        assert_eq!(s.len(), 60);
        s.ack_through(99).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..10u32 {
                s.append(i == 0, "a/b", &i.to_le_bytes()).unwrap();
            }
            s.ack_through(2).unwrap();
            s.sync().unwrap();
        }
        // A crash in the middle of the next append.
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        let got = drain(&mut s);
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (3..10).collect::<Vec<_>>()
        );
        let seq = s.append(false, "a/b", b"x").unwrap();
        assert_eq!(seq, 10);
    }

    #[test]
    fn full_spool_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 8192).unwrap();
        let payload = [7u8; 100];
        for _ in 0..500 {
            s.append(false, "t", &payload).unwrap();
        }
        assert!(s.bytes() <= 8192, "{} bytes", s.bytes());
        assert!(s.dropped() > 0);
        // Nothing lost silently: kept + dropped = appended.
        assert_eq!(s.len() + s.dropped(), 500);
        let got = drain(&mut s);
        assert_eq!(got.len() as u64, s.len());
        // The newest survive, in order.
        assert_eq!(got.last().unwrap().seq, 499);
        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[test]
    fn append_sent_is_not_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(false, "t", b"0").unwrap();
        assert_eq!(drain(&mut s).len(), 1);
        s.append_sent(false, "t", b"1").unwrap();
        s.append(false, "t", b"2").unwrap();
        assert_eq!(
            drain(&mut s).iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![2]
        );
        s.rewind();
        assert_eq!(drain(&mut s).len(), 3);
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    /// A write that fails half-way (ENOSPC after a few bytes) is cut back off the segment:
    /// the record is counted, the next append lands where the index expects it, reading goes
    /// on past the failure and a reopen finds nothing torn.
    #[test]
    fn failed_append_is_cut_back_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(false, "t", b"0").unwrap();
        for cut in [5, 0, 17] {
            s.fail_next_write = Some(cut);
            let e = s.append(false, "t", b"lost").unwrap_err();
            assert!(
                e.to_string().contains("No space left") && e.to_string().contains(".seg"),
                "{e}"
            );
        }
        assert_eq!(s.dropped(), 3);
        s.append(false, "t", b"1").unwrap();
        let got = drain(&mut s);
        assert_eq!(
            got.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
            vec![b"0".to_vec(), b"1".to_vec()]
        );
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1]);
        s.sync().unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.dropped(), 0, "nothing torn was left behind");
        assert_eq!(drain(&mut s).len(), 2);
    }

    /// Only the first of a run of failures, then every power of ten, is logged.
    #[test]
    fn repeated_append_failures_log_sparsely() {
        let logged: Vec<u64> = (1..=1000)
            .filter(|&n| {
                SpoolError::Append {
                    path: PathBuf::from("x"),
                    source: io::Error::other("full"),
                    in_a_row: n,
                }
                .worth_logging()
            })
            .collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
    }

    /// What a crash or a bad disk leaves at open is cut and counted, never silently: a torn
    /// tail, a corrupt record in the middle of a segment (with the whole records after it),
    /// and a segment file that is garbage from its first byte.
    #[test]
    fn corrupt_spool_at_open_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Segments of 20 records each (100 + 20 bytes per record).
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.segment_bytes = 20 * 120;
            for i in 0..60u8 {
                s.append(false, "t", &[i; 100]).unwrap();
            }
            s.sync().unwrap();
        }
        let segs = segments(dir.path());
        assert_eq!(segs.len(), 3, "{segs:?}");
        // Segment 0: record 5 corrupt (a flipped payload byte): records 5..20 are cut.
        let mut b = fs::read(&segs[0]).unwrap();
        b[5 * 120 + 50] ^= 0xff;
        fs::write(&segs[0], &b).unwrap();
        // Segment 1 (records 20..40): garbage from its first byte.
        fs::write(&segs[1], vec![0xa5; 600]).unwrap();
        // Segment 2 (40..60): a torn record at its end.
        let mut f = OpenOptions::new().append(true).open(&segs[2]).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.dropped(), 15 + 20 + 1);
        let got: Vec<u64> = drain(&mut s).iter().map(|r| r.seq).collect();
        assert_eq!(got, (0..5).chain(40..60).collect::<Vec<_>>());
        assert!(!segs[1].exists(), "the garbage segment is removed");
        // The next record follows the last whole one.
        assert_eq!(s.append(false, "t", b"x").unwrap(), 60);
    }

    /// The acknowledged part of a cut is not counted (it was delivered).
    #[test]
    fn cut_of_acknowledged_records_is_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            for i in 0..10u8 {
                s.append(false, "t", &[i; 10]).unwrap();
            }
            drain(&mut s);
            s.ack_through(6).unwrap();
            s.sync().unwrap();
        }
        let seg = &segments(dir.path())[0];
        let mut b = fs::read(seg).unwrap();
        b[3 * 30 + 20] ^= 1; // record 3 (acknowledged): 3..10 cut, 7..10 unacknowledged
        fs::write(seg, &b).unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.dropped(), 3);
        assert!(s.is_empty());
    }

    /// A record that goes bad after the spool opened is skipped with the rest of its segment
    /// and counted once (rewinds do not count it again); later segments are still read.
    #[test]
    fn corrupt_record_while_reading_is_skipped_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.segment_bytes = 10 * 120;
        for i in 0..30u8 {
            s.append(false, "t", &[i; 100]).unwrap();
        }
        let seg = &segments(dir.path())[1]; // records 10..20
        let mut b = fs::read(seg).unwrap();
        b[4 * 120 + 30] ^= 0xff; // record 14
        fs::write(seg, &b).unwrap();
        let got: Vec<u64> = drain(&mut s).iter().map(|r| r.seq).collect();
        assert_eq!(got, (0..14).chain(20..30).collect::<Vec<_>>());
        assert_eq!(s.dropped(), 6);
        s.rewind();
        assert_eq!(drain(&mut s).len(), 24);
        assert_eq!(s.dropped(), 6);
    }

    #[test]
    fn oversize_record_is_an_error_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 4096).unwrap();
        let e = s.append(false, "t", &[0; 5000]).unwrap_err();
        assert!(e.to_string().contains("never fit"), "{e}");
        assert_eq!(s.dropped(), 1);
        assert_eq!(s.append(false, "t", b"ok").unwrap(), 0);
    }

    #[test]
    fn scan_records_resynchronises_past_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..3u8 {
            s.append(true, "a/b", &[i; 7]).unwrap();
        }
        let b = fs::read(&segments(dir.path())[0]).unwrap();
        let mut noisy = vec![9u8; 13];
        noisy.extend_from_slice(&b[..29]);
        noisy.extend_from_slice(&[1, 2, 3]);
        noisy.extend_from_slice(&b[29..]);
        let found: Vec<u64> = scan_records(&noisy).iter().map(|(_, r)| r.seq).collect();
        assert_eq!(found, vec![0, 1, 2]);
    }

    mod model {
        //! The spool against a `VecDeque` model: whatever the sequence of appends, reads,
        //! acks, rewinds, reopens and torn tails, every record appended is either read back
        //! (in order, intact) or counted in `dropped`, and only the oldest are ever dropped.
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(u8, usize),
            Read(usize),
            /// Ack through the n-th (mod count) handed-out record.
            Ack(usize),
            Rewind,
            Reopen,
            /// Cut this many bytes (mod the last record's size, at least 1) off the newest
            /// segment file, then reopen: a crash mid-write.
            Tear(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (any::<u8>(), 0usize..300).prop_map(|(b, n)| Op::Append(b, n)),
                4 => (1usize..8).prop_map(Op::Read),
                2 => any::<usize>().prop_map(Op::Ack),
                1 => Just(Op::Rewind),
                1 => Just(Op::Reopen),
                1 => any::<usize>().prop_map(Op::Tear),
            ]
        }

        struct Model {
            /// Unacknowledged records, oldest first: (seq, payload).
            q: VecDeque<(u64, Vec<u8>)>,
            /// How many of `q`'s front have been handed out since the last rewind.
            sent: usize,
            last_seq: Option<u64>,
        }

        impl Model {
            /// The spool dropped `n` more records: they must be the oldest.
            fn drop_oldest(&mut self, n: u64) {
                for _ in 0..n {
                    self.q.pop_front();
                    self.sent = self.sent.saturating_sub(1);
                }
            }
        }

        fn payload(b: u8, n: usize) -> Vec<u8> {
            (0..n).map(|i| b.wrapping_add(i as u8)).collect()
        }

        fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
            let dir = tempfile::tempdir().unwrap();
            let max = 8192;
            let mut s = Spool::open(dir.path(), max).unwrap();
            let mut m = Model {
                q: VecDeque::new(),
                sent: 0,
                last_seq: None,
            };
            for op in ops {
                match op {
                    Op::Append(b, n) => {
                        let p = payload(b, n);
                        let before = s.dropped();
                        let seq = s.append(false, "t/r", &p).unwrap();
                        if let Some(l) = m.last_seq {
                            prop_assert!(seq > l, "seq {seq} after {l}");
                        }
                        m.last_seq = Some(seq);
                        m.q.push_back((seq, p));
                        // Dropping makes room before the new record goes in: it is never
                        // the new record itself.
                        m.drop_oldest(s.dropped() - before);
                        prop_assert!(s.bytes() <= max);
                    }
                    Op::Read(k) => {
                        for _ in 0..k {
                            let got = s.next_unsent().unwrap();
                            match m.q.get(m.sent) {
                                Some((seq, p)) => {
                                    let r = got.expect("the model has an unsent record");
                                    prop_assert_eq!(r.seq, *seq);
                                    prop_assert_eq!(&r.payload, p);
                                    prop_assert_eq!(r.topic.as_str(), "t/r");
                                    m.sent += 1;
                                }
                                None => prop_assert!(got.is_none(), "{got:?}"),
                            }
                        }
                    }
                    Op::Ack(i) if m.sent > 0 => {
                        let i = i % m.sent;
                        let seq = m.q[i].0;
                        s.ack_through(seq).unwrap();
                        m.q.drain(..=i);
                        m.sent -= i + 1;
                    }
                    Op::Ack(_) => {}
                    Op::Rewind => {
                        s.rewind();
                        m.sent = 0;
                    }
                    Op::Reopen => {
                        s.sync().unwrap();
                        drop(s);
                        s = Spool::open(dir.path(), max).unwrap();
                        m.sent = 0;
                    }
                    Op::Tear(c) => {
                        s.sync().unwrap();
                        drop(s);
                        let torn = match (m.q.back(), segments(dir.path()).last()) {
                            (Some((_, p)), Some(seg)) => {
                                let size = (HEADER + 11 + 3 + p.len()) as u64;
                                let len = fs::metadata(seg).unwrap().len();
                                let cut = 1 + (c as u64) % (size - 1);
                                OpenOptions::new()
                                    .write(true)
                                    .open(seg)
                                    .unwrap()
                                    .set_len(len - cut)
                                    .unwrap();
                                true
                            }
                            _ => false,
                        };
                        s = Spool::open(dir.path(), max).unwrap();
                        m.sent = 0;
                        if torn {
                            // Its seq is free again: the next record may take it.
                            m.q.pop_back();
                            m.last_seq = m.q.back().map(|(q, _)| *q);
                            prop_assert_eq!(s.dropped(), 1, "the torn record is counted");
                        } else {
                            prop_assert_eq!(s.dropped(), 0);
                        }
                    }
                }
                prop_assert_eq!(s.len(), m.q.len() as u64, "unacknowledged records");
            }
            // The end: everything unacknowledged is still there, in order.
            s.rewind();
            let rest: Vec<u64> = drain(&mut s).iter().map(|r| r.seq).collect();
            let want: Vec<u64> = m.q.iter().map(|(q, _)| *q).collect();
            prop_assert_eq!(rest, want);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn spool_matches_a_vecdeque_model(ops in proptest::collection::vec(op(), 1..120)) {
                run(ops)?;
            }
        }
    }

    #[test]
    fn too_small_is_an_error_naming_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let e = Spool::open(dir.path(), 100).unwrap_err();
        assert!(e.to_string().contains("100"), "{e}");
    }
}
