//! Where each node's files live under the lab root. Both nodes share one filesystem,
//! so everything a real host keeps in /etc, /var and /run gets a per-node path here.

use std::path::{Path, PathBuf};

use crate::topology::NodeId;

#[derive(Debug, Clone)]
pub struct NodePaths {
    pub dir: PathBuf,
    /// mmvip as a package installed it (binary, plugin directory), shared by both
    /// nodes, instead of a copy per node.
    pub installed_mmvip: Option<(PathBuf, PathBuf)>,
}

impl NodePaths {
    pub fn new(root: &Path, node: NodeId) -> NodePaths {
        NodePaths {
            dir: root.join(node.name()),
            installed_mmvip: None,
        }
    }

    /// The installed mmvip, when the artifacts are the installed ones.
    pub fn using(mut self, artifacts: &crate::hooks::Artifacts) -> NodePaths {
        if artifacts.installed {
            self.installed_mmvip =
                Some((artifacts.mmvip_bin.clone(), artifacts.plugin_dir.clone()));
        }
        self
    }

    // MariaDB
    pub fn my_cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("mysqld.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("mariadbd.pid")
    }
    pub fn mariadb_log(&self) -> PathBuf {
        self.dir.join("mariadbd.err")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }
    pub fn mariadb_console(&self) -> PathBuf {
        self.dir.join("mariadbd.out")
    }

    // keepalived
    pub fn etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }
    pub fn keepalived_conf(&self) -> PathBuf {
        self.etc_dir().join("keepalived.conf")
    }
    pub fn failover_file(&self) -> PathBuf {
        self.etc_dir().join("failover")
    }
    pub fn keepalived_pid(&self) -> PathBuf {
        self.run_dir().join("keepalived.pid")
    }
    pub fn vrrp_pid(&self) -> PathBuf {
        self.run_dir().join("vrrp.pid")
    }
    pub fn keepalived_log(&self) -> PathBuf {
        self.dir.join("keepalived.log")
    }

    // the notify probe (`mmvip-lab probe-notify`)
    pub fn probe_dir(&self) -> PathBuf {
        self.dir.join("probe")
    }
    pub fn probe_log(&self) -> PathBuf {
        self.probe_dir().join("notify-probe.log")
    }
    pub fn probe_fault_file(&self) -> PathBuf {
        self.etc_dir().join("probe-fault")
    }

    // shell baseline hooks
    pub fn hooks_dir(&self) -> PathBuf {
        self.dir.join("hooks")
    }
    pub fn hooks_log(&self) -> PathBuf {
        self.dir.join("hooks.log")
    }

    // mmvip, laid out as the README installs it on a host
    pub fn mmvip_dir(&self) -> PathBuf {
        self.dir.join("mmvip")
    }
    pub fn mmvip_bin(&self) -> PathBuf {
        match &self.installed_mmvip {
            Some((bin, _)) => bin.clone(),
            None => self.mmvip_dir().join("bin").join("mmvip"),
        }
    }
    pub fn mmvip_plugins(&self) -> PathBuf {
        match &self.installed_mmvip {
            Some((_, plugins)) => plugins.clone(),
            None => self.mmvip_dir().join("plugins"),
        }
    }
    pub fn mmvip_config(&self) -> PathBuf {
        self.mmvip_dir().join("mmvip.toml")
    }
    pub fn mmvip_cache(&self) -> PathBuf {
        self.mmvip_dir().join("cache")
    }
    pub fn mmvip_log(&self) -> PathBuf {
        self.mmvip_dir().join("mmvip.log")
    }
    pub fn mmvip_state(&self) -> PathBuf {
        self.mmvip_dir().join("state")
    }
    /// The `[peer]` account's password, root-owned 0600.
    pub fn peer_password(&self) -> PathBuf {
        self.mmvip_dir().join("peer-password")
    }

    // the guard (`mmvip guard`, hook set `guard`)
    /// The secret both guards share, root-owned 0600.
    pub fn guard_secret(&self) -> PathBuf {
        self.mmvip_dir().join("guard-secret")
    }
    /// keepalived's track files, written by the guard: `health`, `failover`, `VI_n`.
    pub fn track_dir(&self) -> PathBuf {
        self.run_dir().join("track")
    }
    /// The witness account's password, root-owned 0600.
    pub fn witness_password(&self) -> PathBuf {
        self.mmvip_dir().join("witness-password")
    }
    /// The running guard's pid, written by the lab when it starts one.
    pub fn guard_pid(&self) -> PathBuf {
        self.run_dir().join("guard.pid")
    }
    /// keepalived's check that the guard runs.
    pub fn guard_check(&self) -> PathBuf {
        self.etc_dir().join("chk_guard.sh")
    }
    pub fn guard_log(&self) -> PathBuf {
        self.dir.join("guard.out")
    }
}
