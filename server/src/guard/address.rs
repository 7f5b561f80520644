//! Who a request comes from, for the limits that count per client: the TCP peer, or,
//! when the peer is one of `--trusted-proxies`, the address that proxy (and any trusted
//! proxy before it) says it forwarded for (`Forwarded: for=`, else `X-Forwarded-For`).
//! A header from anyone else is ignored: a client cannot pick the address it is
//! counted under. IPv6 clients are counted per /64, the block one subscriber gets.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed (`--trusted-proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDRs or single addresses: `10.0.0.0/8,192.0.2.7,fd00::/8`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("'{part}' is not an address or a CIDR (e.g. 10.0.0.0/8)"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, or, when `peer` is trusted, the first address
    /// from the right of the forwarding chain that is not a trusted proxy. An entry
    /// that is not an address ends the walk at the hop that wrote it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let chain = forwarded_for(headers);
        let mut client = peer;
        for hop in chain.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !self.trusts(client) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// An IPv4 address carried in IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> ClientKey {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                ClientKey(IpAddr::V6(Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => ClientKey(v4),
        }
    }
}

/// The forwarding chain, oldest hop first: `Forwarded`'s `for=` values when that
/// header is present (RFC 7239), else `X-Forwarded-For`'s; `None` for an entry that is
/// not an address (`unknown`, an obfuscated name, garbage).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| node_address(v.trim().trim_matches('"')))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| node_address(hop.trim()))
        .collect()
}

/// An address as a forwarding header writes it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn node_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    text.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_forwarding_header_counts_only_from_a_trusted_proxy() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.0.2.7".parse().unwrap();
        let spoof = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            trusted.client(ip("198.51.100.1"), &spoof),
            ip("198.51.100.1")
        );
        assert_eq!(trusted.client(ip("10.1.2.3"), &spoof), ip("203.0.113.9"));
        assert_eq!(trusted.client(ip("192.0.2.7"), &spoof), ip("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.1.2.3"), &spoof), ip("10.1.2.3"));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        // The client wrote a fake first hop; the proxies appended what they saw.
        let chain = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &chain), ip("203.0.113.9"));
        // Several headers are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &split), ip("203.0.113.9"));
        // Garbage ends the walk at the hop that wrote it.
        let garbage = headers(&[("x-forwarded-for", "203.0.113.9, nonsense, 10.0.0.2")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &garbage), ip("10.0.0.2"));
        // Nothing forwarded: the proxy itself.
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let both = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &both),
            ip("2001:db8:cafe::17")
        );
        let port = headers(&[("forwarded", "For=192.0.2.60:8080")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &port), ip("192.0.2.60"));
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &unknown), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a = ClientKey::from(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::from(ip("2001:db8:1:2:bbbb::9"));
        let c = ClientKey::from(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ClientKey::from(ip("::ffff:192.0.2.1")),
            ClientKey::from(ip("192.0.2.1"))
        );
        let trusted: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_bad_list_names_the_bad_entry() {
        let e = "10.0.0.0/8,nope".parse::<TrustedProxies>().unwrap_err();
        assert!(e.contains("'nope'"), "{e}");
        assert!("".parse::<TrustedProxies>().unwrap().0.is_empty());
    }
}
