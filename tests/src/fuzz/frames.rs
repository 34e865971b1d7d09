//! Several inputs in one fuzz input: each frame is a little-endian `u16` length and that many
//! bytes. A last frame cut short keeps the bytes there are, so any byte string splits into
//! frames and the fuzzer never wastes an input on the framing.

/// Splits `data` into frames.
pub fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while let [a, b, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (frame, tail) = rest.split_at(len);
        frames.push(frame);
        data = tail;
    }
    frames
}

/// Joins frames into one input that [`split`] gives back. Frames longer than `u16::MAX` bytes
/// are cut to that length.
pub fn join<B: AsRef<[u8]>>(frames: &[B]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let frame = frame.as_ref();
        let frame = &frame[..frame.len().min(usize::from(u16::MAX))];
        let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_frames_split_back_and_cut_frames_keep_their_bytes() {
        let frames: Vec<&[u8]> = vec![b"one", b"", b"three"];
        assert_eq!(split(&join(&frames)), frames);
        assert_eq!(split(&[5, 0, b'a', b'b']), vec![&b"ab"[..]]);
        assert!(split(&[7]).is_empty());
    }
}
