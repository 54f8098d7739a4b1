//! The WAL's framing: record layout, segment names, and the scan that finds where valid records end.
//!
//! A record is `[len u32][crc32c u32][type u8][payload; len]`, little endian, where `len` counts the payload
//! only and the CRC covers `type` and `payload`. A segment is a sequence of records starting with a
//! [`HEADER`] record; see the crate documentation for what each record type holds.

/// Bytes before a record's payload: length, CRC, type.
pub(crate) const RECORD_HEADER_BYTES: usize = 9;

/// The largest payload a record may have. A length above it is treated as garbage, which also bounds how much
/// a corrupt length field can make recovery read.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 256 << 20;

/// Record type: the segment header, `magic [8]` then `seq u64`. Always the first record of a segment.
pub(crate) const HEADER: u8 = 1;
/// Record type: one log entry ([`crate::codec::encode_entry`]). It replaces every entry at its index or above.
pub(crate) const ENTRY: u8 = 2;
/// Record type: the hard state ([`crate::codec::encode_hard_state`]). The last one replayed wins.
pub(crate) const HARD_STATE: u8 = 3;

/// The magic that opens a segment header's payload.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"RNDOWAL1";

/// Appends one record to `buf`; `payload` writes the payload. Length and CRC are filled in place, so the
/// record costs no allocation beyond `buf`'s own growth.
pub(crate) fn put_record(buf: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    buf[start + 8] = kind;
    payload(buf);
    let len = buf.len() - start - RECORD_HEADER_BYTES;
    assert!(len <= MAX_PAYLOAD_BYTES, "WAL record of {len} bytes");
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a segment header record for segment `seq`.
pub(crate) fn put_header(buf: &mut Vec<u8>, seq: u64) {
    put_record(buf, HEADER, |out| {
        out.extend_from_slice(SEGMENT_MAGIC);
        out.extend_from_slice(&seq.to_le_bytes());
    });
}

/// Decodes a header payload into its segment sequence number.
pub(crate) fn decode_header(payload: &[u8]) -> Option<u64> {
    let (magic, seq) = payload.split_at_checked(8)?;
    if magic != SEGMENT_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(seq.try_into().ok()?))
}

/// `<seq:016x>-<first_index:016x>.wal`.
pub(crate) fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// The `(seq, first_index)` of a segment file name, or `None` if it is not one.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    parse_pair(name.strip_suffix(".wal")?)
}

/// Parses `<a:016x>-<b:016x>`.
pub(crate) fn parse_pair(stem: &str) -> Option<(u64, u64)> {
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// One valid record found by [`scan`].
#[derive(Debug)]
pub(crate) struct Record<'a> {
    /// Where the record starts in the segment.
    pub offset: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The first invalid bytes found by [`scan`].
#[derive(Debug)]
pub(crate) struct Bad {
    /// Where the invalid record starts; everything before it is valid.
    pub offset: u64,
    pub reason: &'static str,
    /// True if a valid record starts somewhere after `offset`: the damage is not a torn tail.
    pub followed_by_valid: bool,
}

/// The valid records at the start of a segment, and what stopped the scan if it did not reach the end.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    pub records: Vec<Record<'a>>,
    pub bad: Option<Bad>,
}

/// Reads the record at `offset`, returning it and the offset after it. `verify` false skips the checksum
/// (the [`crate::StorageBugs::skip_record_checksum`] bug).
fn record_at(
    bytes: &[u8],
    offset: usize,
    verify: bool,
) -> Result<(Record<'_>, usize), &'static str> {
    let header = bytes
        .get(offset..offset + RECORD_HEADER_BYTES)
        .ok_or("incomplete record header")?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD_BYTES {
        return Err("record length out of range");
    }
    let end = offset + RECORD_HEADER_BYTES + len;
    let checked = bytes.get(offset + 8..end).ok_or("incomplete record")?;
    if verify && crc32c::crc32c(checked) != crc {
        return Err("record checksum mismatch");
    }
    let record = Record {
        offset: offset as u64,
        kind: checked[0],
        payload: &checked[1..],
    };
    Ok((record, end))
}

/// Splits a segment into its valid records and, if any, the first bad one. Recovery decides from
/// `followed_by_valid` and the segment's position whether that is a torn tail or corruption.
pub(crate) fn scan(bytes: &[u8]) -> Scan<'_> {
    scan_with(bytes, true)
}

/// [`scan`], checking checksums only if `verify`.
pub(crate) fn scan_with(bytes: &[u8], verify: bool) -> Scan<'_> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match record_at(bytes, offset, verify) {
            Ok((record, next)) => {
                records.push(record);
                offset = next;
            }
            Err(reason) => {
                // A torn write leaves only a prefix of what was written: no whole record can follow it.
                let followed_by_valid =
                    (offset + 1..bytes.len()).any(|at| record_at(bytes, at, true).is_ok());
                let bad = Bad {
                    offset: offset as u64,
                    reason,
                    followed_by_valid,
                };
                return Scan {
                    records,
                    bad: Some(bad),
                };
            }
        }
    }
    Scan { records, bad: None }
}

/// The byte ranges of the valid records at the start of a WAL segment's content, in order, up to the first
/// invalid one. For tests and the simulator's corruption fault, which flips bytes inside records that
/// recovery reads (a flip in the last valid record of the newest segment reads as a torn tail: see the crate
/// documentation).
pub fn segment_records(bytes: &[u8]) -> Vec<std::ops::Range<u64>> {
    scan(bytes)
        .records
        .iter()
        .map(|r| r.offset..r.offset + (RECORD_HEADER_BYTES + r.payload.len()) as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = segment_name(7, 0x1234);
        assert_eq!(name, "0000000000000007-0000000000001234.wal");
        assert_eq!(parse_segment_name(&name), Some((7, 0x1234)));
        assert_eq!(parse_segment_name("7-1234.wal"), None);
        assert_eq!(
            parse_segment_name("0000000000000007-0000000000001234.snap"),
            None
        );
    }

    #[test]
    fn scan_finds_torn_tail_and_followed_damage() {
        let mut buf = Vec::new();
        put_header(&mut buf, 1);
        let second = buf.len();
        put_record(&mut buf, ENTRY, |out| out.extend_from_slice(b"payload"));
        let whole = buf.clone();

        let scan_whole = scan(&whole);
        assert_eq!(scan_whole.records.len(), 2);
        assert!(scan_whole.bad.is_none());

        let torn = scan(&whole[..whole.len() - 1]);
        assert_eq!(torn.records.len(), 1);
        let bad = torn.bad.expect("torn");
        assert_eq!(bad.offset, second as u64);
        assert!(!bad.followed_by_valid);

        let mut flipped = whole.clone();
        flipped[3] ^= 0x10; // the header's length
        let bad = scan(&flipped).bad.expect("bad header");
        assert_eq!(bad.offset, 0);
        assert!(bad.followed_by_valid);
    }
}
