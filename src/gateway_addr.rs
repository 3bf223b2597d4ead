//! How every CLI names the gateway (`--gateway`, else `$SPORTELLO_GATEWAY`): `host:port` as the
//! Python client and grpcurl take it, or a URL (`http://host:port`, `https://host:port`) as
//! tonic does. Either way the commands connect to the same URL, so one value works everywhere.

use std::fmt;

/// A gateway's URL, `scheme://host:port` with nothing after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway(String);

impl Gateway {
    /// The local suite's gateway (`sportello up` on its defaults).
    pub fn local() -> Self {
        Self(format!("http://{}", sportello_platform::config::DEFAULT_GATEWAY_LISTEN))
    }

    pub fn url(&self) -> &str {
        &self.0
    }

    /// Reads `host:port` (plaintext) or `http://host:port` / `https://host:port`; a trailing
    /// `/` is dropped. Anything else (a path, a query, no port on a bare address, another
    /// scheme) is refused with what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let expected = || format!("{text:?} is not a gateway: give host:port or http://host:port");
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_owned(), text),
        };
        if scheme != "http" && scheme != "https" {
            return Err(expected());
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let parsed: http::uri::Authority = authority.parse().map_err(|_| expected())?;
        let bare = !text.contains("://");
        if parsed.host().is_empty()
            || authority.contains(['/', '?', '#', '@'])
            || (bare && parsed.port().is_none())
        {
            return Err(expected());
        }
        Ok(Self(format!("{scheme}://{authority}")))
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Gateway {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Result<String, String> {
        Gateway::parse(text).map(|g| g.url().to_owned())
    }

    #[test]
    fn host_and_port_and_a_url_name_the_same_gateway() {
        assert_eq!(url("127.0.0.1:50051").as_deref(), Ok("http://127.0.0.1:50051"));
        assert_eq!(url("http://127.0.0.1:50051").as_deref(), Ok("http://127.0.0.1:50051"));
        assert_eq!(url("http://127.0.0.1:50051/").as_deref(), Ok("http://127.0.0.1:50051"));
        assert_eq!(url(" localhost:50051 ").as_deref(), Ok("http://localhost:50051"));
        assert_eq!(url("[::1]:50051").as_deref(), Ok("http://[::1]:50051"));
        assert_eq!(url("HTTPS://sportello.example").as_deref(), Ok("https://sportello.example"));
        assert_eq!(Gateway::local().url(), "http://127.0.0.1:50051");
    }

    #[test]
    fn a_path_another_scheme_or_a_bare_host_without_port_is_refused() {
        for bad in [
            "",
            "127.0.0.1",
            "http://",
            "grpc://127.0.0.1:50051",
            "http://127.0.0.1:50051/sportello",
            "http://127.0.0.1:50051?x=1",
            "http://user@127.0.0.1:50051",
            "127.0.0.1:port",
        ] {
            let refused = url(bad).expect_err(bad);
            assert!(refused.contains("host:port or http://host:port"), "{refused}");
        }
    }
}
