//! A private PostgreSQL cluster for fault tests: made with the installed server's `initdb`
//! and driven with `pg_ctl`, on its own port and directory, so that it can be restarted and
//! killed without touching the shared server. Password authentication (scram) is on.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

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
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    max_connections: u32,
}

/// Where PostgreSQL's server programs (`initdb`, `pg_ctl`) are: on `PATH`, or under the
/// directories distributions install them to (Debian and Ubuntu, Red Hat's PGDG packages,
/// source builds, Homebrew). The newest version wins when several are installed.
pub fn find_server_binaries() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_tools(dir))
    {
        return Ok(dir);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
        ("/opt/homebrew/opt", "postgresql", "bin"),
        ("/usr/local/opt", "postgresql", "bin"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                candidates.push(entry.path().join(suffix));
            }
        }
    }
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    candidates.retain(|dir| has_tools(dir));
    // The version is the first number in the path (`/usr/lib/postgresql/15/bin`, `pgsql-16`).
    candidates.sort_by_key(|dir| {
        dir.to_string_lossy()
            .split(|c: char| !c.is_ascii_digit())
            .find_map(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.pop().ok_or_else(|| {
        "PostgreSQL's server programs (initdb, pg_ctl) are neither on PATH nor under \
         /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin or Homebrew's \
         prefix (Debian/Ubuntu: apt-get install postgresql)"
            .to_owned()
    })
}

/// A free port below the ephemeral range, so that no client connection (the driver's own
/// reconnects included) can be given it while the server is down between restarts.
///
/// A port is free when this looks, not when the caller's server binds it a moment later: tests
/// running in parallel threads would otherwise be handed the same port, and the one whose
/// server lost the race would talk to the other's. So a port is handed out at most once per
/// process (a cursor moves past it), and processes start their search at different places.
pub(crate) fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    const SPAN: u32 = 10_000;
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 5_000;
    (0..SPAN)
        .filter_map(|_| {
            let step = CURSOR.fetch_add(1, Ordering::Relaxed);
            u16::try_from(start.wrapping_add(step) % SPAN).ok()
        })
        .map(|offset| LOW + offset)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 20000 and 30000")
}

impl Cluster {
    /// Creates and starts a cluster; panics (failing the test) if that is impossible.
    pub fn start() -> Cluster {
        Self::try_start(60).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Creates and starts a cluster accepting `max_connections` clients.
    pub fn try_start(max_connections: u32) -> Result<Cluster, String> {
        let bin = find_server_binaries()?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
            max_connections,
        };
        let pwfile = cluster.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n"))
            .map_err(|e| format!("writing the password file: {e}"))?;
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status();
            if !chown.is_ok_and(|status| status.success()) {
                return Err(
                    "running as root, but the cluster directory could not be given \
                            to the postgres user"
                        .to_owned(),
                );
            }
        }
        cluster.try_run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                USER,
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
            ],
        )?;
        cluster.try_pg_ctl(&cluster.start_args())?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", program.display()))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    fn try_pg_ctl(&self, args: &[String]) -> Result<(), String> {
        let mut all = vec![
            "-D".to_owned(),
            self.data().display().to_string(),
            "-w".to_owned(),
        ];
        all.extend_from_slice(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.try_run("pg_ctl", &all)
    }

    fn pg_ctl(&self, args: &[String]) {
        if let Err(why) = self.try_pg_ctl(args) {
            panic!("{why}\nserver log:\n{}", self.log());
        }
    }

    fn start_args(&self) -> Vec<String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={}",
            self.port,
            self.dir.path().display(),
            self.max_connections
        );
        let log = self.dir.path().join("server.log").display().to_string();
        vec!["-o".into(), options, "-l".into(), log, "start".into()]
    }

    /// Starts the server (after a stop).
    pub fn start_server(&self) {
        self.pg_ctl(&self.start_args());
    }

    /// Stops the server.
    pub fn stop(&self, mode: Stop) {
        let mode = match mode {
            Stop::Fast => "fast",
            Stop::Immediate => "immediate",
        };
        self.pg_ctl(&["-m".into(), mode.into(), "stop".into()]);
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

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
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
