//! Where viewers connect and publishers post: plain `http://IP:PORT/path` URLs, loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::BenchError;

/// An `http://host:port/path` URL taken apart; the host is an IP literal or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<Self, BenchError> {
        let invalid = |reason: &str| BenchError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// urls are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| invalid("the url needs an explicit port"))?;
        let port: u16 = port.parse().map_err(|_| invalid("invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| invalid("the host must be an ip address or localhost"))?
        };
        if !ip.is_loopback() {
            return Err(invalid("only loopback addresses are allowed"));
        }
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// Parses `template` with every `{video}` replaced by `video`.
    pub fn from_template(template: &str, video: &str) -> Result<Self, BenchError> {
        Self::parse(&template.replace("{video}", video))
    }

    /// This URL with every `{video}` of its path replaced by `video`.
    pub fn with_video(&self, video: &str) -> Self {
        Self {
            path: self.path.replace("{video}", video),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_url_with_a_template_parses() {
        let url =
            HttpUrl::from_template("http://127.0.0.1:8111/v1/videos/{video}/events", "v1").unwrap();
        assert_eq!(url.addr, "127.0.0.1:8111".parse().unwrap());
        assert_eq!(url.authority, "127.0.0.1:8111");
        assert_eq!(url.path, "/v1/videos/v1/events");
        let bare = HttpUrl::parse("http://localhost:80").unwrap();
        assert_eq!(bare.path, "/");
    }

    #[test]
    fn remote_hosts_and_other_schemes_are_refused() {
        assert!(HttpUrl::parse("http://10.0.0.1:80/x").is_err());
        assert!(HttpUrl::parse("https://127.0.0.1:80/x").is_err());
        assert!(HttpUrl::parse("http://127.0.0.1/x").is_err());
    }
}
