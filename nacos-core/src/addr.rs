//! The advertised address: which IP and port other services should call.
//!
//! - Port: `NACOS_PORT` if set; else the port the app is bound to, given by the framework
//!   adapter (`Registration::bound`) or found among the process's own listening TCP sockets
//!   ([`own_listeners`], Linux `/proc`). Several listeners on different ports are ambiguous
//!   and need `NACOS_PORT`.
//! - IP: `NACOS_IP` if set; else the bound IP when it is a specific, non-loopback address;
//!   else [`detect_ip`]: the IPv4 of `NACOS_NETWORK_INTERFACE`, else the first non-loopback
//!   IPv4 of an interface that is up, preferring `NACOS_PREFERRED_NETWORKS` (the order Spring
//!   Cloud's `InetUtils` uses).

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::error::{Error, Result};

/// Picks the IP to advertise when none is configured and the bind address is a wildcard or
/// loopback.
///
/// # Errors
/// [`Error::Address`] when `NACOS_NETWORK_INTERFACE` names no interface with an IPv4
/// address, or when no interface other than loopback is up; the message lists the
/// interfaces seen and says to set `NACOS_IP`.
pub fn detect_ip(config: &Config) -> Result<IpAddr> {
    let interfaces = if_addrs::get_if_addrs().map_err(|e| {
        Error::Address(format!(
            "cannot list network interfaces ({e}); set NACOS_IP"
        ))
    })?;
    pick_ip(
        &interfaces,
        config.network_interface(),
        config.preferred_networks(),
    )
}

fn pick_ip(
    interfaces: &[if_addrs::Interface],
    network_interface: Option<&str>,
    preferred_networks: &[String],
) -> Result<IpAddr> {
    let seen = || {
        let mut names: Vec<String> = interfaces
            .iter()
            .map(|i| format!("{} {}", i.name, i.ip()))
            .collect();
        names.dedup();
        names.join(", ")
    };
    if let Some(name) = network_interface {
        return interfaces
            .iter()
            .find(|i| i.name == name && i.ip().is_ipv4())
            .map(|i| i.ip())
            .ok_or_else(|| {
                Error::Address(format!(
                    "NACOS_NETWORK_INTERFACE={name:?} has no IPv4 address (interfaces: {}); \
                     set NACOS_IP or another interface",
                    seen()
                ))
            });
    }
    let mut candidates: Vec<&if_addrs::Interface> = interfaces
        .iter()
        .filter(|i| i.ip().is_ipv4() && !i.is_loopback() && !i.is_link_local() && i.is_oper_up())
        .collect();
    candidates.sort_by_key(|i| i.index.unwrap_or(u32::MAX));
    if let Some(preferred) = candidates
        .iter()
        .find(|i| preferred_networks.iter().any(|net| in_network(i.ip(), net)))
    {
        return Ok(preferred.ip());
    }
    if !preferred_networks.is_empty() && !candidates.is_empty() {
        tracing::warn!(
            preferred_networks = ?preferred_networks,
            "no interface address is in NACOS_PREFERRED_NETWORKS; using the first one that is up"
        );
    }
    candidates.first().map(|i| i.ip()).ok_or_else(|| {
        Error::Address(format!(
            "no network interface other than loopback is up (interfaces: {}); set NACOS_IP",
            seen()
        ))
    })
}

/// Whether `ip` is in `network`: a CIDR (`10.0.0.0/8`) or an address prefix (`192.168.`).
fn in_network(ip: IpAddr, network: &str) -> bool {
    match network.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => ip.to_string().starts_with(network),
    }
}

/// The address to advertise for an app bound to `bound`, given the configuration.
///
/// # Errors
/// As [`detect_ip`], when the IP has to be detected.
pub fn advertised_addr(config: &Config, bound: SocketAddr) -> Result<SocketAddr> {
    let port = config.port().unwrap_or(bound.port());
    let ip = match config.ip() {
        Some(ip) => ip,
        None if !bound.ip().is_unspecified() && !bound.ip().is_loopback() => bound.ip(),
        None => detect_ip(config)?,
    };
    Ok(SocketAddr::new(ip, port))
}

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
mod procfs {
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
    pub(super) fn parse_table(
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

#[cfg(test)]
mod tests {
    use super::*;
    use if_addrs::{IfAddr, IfOperStatus, Ifv4Addr, Interface};
    use std::net::Ipv4Addr;

    fn iface(name: &str, ip: [u8; 4], index: u32, up: bool) -> Interface {
        Interface {
            name: name.into(),
            addr: IfAddr::V4(Ifv4Addr {
                ip: Ipv4Addr::from(ip),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                prefixlen: 24,
                broadcast: None,
            }),
            index: Some(index),
            oper_status: if up {
                IfOperStatus::Up
            } else {
                IfOperStatus::Down
            },
            is_p2p: false,
            #[cfg(windows)]
            adapter_name: String::new(),
        }
    }

    fn sample() -> Vec<Interface> {
        vec![
            iface("lo", [127, 0, 0, 1], 1, true),
            iface("docker0", [172, 17, 0, 1], 5, true),
            iface("eth0", [10, 0, 0, 5], 2, true),
            iface("eth1", [192, 168, 1, 9], 3, true),
            iface("eth2", [10, 9, 9, 9], 4, false),
        ]
    }

    #[test]
    fn first_up_non_loopback_by_index() {
        assert_eq!(
            pick_ip(&sample(), None, &[]).unwrap().to_string(),
            "10.0.0.5"
        );
    }

    #[test]
    fn named_interface_wins() {
        let ip = pick_ip(&sample(), Some("eth1"), &[]).unwrap();
        assert_eq!(ip.to_string(), "192.168.1.9");
        let err = pick_ip(&sample(), Some("wlan0"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NACOS_NETWORK_INTERFACE=\"wlan0\""), "{err}");
        assert!(err.contains("eth0 10.0.0.5"), "{err}");
    }

    #[test]
    fn preferred_networks_by_cidr_or_prefix() {
        let nets = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ip = pick_ip(&sample(), None, &nets(&["192.168.0.0/16"])).unwrap();
        assert_eq!(ip.to_string(), "192.168.1.9");
        let ip = pick_ip(&sample(), None, &nets(&["172.17."])).unwrap();
        assert_eq!(ip.to_string(), "172.17.0.1");
        let ip = pick_ip(&sample(), None, &nets(&["8.8.0.0/16"])).unwrap();
        assert_eq!(ip.to_string(), "10.0.0.5", "falls back to the first one up");
    }

    #[test]
    fn only_loopback_is_an_error_naming_nacos_ip() {
        let only_lo = vec![iface("lo", [127, 0, 0, 1], 1, true)];
        let err = pick_ip(&only_lo, None, &[]).unwrap_err().to_string();
        assert!(err.contains("set NACOS_IP"), "{err}");
    }

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

    #[test]
    fn advertised_addr_rules() {
        let cfg = Config::builder().service_name("s").build().unwrap();
        let bound: SocketAddr = "10.1.1.1:8080".parse().unwrap();
        assert_eq!(advertised_addr(&cfg, bound).unwrap(), bound);
        let cfg = Config::builder()
            .service_name("s")
            .ip("10.2.2.2".parse::<IpAddr>().unwrap())
            .port(9000u16)
            .build()
            .unwrap();
        let got = advertised_addr(&cfg, "0.0.0.0:8080".parse().unwrap()).unwrap();
        assert_eq!(got.to_string(), "10.2.2.2:9000");
    }
}
