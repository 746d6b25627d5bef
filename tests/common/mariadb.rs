//! Real, throwaway `mariadbd` instances for tests: a temp datadir, a unix socket,
//! optionally a loopback port for replication. Every server is stopped by PID when
//! its handle drops, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use rustix::process::{Pid, Signal, kill_process};

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How a node of the seed's master/master pair is configured.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    pub server_id: u32,
    pub port: u16,
    /// 1 or 2: `auto_increment_offset` and `gtid_domain_id` follow it.
    pub offset: u32,
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub replication: Option<Replication>,
    /// Listening on `address:3306` inside network namespace `netns` (a witness).
    pub listen: Option<(String, String)>,
    /// The option file mariadbd reads (`--defaults-file`) instead of none.
    pub defaults_file: Option<PathBuf>,
    /// Options added to the command line at the next (re)start.
    pub extra_args: Vec<String>,
    child: Option<Child>,
    stopped_pid: Option<Pid>,
}

fn require_binaries() {
    for binary in [MARIADBD, INSTALL_DB] {
        assert!(
            Path::new(binary).exists(),
            "{binary} not found: these tests need Debian's mariadb-server (apt-get install mariadb-server)"
        );
    }
}

impl Server {
    /// A standalone server with networking off.
    pub fn start() -> Server {
        Server::start_with(None)
    }

    /// A server configured like one node of the seed's GTID master/master ring.
    pub fn start_replicating(replication: Replication) -> Server {
        Server::start_with(Some(replication))
    }

    /// A standalone server inside network namespace `netns`, listening on
    /// `address:3306` (the witness of the guard tests).
    pub fn start_witness(netns: &str, address: &str) -> Server {
        Server::start_with_listen(None, Some((netns.to_string(), address.to_string())))
    }

    /// A standalone server with networking off that reads `file` as its option file
    /// (`--defaults-file`), as a packaged server reads /etc/mysql/my.cnf.
    pub fn start_with_defaults_file(file: &Path) -> Server {
        let mut server = Server::prepare(None, None);
        server.defaults_file = Some(file.to_path_buf());
        server.launch();
        server
    }

    fn start_with(replication: Option<Replication>) -> Server {
        Server::start_with_listen(replication, None)
    }

    fn start_with_listen(
        replication: Option<Replication>,
        listen: Option<(String, String)>,
    ) -> Server {
        let mut server = Server::prepare(replication, listen);
        server.launch();
        server
    }

    /// A bootstrapped datadir, not started yet.
    fn prepare(replication: Option<Replication>, listen: Option<(String, String)>) -> Server {
        require_binaries();
        let dir = tempfile::tempdir().expect("temp dir");
        let datadir = dir.path().join("data");
        // Bootstraps run one at a time: concurrent ones were seen to trip over each
        // other's temporary tables.
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let installing = INSTALL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let install = Command::new(INSTALL_DB)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            // Its own temp dir: bootstraps in other PID namespaces (other test runs
            // on the machine) get the same pid, so the same temp table names in /tmp.
            .arg(format!("--tmpdir={}", dir.path().display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run mariadb-install-db");
        drop(installing);
        if !install.status.success() {
            let stderr = String::from_utf8_lossy(&install.stderr);
            let last: Vec<&str> = stderr.lines().rev().take(6).collect();
            panic!(
                "mariadb-install-db failed ({}): {}",
                install.status,
                last.join(" | ")
            );
        }
        let socket = dir.path().join("mysqld.sock");
        Server {
            dir,
            socket,
            replication,
            listen,
            defaults_file: None,
            extra_args: Vec::new(),
            child: None,
            stopped_pid: None,
        }
    }

    fn launch(&mut self) {
        let root = self.dir.path();
        let mut command = match &self.listen {
            Some((netns, _)) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, MARIADBD]);
                command
            }
            None => Command::new(MARIADBD),
        };
        match &self.defaults_file {
            // Must be mariadbd's first argument.
            Some(file) => command.arg(format!("--defaults-file={}", file.display())),
            None => command.arg("--no-defaults"),
        };
        command
            .arg(format!("--datadir={}", root.join("data").display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--pid-file={}", root.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", root.join("error.log").display()))
            .arg(format!("--tmpdir={}", root.display()))
            .args([
                "--user=root",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--max-connections=400",
                "--skip-name-resolve",
            ]);
        match self.replication {
            None => match &self.listen {
                Some((_, address)) => {
                    command.args([format!("--bind-address={address}"), "--port=3306".into()]);
                }
                None => {
                    command.arg("--skip-networking");
                }
            },
            Some(r) => {
                command.args([
                    "--bind-address=127.0.0.1".to_string(),
                    format!("--port={}", r.port),
                    format!("--server-id={}", r.server_id),
                    format!("--log-bin={}", root.join("binlog").display()),
                    "--log-slave-updates=ON".to_string(),
                    format!("--gtid-domain-id={}", r.offset),
                    "--gtid-strict-mode=ON".to_string(),
                    "--auto-increment-increment=2".to_string(),
                    format!("--auto-increment-offset={}", r.offset),
                    "--read-only=ON".to_string(),
                    "--binlog-format=ROW".to_string(),
                ]);
            }
        }
        command.args(&self.extra_args);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if self.try_connect().is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "mariadbd exited with {status} at start: see {}",
                    self.dir.path().join("error.log").display()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "mariadbd did not accept connections within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn try_connect(&self) -> mysql::Result<Conn> {
        Conn::new(
            OptsBuilder::new()
                .socket(Some(self.socket.to_string_lossy()))
                .user(Some("root"))
                .prefer_socket(false)
                .read_timeout(Some(Duration::from_secs(20)))
                .write_timeout(Some(Duration::from_secs(20))),
        )
    }

    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("server is running");
        Pid::from_child(child)
    }

    /// A root connection over the socket.
    pub fn root(&self) -> Conn {
        self.try_connect().expect("connect as root")
    }

    /// Connects as an ordinary user over the socket.
    pub fn connect_as(&self, user: &str, password: &str) -> mysql::Result<Conn> {
        Conn::new(
            OptsBuilder::new()
                .socket(Some(self.socket.to_string_lossy()))
                .user(Some(user))
                .pass(Some(password))
                .prefer_socket(false)
                .read_timeout(Some(Duration::from_secs(10))),
        )
    }

    pub fn exec(&self, sql: &str) {
        self.root()
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs a statement that may run twice (`STOP SLAVE`) as root, on a fresh
    /// connection up to four times: a fence kills every session, and this one may
    /// be among them.
    pub fn exec_through_fences(&self, sql: &str) {
        let mut tries = 0;
        loop {
            match self.try_connect().and_then(|mut conn| conn.query_drop(sql)) {
                Ok(()) => return,
                Err(e) if tries >= 3 || matches!(e, mysql::Error::MySqlError(_)) => {
                    panic!("{sql}: {e}")
                }
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// One value read as root. A read is retried on a fresh connection a few times:
    /// a fence kills every session, and an observer's may be among them.
    pub fn value(&self, sql: &str) -> Option<String> {
        let mut tries = 0;
        loop {
            let read = self
                .try_connect()
                .and_then(|mut conn| conn.query_first::<Option<String>, _>(sql));
            match read {
                Ok(value) => return value.flatten(),
                Err(e) if tries >= 3 => panic!("{sql}: {e}"),
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    pub fn read_only(&self) -> bool {
        self.value("SELECT @@GLOBAL.read_only").as_deref() == Some("1")
    }

    /// SIGSTOP: the server keeps its socket but answers nothing.
    pub fn freeze(&self) {
        kill_process(self.pid(), Signal::STOP).expect("SIGSTOP mariadbd");
    }

    pub fn thaw(&self) {
        kill_process(self.pid(), Signal::CONT).expect("SIGCONT mariadbd");
    }

    /// SIGKILL, as a crash: the process is reaped at the next restart or drop.
    pub fn kill(&self) {
        kill_process(self.pid(), Signal::KILL).expect("SIGKILL mariadbd");
    }

    /// Clean shutdown (SIGTERM) and wait for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_child(&child);
            let _ = kill_process(pid, Signal::CONT);
            let _ = kill_process(pid, Signal::TERM);
            let _ = child.wait();
            self.stopped_pid = Some(pid);
        }
    }

    /// Starts the server again on the same datadir, socket and port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_child(&child);
            let _ = kill_process(pid, Signal::CONT);
            let _ = kill_process(pid, Signal::KILL);
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bound and released; the kernel will not hand it out again
/// at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const REPLICATION_USER: &str = "repl";
pub const REPLICATION_PASSWORD: &str = "repl-secret";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
/// The account mmvip's `peer` asks the other node as: no privileges at all.
pub const PEER_USER: &str = "mmvip_peer";
pub const PEER_PASSWORD: &str = "peer-secret";

/// Two servers configured like the seed's pair, the GTID ring closed with
/// `master_use_gtid`, an `app` database and an ordinary (non-SUPER) `app` user.
pub struct Pair {
    pub node1: Server,
    pub node2: Server,
}

impl Pair {
    pub fn start() -> Pair {
        let node1 = Server::start_replicating(Replication {
            server_id: 1,
            port: free_port(),
            offset: 1,
        });
        let node2 = Server::start_replicating(Replication {
            server_id: 2,
            port: free_port(),
            offset: 2,
        });
        for node in [&node1, &node2] {
            // Created outside the binlog on both nodes so it never replicates and collides.
            node.exec(&format!(
                "SET sql_log_bin = 0; CREATE USER '{REPLICATION_USER}'@'127.0.0.1' IDENTIFIED BY '{REPLICATION_PASSWORD}'; GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'127.0.0.1'; CREATE USER '{PEER_USER}'@'127.0.0.1' IDENTIFIED BY '{PEER_PASSWORD}'; SET sql_log_bin = 1"
            ));
        }
        let pair = Pair { node1, node2 };
        pair.point(&pair.node1, &pair.node2);
        pair.point(&pair.node2, &pair.node1);
        pair.node1.exec(&format!(
            "CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64)); CREATE USER '{APP_USER}'@'localhost' IDENTIFIED BY '{APP_PASSWORD}'; GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO '{APP_USER}'@'localhost'"
        ));
        pair.wait_converged();
        pair
    }

    /// Makes `replica` replicate from `source`.
    fn point(&self, replica: &Server, source: &Server) {
        let port = source.replication.expect("replicating server").port;
        replica.exec(&format!(
            "CHANGE MASTER TO master_host = '127.0.0.1', master_port = {port}, master_user = '{REPLICATION_USER}', master_password = '{REPLICATION_PASSWORD}', master_use_gtid = slave_pos, master_connect_retry = 1, master_heartbeat_period = 1; START SLAVE"
        ));
    }

    /// Waits until both nodes have the same `gtid_current_pos` and replication runs.
    pub fn wait_converged(&self) {
        let started = Instant::now();
        loop {
            let one = self.node1.value("SELECT @@GLOBAL.gtid_current_pos");
            let two = self.node2.value("SELECT @@GLOBAL.gtid_current_pos");
            if one == two && replicating(&self.node1) && replicating(&self.node2) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pair did not converge: {one:?} vs {two:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Both replication threads of `server` are running.
pub fn replicating(server: &Server) -> bool {
    let mut conn = server.root();
    let row: Option<mysql::Row> = conn.query_first("SHOW SLAVE STATUS").unwrap();
    row.is_some_and(|row| {
        let io: Option<String> = row.get("Slave_IO_Running");
        let sql: Option<String> = row.get("Slave_SQL_Running");
        io.as_deref() == Some("Yes") && sql.as_deref() == Some("Yes")
    })
}

/// The sequence number of `domain` in a GTID position (0 when it has none).
pub fn last_seq(position: &str, domain: u32) -> u64 {
    position
        .split(',')
        .filter_map(|gtid| {
            let mut parts = gtid.trim().splitn(3, '-');
            let in_domain = parts.next()?.parse::<u32>().ok()? == domain;
            parts.next()?;
            let seq = parts.next()?.parse::<u64>().ok()?;
            in_domain.then_some(seq)
        })
        .next()
        .unwrap_or(0)
}
