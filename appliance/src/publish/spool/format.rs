//! The spool's on-disk format: record framing and CRC, segment and `acked` files, and the
//! scans that recover a log after a crash. The layout is described in the parent module.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::{io_err, SpoolError};
use super::Record;

pub(super) const HEADER: usize = 8;
/// Larger records are refused: a mask of a 4096² model is 16 MiB raw, well below.
pub(super) const MAX_RECORD: usize = 64 << 20;
/// Most bytes after a cut that [`Spool::open`] reads to count the whole records they hold.
pub(super) const MAX_SALVAGE_SCAN: u64 = 256 << 20;

/// One record as it goes to disk: header (length, CRC of the body) and body.
pub(super) fn encode(seq: u64, retain: bool, topic: &str, payload: &[u8]) -> Vec<u8> {
    let body_len = 11 + topic.len() + payload.len();
    let mut buf = Vec::with_capacity(HEADER + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(u8::from(retain));
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32(&buf[HEADER..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf
}

pub(super) fn crc32(data: &[u8]) -> u32 {
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

pub(super) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// fsyncs a directory, so that files created or renamed in it survive a power cut.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Removes a segment file; one that was never created (its create failed) is already gone.
pub(super) fn remove_segment(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Reads one record at the reader's position: Ok(None) at a clean end, Err(()) for a torn or
/// corrupt record.
pub(super) fn read_record(r: &mut impl Read) -> Result<Option<(Record, u64)>, ()> {
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

/// Every whole record in `bytes`, wherever it starts (a resynchronising scan past garbage):
/// the records themselves, in file order, and the offset each starts at.
pub fn scan_records(bytes: &[u8]) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= bytes.len() {
        let mut r = &bytes[at..];
        match read_record(&mut r) {
            Ok(Some((rec, n))) => {
                out.push((at as u64, rec));
                at += n as usize;
            }
            _ => at += 1,
        }
    }
    out
}

/// The acknowledged position a previous run saved (0 when there is none or it is corrupt:
/// everything still on disk is then sent again, at least once).
pub(super) fn read_acked(dir: &Path) -> u64 {
    let path = dir.join("acked");
    match fs::read(&path) {
        Ok(b)
            if b.len() == 12
                && crc32(&b[..8]) == u32::from_le_bytes([b[8], b[9], b[10], b[11]]) =>
        {
            u64::from_le_bytes(b[..8].try_into().unwrap_or_default())
        }
        Ok(_) => {
            log_warn!(
                "spool {}: corrupt, ignored: every record still spooled is sent again",
                path.display()
            );
            0
        }
        Err(_) => 0,
    }
}

/// The first seqs of the segment files in `dir`, in order.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut firsts: Vec<u64> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse::<u64>().ok()
        })
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// What [`Spool::open`] found in one segment file.
pub(super) struct Scanned {
    pub(super) records: u64,
    /// Length of the whole-record prefix.
    pub(super) good: u64,
    pub(super) last: Option<u64>,
    /// File length (past `good`: a torn or corrupt record and whatever follows it).
    pub(super) len: u64,
}

/// Reads the prefix of whole, in-sequence records of the segment starting at `first`.
pub(super) fn scan_prefix(f: &mut File, first: u64) -> io::Result<Scanned> {
    let len = f.metadata()?.len();
    let mut reader = io::BufReader::new(&mut *f);
    let (mut records, mut good, mut last) = (0u64, 0u64, None);
    // A record whose seq breaks the run (a stray copy, a misnamed file) counts as corrupt.
    while let Ok(Some((rec, n))) = read_record(&mut reader) {
        if rec.seq != first + records {
            break;
        }
        records += 1;
        good += n;
        last = Some(rec.seq);
    }
    Ok(Scanned {
        records,
        good,
        last,
        len,
    })
}

/// One past the highest seq of a whole record in `f` after byte `from` (None: none there).
pub(super) fn salvage_end(f: &mut File, from: u64, len: u64) -> io::Result<Option<u64>> {
    let n = (len - from).min(MAX_SALVAGE_SCAN);
    let mut rest = vec![0u8; n as usize];
    f.seek(SeekFrom::Start(from))?;
    f.read_exact(&mut rest)?;
    Ok(scan_records(&rest).iter().map(|(_, r)| r.seq + 1).max())
}
