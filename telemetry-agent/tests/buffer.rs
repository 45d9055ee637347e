//! Integration tests for the store-and-forward buffer, through its public API only.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vaxtrace_agent::buffer::{
    Buffer, BufferConfig, BufferError, DropReason, DroppedRange, FullPolicy, RECORD_HEADER_BYTES,
};

const PAYLOAD: usize = 8;
const REC: u64 = (RECORD_HEADER_BYTES + PAYLOAD) as u64;

fn payload(seq: u64) -> Vec<u8> {
    seq.to_le_bytes().to_vec()
}

fn payloads(range: std::ops::RangeInclusive<u64>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

/// Segments hold exactly four 8-byte readings.
fn small(policy: FullPolicy, max_segments: u64) -> BufferConfig {
    BufferConfig { segment_bytes: 4 * REC, max_bytes: max_segments * 4 * REC, full_policy: policy }
}

fn all_unacked(buf: &Buffer) -> Vec<(u64, Vec<u8>)> {
    buf.unacked(0, usize::MAX).unwrap()
}

fn seqs(buf: &Buffer) -> Vec<u64> {
    all_unacked(buf).into_iter().map(|(s, _)| s).collect()
}

fn seg_file(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn seqs_start_at_one_and_segment_is_named_by_first_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Buffer::open(dir.path(), BufferConfig::default()).unwrap();
    assert_eq!(buf.next_seq(), 1);
    assert!(buf.is_empty());
    assert_eq!(buf.append_batch(payloads(1..=3)).unwrap(), 1..=3);
    let slices: Vec<&[u8]> = vec![b"a", b"bc"];
    assert_eq!(buf.append_batch(slices).unwrap(), 4..=5);
    assert!(buf.append_batch(Vec::<Vec<u8>>::new()).unwrap().is_empty());
    assert_eq!(seg_files(dir.path()), vec!["00000000000000000001.seg"]);
    assert_eq!(buf.unacked_count(), 5);
    assert_eq!(buf.bytes_on_disk(), 3 * REC + 2 * RECORD_HEADER_BYTES as u64 + 3);
    assert_eq!(all_unacked(&buf)[3..], [(4, b"a".to_vec()), (5, b"bc".to_vec())]);
}

#[test]
fn append_ack_reopen_preserves_seqs_and_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 100);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        assert_eq!(buf.append_batch(payloads(1..=10)).unwrap(), 1..=10);
        buf.ack(6).unwrap();
        assert_eq!(buf.acked_upto(), 6);
        // Segments 1..=4 is fully acked and deleted; 5..=8 still holds 7 and 8.
        assert_eq!(buf.segment_count(), 2);
        assert_eq!(seqs(&buf), vec![7, 8, 9, 10]);
    }
    let mut buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.acked_upto(), 6);
    assert_eq!(buf.next_seq(), 11);
    assert_eq!(buf.unacked_count(), 4);
    assert_eq!(all_unacked(&buf), (7..=10).map(|s| (s, payload(s))).collect::<Vec<_>>());
    assert_eq!(buf.recovery_report(), &Default::default());
    assert!(buf.take_dropped().is_empty());
    assert_eq!(buf.append_batch(payloads(11..=11)).unwrap(), 11..=11);
}

#[test]
fn unacked_pages_from_seq_with_max() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Buffer::open(dir.path(), small(FullPolicy::RejectNew, 100)).unwrap();
    buf.append_batch(payloads(1..=20)).unwrap();
    buf.ack(3).unwrap();
    let page: Vec<u64> = buf.unacked(0, 5).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(page, vec![4, 5, 6, 7, 8]);
    let page: Vec<u64> = buf.unacked(9, 5).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(page, vec![9, 10, 11, 12, 13]);
    assert_eq!(buf.unacked(19, 5).unwrap().len(), 2);
    assert!(buf.unacked(21, 5).unwrap().is_empty());
    assert!(buf.unacked(1, 0).unwrap().is_empty());
}

#[test]
fn seq_never_reused_after_ack_all_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::DropOldest, 100);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=9)).unwrap();
        buf.ack(9).unwrap();
        assert_eq!(buf.segment_count(), 0);
        assert!(seg_files(dir.path()).is_empty());
        assert_eq!(buf.bytes_on_disk(), 0);
        assert_eq!(buf.append_batch(payloads(10..=10)).unwrap(), 10..=10);
        buf.ack(10).unwrap();
    }
    let mut buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.next_seq(), 11);
    assert!(buf.is_empty());
    assert!(buf.take_dropped().is_empty());
    assert_eq!(buf.append_batch(payloads(11..=11)).unwrap(), 11..=11);
}

#[test]
fn seq_recovered_from_records_when_state_file_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 100);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=5)).unwrap();
        buf.ack(2).unwrap(); // state now says highest = 5
        buf.append_batch(payloads(6..=7)).unwrap(); // "crash" before any state update
    }
    let buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.next_seq(), 8);
    assert_eq!(seqs(&buf), vec![3, 4, 5, 6, 7]);
}

#[test]
fn acks_below_level_are_ignored_and_beyond_next_are_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Buffer::open(dir.path(), BufferConfig::default()).unwrap();
    buf.ack(5).unwrap();
    assert_eq!(buf.acked_upto(), 0);
    buf.append_batch(payloads(1..=3)).unwrap();
    buf.ack(2).unwrap();
    buf.ack(1).unwrap();
    assert_eq!(buf.acked_upto(), 2);
    buf.ack(1_000).unwrap();
    assert_eq!(buf.acked_upto(), 3);
    assert_eq!(buf.append_batch(payloads(4..=4)).unwrap(), 4..=4);
    assert_eq!(seqs(&buf), vec![4]);
}

fn reopen_after_tail_damage(dir: &Path, damage: impl FnOnce(&Path)) -> Buffer {
    let cfg = small(FullPolicy::RejectNew, 100);
    {
        let mut buf = Buffer::open(dir, cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=3)).unwrap();
    }
    damage(&seg_file(dir, 1));
    Buffer::open(dir, cfg).unwrap()
}

/// `header_survived`: the torn record still carried seq 3 in its header, so 3 may have
/// been confirmed and must be reported lost, not reused.
fn assert_tail_repaired_and_appendable(mut buf: Buffer, header_survived: bool) {
    assert_eq!(buf.recovery_report().torn_tails, 1);
    assert_eq!(seqs(&buf), vec![1, 2]);
    assert_eq!(buf.bytes_on_disk(), 2 * REC);
    let next = if header_survived {
        assert_eq!(
            buf.take_dropped(),
            vec![DroppedRange { first_seq: 3, last_seq: 3, reason: DropReason::Unrecoverable }]
        );
        4
    } else {
        assert!(buf.take_dropped().is_empty());
        3
    };
    assert_eq!(buf.next_seq(), next);
    assert_eq!(buf.append_batch(payloads(next..=next + 1)).unwrap(), next..=next + 1);
    assert_eq!(seqs(&buf), vec![1, 2, next, next + 1]);
    assert_eq!(all_unacked(&buf)[3], (next + 1, payload(next + 1)));
}

#[test]
fn torn_tail_truncated_payload_is_cut_and_appending_continues() {
    let dir = tempfile::tempdir().unwrap();
    let buf = reopen_after_tail_damage(dir.path(), |p| {
        let f = OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(3 * REC - 3).unwrap();
    });
    assert_eq!(buf.recovery_report().torn_bytes, REC - 3);
    assert_tail_repaired_and_appendable(buf, true);
}

#[test]
fn torn_tail_truncated_header_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let buf = reopen_after_tail_damage(dir.path(), |p| {
        let f = OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(2 * REC + 5).unwrap();
    });
    assert_tail_repaired_and_appendable(buf, false);
}

#[test]
fn torn_tail_flipped_byte_in_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let buf = reopen_after_tail_damage(dir.path(), |p| {
        let mut bytes = fs::read(p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(p, bytes).unwrap();
    });
    assert_eq!(buf.recovery_report().corrupt_segments, 0);
    assert_tail_repaired_and_appendable(buf, true);
}

#[test]
fn zero_filled_tail_after_power_loss_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 100);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=2)).unwrap();
    }
    let mut f = OpenOptions::new().append(true).open(seg_file(dir.path(), 1)).unwrap();
    f.write_all(&[0u8; 2 * REC as usize]).unwrap();
    drop(f);
    let mut buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.recovery_report().torn_tails, 1);
    assert_eq!(seqs(&buf), vec![1, 2]);
    assert_eq!(buf.append_batch(payloads(3..=3)).unwrap(), 3..=3);
    assert_eq!(seqs(&buf), vec![1, 2, 3]);
}

#[test]
fn corrupt_middle_skips_rest_of_segment_and_continues_with_next() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 100);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=10)).unwrap();
        assert_eq!(seg_files(dir.path()).len(), 3); // 1..=4, 5..=8, 9..=10
    }
    // Flip a payload byte of seq 2, in the middle of the first segment.
    let path = seg_file(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(REC + RECORD_HEADER_BYTES as u64) as usize] ^= 0xFF;
    fs::write(&path, &bytes).unwrap();

    let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
    let report = buf.recovery_report().clone();
    assert_eq!(report.corrupt_segments, 1);
    assert_eq!(report.corrupt_bytes, 3 * REC);
    assert_eq!(report.torn_tails, 0);
    assert_eq!(seqs(&buf), vec![1, 5, 6, 7, 8, 9, 10]);
    assert_eq!(buf.unacked_count(), 7);
    assert_eq!(buf.take_dropped(), vec![DroppedRange { first_seq: 2, last_seq: 4, reason: DropReason::Unrecoverable }]);
    // The damaged file is left alone rather than rewritten.
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(buf.append_batch(payloads(11..=12)).unwrap(), 11..=12);
    buf.ack(4).unwrap();
    assert!(!path.exists(), "segment whose readable records are acked is deleted");
    drop(buf);
    let buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(seqs(&buf), (5..=12).collect::<Vec<_>>());
}

#[test]
fn corrupt_first_record_of_segment_drops_the_whole_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 100);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=6)).unwrap();
    }
    let path = seg_file(dir.path(), 5);
    let mut bytes = fs::read(&path).unwrap();
    bytes[RECORD_HEADER_BYTES] ^= 1; // seq 5's payload; seq 6 follows, so mid-file
    fs::write(&path, bytes).unwrap();
    let mut buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.recovery_report().unreadable_segments_removed, 1);
    assert!(!path.exists());
    assert_eq!(seqs(&buf), vec![1, 2, 3, 4]);
    // Seq 6 is still intact past the damage, so 5 and 6 are reported lost, never reused.
    assert_eq!(buf.take_dropped(), vec![DroppedRange { first_seq: 5, last_seq: 6, reason: DropReason::Unrecoverable }]);
    assert_eq!(buf.next_seq(), 7);
    assert_eq!(buf.append_batch(payloads(7..=7)).unwrap(), 7..=7);
}

#[test]
fn size_cap_drop_oldest_deletes_oldest_segment_and_reports_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::DropOldest, 2);
    let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
    buf.append_batch(payloads(1..=8)).unwrap();
    assert_eq!(buf.bytes_on_disk(), 8 * REC);
    buf.ack(1).unwrap();
    assert_eq!(buf.append_batch(payloads(9..=10)).unwrap(), 9..=10);
    assert_eq!(buf.take_dropped(), vec![DroppedRange { first_seq: 2, last_seq: 4, reason: DropReason::SizeCap }]);
    assert_eq!(buf.dropped_total(), 3);
    assert!(buf.take_dropped().is_empty());
    assert_eq!(seqs(&buf), (5..=10).collect::<Vec<_>>());
    assert!(buf.bytes_on_disk() <= cfg.max_bytes);

    // A batch bigger than the whole cap is refused even under DropOldest.
    let err = buf.append_batch(payloads(11..=19)).unwrap_err();
    assert!(matches!(err, BufferError::Full { .. }), "{err:?}");
    assert_eq!(buf.next_seq(), 11);

    // After a restart the dropped-but-unacked range is reported again, until acked past.
    drop(buf);
    let mut buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.take_dropped(), vec![DroppedRange { first_seq: 2, last_seq: 4, reason: DropReason::Unrecoverable }]);
}

#[test]
fn size_cap_drop_oldest_can_drop_the_active_segment_without_reusing_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::DropOldest, 1);
    {
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        buf.append_batch(payloads(1..=3)).unwrap();
        assert_eq!(buf.append_batch(payloads(4..=5)).unwrap(), 4..=5);
        assert_eq!(buf.take_dropped()[0].count(), 3);
        assert_eq!(seqs(&buf), vec![4, 5]);
    }
    let buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.next_seq(), 6);
    assert_eq!(seqs(&buf), vec![4, 5]);
}

#[test]
fn size_cap_reject_new_keeps_every_stored_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Buffer::open(dir.path(), small(FullPolicy::RejectNew, 2)).unwrap();
    buf.append_batch(payloads(1..=7)).unwrap();
    let err = buf.append_batch(payloads(8..=9)).unwrap_err();
    assert!(matches!(err, BufferError::Full { needed, available } if needed == 2 * REC && available == REC), "{err:?}");
    assert_eq!(buf.next_seq(), 8);
    assert_eq!(seqs(&buf), (1..=7).collect::<Vec<_>>());
    assert!(buf.take_dropped().is_empty());
    buf.ack(4).unwrap();
    assert_eq!(buf.append_batch(payloads(8..=9)).unwrap(), 8..=9);
    assert_eq!(seqs(&buf), (5..=9).collect::<Vec<_>>());
}

#[test]
fn simulated_full_disk_loses_nothing_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 100);
    let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
    buf.append_batch(payloads(1..=3)).unwrap();
    let before = all_unacked(&buf);
    let files_before = seg_files(dir.path());

    // Room for one and a half records: the batch spills into a new segment and then
    // fails mid-record, which must roll back both files.
    buf.set_simulated_disk_limit(Some(buf.bytes_on_disk() + REC + REC / 2));
    let err = buf.append_batch(payloads(4..=6)).unwrap_err();
    match &err {
        BufferError::Io { source, .. } => assert_eq!(source.kind(), ErrorKind::StorageFull),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(buf.next_seq(), 4);
    assert_eq!(all_unacked(&buf), before);
    assert_eq!(buf.bytes_on_disk(), 3 * REC);
    assert_eq!(seg_files(dir.path()), files_before);
    assert_eq!(fs::metadata(seg_file(dir.path(), 1)).unwrap().len(), 3 * REC);

    // Disk completely full: still nothing lost, acks still work.
    buf.set_simulated_disk_limit(Some(buf.bytes_on_disk()));
    assert!(matches!(buf.append_batch(payloads(4..=4)), Err(BufferError::Io { .. })));
    buf.ack(1).unwrap();

    // Space returns: the retried readings get the next seqs, contiguous with the rest.
    buf.set_simulated_disk_limit(None);
    assert_eq!(buf.append_batch(payloads(4..=6)).unwrap(), 4..=6);
    drop(buf);
    let buf = Buffer::open(dir.path(), cfg).unwrap();
    assert_eq!(buf.recovery_report(), &Default::default());
    assert_eq!(all_unacked(&buf), (2..=6).map(|s| (s, payload(s))).collect::<Vec<_>>());
}

#[test]
fn oversized_payload_and_bad_config_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small(FullPolicy::RejectNew, 4);
    let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
    let too_big = vec![0u8; cfg.max_payload() + 1];
    let err = buf.append_batch([payload(1), too_big]).unwrap_err();
    assert!(matches!(err, BufferError::PayloadTooLarge { .. }), "{err:?}");
    assert!(buf.is_empty());
    assert_eq!(buf.next_seq(), 1);
    assert_eq!(buf.append_batch([vec![7u8; cfg.max_payload()]]).unwrap(), 1..=1);

    let bad = BufferConfig { segment_bytes: 1 << 20, max_bytes: 1 << 10, ..Default::default() };
    let other = tempfile::tempdir().unwrap();
    assert!(matches!(Buffer::open(other.path(), bad), Err(BufferError::InvalidConfig(_))));
}

#[test]
fn second_open_of_same_dir_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let buf = Buffer::open(dir.path(), BufferConfig::default()).unwrap();
    assert!(matches!(Buffer::open(dir.path(), BufferConfig::default()), Err(BufferError::Locked)));
    drop(buf);
    Buffer::open(dir.path(), BufferConfig::default()).unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    /// Append while the disk has only this many free bytes.
    AppendDiskFull(Vec<usize>, u64),
    Ack(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..40, 0..6).prop_map(Op::Append),
        1 => (prop::collection::vec(0usize..40, 1..6), 0u64..120)
            .prop_map(|(lens, free)| Op::AppendDiskFull(lens, free)),
        2 => (0u64..12).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

fn body(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// unacked() always equals appended-minus-acked-minus-reported-drops, in order, across
    /// reopens and simulated full disks.
    #[test]
    fn unacked_matches_model(
        ops in prop::collection::vec(op(), 1..40),
        drop_oldest in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            segment_bytes: 128,
            max_bytes: 512,
            full_policy: if drop_oldest { FullPolicy::DropOldest } else { FullPolicy::RejectNew },
        };
        let mut buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut dropped: Vec<u64> = Vec::new();
        let mut next = 1u64;
        let mut acked = 0u64;

        for op in ops {
            let (lens, free) = match op {
                Op::Append(lens) => (lens, None),
                Op::AppendDiskFull(lens, free) => (lens, Some(free)),
                Op::Ack(delta) => {
                    buf.ack(acked + delta).unwrap();
                    acked = (acked + delta).min(next - 1).max(acked);
                    model.retain(|&s, _| s > acked);
                    (Vec::new(), None)
                }
                Op::Reopen => {
                    drop(buf);
                    buf = Buffer::open(dir.path(), cfg.clone()).unwrap();
                    prop_assert_eq!(buf.recovery_report(), &Default::default());
                    (Vec::new(), None)
                }
            };
            if !lens.is_empty() {
                let batch: Vec<Vec<u8>> =
                    lens.iter().enumerate().map(|(i, &l)| body(next + i as u64, l)).collect();
                buf.set_simulated_disk_limit(free.map(|f| buf.bytes_on_disk() + f));
                match buf.append_batch(&batch) {
                    Ok(range) => {
                        prop_assert_eq!(range.clone(), next..=next + batch.len() as u64 - 1);
                        model.extend(range.zip(batch));
                        next += lens.len() as u64;
                    }
                    Err(BufferError::Full { .. }) => {}
                    Err(BufferError::Io { source, .. })
                        if free.is_some() && source.kind() == ErrorKind::StorageFull => {}
                    Err(e) => prop_assert!(false, "unexpected error {:?}", e),
                }
                buf.set_simulated_disk_limit(None);
            }
            for range in buf.take_dropped() {
                prop_assert!(drop_oldest, "RejectNew must never drop");
                for seq in range.first_seq..=range.last_seq {
                    // A fresh drop removes a stored reading; a re-report after reopen
                    // names one already known to be gone.
                    let fresh = model.remove(&seq).is_some();
                    prop_assert!(fresh || dropped.contains(&seq), "seq {} never stored", seq);
                    if fresh {
                        prop_assert!(model.keys().all(|&s| s > seq), "only the oldest may drop");
                        dropped.push(seq);
                    }
                }
            }
            prop_assert_eq!(buf.next_seq(), next);
            prop_assert_eq!(buf.acked_upto(), acked);
            prop_assert!(buf.bytes_on_disk() <= cfg.max_bytes);
            prop_assert_eq!(buf.unacked_count(), model.len() as u64);
            let got = buf.unacked(0, usize::MAX).unwrap();
            let want: Vec<(u64, Vec<u8>)> = model.iter().map(|(s, p)| (*s, p.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
