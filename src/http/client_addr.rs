//! Who is calling: the client address that per-address limits count and that Engine.IO
//! sessions are bound to. It is the connection's own address, unless that address is a
//! trusted proxy (`http.trusted_proxies`): then it is the last `X-Forwarded-For` entry
//! that is not itself a trusted proxy (entries further left were written by the client
//! and prove nothing). With no trusted proxies every address is taken as is, so behind
//! a proxy all clients share the proxy's address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::Request;

pub use crate::config::{Network, canonical};

/// Resolves client addresses.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr {
    trusted: Arc<Vec<Network>>,
}

impl ClientAddr {
    /// From `http.trusted_proxies` (already validated; invalid entries are skipped).
    pub fn new(trusted: &[String]) -> Self {
        Self { trusted: Arc::new(trusted.iter().filter_map(|t| Network::parse(t).ok()).collect()) }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The client address of a request, None when the connection's address is unknown
    /// (never the case for requests served by this bridge's listener).
    pub fn of<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = canonical(request.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip());
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let forwarded = request.headers().get_all("x-forwarded-for");
        let hops: Vec<IpAddr> = forwarded
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(|hop| hop.parse::<IpAddr>().ok().map(canonical))
            .collect::<Option<Vec<_>>>()
            // A malformed list proves nothing: the proxy itself is the client.
            .unwrap_or_default();
        Some(hops.into_iter().rev().find(|ip| !self.is_trusted(*ip)).unwrap_or(peer))
    }
}

/// The key per-address limits count by: the address itself for IPv4, its /64 network for
/// IPv6 (one subscriber commonly has a whole /64, so counting single addresses would let
/// one client multiply its share).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: &[&str]) -> Request<()> {
        let mut r = Request::new(());
        r.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        for f in forwarded {
            r.headers_mut().append("x-forwarded-for", f.parse().unwrap());
        }
        r
    }

    #[test]
    fn networks_parse_and_match() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped addresses match IPv4 networks");
        assert!(Network::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("proxy.local").is_err());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let none = ClientAddr::new(&[]);
        assert_eq!(none.of(&request("10.0.0.5:1", &["1.2.3.4"])), Some("10.0.0.5".parse().unwrap()));
        let trusted = ClientAddr::new(&["10.0.0.0/8".into()]);
        // The client wrote "6.6.6.6" itself; the proxy appended the real address.
        assert_eq!(trusted.of(&request("10.0.0.5:1", &["6.6.6.6, 1.2.3.4"])), Some("1.2.3.4".parse().unwrap()));
        // Two proxies in a row, the header split over two lines.
        assert_eq!(
            trusted.of(&request("10.0.0.5:1", &["6.6.6.6, 1.2.3.4", "10.0.0.7"])),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(trusted.of(&request("10.0.0.5:1", &[])), Some("10.0.0.5".parse().unwrap()));
        assert_eq!(trusted.of(&request("10.0.0.5:1", &["garbage"])), Some("10.0.0.5".parse().unwrap()));
        // Not from the proxy: the header is ignored.
        assert_eq!(trusted.of(&request("9.9.9.9:1", &["1.2.3.4"])), Some("9.9.9.9".parse().unwrap()));
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(limit_key("2001:db8:1:2:aaaa::1".parse().unwrap()), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(limit_key("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
    }
}
