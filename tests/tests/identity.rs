//! The device key and the libp2p identity are one key: "who sent this" and "who signed this" agree.

use grapevine_crdt::Identity;
use libp2p_identity::{Keypair, PeerId};

#[test]
fn the_same_secret_gives_the_libp2p_peer_id_and_the_record_author() {
    let identity = Identity::generate();
    let keypair = Keypair::ed25519_from_bytes(identity.secret_bytes()).unwrap();
    let ed25519 = keypair.public().try_into_ed25519().unwrap();
    assert_eq!(ed25519.to_bytes(), *identity.public_key().as_bytes());
    assert_eq!(
        PeerId::from_public_key(&keypair.public()),
        keypair.public().to_peer_id()
    );
    let signature: [u8; 64] = keypair.sign(b"hello").unwrap().try_into().unwrap();
    assert!(identity.public_key().verify(b"hello", &signature));
}

#[test]
fn a_saved_identity_gives_the_same_peer_id_after_reloading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    let created = Identity::load_or_create(&path).unwrap();
    let reloaded = Identity::load(&path).unwrap();
    let peer_id = |identity: &Identity| {
        Keypair::ed25519_from_bytes(identity.secret_bytes())
            .unwrap()
            .public()
            .to_peer_id()
    };
    assert_eq!(peer_id(&created), peer_id(&reloaded));
}
