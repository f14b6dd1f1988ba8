//! Small helpers for hosts, addresses, durations and quoting shared by the
//! parser, the TOML writer and the nats-server config renderer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// `host:port`, with brackets around IPv6 literals.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The host a client should dial to reach a listener bound on `host`: the
/// wildcard addresses (`0.0.0.0`, `::`) are replaced by the loopback address
/// of the same family, everything else is kept.
pub(crate) fn connect_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.to_string(),
        _ => host.to_owned(),
    }
}

/// Same as [`connect_host`] for a socket address.
pub(crate) fn connect_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// An IP address or a DNS name made of `[A-Za-z0-9-]` labels.
pub(crate) fn is_valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What a listener binds to, for clash detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKey {
    /// `0.0.0.0` or `::`: clashes with every other host on the same port.
    Any,
    Ip(IpAddr),
    Name(String),
}

impl HostKey {
    pub(crate) fn of_host(host: &str) -> HostKey {
        match host.parse::<IpAddr>() {
            Ok(ip) => HostKey::of_ip(ip),
            Err(_) if host.eq_ignore_ascii_case("localhost") => {
                HostKey::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            Err(_) => HostKey::Name(host.to_ascii_lowercase()),
        }
    }

    pub(crate) fn of_ip(ip: IpAddr) -> HostKey {
        if ip.is_unspecified() {
            HostKey::Any
        } else {
            HostKey::Ip(ip)
        }
    }

    pub(crate) fn clashes_with(&self, other: &HostKey) -> bool {
        matches!(self, HostKey::Any) || matches!(other, HostKey::Any) || self == other
    }
}

/// A duration written with the largest unit that represents it exactly
/// (`24h`, `90s`, `1500ms`). Both humantime and Go's `time.ParseDuration`
/// (used by nats-server) accept the result.
pub(crate) fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    const UNITS: [(u128, &str); 5] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (size, unit) in UNITS {
        if nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// A TOML basic string (`"..."`) holding `s`.
pub(crate) fn toml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A nats-server config double-quoted string holding `s`. The nats config
/// lexer understands `\\`, `\"`, `\n`, `\t`, `\r` and `\xHH` escapes.
pub(crate) fn nats_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed_in_host_port() {
        assert_eq!(host_port("::1", 4222), "[::1]:4222");
        assert_eq!(host_port("127.0.0.1", 4222), "127.0.0.1:4222");
        assert_eq!(host_port("nats.internal", 4222), "nats.internal:4222");
    }

    #[test]
    fn wildcard_hosts_are_dialed_on_loopback() {
        assert_eq!(connect_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(connect_host("::"), "::1");
        assert_eq!(connect_host("10.1.2.3"), "10.1.2.3");
        let any: SocketAddr = "0.0.0.0:8111".parse().expect("addr");
        assert_eq!(connect_addr(any).to_string(), "127.0.0.1:8111");
    }

    #[test]
    fn hosts_must_be_ip_addresses_or_dns_names() {
        for ok in ["127.0.0.1", "::1", "localhost", "nats-1.dc1.example"] {
            assert!(is_valid_host(ok), "{ok}");
        }
        for bad in ["", "a b", "-x", "x..y", "[::1]", "x\"y", "host:4222"] {
            assert!(!is_valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn wildcard_and_loopback_on_same_port_clash_but_distinct_ips_do_not() {
        let any = HostKey::of_host("0.0.0.0");
        let lo = HostKey::of_host("127.0.0.1");
        let localhost = HostKey::of_host("LocalHost");
        let other = HostKey::of_host("127.0.0.2");
        assert!(any.clashes_with(&lo));
        assert!(lo.clashes_with(&any));
        assert!(lo.clashes_with(&localhost));
        assert!(!lo.clashes_with(&other));
    }

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for d in [
            Duration::from_secs(86_400),
            Duration::from_millis(1500),
            Duration::from_micros(3),
        ] {
            let back = humantime_serde::re::humantime::parse_duration(&format_duration(d));
            assert_eq!(back.ok(), Some(d));
        }
    }

    #[test]
    fn quoting_escapes_quotes_backslashes_and_controls() {
        assert_eq!(toml_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_quote("x\u{1}"), r#""x\u0001""#);
        assert_eq!(nats_quote(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
        assert_eq!(nats_quote("x\u{1}"), r#""x\x01""#);
    }
}
