//! The app's listening socket, seen from inside the process: when it appears (the moment
//! to register), which port it is, and whether the app has closed it again (its own
//! shutdown has begun).
//!
//! A layer never sees the framework's listener, so on Linux the engine reads the
//! process's own sockets: `/proc/self/fd` names the socket inodes the process holds, and
//! `/proc/self/net/tcp{,6}` says which of them listen, and where. Elsewhere nothing can be
//! read: the adapter passes the bound address (`Registration::listening_on`) or
//! `NACOS_PORT` is set, and a closed listener cannot be told from an open one.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The listening TCP sockets this process holds, IPv4 and IPv6, in no set order.
///
/// On Linux this reads `/proc/self/fd` (to find the process's own sockets) and
/// `/proc/self/net/tcp{,6}` (to find which of them listen, and where). Elsewhere it returns
/// `None`: the adapter must pass the bound address, or `NACOS_PORT` must be set.
pub fn own_listeners() -> Option<Vec<SocketAddr>> {
    #[cfg(target_os = "linux")]
    {
        procfs::own_listeners().ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// What the process's listening sockets say about the port to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listening {
    /// Nothing listens yet.
    Nothing,
    /// One port (maybe on several addresses, e.g. IPv4 and IPv6): that one.
    One(SocketAddr),
    /// Several ports and no `NACOS_PORT` to choose.
    Ambiguous(Vec<SocketAddr>),
}

/// Chooses among the process's listeners. With `NACOS_PORT` set, any listener means the
/// app is up (the advertised port may be a published port that is not bound here); a
/// listener on that very port is preferred for its IP.
pub(crate) fn choose_listener(listeners: &[SocketAddr], port: Option<u16>) -> Listening {
    let Some(first) = listeners.first() else {
        return Listening::Nothing;
    };
    if let Some(port) = port {
        let chosen = listeners.iter().find(|a| a.port() == port).unwrap_or(first);
        return Listening::One(*chosen);
    }
    if listeners.iter().all(|a| a.port() == first.port()) {
        // Prefer the IPv4 form of a dual bind: it is what the detected IP will be.
        let chosen = listeners.iter().find(|a| a.is_ipv4()).unwrap_or(first);
        Listening::One(*chosen)
    } else {
        let mut all = listeners.to_vec();
        all.sort();
        all.dedup();
        Listening::Ambiguous(all)
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod procfs {
    use std::collections::HashSet;
    use std::fs;
    use std::io;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    const TCP_LISTEN: &str = "0A";

    pub(super) fn own_listeners() -> io::Result<Vec<SocketAddr>> {
        let mut inodes = HashSet::new();
        for entry in fs::read_dir("/proc/self/fd")? {
            let Ok(entry) = entry else { continue };
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
        let mut out = Vec::new();
        if inodes.is_empty() {
            return Ok(out);
        }
        for (path, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
            let Ok(table) = fs::read_to_string(path) else {
                continue;
            };
            out.extend(parse_table(&table, v6, |inode| inodes.contains(inode)));
        }
        Ok(out)
    }

    /// Parses a `/proc/net/tcp` table, keeping listening sockets whose inode `is_ours`.
    pub(crate) fn parse_table(
        table: &str,
        v6: bool,
        is_ours: impl Fn(&str) -> bool,
    ) -> Vec<SocketAddr> {
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                if cols.len() < 10 || cols[3] != TCP_LISTEN || !is_ours(cols[9]) {
                    return None;
                }
                parse_addr(cols[1], v6)
            })
            .collect()
    }

    fn parse_addr(field: &str, v6: bool) -> Option<SocketAddr> {
        let (ip_hex, port_hex) = field.split_once(':')?;
        let port = u16::from_str_radix(port_hex, 16).ok()?;
        // The kernel prints the address bytes as native-endian 32-bit words.
        let mut words = Vec::with_capacity(4);
        for chunk in ip_hex.as_bytes().chunks(8) {
            let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
            words.extend_from_slice(&word.to_ne_bytes());
        }
        let ip = if v6 {
            let bytes: [u8; 16] = words.try_into().ok()?;
            let ip = Ipv6Addr::from(bytes);
            ip.to_ipv4_mapped().map_or(ip.into(), Into::into)
        } else {
            let bytes: [u8; 4] = words.try_into().ok()?;
            Ipv4Addr::from(bytes).into()
        };
        Some(SocketAddr::new(ip, port))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 100 0 0 10 0
   3: 0200000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0000000000000000 100 0 0 10 0
";

        #[test]
        fn parses_listening_sockets_of_this_process_only() {
            let ours = |inode: &str| ["1111", "3333", "4444"].contains(&inode);
            let found = parse_table(TCP, false, ours);
            assert_eq!(
                found,
                vec![
                    "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
                    "10.0.0.2:80".parse().unwrap()
                ]
            );
        }

        #[test]
        fn parses_ipv6() {
            let found = parse_table(TCP6, true, |_| true);
            assert_eq!(
                found,
                vec![
                    "[::]:8081".parse::<SocketAddr>().unwrap(),
                    "[::1]:8082".parse().unwrap()
                ]
            );
        }

        #[test]
        fn finds_a_listener_of_this_very_process() {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            assert!(own_listeners().unwrap().contains(&addr));
            drop(listener);
            assert!(!own_listeners().unwrap().contains(&addr));
        }
    }
}

/// How long to wait before looking for the app's listener again, `waited` after the
/// registration started looking: every 2 ms for the first 2 s (an app usually listens
/// within milliseconds of building its router), every 50 ms up to 30 s, then every 500 ms.
pub(crate) fn detect_pause(waited: Duration) -> Duration {
    if waited < Duration::from_secs(2) {
        Duration::from_millis(2)
    } else if waited < Duration::from_secs(30) {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(500)
    }
}

/// What can be told of an app's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// It still listens on (one of) the ports.
    Open,
    /// It has closed every one of them.
    Closed,
    /// Nothing can be read (no `/proc`): it may be either.
    Unknown,
}

/// Whether the app still listens on the ports of `bound` (any port at all when `bound` is
/// empty).
///
/// Closed means gone from `/proc` on two reads in a row and refusing a loopback connection:
/// the kernel's table is read in chunks and can skip an entry once while other sockets come
/// and go, and a refused connection confirms that nothing accepts any more. The two reads
/// are 5 ms apart, and a connection attempt waits at most 100 ms, so a call takes 5 ms to
/// 110 ms per port when the listener looks closed, and microseconds when it is open.
pub fn listener_state(bound: &[SocketAddr]) -> ListenerState {
    let gone = || match own_listeners() {
        None => None,
        Some(listeners) if bound.is_empty() => Some(listeners.is_empty()),
        Some(listeners) => Some(
            !bound
                .iter()
                .any(|b| listeners.iter().any(|l| l.port() == b.port())),
        ),
    };
    match gone() {
        None => return ListenerState::Unknown,
        Some(false) => return ListenerState::Open,
        Some(true) => {}
    }
    std::thread::sleep(Duration::from_millis(5));
    if gone() != Some(true) {
        return ListenerState::Open;
    }
    if bound.iter().all(|addr| refuses_connections(*addr)) {
        ListenerState::Closed
    } else {
        ListenerState::Open
    }
}

/// Whether a connection to `bound` (a wildcard or loopback IP means loopback) is refused.
fn refuses_connections(bound: SocketAddr) -> bool {
    let mut addr = bound;
    if addr.ip().is_unspecified() || addr.ip().is_loopback() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choosing_a_listener() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(choose_listener(&[], None), Listening::Nothing);
        assert_eq!(
            choose_listener(&[a("[::]:80"), a("0.0.0.0:80")], None),
            Listening::One(a("0.0.0.0:80"))
        );
        assert!(matches!(
            choose_listener(&[a("0.0.0.0:80"), a("0.0.0.0:9090")], None),
            Listening::Ambiguous(v) if v.len() == 2
        ));
        assert_eq!(
            choose_listener(&[a("0.0.0.0:80"), a("0.0.0.0:9090")], Some(9090)),
            Listening::One(a("0.0.0.0:9090"))
        );
        assert_eq!(
            choose_listener(&[a("0.0.0.0:80")], Some(30080)),
            Listening::One(a("0.0.0.0:80"))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_closed_listener_is_told_from_an_open_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listener_state(&[addr]), ListenerState::Open);
        let wildcard = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
        assert_eq!(listener_state(&[wildcard]), ListenerState::Open);
        drop(listener);
        assert_eq!(listener_state(&[addr]), ListenerState::Closed);
        assert_eq!(listener_state(&[wildcard]), ListenerState::Closed);
    }
}
