//! On-disk store-and-forward buffer for readings awaiting the server's end-to-end ack.
//!
//! The agent runs for days without a link, so every reading is appended here
//! before it is sent and deleted only once the server's ack covers its `seq`.
//!
//! # Layout
//!
//! ```text
//! <dir>/lock                        flock'd while a Buffer is open (one agent per dir)
//! <dir>/state                       highest seq ever assigned + ack level (24 bytes)
//! <dir>/00000000000000000001.seg    segment, named by its first seq (zero-padded: sorts)
//! <dir>/00000000000000004711.seg    ...
//! ```
//!
//! A segment is a sequence of records, each
//! `[len u32 LE][crc32c u32 LE over seq‖payload][seq u64 LE][payload; len bytes]`
//! (`len` counts the payload only). Seqs inside a segment are consecutive and
//! start at the seq in the file name; the scanner relies on that to tell
//! garbage with a valid-looking checksum from real records.
//!
//! # Seq persistence
//!
//! The `state` file (written via temp file + fsync + rename + directory fsync)
//! carries the highest seq ever assigned. It is rewritten on every ack and
//! before deleting the newest segment, i.e. exactly when the newest record
//! could vanish from disk. Appends do not touch it: while records exist, the
//! newest segment itself proves the highest seq, so on open
//! `next_seq = max(state.highest, newest valid record) + 1`. This costs one
//! tiny rename per ack instead of an extra fsync per append.
//!
//! A seq is also taken if any trace of it survives on disk: a damaged record
//! whose header still carries the expected seq, or a checksum-valid record found
//! past mid-file corruption. Such seqs are reported lost rather than reused,
//! since they may have been confirmed and sent before the damage. Only a seq
//! with no trace at all (a failed batch, or a tail torn before its header
//! landed) may be handed out again: `append_batch` never returned it and no
//! reader can have seen it.
//!
//! # Recovery
//!
//! Opening never fails because of damaged data. A bad record that runs to the
//! end of its file (torn length, short payload, checksum mismatch on the last
//! record, or a zero-filled tail) is truncated away. A bad record followed by
//! other bytes is mid-file corruption: the rest of that segment is skipped
//! (left on disk, never appended to) and scanning continues with the next
//! segment. Every seq in `(ack, highest]` that is not readable afterwards is
//! reported through [`Buffer::take_dropped`] so the loss is visible upstream.
//!
//! # Memory
//!
//! The index holds one small entry per segment; readings are only read in
//! caller-bounded batches through an 8 KiB buffered reader.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

/// Bytes in a record header: len, crc, seq.
pub const RECORD_HEADER_BYTES: usize = 16;

/// Hard ceiling on one payload, so a corrupt length field can never make the
/// scanner trust a multi-gigabyte record.
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;

const SEGMENT_EXT: &str = "seg";
const STATE_FILE: &str = "state";
const STATE_TMP_FILE: &str = "state.tmp";
const LOCK_FILE: &str = "lock";
const STATE_MAGIC: [u8; 4] = *b"VXB1";
const STATE_LEN: usize = 24;
const READ_BUF_BYTES: usize = 8 * 1024;
const MIN_SEGMENT_BYTES: u64 = 64;
const RESYNC_MAX_BYTES: usize = 2 << 20;

/// What `append_batch` does when the batch would push the buffer over `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Delete the oldest segment(s), unacked or not, and report the dropped seqs via
    /// [`Buffer::take_dropped`] and a `warn` log; fresh readings matter more than stale ones.
    #[default]
    DropOldest,
    /// Refuse the batch with [`BufferError::Full`]; stored readings are never discarded.
    RejectNew,
}

/// Tuning for [`Buffer::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// Size at which the active segment is closed and a new one started (default 1 MiB).
    pub segment_bytes: u64,
    /// Cap on the total size of all segment files (default 64 MiB).
    pub max_bytes: u64,
    /// Behaviour when an append would exceed `max_bytes`.
    pub full_policy: FullPolicy,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self { segment_bytes: 1 << 20, max_bytes: 64 << 20, full_policy: FullPolicy::DropOldest }
    }
}

impl BufferConfig {
    fn validate(&self) -> Result<(), BufferError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(BufferError::InvalidConfig("segment_bytes must be at least 64"));
        }
        if self.max_bytes < self.segment_bytes {
            return Err(BufferError::InvalidConfig("max_bytes must be at least segment_bytes"));
        }
        Ok(())
    }

    /// Largest payload accepted, so that one record always fits in an empty segment.
    pub fn max_payload(&self) -> usize {
        let fit = self.segment_bytes.saturating_sub(RECORD_HEADER_BYTES as u64);
        usize::try_from(fit).unwrap_or(usize::MAX).min(MAX_PAYLOAD_BYTES)
    }
}

/// Errors from the buffer; each variant's doc says how the caller should react.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// An I/O error, including a full disk (`ErrorKind::StorageFull`). From `append_batch`:
    /// the batch was NOT stored — keep the readings in memory and retry later; the buffer
    /// stays consistent. From other methods: the call had no effect — retry later.
    #[error("buffer I/O error while trying to {op}: {source}")]
    Io {
        /// What the buffer was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The batch does not fit under `max_bytes` (always under `RejectNew`; under `DropOldest`
    /// only if the batch alone is larger than the cap). Not stored: retry after acks free
    /// space, or split the batch.
    #[error("buffer full: batch needs {needed} bytes, {available} available under the cap")]
    Full {
        /// Encoded size of the rejected batch.
        needed: u64,
        /// Bytes left under the cap.
        available: u64,
    },
    /// A payload exceeds [`BufferConfig::max_payload`]; retrying cannot help, so the caller
    /// must split or discard it. Nothing from the batch was stored.
    #[error("payload of {len} bytes exceeds the {max}-byte record limit")]
    PayloadTooLarge {
        /// Size of the offending payload.
        len: usize,
        /// Largest accepted payload.
        max: usize,
    },
    /// Another process has the buffer directory open: a second agent is running — exit.
    #[error("buffer directory is locked by another process")]
    Locked,
    /// The configuration is unusable; fix it and restart.
    #[error("invalid buffer config: {0}")]
    InvalidConfig(&'static str),
    /// All 2^64 seqs are used up; unreachable in practice, fatal if it happens.
    #[error("sequence numbers exhausted")]
    SeqExhausted,
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> BufferError {
    move |source| BufferError::Io { op, source }
}

/// Why a range of readings will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Deleted by `FullPolicy::DropOldest` to make room for newer readings.
    SizeCap,
    /// Found missing or unreadable when the buffer was opened (corruption, lost writes, or
    /// a size-cap drop from an earlier run that the server has not yet acked past).
    Unrecoverable,
}

/// A run of seqs that will never be delivered; the uplink should tell the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DroppedRange {
    /// First lost seq.
    pub first_seq: u64,
    /// Last lost seq (inclusive).
    pub last_seq: u64,
    /// Why these readings are lost.
    pub reason: DropReason,
}

impl DroppedRange {
    /// Number of readings in the range.
    pub fn count(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

/// What `open` found and repaired on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments whose torn tail was cut off.
    pub torn_tails: u32,
    /// Bytes removed by those truncations.
    pub torn_bytes: u64,
    /// Segments with mid-file corruption whose remainder is skipped.
    pub corrupt_segments: u32,
    /// Bytes skipped because of mid-file corruption (includes deleted unreadable segments).
    pub corrupt_bytes: u64,
    /// Segment files deleted because they held no readable record.
    pub unreadable_segments_removed: u32,
    /// The state file existed but failed its checksum; seqs were recovered from segments only.
    pub state_file_corrupt: bool,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    first_seq: u64,
    /// Equals `first_seq - 1` only transiently while a new segment is being filled.
    last_seq: u64,
    /// Bytes of well-formed records; readers never look past this.
    valid_len: u64,
    /// Actual file size, which exceeds `valid_len` only after mid-file corruption.
    file_len: u64,
    /// Never appended to again (mid-file corruption, or a tail we could not truncate).
    sealed: bool,
}

#[derive(Debug)]
struct Writer {
    first_seq: u64,
    file: File,
}

#[derive(Debug)]
enum Repair {
    Truncate(PathBuf, u64),
    Remove(PathBuf),
}

#[derive(Debug, Default)]
struct Undo {
    /// Pre-existing segment appended to: (first_seq, valid_len, last_seq) before the batch.
    extended: Option<(u64, u64, u64)>,
    created: Vec<u64>,
}

/// Crash-safe, size-capped store-and-forward buffer of opaque reading payloads.
#[derive(Debug)]
pub struct Buffer {
    dir: PathBuf,
    config: BufferConfig,
    segments: VecDeque<Segment>,
    writer: Option<Writer>,
    next_seq: u64,
    acked: u64,
    disk_bytes: u64,
    dropped: Vec<DroppedRange>,
    dropped_total: u64,
    recovery: RecoveryReport,
    /// Failed rollbacks; appends are refused until they succeed, so garbage past a
    /// failed write can never be mistaken for records after a crash.
    pending_repairs: Vec<Repair>,
    disk_limit: Option<u64>,
    _lock: File,
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`, repairing torn or corrupt segments.
    pub fn open(dir: &Path, config: BufferConfig) -> Result<Self, BufferError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(io_err("create the buffer directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_err("open the lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(BufferError::Locked),
            Err(TryLockError::Error(source)) => {
                return Err(BufferError::Io { op: "lock the buffer directory", source });
            }
        }
        remove_if_exists(&dir.join(STATE_TMP_FILE)).map_err(io_err("remove a stale temp file"))?;

        let mut recovery = RecoveryReport::default();
        let state = read_state(dir, &mut recovery).map_err(io_err("read the state file"))?;
        let names = list_segments(dir).map_err(io_err("list segments"))?;

        let mut segments = VecDeque::with_capacity(names.len());
        let mut prev_last = 0u64;
        let mut evidence = 0u64;
        for first_seq in names {
            let path = segment_path(dir, first_seq);
            let seg = if first_seq <= prev_last {
                // Overlaps the previous segment: our writer never produces this, so the
                // file is not trustworthy.
                None
            } else {
                let (seg, seen) = scan_and_repair(&path, first_seq, &mut recovery).map_err(io_err("scan a segment"))?;
                evidence = evidence.max(seen.unwrap_or(0));
                seg
            };
            match seg {
                Some(seg) => {
                    prev_last = seg.last_seq;
                    segments.push_back(seg);
                }
                None => {
                    let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    warn!(path = %path.display(), "segment holds no readable record; deleting it");
                    recovery.unreadable_segments_removed += 1;
                    recovery.corrupt_bytes += len;
                    remove_if_exists(&path).map_err(io_err("delete an unreadable segment"))?;
                }
            }
        }

        let highest = state.highest.max(prev_last).max(evidence);
        let acked = state.acked.min(highest);
        let mut buffer = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            writer: None,
            next_seq: highest.checked_add(1).ok_or(BufferError::SeqExhausted)?,
            acked,
            disk_bytes: 0,
            dropped: Vec::new(),
            dropped_total: 0,
            recovery,
            pending_repairs: Vec::new(),
            disk_limit: None,
            _lock: lock,
        };
        // A crash between persisting an ack and deleting its segments leaves them behind.
        buffer.delete_acked_segments();
        buffer.disk_bytes = buffer.segments.iter().map(|s| s.file_len).sum();
        buffer.report_gaps(highest);
        info!(
            dir = %dir.display(),
            next_seq = buffer.next_seq,
            acked = buffer.acked,
            unacked = buffer.unacked_count(),
            segments = buffer.segments.len(),
            "telemetry buffer opened"
        );
        Ok(buffer)
    }

    /// Appends the payloads as consecutive seqs, fsyncs, and returns the seqs assigned.
    ///
    /// An empty batch returns an empty range and writes nothing.
    pub fn append_batch<I>(&mut self, payloads: I) -> Result<RangeInclusive<u64>, BufferError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.run_pending_repairs()?;
        let first = self.next_seq;
        let max_payload = self.config.max_payload();
        let mut encoded = Vec::new();
        let mut ends = Vec::new();
        let mut seq = first;
        for payload in payloads {
            let payload = payload.as_ref();
            if payload.len() > max_payload {
                return Err(BufferError::PayloadTooLarge { len: payload.len(), max: max_payload });
            }
            encode_record(&mut encoded, seq, payload);
            ends.push(encoded.len());
            seq = seq.checked_add(1).ok_or(BufferError::SeqExhausted)?;
        }
        if ends.is_empty() {
            return Ok(first..=first - 1);
        }

        let needed = encoded.len() as u64;
        if self.disk_bytes + needed > self.config.max_bytes {
            let available = self.config.max_bytes.saturating_sub(self.disk_bytes);
            if needed > self.config.max_bytes || self.config.full_policy == FullPolicy::RejectNew {
                return Err(BufferError::Full { needed, available });
            }
            self.make_room(needed)?;
        }

        let mut undo = Undo::default();
        match self.write_batch(&encoded, &ends, first, &mut undo) {
            Ok(()) => {
                self.next_seq = seq;
                Ok(first..=seq - 1)
            }
            Err(source) => {
                warn!(error = %source, first_seq = first, "append failed; rolling back the partial write");
                self.rollback(undo);
                Err(BufferError::Io { op: "append readings", source })
            }
        }
    }

    /// Marks everything up to `upto_seq` delivered, persists that, and deletes fully acked segments.
    ///
    /// Acks below the current level are ignored; acks beyond the highest assigned seq are
    /// clamped, because acknowledging readings that do not exist yet would hide future ones.
    pub fn ack(&mut self, upto_seq: u64) -> Result<(), BufferError> {
        let highest = self.next_seq - 1;
        let upto = if upto_seq > highest {
            warn!(upto_seq, highest, "ack beyond the highest assigned seq; clamping");
            highest
        } else {
            upto_seq
        };
        if upto <= self.acked {
            return Ok(());
        }
        // Persist before deleting anything: once the newest segment is gone the state file
        // is the only witness of the highest seq.
        write_state(&self.dir, highest, upto).map_err(io_err("persist the ack level"))?;
        self.acked = upto;
        self.delete_acked_segments();
        self.disk_bytes = self.segments.iter().map(|s| s.file_len).sum();
        Ok(())
    }

    /// Returns up to `max` unacked records with seq ≥ `from_seq`, oldest first.
    ///
    /// Records are read from disk on each call, so the uplink can simply call this again
    /// with the same `from_seq` to re-send after a timeout.
    pub fn unacked(&self, from_seq: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, BufferError> {
        let start = from_seq.max(self.acked + 1);
        let mut out = Vec::with_capacity(max.min(256));
        for seg in &self.segments {
            if out.len() >= max {
                break;
            }
            if seg.last_seq < start || seg.valid_len == 0 {
                continue;
            }
            read_segment(&segment_path(&self.dir, seg.first_seq), seg, start, max, &mut out)
                .map_err(io_err("read unacked readings"))?;
        }
        Ok(out)
    }

    /// Number of stored readings not yet covered by an ack.
    pub fn unacked_count(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.last_seq > self.acked && s.last_seq >= s.first_seq)
            .map(|s| s.last_seq - s.first_seq.max(self.acked + 1) + 1)
            .sum()
    }

    /// True when no unacked reading is stored.
    pub fn is_empty(&self) -> bool {
        self.unacked_count() == 0
    }

    /// Total size of all segment files (the quantity `max_bytes` caps).
    pub fn bytes_on_disk(&self) -> u64 {
        self.disk_bytes
    }

    /// Seq the next appended reading will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Highest seq acknowledged by the server (0 before the first ack).
    pub fn acked_upto(&self) -> u64 {
        self.acked
    }

    /// Number of segment files currently on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// What `open` repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Drains the lost-seq ranges recorded since the last call (adjacent ranges merged).
    pub fn take_dropped(&mut self) -> Vec<DroppedRange> {
        std::mem::take(&mut self.dropped)
    }

    /// Readings dropped or found lost since this buffer was opened.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Test aid: makes segment writes fail with `StorageFull` once `bytes_on_disk` would
    /// exceed `limit`, after writing the part that fits, as a real full disk does.
    pub fn set_simulated_disk_limit(&mut self, limit: Option<u64>) {
        self.disk_limit = limit;
    }

    fn write_batch(&mut self, encoded: &[u8], ends: &[usize], first_seq: u64, undo: &mut Undo) -> io::Result<()> {
        let segment_bytes = self.config.segment_bytes;
        let mut created = false;
        let mut start = 0usize;
        let mut i = 0usize;
        let mut seq = first_seq;
        while i < ends.len() {
            let rec_len = (ends[i] - start) as u64;
            let appendable = self
                .segments
                .back()
                .is_some_and(|s| !s.sealed && s.last_seq + 1 == seq && s.valid_len + rec_len <= segment_bytes);
            if !appendable {
                if let Some(writer) = self.writer.take() {
                    // The finished segment must be durable before the batch moves on.
                    writer.file.sync_data()?;
                }
                let file = OpenOptions::new().write(true).create_new(true).open(segment_path(&self.dir, seq))?;
                undo.created.push(seq);
                created = true;
                self.segments.push_back(Segment {
                    first_seq: seq,
                    last_seq: seq - 1,
                    valid_len: 0,
                    file_len: 0,
                    sealed: false,
                });
                self.writer = Some(Writer { first_seq: seq, file });
            }
            let Some(seg) = self.segments.back_mut() else {
                return Err(io::Error::other("segment index empty after rollover"));
            };
            if self.writer.as_ref().is_none_or(|w| w.first_seq != seg.first_seq) {
                let mut file = OpenOptions::new().write(true).open(segment_path(&self.dir, seg.first_seq))?;
                file.seek(SeekFrom::Start(seg.valid_len))?;
                self.writer = Some(Writer { first_seq: seg.first_seq, file });
            }
            if undo.extended.is_none() && !undo.created.contains(&seg.first_seq) {
                undo.extended = Some((seg.first_seq, seg.valid_len, seg.last_seq));
            }

            // Take as many records as fit; the first always fits (checked above).
            let mut j = i;
            let mut len = seg.valid_len;
            let mut end = start;
            while j < ends.len() {
                let l = (ends[j] - end) as u64;
                if j > i && len + l > segment_bytes {
                    break;
                }
                len += l;
                end = ends[j];
                j += 1;
            }
            let room = self.disk_limit.map(|l| l.saturating_sub(self.disk_bytes));
            let Some(writer) = self.writer.as_mut() else {
                return Err(io::Error::other("segment writer missing"));
            };
            write_limited(&mut writer.file, &encoded[start..end], room)?;
            let count = (j - i) as u64;
            seg.valid_len = len;
            seg.file_len = len;
            seg.last_seq = seq + count - 1;
            self.disk_bytes += (end - start) as u64;
            seq += count;
            i = j;
            start = end;
        }
        if let Some(writer) = &self.writer {
            writer.file.sync_data()?;
        }
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn rollback(&mut self, undo: Undo) {
        self.writer = None;
        for first_seq in undo.created.iter().rev() {
            if let Some(pos) = self.segments.iter().rposition(|s| s.first_seq == *first_seq) {
                self.segments.remove(pos);
            }
            let path = segment_path(&self.dir, *first_seq);
            if let Err(e) = remove_if_exists(&path) {
                error!(path = %path.display(), error = %e, "cannot remove a half-written segment; appends paused until it can be");
                self.pending_repairs.push(Repair::Remove(path));
            }
        }
        if let Some((first_seq, valid_len, last_seq)) = undo.extended {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.first_seq == first_seq) {
                seg.valid_len = valid_len;
                seg.file_len = valid_len;
                seg.last_seq = last_seq;
            }
            let path = segment_path(&self.dir, first_seq);
            if let Err(e) = truncate_file(&path, valid_len) {
                error!(path = %path.display(), error = %e, "cannot truncate a partial write; appends paused until it can be");
                self.pending_repairs.push(Repair::Truncate(path, valid_len));
            }
        }
        self.disk_bytes = self.segments.iter().map(|s| s.file_len).sum();
    }

    fn run_pending_repairs(&mut self) -> Result<(), BufferError> {
        while let Some(repair) = self.pending_repairs.last() {
            let result = match repair {
                Repair::Truncate(path, len) => truncate_file(path, *len),
                Repair::Remove(path) => remove_if_exists(path),
            };
            result.map_err(io_err("repair a previously failed write"))?;
            self.pending_repairs.pop();
        }
        Ok(())
    }

    fn make_room(&mut self, needed: u64) -> Result<(), BufferError> {
        while self.disk_bytes + needed > self.config.max_bytes {
            let Some(&seg) = self.segments.front() else {
                break;
            };
            let is_newest = self.segments.len() == 1;
            if is_newest {
                write_state(&self.dir, self.next_seq - 1, self.acked)
                    .map_err(io_err("persist the highest seq before dropping"))?;
                self.writer = None;
            }
            remove_if_exists(&segment_path(&self.dir, seg.first_seq)).map_err(io_err("drop the oldest segment"))?;
            self.segments.pop_front();
            self.disk_bytes -= seg.file_len;
            if seg.last_seq > self.acked && seg.last_seq >= seg.first_seq {
                let first = seg.first_seq.max(self.acked + 1);
                warn!(
                    first_seq = first,
                    last_seq = seg.last_seq,
                    count = seg.last_seq - first + 1,
                    "buffer size cap reached: dropped the oldest unacked readings"
                );
                self.record_drop(first, seg.last_seq, DropReason::SizeCap);
            }
        }
        Ok(())
    }

    fn delete_acked_segments(&mut self) {
        let acked = self.acked;
        let dir = self.dir.clone();
        let mut deleted_newest = false;
        let newest = self.segments.back().map(|s| s.first_seq);
        self.segments.retain(|seg| {
            if seg.last_seq > acked {
                return true;
            }
            let path = segment_path(&dir, seg.first_seq);
            match remove_if_exists(&path) {
                Ok(()) => {
                    deleted_newest |= Some(seg.first_seq) == newest;
                    false
                }
                Err(e) => {
                    // Harmless to keep: its records are ≤ ack, so never read; retried next ack.
                    warn!(path = %path.display(), error = %e, "cannot delete an acked segment");
                    true
                }
            }
        });
        if deleted_newest {
            self.writer = None;
        }
    }

    /// Reports every seq in `(acked, highest]` that no segment holds.
    fn report_gaps(&mut self, highest: u64) {
        let mut expect = self.acked + 1;
        let spans: Vec<(u64, u64)> = self.segments.iter().map(|s| (s.first_seq, s.last_seq)).collect();
        for (first, last) in spans {
            let from = first.max(self.acked + 1);
            if from > expect {
                self.report_lost(expect, from - 1);
            }
            expect = expect.max(last + 1);
        }
        if expect <= highest {
            self.report_lost(expect, highest);
        }
    }

    fn report_lost(&mut self, first: u64, last: u64) {
        warn!(
            first_seq = first,
            last_seq = last,
            count = last - first + 1,
            "readings missing from the buffer on open; they will never be delivered"
        );
        self.record_drop(first, last, DropReason::Unrecoverable);
    }

    fn record_drop(&mut self, first_seq: u64, last_seq: u64, reason: DropReason) {
        self.dropped_total += last_seq - first_seq + 1;
        if let Some(prev) = self.dropped.last_mut()
            && prev.reason == reason
            && prev.last_seq + 1 == first_seq
        {
            prev.last_seq = last_seq;
            return;
        }
        self.dropped.push(DroppedRange { first_seq, last_seq, reason });
    }
}

// ---- records -------------------------------------------------------------------------

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C (Castagnoli); table-driven to avoid a dependency for ~20 lines.
#[derive(Clone, Copy)]
struct Crc32c(u32);

impl Crc32c {
    fn new() -> Self {
        Self(!0)
    }

    fn update(mut self, data: &[u8]) -> Self {
        for &b in data {
            self.0 = CRC32C_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
        self
    }

    fn finish(self) -> u32 {
        !self.0
    }
}

fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let seq_bytes = seq.to_le_bytes();
    let crc = Crc32c::new().update(&seq_bytes).update(payload).finish();
    // Callers cap payloads at MAX_PAYLOAD_BYTES, far below u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

fn parse_header(h: [u8; RECORD_HEADER_BYTES]) -> (u64, u32, u64) {
    let [l0, l1, l2, l3, c0, c1, c2, c3, s0, s1, s2, s3, s4, s5, s6, s7] = h;
    (
        u64::from(u32::from_le_bytes([l0, l1, l2, l3])),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
    )
}

/// Reads records of `seg` with seq ≥ `start` into `out` until `max` are collected.
fn read_segment(path: &Path, seg: &Segment, start: u64, max: usize, out: &mut Vec<(u64, Vec<u8>)>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(READ_BUF_BYTES, File::open(path)?);
    let mut offset = 0u64;
    let mut expect = seg.first_seq;
    while offset < seg.valid_len && expect <= seg.last_seq && out.len() < max {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        reader.read_exact(&mut header)?;
        let (len, crc, seq) = parse_header(header);
        let end = offset + RECORD_HEADER_BYTES as u64 + len;
        if seq != expect || end > seg.valid_len {
            warn!(path = %path.display(), offset, "segment changed since it was scanned; skipping its rest");
            break;
        }
        if seq < start {
            // Lengths were bounded by MAX_PAYLOAD_BYTES when the segment was scanned.
            reader.seek_relative(len as i64)?;
        } else {
            let mut payload = vec![0u8; len as usize];
            reader.read_exact(&mut payload)?;
            if Crc32c::new().update(&seq.to_le_bytes()).update(&payload).finish() != crc {
                warn!(path = %path.display(), seq, "checksum mismatch on read (bit rot?); skipping the rest of the segment");
                break;
            }
            out.push((seq, payload));
        }
        offset = end;
        expect += 1;
    }
    Ok(())
}

// ---- scanning on open ----------------------------------------------------------------

struct Scan {
    last_seq: Option<u64>,
    valid_len: u64,
    file_len: u64,
    /// Offset of the first bad record and whether it is a torn tail.
    bad: Option<(u64, bool)>,
    /// Highest seq the file shows any trace of, valid or not; such seqs may have been
    /// confirmed to the caller (and sent), so they must never be handed out again.
    evidence: Option<u64>,
}

/// Validates every record; the tail classification decides truncate vs. skip.
fn scan_segment(path: &Path, first_seq: u64) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(READ_BUF_BYTES, file);
    let mut chunk = [0u8; READ_BUF_BYTES];
    let mut offset = 0u64;
    let mut expect = first_seq;
    let mut last_seq = None;
    let mut header_seq_ok = false;
    let bad = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break None;
        }
        if remaining < RECORD_HEADER_BYTES as u64 {
            break Some((offset, true));
        }
        let mut header = [0u8; RECORD_HEADER_BYTES];
        reader.read_exact(&mut header)?;
        let (len, crc, seq) = parse_header(header);
        let body_room = remaining - RECORD_HEADER_BYTES as u64;
        if len > MAX_PAYLOAD_BYTES as u64 || len > body_room {
            // Claims more bytes than the file holds: a torn length or payload.
            header_seq_ok = seq == expect;
            break Some((offset, true));
        }
        let mut hasher = Crc32c::new().update(&header[8..16]);
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(chunk.len());
            reader.read_exact(&mut chunk[..n])?;
            hasher = hasher.update(&chunk[..n]);
            left -= n;
        }
        let end = offset + RECORD_HEADER_BYTES as u64 + len;
        if hasher.finish() != crc || seq != expect {
            header_seq_ok = seq == expect;
            let is_tail = end == file_len || rest_is_zero(&mut reader)?;
            break Some((offset, is_tail));
        }
        last_seq = Some(seq);
        expect = seq.saturating_add(1);
        offset = end;
    };
    let valid_len = bad.map_or(file_len, |(off, _)| off);
    let mut evidence = last_seq;
    if header_seq_ok {
        evidence = Some(expect);
    }
    if let Some((offset, false)) = bad {
        // Non-zero bytes follow the bad record, so at least its seq was written.
        let found = resync(&mut reader, offset + 1, file_len, expect)?;
        evidence = evidence.max(Some(found.unwrap_or(expect)));
    }
    Ok(Scan { last_seq, valid_len, file_len, bad, evidence })
}

/// Finds the highest checksum-valid record after mid-file corruption, purely to learn
/// which seqs were used; the records themselves stay skipped.
fn resync(reader: &mut BufReader<File>, start: u64, file_len: u64, expect: u64) -> io::Result<Option<u64>> {
    let remaining = file_len.saturating_sub(start);
    let max_records = remaining / RECORD_HEADER_BYTES as u64 + 1;
    let Ok(len) = usize::try_from(remaining) else {
        return Ok(Some(expect.saturating_add(max_records - 1)));
    };
    if len > RESYNC_MAX_BYTES {
        // Too big to search within the memory budget: assume the densest packing.
        return Ok(Some(expect.saturating_add(max_records - 1)));
    }
    reader.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len);
    reader.read_to_end(&mut buf)?;
    let limit = expect.saturating_add(max_records);
    let mut best = None;
    let mut p = 0usize;
    while p + RECORD_HEADER_BYTES <= buf.len() {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header.copy_from_slice(&buf[p..p + RECORD_HEADER_BYTES]);
        let (len, crc, seq) = parse_header(header);
        let body = p + RECORD_HEADER_BYTES;
        if seq >= expect && seq < limit && len <= (buf.len() - body) as u64 {
            let end = body + len as usize;
            let sum = Crc32c::new().update(&seq.to_le_bytes()).update(&buf[body..end]);
            if sum.finish() == crc {
                best = best.max(Some(seq));
                p = end;
                continue;
            }
        }
        p += 1;
    }
    Ok(best)
}

fn rest_is_zero(reader: &mut impl Read) -> io::Result<bool> {
    let mut chunk = [0u8; READ_BUF_BYTES];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

/// Scans a segment and repairs it; returns the readable part (`None` if nothing is
/// readable) and the highest seq the file shows evidence of.
fn scan_and_repair(
    path: &Path,
    first_seq: u64,
    report: &mut RecoveryReport,
) -> io::Result<(Option<Segment>, Option<u64>)> {
    let scan = scan_segment(path, first_seq)?;
    let mut seg = Segment {
        first_seq,
        last_seq: scan.last_seq.unwrap_or(first_seq - 1),
        valid_len: scan.valid_len,
        file_len: scan.file_len,
        sealed: false,
    };
    match scan.bad {
        None => {}
        Some((offset, true)) => {
            let cut = scan.file_len - offset;
            warn!(path = %path.display(), offset, bytes = cut, "torn record at segment tail; truncating");
            report.torn_tails += 1;
            report.torn_bytes += cut;
            match truncate_file(path, offset) {
                Ok(()) => seg.file_len = offset,
                Err(e) => {
                    // Readers stop at valid_len, so the garbage is harmless if never appended to.
                    error!(path = %path.display(), error = %e, "cannot truncate torn tail; sealing segment");
                    seg.sealed = true;
                }
            }
        }
        Some((offset, false)) => {
            warn!(path = %path.display(), offset, bytes = scan.file_len - offset,
                "corrupt record mid-segment; skipping the rest of this segment");
            report.corrupt_segments += 1;
            report.corrupt_bytes += scan.file_len - offset;
            seg.sealed = true;
        }
    }
    Ok((scan.last_seq.map(|_| seg), scan.evidence))
}

// ---- files ---------------------------------------------------------------------------

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.{SEGMENT_EXT}"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        match stem.parse::<u64>() {
            Ok(first) if first > 0 && stem.len() == 20 => firsts.push(first),
            _ => warn!(name, "ignoring a file that is not a segment"),
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

struct State {
    highest: u64,
    acked: u64,
}

fn read_state(dir: &Path, report: &mut RecoveryReport) -> io::Result<State> {
    let bytes = match fs::read(dir.join(STATE_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(State { highest: 0, acked: 0 });
        }
        Err(e) => return Err(e),
    };
    let parsed = <[u8; STATE_LEN]>::try_from(bytes.as_slice()).ok().and_then(|b| {
        let [m0, m1, m2, m3, h @ .., c0, c1, c2, c3] = b;
        let crc = Crc32c::new().update(&b[..STATE_LEN - 4]).finish();
        if [m0, m1, m2, m3] != STATE_MAGIC || crc != u32::from_le_bytes([c0, c1, c2, c3]) {
            return None;
        }
        let [h0, h1, h2, h3, h4, h5, h6, h7, a0, a1, a2, a3, a4, a5, a6, a7] = h;
        Some(State {
            highest: u64::from_le_bytes([h0, h1, h2, h3, h4, h5, h6, h7]),
            acked: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        })
    });
    Ok(parsed.unwrap_or_else(|| {
        error!("buffer state file is corrupt; recovering seqs from segments only");
        report.state_file_corrupt = true;
        State { highest: 0, acked: 0 }
    }))
}

fn write_state(dir: &Path, highest: u64, acked: u64) -> io::Result<()> {
    let mut buf = Vec::with_capacity(STATE_LEN);
    buf.extend_from_slice(&STATE_MAGIC);
    buf.extend_from_slice(&highest.to_le_bytes());
    buf.extend_from_slice(&acked.to_le_bytes());
    let crc = Crc32c::new().update(&buf).finish();
    buf.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(STATE_TMP_FILE);
    let mut file = File::create(&tmp)?;
    file.write_all(&buf)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(STATE_FILE))?;
    sync_dir(dir)
}

fn write_limited(file: &mut File, bytes: &[u8], room: Option<u64>) -> io::Result<()> {
    if let Some(room) = room
        && bytes.len() as u64 > room
    {
        let fits = usize::try_from(room).unwrap_or(usize::MAX);
        file.write_all(&bytes[..fits])?;
        return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated full disk"));
    }
    file.write_all(bytes)
}

fn truncate_file(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(Crc32c::new().update(b"123456789").finish(), 0xE306_9283);
    }

    #[test]
    fn record_layout_is_len_crc_seq_payload() {
        let mut out = Vec::new();
        encode_record(&mut out, 7, b"abc");
        assert_eq!(out.len(), RECORD_HEADER_BYTES + 3);
        assert_eq!(&out[0..4], &3u32.to_le_bytes());
        assert_eq!(&out[8..16], &7u64.to_le_bytes());
        assert_eq!(&out[16..], b"abc");
        let crc = Crc32c::new().update(&7u64.to_le_bytes()).update(b"abc").finish();
        assert_eq!(&out[4..8], &crc.to_le_bytes());
    }
}
