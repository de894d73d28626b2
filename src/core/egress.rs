//! The egress policy: which addresses Herald may send webhooks to. Checked
//! after DNS resolution, on every connection, so a name cannot be pointed at
//! a forbidden address later.
//!
//! Built-in denies: link-local and cloud metadata addresses, unspecified
//! and multicast addresses, and loopback. Configured `deny` ranges are
//! added; an address inside a configured `allow` range is allowed whatever
//! denies it (that is how loopback is opened for local receivers). Private
//! ranges are allowed: ETL systems live there.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `fd00:ec2::254/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:169.254.169.254`) are judged as the
/// IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blocked by the egress policy: {ip} is in {rule} ({why})")]
pub struct Blocked {
    pub ip: IpAddr,
    pub rule: Cidr,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<(Cidr, String)>,
}

const BUILT_IN: [(&str, &str); 9] = [
    ("169.254.0.0/16", "link-local, cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("127.0.0.0/8", "loopback; allow it with egress.allow"),
    ("::1/128", "loopback; allow it with egress.allow"),
];

impl Default for EgressPolicy {
    fn default() -> Self {
        let deny = BUILT_IN
            .iter()
            // The built-in ranges are literals that parse.
            .filter_map(|(cidr, why)| cidr.parse().ok().map(|c| (c, (*why).to_owned())))
            .collect();
        Self {
            allow: Vec::new(),
            deny,
        }
    }
}

impl EgressPolicy {
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        match self.deny.iter().find(|(c, _)| c.contains(ip)) {
            Some((rule, why)) => Err(Blocked {
                ip,
                rule: *rule,
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_defaults_block_metadata_and_loopback_and_allow_private_ranges() {
        let policy = EgressPolicy::default();
        let blocked = policy.check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(blocked.to_string(), "blocked by the egress policy: 169.254.169.254 is in 169.254.0.0/16 (link-local, cloud metadata)");
        assert!(policy.check(ip("::ffff:169.254.169.254")).is_err());
        assert!(policy.check(ip("fd00:ec2::254")).is_err());
        assert!(policy.check(ip("127.0.0.1")).is_err());
        assert!(policy.check(ip("::1")).is_err());
        assert!(policy.check(ip("0.0.0.0")).is_err());
        assert!(policy.check(ip("239.1.1.1")).is_err());
        assert!(policy.check(ip("10.1.2.3")).is_ok());
        assert!(policy.check(ip("192.168.1.5")).is_ok());
        assert!(policy.check(ip("203.0.113.9")).is_ok());
    }

    #[test]
    fn an_allow_range_opens_what_a_deny_closes() {
        let mut policy = EgressPolicy::default();
        policy.allow.push("127.0.0.0/8".parse().unwrap());
        policy
            .deny
            .push(("10.99.0.0/16".parse().unwrap(), "configured".into()));
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("10.99.3.4")).is_err());
        assert!(policy.check(ip("10.98.3.4")).is_ok());
    }

    #[test]
    fn cidrs_parse_and_match_on_bit_boundaries() {
        let c: Cidr = "10.0.0.0/9".parse().unwrap();
        assert!(c.contains(ip("10.127.255.255")));
        assert!(!c.contains(ip("10.128.0.0")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    }
}
