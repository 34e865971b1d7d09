//! Gossipsub RPCs encoded by hand, as a hostile peer writes them: libp2p keeps its protobuf types
//! private, and a flooder needs to send what an honest swarm never would (IHAVEs of made-up ids,
//! GRAFTs during a backoff, PRUNEs with any backoff, subscriptions to any topic).
//!
//! The messages and field numbers are those of gossipsub's `rpc.proto`:
//! `RPC { subscriptions = 1: SubOpts { subscribe = 1, topic_id = 2 }, control = 3:
//! ControlMessage { ihave = 1: { topic_id = 1, message_ids = 2 }, graft = 3: { topic_id = 1 },
//! prune = 4: { topic_id = 1, backoff = 3 } } }`. Each RPC goes on the stream behind an
//! unsigned-varint length, as gossipsub frames them. What a member sends back is read only for
//! the ids it asks for: `ControlMessage { iwant = 2: { message_ids = 1 } }`.

/// Protobuf wire type of varints (bools and integers).
const VARINT: u8 = 0;
/// Protobuf wire type of length-delimited fields (strings, bytes, messages).
const LENGTH_DELIMITED: u8 = 2;

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire_type)));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, LENGTH_DELIMITED);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, VARINT);
    varint(out, value);
}

/// The bytes a field `field` holding `bytes` takes in its message: tag, length and content.
pub(crate) fn field_len(bytes: usize) -> usize {
    let mut len = Vec::new();
    varint(&mut len, bytes as u64);
    1 + len.len() + bytes
}

/// An RPC subscribing to every topic of `topics`.
pub(crate) fn subscribe(topics: &[String]) -> Vec<u8> {
    let mut rpc = Vec::new();
    for topic in topics {
        let mut options = Vec::new();
        varint_field(&mut options, 1, 1);
        bytes_field(&mut options, 2, topic.as_bytes());
        bytes_field(&mut rpc, 1, &options);
    }
    rpc
}

/// An RPC whose control message is `control` (an encoded `ControlMessage`).
fn with_control(control: &[u8]) -> Vec<u8> {
    let mut rpc = Vec::new();
    bytes_field(&mut rpc, 3, control);
    rpc
}

/// An RPC announcing (IHAVE) the message ids `ids` on `topic`.
pub(crate) fn ihave(topic: &str, ids: &[[u8; 32]]) -> Vec<u8> {
    let mut ihave = Vec::new();
    bytes_field(&mut ihave, 1, topic.as_bytes());
    for id in ids {
        bytes_field(&mut ihave, 2, id);
    }
    let mut control = Vec::new();
    bytes_field(&mut control, 1, &ihave);
    with_control(&control)
}

/// An RPC asking to join the mesh of `topic` (GRAFT).
pub(crate) fn graft(topic: &str) -> Vec<u8> {
    let mut graft = Vec::new();
    bytes_field(&mut graft, 1, topic.as_bytes());
    let mut control = Vec::new();
    bytes_field(&mut control, 3, &graft);
    with_control(&control)
}

/// An RPC leaving the mesh of `topic` (PRUNE) and asking not to be grafted again for `backoff`
/// seconds.
pub(crate) fn prune(topic: &str, backoff: u64) -> Vec<u8> {
    let mut prune = Vec::new();
    bytes_field(&mut prune, 1, topic.as_bytes());
    varint_field(&mut prune, 3, backoff);
    let mut control = Vec::new();
    bytes_field(&mut control, 4, &prune);
    with_control(&control)
}

/// Reads one varint at the start of `bytes`: its value and length, or `None` if `bytes` ends
/// first or it runs past 64 bits.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The fields of one protobuf message, as (field number, wire type, content): the content of a
/// length-delimited field, or nothing for the other wire types. Stops at the first malformed
/// field.
fn fields(mut message: &[u8]) -> impl Iterator<Item = (u64, u8, &[u8])> {
    std::iter::from_fn(move || {
        let (key, key_len) = read_varint(message)?;
        let wire_type = (key & 7) as u8;
        let rest = &message[key_len..];
        let (content, used) = match wire_type {
            VARINT => (&rest[..0], read_varint(rest)?.1),
            LENGTH_DELIMITED => {
                let (len, len_len) = read_varint(rest)?;
                let end = len_len.checked_add(usize::try_from(len).ok()?)?;
                (rest.get(len_len..end)?, end)
            }
            // Fixed 64 and 32 bits: gossipsub's RPC has none, skipped all the same.
            1 => (&rest[..0], 8),
            5 => (&rest[..0], 4),
            _ => return None,
        };
        message = rest.get(used..)?;
        Some((key >> 3, wire_type, content))
    })
}

/// The message ids an RPC asks for (IWANT).
pub(crate) fn iwant_ids(rpc: &[u8]) -> usize {
    let length_delimited = |message, number| {
        fields(message)
            .filter(move |&(field, wire_type, _)| field == number && wire_type == LENGTH_DELIMITED)
            .map(|(_, _, content)| content)
    };
    length_delimited(rpc, 3)
        .flat_map(|control| length_delimited(control, 2))
        .map(|iwant| length_delimited(iwant, 1).count())
        .sum()
}

/// Splits the complete frames off the front of `buffer` (bytes read from a stream so far),
/// leaving a partial one behind: each frame's RPC, in order.
pub(crate) fn take_frames(buffer: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut start = 0;
    while let Some((len, len_len)) = read_varint(&buffer[start..]) {
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| (start + len_len).checked_add(len))
            .filter(|&end| end <= buffer.len())
        else {
            break;
        };
        frames.push(buffer[start + len_len..end].to_vec());
        start = end;
    }
    buffer.drain(..start);
    frames
}

/// `rpc` as it goes on the stream: its length as an unsigned varint, then its bytes.
pub(crate) fn frame(rpc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rpc.len() + 3);
    varint(&mut out, rpc.len() as u64);
    out.extend_from_slice(rpc);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_take_seven_bits_a_byte_low_bits_first() {
        let encode = |value| {
            let mut out = Vec::new();
            varint(&mut out, value);
            out
        };
        assert_eq!(encode(1), [1]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX).len(), 10);
        assert_eq!(field_len(32), 34);
        assert_eq!(field_len(200), 203);
    }

    #[test]
    fn control_messages_carry_the_fields_of_rpc_proto() {
        // RPC.control (3) { ControlMessage.graft (3) { topic_id (1) = "t" } }
        assert_eq!(graft("t"), [0x1a, 0x05, 0x1a, 0x03, 0x0a, 0x01, b't']);
        // RPC.control (3) { ControlMessage.prune (4) { topic_id (1) = "t", backoff (3) = 60 } }
        assert_eq!(
            prune("t", 60),
            [0x1a, 0x07, 0x22, 0x05, 0x0a, 0x01, b't', 0x18, 60]
        );
        // RPC.control (3) { ControlMessage.ihave (1) { topic_id (1) = "t", message_ids (2) } }
        let rpc = ihave("t", &[[7; 32]]);
        assert_eq!(rpc[..7], [0x1a, 0x27, 0x0a, 0x25, 0x0a, 0x01, b't']);
        assert_eq!(rpc[7..9], [0x12, 0x20]);
        assert_eq!(rpc.len(), 9 + 32);
        // RPC.subscriptions (1) { subscribe (1) = true, topic_id (2) = "t" }
        assert_eq!(
            subscribe(&["t".into()]),
            [0x0a, 0x05, 0x08, 0x01, 0x12, 0x01, b't']
        );
        assert_eq!(frame(&[9; 130])[..2], [0x82, 0x01]);
    }

    /// An IWANT of `ids` as gossipsub encodes it, beside other control messages.
    fn iwant(ids: &[[u8; 32]]) -> Vec<u8> {
        let mut iwant = Vec::new();
        for id in ids {
            bytes_field(&mut iwant, 1, id);
        }
        let mut graft = Vec::new();
        bytes_field(&mut graft, 1, b"t");
        let mut control = Vec::new();
        bytes_field(&mut control, 3, &graft);
        bytes_field(&mut control, 2, &iwant);
        bytes_field(&mut control, 2, &iwant);
        let mut rpc = subscribe(&["t".into()]);
        bytes_field(&mut rpc, 3, &control);
        rpc
    }

    #[test]
    fn the_ids_a_member_asks_for_are_counted_in_every_iwant_of_an_rpc() {
        assert_eq!(iwant_ids(&iwant(&[[1; 32], [2; 32], [3; 32]])), 6);
        assert_eq!(iwant_ids(&ihave("t", &[[7; 32]; 4])), 0);
        assert_eq!(iwant_ids(&graft("t")), 0);
        // Cut short: the ids of the whole fields before the cut only.
        let rpc = iwant(&[[1; 32]]);
        assert_eq!(iwant_ids(&rpc[..rpc.len() - 1]), 0);
        assert_eq!(iwant_ids(&[0xff; 12]), 0);
    }

    #[test]
    fn frames_are_split_off_as_they_complete() {
        let first = iwant(&[[1; 32]]);
        let second = graft("t");
        let mut stream = frame(&first);
        stream.extend(frame(&second));
        let mut buffer = stream[..stream.len() - 2].to_vec();
        assert_eq!(take_frames(&mut buffer), [first]);
        buffer.extend_from_slice(&stream[stream.len() - 2..]);
        assert_eq!(take_frames(&mut buffer), [second]);
        assert!(buffer.is_empty());
    }
}
