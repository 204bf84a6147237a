//! Network namespaces for the `partition` scenario.
//!
//! Each node runs in a namespace of its own with one veth pair whose host end is enslaved
//! to a bridge in the host namespace. The bridge carries the host address (where
//! PostgreSQL and the load generator are) and every node's address sits in the same
//! subnet, so nodes reach the store, the load generator and each other without routing.
//! Cutting a node off is `ip link set <its host end> down`; healing is `up`.
//!
//! Everything here needs root or CAP_NET_ADMIN. Failing to build the network is an error
//! that names what is missing: the scenario fails, it is never skipped.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// The namespaces, veth pairs and bridge of one run; removed when dropped.
pub struct Network {
    tag: u32,
    nodes: usize,
}

impl Network {
    /// Builds a bridge and `nodes` namespaces, each joined to it by a veth pair.
    pub fn create(nodes: usize) -> Result<Network> {
        let tag = std::process::id() % 200 + 20;
        let net = Network { tag, nodes };
        net.remove_all();
        net.build().with_context(|| {
            "cannot build the network namespaces of the partition scenario; it needs root \
             or CAP_NET_ADMIN and the `ip` command (Debian: iproute2)"
        })?;
        Ok(net)
    }

    fn build(&self) -> Result<()> {
        let bridge = self.bridge();
        ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_addr()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..self.nodes {
            let ns = self.namespace(i);
            let host_end = self.host_link(i);
            let peer = format!("{host_end}p");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &peer,
            ])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &bridge])?;
            ip(&["link", "set", &host_end, "up"])?;
            let cidr = format!("{}/24", self.node_addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &peer])?;
            ip(&["-n", &ns, "link", "set", &peer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn bridge(&self) -> String {
        format!("svc{}br", self.tag)
    }

    /// The host end of node `i`'s veth pair (what a partition sets down).
    pub fn host_link(&self, i: usize) -> String {
        format!("svc{}n{i}", self.tag)
    }

    /// The namespace node `i` runs in.
    pub fn namespace(&self, i: usize) -> String {
        format!("svchaos{}-n{i}", self.tag)
    }

    /// The host's address on the bridge (PostgreSQL listens there too).
    pub fn host_addr(&self) -> String {
        format!("10.213.{}.1", self.tag)
    }

    /// Node `i`'s address inside its namespace.
    pub fn node_addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.tag, 10 + i)
    }

    /// Cuts node `i` off: its link goes down, so its packets (to the store, to peers, to
    /// clients) are dropped, not refused.
    pub fn cut(&self, i: usize) -> Result<()> {
        ip(&["link", "set", &self.host_link(i), "down"])
    }

    /// Restores node `i`'s link.
    pub fn heal(&self, i: usize) -> Result<()> {
        ip(&["link", "set", &self.host_link(i), "up"])
    }

    fn remove_all(&self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &self.host_link(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (Debian: apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
