//! The advertised address: which IP and port other services should call.
//!
//! - Port: `NACOS_PORT` if set; else the port the app is bound to, given by the framework
//!   adapter (`Registration::listening_on`) or found among the process's own listening TCP
//!   sockets (the `listener` module, Linux `/proc`). Several listeners on different ports
//!   are ambiguous and need `NACOS_PORT`.
//! - IP: `NACOS_IP` if set; else the bound IP when it is a specific, non-loopback address;
//!   else [`detect_ip`]: the address of `NACOS_NETWORK_INTERFACE`, else the first
//!   non-loopback address of an interface that is up, preferring `NACOS_PREFERRED_NETWORKS`
//!   (the order Spring Cloud's `InetUtils` uses). The family is IPv4, or IPv6 with
//!   `NACOS_IP_TYPE=ipv6` or when no interface has an IPv4 (IPv6-only pods); an IPv6 is a
//!   global one (ULA `fd00::/8` included), never link-local (`fe80::/10`).

use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};
use crate::settings::{Config, IpType};

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
        config.ip_type(),
    )
}

#[cfg(feature = "grpc")]
/// This host's address as a client reports it to the server (the `clientIp` of gRPC
/// requests, what the Java client sends as `NetUtils.localIP()`): the first usable address
/// of an interface that is up, IPv4 first; read once per process, empty when there is none.
pub(crate) fn client_ip() -> &'static str {
    static IP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IP.get_or_init(|| {
        if_addrs::get_if_addrs()
            .ok()
            .and_then(|interfaces| pick_ip(&interfaces, None, &[], None).ok())
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    })
}

#[cfg(feature = "grpc")]
/// The app's name as the connection's `AppName` label shows it in the Nacos console: the
/// executable's file name (the Java client sends `project.name`, else "unknown").
pub(crate) fn app_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// Whether `ip` can be advertised: not loopback, not link-local, not unspecified or
/// multicast; for IPv6, link-local (`fe80::/10`) never.
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn of_type(ip: IpAddr, ip_type: IpType) -> bool {
    match ip_type {
        IpType::V4 => ip.is_ipv4(),
        _ => ip.is_ipv6(),
    }
}

fn pick_ip(
    interfaces: &[if_addrs::Interface],
    network_interface: Option<&str>,
    preferred_networks: &[String],
    ip_type: Option<IpType>,
) -> Result<IpAddr> {
    // Without NACOS_IP_TYPE: IPv4, else IPv6 when no interface that is up has an IPv4.
    let in_scope = |i: &if_addrs::Interface| match network_interface {
        Some(name) => i.name == name,
        None => i.is_oper_up(),
    };
    let ip_type = ip_type.unwrap_or_else(|| {
        let any_v4 = interfaces
            .iter()
            .any(|i| i.ip().is_ipv4() && usable(i.ip()) && in_scope(i));
        if any_v4 { IpType::V4 } else { IpType::V6 }
    });
    let family = match ip_type {
        IpType::V4 => "IPv4",
        _ => "global IPv6",
    };
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
            .find(|i| i.name == name && of_type(i.ip(), ip_type) && usable(i.ip()))
            .map(|i| i.ip())
            .ok_or_else(|| {
                Error::Address(format!(
                    "NACOS_NETWORK_INTERFACE={name:?} has no {family} address (interfaces: {}); \
                     set NACOS_IP or another interface",
                    seen()
                ))
            });
    }
    let mut candidates: Vec<&if_addrs::Interface> = interfaces
        .iter()
        .filter(|i| of_type(i.ip(), ip_type) && usable(i.ip()) && i.is_oper_up())
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
            "no network interface that is up has a {family} address other than loopback or link-local (interfaces: {}); set NACOS_IP",
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

#[cfg(test)]
mod tests {
    use super::*;
    use if_addrs::{IfAddr, IfOperStatus, Ifv4Addr, Ifv6Addr, Interface};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn iface6(name: &str, ip: &str, index: u32) -> Interface {
        Interface {
            name: name.into(),
            addr: IfAddr::V6(Ifv6Addr {
                ip: ip.parse::<Ipv6Addr>().unwrap(),
                netmask: Ipv6Addr::UNSPECIFIED,
                prefixlen: 64,
                broadcast: None,
            }),
            index: Some(index),
            oper_status: IfOperStatus::Up,
            is_p2p: false,
            #[cfg(windows)]
            adapter_name: String::new(),
        }
    }

    fn v6_only() -> Vec<Interface> {
        vec![
            iface6("lo", "::1", 1),
            iface6("eth0", "fe80::1", 2),
            iface6("eth0", "2001:db8::5", 2),
            iface6("eth1", "fd00::9", 3),
        ]
    }

    #[test]
    fn an_ipv6_only_host_advertises_a_global_ipv6_never_link_local() {
        let ip = pick_ip(&v6_only(), None, &[], None).unwrap();
        assert_eq!(ip.to_string(), "2001:db8::5");
        let ip = pick_ip(&v6_only(), Some("eth1"), &[], None).unwrap();
        assert_eq!(ip.to_string(), "fd00::9");
        let nets = ["fd00::/8".to_owned()];
        assert_eq!(
            pick_ip(&v6_only(), None, &nets, None).unwrap().to_string(),
            "fd00::9"
        );
        let only_link_local = vec![iface6("lo", "::1", 1), iface6("eth0", "fe80::1", 2)];
        let err = pick_ip(&only_link_local, None, &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("global IPv6") && err.contains("set NACOS_IP"),
            "{err}"
        );
    }

    #[test]
    fn ip_type_chooses_the_family() {
        let mut both = sample();
        both.extend(v6_only());
        assert_eq!(
            pick_ip(&both, None, &[], None).unwrap().to_string(),
            "10.0.0.5"
        );
        assert_eq!(
            pick_ip(&both, None, &[], Some(IpType::V6))
                .unwrap()
                .to_string(),
            "2001:db8::5"
        );
        assert_eq!(
            pick_ip(&both, None, &[], Some(IpType::V4))
                .unwrap()
                .to_string(),
            "10.0.0.5"
        );
        let err = pick_ip(&sample(), None, &[], Some(IpType::V6))
            .unwrap_err()
            .to_string();
        assert!(err.contains("global IPv6"), "{err}");
    }

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
            pick_ip(&sample(), None, &[], None).unwrap().to_string(),
            "10.0.0.5"
        );
    }

    #[test]
    fn named_interface_wins() {
        let ip = pick_ip(&sample(), Some("eth1"), &[], None).unwrap();
        assert_eq!(ip.to_string(), "192.168.1.9");
        let err = pick_ip(&sample(), Some("wlan0"), &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NACOS_NETWORK_INTERFACE=\"wlan0\""), "{err}");
        assert!(err.contains("eth0 10.0.0.5"), "{err}");
    }

    #[test]
    fn preferred_networks_by_cidr_or_prefix() {
        let nets = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ip = pick_ip(&sample(), None, &nets(&["192.168.0.0/16"]), None).unwrap();
        assert_eq!(ip.to_string(), "192.168.1.9");
        let ip = pick_ip(&sample(), None, &nets(&["172.17."]), None).unwrap();
        assert_eq!(ip.to_string(), "172.17.0.1");
        let ip = pick_ip(&sample(), None, &nets(&["8.8.0.0/16"]), None).unwrap();
        assert_eq!(ip.to_string(), "10.0.0.5", "falls back to the first one up");
    }

    #[test]
    fn only_loopback_is_an_error_naming_nacos_ip() {
        let only_lo = vec![iface("lo", [127, 0, 0, 1], 1, true)];
        let err = pick_ip(&only_lo, None, &[], None).unwrap_err().to_string();
        assert!(err.contains("set NACOS_IP"), "{err}");
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
