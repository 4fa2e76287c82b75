//! A private PostgreSQL cluster for fault tests: made with the installed server's `initdb`
//! and driven with `pg_ctl`, on its own port and directory, so that it can be restarted and
//! killed without touching the shared server. Password authentication (scram) is on.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The user and password of the private cluster.
pub const USER: &str = "flowstream";
/// Its password.
pub const PASSWORD: &str = "cluster-secret";

/// How `pg_ctl stop` shuts the server down.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Disconnect clients and shut down cleanly.
    Fast,
    /// Abort without a checkpoint, as a crash would (recovery runs at the next start).
    Immediate,
}

/// A running private cluster; stopped and deleted on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    let bin = versions
        .pop()
        .map(|v| v.join("bin"))
        .filter(|bin| bin.join("initdb").exists());
    bin.unwrap_or_else(|| {
        panic!(
            "the fault tests need PostgreSQL's server binaries (initdb, pg_ctl) under \
             /usr/lib/postgresql/<version>/bin: install the postgresql package"
        )
    })
}

/// A free port below the ephemeral range, so that no client connection (the driver's own
/// reconnects included) can be given it while the server is down between restarts.
fn free_port() -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    (start..30_000)
        .chain(20_000..start)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 20000 and 30000")
}

impl Cluster {
    /// Creates and starts a cluster.
    pub fn start() -> Cluster {
        let bin = server_bin();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let pwfile = cluster.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).expect("write the password file");
        if as_postgres {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pwfile)
                .status();
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                USER,
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
            ],
        );
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", data.as_str(), "-w"];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }

    /// Starts the server (after a stop).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.pg_ctl(&["-o", &options, "-l", &log, "start"]);
    }

    /// Stops the server.
    pub fn stop(&self, mode: Stop) {
        let mode = match mode {
            Stop::Fast => "fast",
            Stop::Immediate => "immediate",
        };
        self.pg_ctl(&["-m", mode, "stop"]);
    }

    /// The URL of the `postgres` database with the right password.
    pub fn url(&self) -> String {
        self.url_with_password(PASSWORD)
    }

    /// The URL with another password.
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The directory holding the cluster.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}
