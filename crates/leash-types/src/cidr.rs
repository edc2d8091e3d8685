//! CIDR blocks (`10.0.0.0/8`, `::1/128`, or a bare address) and membership checks, for
//! `token_bound_cidrs`, `secret_id_bound_cidrs` and the like. Checked against the real
//! peer address only.

use std::net::IpAddr;

/// A parsed CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR block {0:?}")]
pub struct CidrError(pub String);

impl Cidr {
    /// Parses `addr/prefix` or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether every address of this block lies in `outer`.
    pub fn within(&self, outer: &Cidr) -> bool {
        let (mine, theirs) = (self.prefix_in_v6_terms(), outer.prefix_in_v6_terms());
        mine >= theirs && outer.contains(self.addr)
    }

    /// The prefix length counted as if IPv4 blocks were IPv4-mapped IPv6 ones.
    fn prefix_in_v6_terms(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => self.prefix + 96,
            IpAddr::V6(_) => self.prefix,
        }
    }

    /// Whether `ip` lies in the block. IPv4-mapped IPv6 addresses match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(x)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(net) & mask == u32::from(x) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(x)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(x) & mask
            }
            _ => false,
        }
    }
}

/// Whether `ip` is in any of `blocks` (an empty list allows every address).
pub fn allowed(blocks: &[Cidr], ip: Option<IpAddr>) -> bool {
    if blocks.is_empty() {
        return true;
    }
    match ip {
        Some(ip) => blocks.iter().any(|b| b.contains(ip)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let b = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(b.contains("10.1.2.3".parse().unwrap()));
        assert!(!b.contains("10.2.0.1".parse().unwrap()));
        assert!(b.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert!(allowed(&[], None));
        assert!(!allowed(&[b], None));
    }

    #[test]
    fn a_block_within_another() {
        let outer = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(Cidr::parse("10.1.2.0/24").unwrap().within(&outer));
        assert!(Cidr::parse("10.1.2.3").unwrap().within(&outer));
        assert!(outer.within(&outer));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().within(&outer));
        assert!(!Cidr::parse("10.2.0.0/24").unwrap().within(&outer));
        assert!(!Cidr::parse("::/0").unwrap().within(&outer));
    }
}
