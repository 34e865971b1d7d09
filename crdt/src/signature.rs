//! Signature checks with one verdict everywhere.
//!
//! Every peer must reach the same verdict on every signature, whether it checks it alone or in a
//! batch, or replicas would disagree on which records exist and never converge. ed25519 leaves
//! room for disagreement (cofactored or not, canonical encodings or not), so the rule here is
//! explicit: a signature is valid when
//! 1. the key and `R` are canonical encodings of points that are not of small order, and
//! 2. `S` is canonical and the cofactored equation `[8][S]B = [8]R + [8][k]A` holds (ZIP-215).
//!
//! Rule 1 is a byte comparison; rule 2 is exactly what `ed25519-zebra` checks, alone or in a batch
//! (its batch check agrees with its single check on every input), and batches are about twice as
//! fast per signature.

use std::sync::OnceLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes, batch};

/// The encodings of the eight small-order points, canonical and with the sign bit flipped.
fn small_order_encodings() -> &'static [[u8; 32]; 16] {
    static ENCODINGS: OnceLock<[[u8; 32]; 16]> = OnceLock::new();
    ENCODINGS.get_or_init(|| {
        let mut encodings = [[0u8; 32]; 16];
        for (i, point) in EIGHT_TORSION.iter().enumerate() {
            let canonical = point.compress().to_bytes();
            let mut flipped = canonical;
            flipped[31] ^= 0x80;
            encodings[2 * i] = canonical;
            encodings[2 * i + 1] = flipped;
        }
        encodings
    })
}

/// Whether `bytes` encodes its y coordinate below the field prime 2^255 - 19 (the only
/// non-canonical encodings are y in [p, 2^255), plus the sign bit on points with x = 0, which are
/// of small order and refused separately).
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    y[31] &= 0x7f;
    // y >= p exactly when the top byte is 0x7f, the middle bytes are all 0xff, and the low byte
    // is at least 0xed.
    !(y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed)
}

/// Rule 1: canonical, and not of small order.
fn is_acceptable_point(bytes: &[u8; 32]) -> bool {
    is_canonical_y(bytes) && !small_order_encodings().contains(bytes)
}

/// One signature to check: the signer's key, the message and the signature.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedMessage<'a> {
    /// The signer's public key.
    pub(crate) key: &'a [u8; 32],
    /// The signed bytes.
    pub(crate) message: &'a [u8],
    /// The 64-byte signature.
    pub(crate) signature: &'a [u8; 64],
}

impl SignedMessage<'_> {
    /// Rule 1, and the signature in zebra's form. The key stays compressed: a batch decompresses
    /// each distinct key once, however many of its signatures it holds.
    fn well_formed(&self) -> Option<(VerificationKeyBytes, Signature)> {
        let r: &[u8; 32] = self.signature[..32].try_into().ok()?;
        if !is_acceptable_point(self.key) || !is_acceptable_point(r) {
            return None;
        }
        Some((
            VerificationKeyBytes::from(*self.key),
            Signature::from_bytes(self.signature),
        ))
    }

    /// Checks this signature alone.
    pub(crate) fn verify(&self) -> bool {
        self.well_formed().is_some_and(|(key, signature)| {
            VerificationKey::try_from(key)
                .is_ok_and(|key| key.verify(&signature, self.message).is_ok())
        })
    }
}

/// Checks many signatures, giving each its own verdict (the same it would get alone). A batch
/// that fails is checked one by one to find the bad signatures.
pub(crate) fn verify_batch(items: &[SignedMessage<'_>]) -> Vec<bool> {
    let mut verdicts: Vec<bool> = Vec::with_capacity(items.len());
    let mut verifier = batch::Verifier::new();
    for item in items {
        match item.well_formed() {
            Some((key, signature)) => {
                verifier.queue((key, signature, &item.message));
                verdicts.push(true);
            }
            None => verdicts.push(false),
        }
    }
    let rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
    if verifier.verify(rng).is_err() {
        for (verdict, item) in verdicts.iter_mut().zip(items) {
            *verdict = *verdict && item.verify();
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn signed(identity: &Identity, message: &'static [u8]) -> ([u8; 32], [u8; 64]) {
        (*identity.public_key().as_bytes(), identity.sign(message))
    }

    #[test]
    fn batch_and_single_verdicts_agree() {
        let identities: Vec<Identity> = (0..20).map(|_| Identity::generate()).collect();
        let mut sigs: Vec<([u8; 32], [u8; 64])> =
            identities.iter().map(|i| signed(i, b"message")).collect();
        sigs[3].1[5] ^= 1;
        sigs[11].0 = *identities[12].public_key().as_bytes();
        let items: Vec<SignedMessage<'_>> = sigs
            .iter()
            .map(|(key, signature)| SignedMessage {
                key,
                message: b"message",
                signature,
            })
            .collect();
        let batch = verify_batch(&items);
        let single: Vec<bool> = items.iter().map(SignedMessage::verify).collect();
        assert_eq!(batch, single);
        assert_eq!(batch.iter().filter(|v| !**v).count(), 2);
        assert!(!batch[3] && !batch[11]);
    }

    #[test]
    fn small_order_and_non_canonical_points_are_refused() {
        let identity = Identity::generate();
        let (key, signature) = signed(&identity, b"hi");
        for bad_key in small_order_encodings() {
            let item = SignedMessage {
                key: bad_key,
                message: b"hi",
                signature: &signature,
            };
            assert!(!item.verify());
        }
        let mut bad_r = signature;
        bad_r[..32].copy_from_slice(&small_order_encodings()[0]);
        assert!(
            !SignedMessage {
                key: &key,
                message: b"hi",
                signature: &bad_r
            }
            .verify()
        );
        let mut non_canonical = [0xffu8; 32];
        non_canonical[31] = 0x7f;
        assert!(!is_canonical_y(&non_canonical));
        non_canonical[0] = 0xec;
        assert!(is_canonical_y(&non_canonical));
        assert!(
            SignedMessage {
                key: &key,
                message: b"hi",
                signature: &signature
            }
            .verify()
        );
    }

    #[test]
    fn non_canonical_s_is_refused() {
        let identity = Identity::generate();
        let (key, signature) = signed(&identity, b"hi");
        // S + l is the classic malleation; l = 2^252 + 27742317777372353535851937790883648493.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut malleated = signature;
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(malleated[32 + i]) + u16::from(L[i]) + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert!(
            !SignedMessage {
                key: &key,
                message: b"hi",
                signature: &malleated
            }
            .verify()
        );
    }
}
