//! The envelope around a state machine image: a version byte and a CRC32C of the image, so that a snapshot
//! damaged on disk or on the wire is refused before it replaces anything.
//!
//! Layout: `[version: u8][crc32c(image): u32, little-endian][image: StateSnapshot, protobuf]`.

use super::BadSnapshot;

/// The envelope's current layout.
pub(super) const VERSION: u8 = 1;

/// Bytes before the image: the version and the checksum.
const HEADER_BYTES: usize = 1 + 4;

/// Wraps an encoded image in the envelope.
pub(super) fn seal(image: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(HEADER_BYTES + image.len());
    data.push(VERSION);
    data.extend_from_slice(&crc32c::crc32c(image).to_le_bytes());
    data.extend_from_slice(image);
    data
}

/// The image inside `data`, once its version and checksum are checked.
pub(super) fn open(data: &[u8]) -> Result<&[u8], BadSnapshot> {
    let Some((&version, rest)) = data.split_first() else {
        return Err(BadSnapshot::Truncated { len: data.len() });
    };
    if version != VERSION {
        return Err(BadSnapshot::Version(version));
    }
    let Some((stored, image)) = rest.split_first_chunk::<4>() else {
        return Err(BadSnapshot::Truncated { len: data.len() });
    };
    let stored = u32::from_le_bytes(*stored);
    let computed = crc32c::crc32c(image);
    if stored != computed {
        return Err(BadSnapshot::Checksum { stored, computed });
    }
    Ok(image)
}
