//! Listen addresses as users write them, and binding them.
//!
//! `--listen` and `--metrics-listen` accept `HOST:PORT` with an IP address
//! (`0.0.0.0:8443`, `[::1]:8443`), `localhost:PORT` (the IPv4 loopback, 127.0.0.1), and
//! `:PORT` or `[::]:PORT` for every address of both families. The default is `:PORT`, so
//! the same flags serve IPv4-only, IPv6-only and dual-stack clusters: `[::]` is bound with
//! `IPV6_V6ONLY` off (IPv4 clients arrive as `::ffff:a.b.c.d`), and a host without IPv6
//! falls back to `0.0.0.0`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    /// Every address, both families.
    Any(u16),
    /// 127.0.0.1.
    Localhost(u16),
    Ip(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535"))
        };
        if let Some(p) = s.strip_prefix(':') {
            return port(p).map(ListenAddr::Any);
        }
        if let Some(p) = s.strip_prefix("[::]:") {
            return port(p).map(ListenAddr::Any);
        }
        if let Some(p) = s.strip_prefix("localhost:") {
            return port(p).map(ListenAddr::Localhost);
        }
        s.parse::<SocketAddr>().map(ListenAddr::Ip).map_err(|_| {
            format!(
                "{s:?}: expected IP:PORT (0.0.0.0:8443, [::1]:8443), localhost:PORT, or :PORT for every address"
            )
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Any(p) => write!(f, ":{p}"),
            ListenAddr::Localhost(p) => write!(f, "localhost:{p}"),
            ListenAddr::Ip(a) => write!(f, "{a}"),
        }
    }
}

fn listener(addr: SocketAddr, dual_stack: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // As std and tokio do: a restarted server can rebind while old connections linger.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Binds `addr` (see the module comment for what each form means).
pub async fn bind(addr: ListenAddr) -> Result<TcpListener> {
    let bound = match addr {
        ListenAddr::Any(port) => {
            match listener(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), true) {
                Ok(l) => Ok(l),
                Err(e) => {
                    tracing::info!(error = %e, "IPv6 unavailable; listening on IPv4 only");
                    listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), false)
                }
            }
        }
        ListenAddr::Localhost(port) => {
            listener(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), false)
        }
        ListenAddr::Ip(a) => listener(a, false),
    };
    bound.with_context(|| format!("cannot listen on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_form_parses() {
        let ok = [
            (":8443", ListenAddr::Any(8443)),
            ("[::]:8443", ListenAddr::Any(8443)),
            ("localhost:9090", ListenAddr::Localhost(9090)),
            (
                "0.0.0.0:8443",
                ListenAddr::Ip("0.0.0.0:8443".parse().unwrap()),
            ),
            ("[::1]:1", ListenAddr::Ip("[::1]:1".parse().unwrap())),
            (
                "127.0.0.1:0",
                ListenAddr::Ip("127.0.0.1:0".parse().unwrap()),
            ),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<ListenAddr>(), Ok(want), "{s}");
        }
        for bad in [
            "8443",
            ":",
            ":99999",
            "example.com:80",
            "localhost",
            "[::1]",
            "",
        ] {
            let e = bad.parse::<ListenAddr>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn any_accepts_both_families() {
        let l = bind(ListenAddr::Any(0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        for target in [
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ] {
            let connect = tokio::net::TcpStream::connect(target);
            let (c, a) = tokio::join!(connect, l.accept());
            c.unwrap_or_else(|e| panic!("{target}: {e}"));
            a.unwrap();
        }
    }

    #[tokio::test]
    async fn localhost_is_the_ipv4_loopback() {
        let l = bind(ListenAddr::Localhost(0)).await.unwrap();
        assert_eq!(l.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
    }
}
