//! Bounded on-disk spool: an ordered log of MQTT messages waiting for the broker.
//!
//! Layout: `DIR/<first_seq:020>.seg` segment files, each a run of records
//! `[len u32 LE][crc32 u32 LE][body]`, body = `[seq u64 LE][retain u8][topic_len u16 LE][topic][payload]`,
//! and `DIR/acked` (`[seq u64 LE][crc32 u32 LE]`): every record with a smaller seq was
//! acknowledged by the broker (PubAck) and is deleted logically; whole segments below it are
//! deleted from disk.
//!
//! Guarantees and their limits:
//! - Order: records are read back in append (seq) order; [`Spool::rewind`] restarts from the
//!   oldest unacknowledged record after a lost connection.
//! - Bounded: when an append would exceed `max_bytes`, whole oldest segments are deleted and
//!   their unacknowledged records added to [`Spool::dropped`] (segments are `max_bytes / 8`,
//!   so at most an eighth of the spool goes at once). Never silent.
//! - Durability: writes go straight to the file (no user-space buffer), so a killed process
//!   loses nothing; [`Spool::sync`] (the publisher calls it every second and on exit) fsyncs
//!   the tail segment, so a power cut loses at most about a second of spooled records. The
//!   `acked` file is rewritten (write + rename) on the same schedule, so after a crash the
//!   records acknowledged in the last second before it are delivered again: the one
//!   at-least-once edge.
//! - A torn record at the end of a segment (crash mid-write) is cut off when the spool opens.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// Larger records are refused: a mask of a 4096² model is 16 MiB raw, well below.
const MAX_RECORD: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("spool max size {max_bytes} bytes is too small: it must be at least 4096")]
    TooSmall { max_bytes: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

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

/// Where the next unsent record is.
#[derive(Debug, Clone, Copy)]
struct ReadPos {
    /// Index into `segments`.
    seg: usize,
    offset: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Open for append: the last segment.
    tail: Option<File>,
    next_seq: u64,
    /// All records below this seq are acknowledged.
    acked: u64,
    /// The next record to hand out by [`Spool::next_unsent`] has seq >= this.
    read_seq: u64,
    read_pos: Option<ReadPos>,
    bytes: u64,
    dropped: u64,
    dirty: bool,
    acked_dirty: bool,
}

fn crc32(data: &[u8]) -> u32 {
    // Bitwise IEEE CRC-32: a few hundred bytes per record, not worth a table or a crate.
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// Reads one record at the reader's position: Ok(None) at a clean end, Err(()) for a torn or
/// corrupt record.
fn read_record(r: &mut impl Read) -> Result<Option<(Record, u64)>, ()> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default());
    if !(11..=MAX_RECORD).contains(&len) {
        return Err(());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|_| ())?;
    if crc32(&body) != crc {
        return Err(());
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().map_err(|_| ())?);
    let retain = body[8] != 0;
    let tlen = u16::from_le_bytes(body[9..11].try_into().map_err(|_| ())?) as usize;
    if 11 + tlen > len {
        return Err(());
    }
    let topic = String::from_utf8(body[11..11 + tlen].to_vec()).map_err(|_| ())?;
    let payload = body[11 + tlen..].to_vec();
    Ok(Some((
        Record {
            seq,
            retain,
            topic,
            payload,
        },
        (HEADER + len) as u64,
    )))
}

impl Spool {
    /// Opens (creating) the spool in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        if max_bytes < 4096 {
            return Err(SpoolError::TooSmall { max_bytes });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let acked_path = dir.join("acked");
        let acked = match fs::read(&acked_path) {
            Ok(b)
                if b.len() == 12
                    && crc32(&b[..8]) == u32::from_le_bytes([b[8], b[9], b[10], b[11]]) =>
            {
                u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
            }
            _ => 0,
        };
        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut next_seq = acked;
        let mut bytes = 0;
        for first in firsts {
            let path = segment_path(dir, first);
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut reader = io::BufReader::new(&mut f);
            let (mut records, mut good, mut last) = (0u64, 0u64, None);
            loop {
                match read_record(&mut reader) {
                    Ok(Some((rec, n))) => {
                        records += 1;
                        good += n;
                        last = Some(rec.seq);
                    }
                    Ok(None) => break,
                    Err(()) => {
                        // Torn write at the end of the log: keep what is whole.
                        eprintln!(
                            "vigild: spool {}: cutting a torn record at byte {good}",
                            path.display()
                        );
                        break;
                    }
                }
            }
            drop(reader);
            f.set_len(good).map_err(io_err(&path))?;
            match last {
                Some(last) if last >= acked => {
                    next_seq = next_seq.max(last + 1);
                    bytes += good;
                    segments.push_back(Segment {
                        first_seq: first,
                        records,
                        bytes: good,
                        path,
                    });
                }
                _ => {
                    // Empty or fully acknowledged.
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).max(2048),
            segments,
            tail: None,
            next_seq,
            acked,
            read_seq: acked,
            read_pos: None,
            bytes,
            dropped: 0,
            dirty: false,
            acked_dirty: false,
        };
        spool.rewind();
        Ok(spool)
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
    /// Unacknowledged records deleted because the spool was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    /// True when every record has been handed out by [`Spool::next_unsent`].
    pub fn all_sent(&self) -> bool {
        self.read_seq >= self.next_seq
    }

    /// Appends a record (not yet sent); returns its seq.
    pub fn append(&mut self, retain: bool, topic: &str, payload: &[u8]) -> Result<u64, SpoolError> {
        let body_len = 11 + topic.len() + payload.len();
        let rec_len = (HEADER + body_len) as u64;
        if body_len > MAX_RECORD || topic.len() > usize::from(u16::MAX) || rec_len > self.max_bytes
        {
            // Cannot ever fit: counted like any other drop.
            self.dropped += 1;
            return Ok(self.next_seq);
        }
        while self.bytes + rec_len > self.max_bytes && !self.segments.is_empty() {
            self.drop_oldest()?;
        }
        let seq = self.next_seq;
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
        if self.tail.is_none() {
            let Some(seg) = self.segments.back() else {
                return Ok(seq);
            };
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&seg.path)
                .map_err(io_err(&seg.path))?;
            self.tail = Some(f);
        }
        let mut buf = Vec::with_capacity(rec_len as usize);
        buf.extend_from_slice(&(body_len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.push(u8::from(retain));
        buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        buf.extend_from_slice(topic.as_bytes());
        buf.extend_from_slice(payload);
        let crc = crc32(&buf[HEADER..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let (Some(seg), Some(f)) = (self.segments.back_mut(), self.tail.as_mut()) else {
            return Ok(seq);
        };
        f.write_all(&buf).map_err(io_err(&seg.path))?;
        seg.records += 1;
        seg.bytes += rec_len;
        self.bytes += rec_len;
        self.next_seq += 1;
        self.dirty = true;
        Ok(seq)
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
        }
        let end = seg.first_seq + seg.records;
        let unacked = end.saturating_sub(self.acked.max(seg.first_seq));
        self.dropped += unacked;
        self.bytes -= seg.bytes;
        self.acked = self.acked.max(end);
        self.acked_dirty = true;
        if self.read_seq < end {
            self.read_seq = end;
        }
        self.read_pos = None;
        fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        Ok(())
    }

    /// Restarts reading from the oldest unacknowledged record (after a lost connection).
    pub fn rewind(&mut self) {
        self.read_seq = self.acked;
        self.read_pos = None;
    }

    /// The next record not yet handed out, in order.
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
                    ReadPos { seg, offset: 0 }
                }
            };
            let Some(seg) = self.segments.get(pos.seg) else {
                return Ok(None);
            };
            if pos.offset >= seg.bytes {
                if pos.seg + 1 >= self.segments.len() {
                    return Ok(None);
                }
                self.read_pos = Some(ReadPos {
                    seg: pos.seg + 1,
                    offset: 0,
                });
                continue;
            }
            let path = seg.path.clone();
            let mut f = File::open(&path).map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(pos.offset)).map_err(io_err(&path))?;
            let (rec, n) = match read_record(&mut f) {
                Ok(Some(x)) => x,
                _ => {
                    return Err(SpoolError::Io {
                        path,
                        source: io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("corrupt record at byte {}", pos.offset),
                        ),
                    })
                }
            };
            self.read_pos = Some(ReadPos {
                seg: pos.seg,
                offset: pos.offset + n,
            });
            if rec.seq < self.read_seq {
                continue;
            }
            self.read_seq = rec.seq + 1;
            return Ok(Some(rec));
        }
        Ok(None)
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
            let end = seg.first_seq + seg.records;
            let is_tail = self.segments.len() == 1;
            if end > self.acked || (is_tail && end < self.next_seq) {
                break;
            }
            let seg = self.segments.pop_front().expect("front exists");
            if self.segments.is_empty() {
                self.tail = None;
            }
            self.bytes -= seg.bytes;
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            // Indices shifted by one.
            self.read_pos = self.read_pos.and_then(|p| {
                p.seg.checked_sub(1).map(|seg| ReadPos {
                    seg,
                    offset: p.offset,
                })
            });
        }
        Ok(())
    }

    /// fsyncs the tail segment and persists the acknowledged position, if they changed.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            if let (Some(f), Some(seg)) = (self.tail.as_ref(), self.segments.back()) {
                f.sync_data().map_err(io_err(&seg.path))?;
            }
            self.dirty = false;
        }
        if self.acked_dirty {
            let path = self.dir.join("acked");
            let tmp = self.dir.join("acked.tmp");
            let mut b = self.acked.to_le_bytes().to_vec();
            b.extend_from_slice(&crc32(&b).to_le_bytes());
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&b).map_err(io_err(&tmp))?;
            f.sync_data().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            self.acked_dirty = false;
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

    #[test]
    fn too_small_is_an_error_naming_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let e = Spool::open(dir.path(), 100).unwrap_err();
        assert!(e.to_string().contains("100"), "{e}");
    }
}
