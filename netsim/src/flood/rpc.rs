//! Gossipsub RPCs encoded by hand, as a hostile peer writes them: libp2p keeps its protobuf types
//! private, and a flooder needs to send what an honest swarm never would (IHAVEs of made-up ids,
//! GRAFTs during a backoff, PRUNEs with any backoff, subscriptions to any topic).
//!
//! The messages and field numbers are those of gossipsub's `rpc.proto`:
//! `RPC { subscriptions = 1: SubOpts { subscribe = 1, topic_id = 2 }, control = 3:
//! ControlMessage { ihave = 1: { topic_id = 1, message_ids = 2 }, graft = 3: { topic_id = 1 },
//! prune = 4: { topic_id = 1, backoff = 3 } } }`. Each RPC goes on the stream behind an
//! unsigned-varint length, as gossipsub frames them.

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
}
