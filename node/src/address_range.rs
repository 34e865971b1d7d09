//! Address ranges and the quota of Kademlia routing-table peers per range.
//!
//! Peer ids are free, and an attacker can grind as many as it likes whose XOR distance to a room's
//! provider key is small, so Kademlia's k-buckets alone let one machine (or one rented block of
//! addresses) fill the buckets that lookups of that key go through. Addresses are not free: so,
//! as Ethereum's discovery does, a node keeps at most a few peers of one address range per
//! k-bucket and a few more in its whole table ([`crate::config::RangeQuota`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Length in bits of an IPv4 range: a /24 is the smallest block commonly routed and rented.
const IPV4_RANGE_BITS: u32 = 24;
/// Length in bits of an IPv6 range: a /48 is what one site is usually given.
const IPV6_RANGE_BITS: u32 = 48;

/// A block of addresses that one operator is likely to hold as a whole: an IPv4 /24 or an IPv6
/// /48. Loopback addresses count like any other (127.x.y.z by its /24), so tests can place peers
/// in many ranges on one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressRange {
    /// The first 24 bits of an IPv4 address.
    V4(u32),
    /// The first 48 bits of an IPv6 address.
    V6(u128),
}

impl AddressRange {
    /// The range of `ip`, or `None` for an address of a local network (private or link-local):
    /// peers there share a network with this node already, and a network of many DHT servers
    /// behind one router is one range.
    pub(crate) fn of_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(ip) if is_local_network_v4(ip) => None,
            IpAddr::V6(ip) if is_local_network_v6(ip) => None,
            IpAddr::V4(ip) => Some(Self::V4(u32::from(ip) >> (32 - IPV4_RANGE_BITS))),
            IpAddr::V6(ip) => Some(Self::V6(u128::from(ip) >> (128 - IPV6_RANGE_BITS))),
        }
    }

    /// The range of the first IP address in `addr`, or `None` when it has none (memory and DNS
    /// addresses, a relayed connection's `/p2p/<peer>`) or [`AddressRange::of_ip`] counts none.
    pub(crate) fn of(addr: &Multiaddr) -> Option<Self> {
        first_ip(addr).and_then(Self::of_ip)
    }
}

/// The first IP address in `addr`, if any.
pub(crate) fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Private (RFC 1918) and link-local IPv4 addresses.
fn is_local_network_v4(ip: Ipv4Addr) -> bool {
    ip.is_private() || ip.is_link_local()
}

/// Unique local (`fc00::/7`) and link-local (`fe80::/10`) IPv6 addresses.
fn is_local_network_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(addr: &str) -> Option<AddressRange> {
        AddressRange::of(&addr.parse().expect("valid multiaddr"))
    }

    #[test]
    fn ipv4_addresses_in_one_slash_24_share_a_range() {
        assert_eq!(
            range("/ip4/203.0.113.7/tcp/1"),
            range("/ip4/203.0.113.250/udp/9/quic-v1")
        );
        assert_ne!(
            range("/ip4/203.0.113.7/tcp/1"),
            range("/ip4/203.0.114.7/tcp/1")
        );
        assert!(range("/ip4/203.0.113.7/tcp/1").is_some());
    }

    #[test]
    fn loopback_addresses_count_by_their_slash_24() {
        assert_eq!(
            range("/ip4/127.0.9.1/tcp/1"),
            range("/ip4/127.0.9.200/tcp/2")
        );
        assert_ne!(
            range("/ip4/127.0.9.1/tcp/1"),
            range("/ip4/127.0.10.1/tcp/1")
        );
        assert!(range("/ip4/127.0.0.1/tcp/1").is_some());
        assert!(range("/ip6/::1/tcp/1").is_some());
    }

    #[test]
    fn ipv6_addresses_in_one_slash_48_share_a_range() {
        assert_eq!(
            range("/ip6/2001:db8:1:2::1/tcp/1"),
            range("/ip6/2001:db8:1:ffff::9/tcp/1")
        );
        assert_ne!(
            range("/ip6/2001:db8:1::1/tcp/1"),
            range("/ip6/2001:db8:2::1/tcp/1")
        );
    }

    #[test]
    fn local_network_and_addresses_without_ip_have_no_range() {
        for addr in [
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.20/tcp/1",
            "/ip4/169.254.3.4/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/memory/42",
            "/dns4/example.org/tcp/1",
        ] {
            assert_eq!(range(addr), None, "{addr}");
        }
    }
}
