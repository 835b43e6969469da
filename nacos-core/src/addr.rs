//! The advertised address: which IP and port other services should call.
//!
//! - Port: `NACOS_PORT` if set; else the port the app is bound to, given by the framework
//!   adapter (`Registration::listening_on`) or found among the process's own listening TCP
//!   sockets (the `listener` module, Linux `/proc`). Several listeners on different ports
//!   are ambiguous and need `NACOS_PORT`.
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
