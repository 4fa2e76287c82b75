//! A real PgBouncer in transaction mode in front of the test database, for the tests of the
//! driver behind a pooler. Started from the `pgbouncer` that [`PROGRAM_VAR`] names or the one
//! installed (Debian's package), on a free port, with its files in a temporary directory;
//! stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

/// Set (to anything) when the PgBouncer tests must run: then a missing `pgbouncer` fails them
/// instead of leaving them out. CI sets it.
pub const REQUIRE_VAR: &str = "FLOWSTREAM_REQUIRE_PGBOUNCER";

/// Names the `pgbouncer` program to use, when set; otherwise the one on `PATH`.
pub const PROGRAM_VAR: &str = "FLOWSTREAM_PGBOUNCER";

/// The first PgBouncer release that keeps prepared statements across transactions in
/// transaction mode (`max_prepared_statements`), which a sqlx pool needs.
pub const PREPARED_STATEMENTS_SINCE: (u32, u32) = (1, 21);

/// The `pgbouncer` program: the one [`PROGRAM_VAR`] names, else the one installed.
pub fn find() -> Option<PathBuf> {
    if let Some(named) = std::env::var_os(PROGRAM_VAR).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(named));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbouncer"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/pgbouncer");
        debian.is_file().then_some(debian)
    })
}

/// The `(major, minor)` version of the `pgbouncer` that [`find`] finds, if it runs.
pub fn version() -> Option<(u32, u32)> {
    let out = Command::new(find()?).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// Whether the PgBouncer found can carry a sqlx pool in transaction mode (see
/// [`PREPARED_STATEMENTS_SINCE`]).
pub fn carries_prepared_statements() -> bool {
    version().is_some_and(|v| v >= PREPARED_STATEMENTS_SINCE)
}

/// `(major, minor)` from `pgbouncer --version`'s first line, `PgBouncer 1.24.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let number = text.lines().next()?.strip_prefix("PgBouncer ")?;
    let mut parts = number.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A running PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts one in transaction mode in front of the server `upstream` names.
    pub fn start(upstream: &str) -> Result<PgBouncer, String> {
        let program =
            find().ok_or("pgbouncer is not installed (Debian: apt-get install pgbouncer)")?;
        if !program.is_file() {
            return Err(format!("{} does not exist", program.display()));
        }
        let options = PgConnectOptions::from_str(upstream).map_err(|e| e.to_string())?;
        let user = options.get_username().to_owned();
        let database = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_owned();
        let password = password_of(upstream);
        let mut failures = Vec::new();
        // Another process may bind the port chosen between the choice and PgBouncer's start;
        // then PgBouncer exits, and the next attempt takes another port.
        for _ in 0..3 {
            match Self::start_on(&program, &options, &user, &password, &database) {
                Ok(bouncer) => return Ok(bouncer),
                Err(why) => failures.push(why),
            }
        }
        Err(failures.join("\n"))
    }

    fn start_on(
        program: &std::path::Path,
        options: &PgConnectOptions,
        user: &str,
        password: &Option<String>,
        database: &str,
    ) -> Result<PgBouncer, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let port = crate::cluster::free_port();
        // Older releases refuse a setting they do not know.
        let prepared = if version().is_some_and(|v| v >= PREPARED_STATEMENTS_SINCE) {
            "max_prepared_statements = 200\n"
        } else {
            ""
        };
        let mut target = format!(
            "host={} port={} user={user}",
            options.get_host(),
            options.get_port()
        );
        if let Some(password) = password {
            target.push_str(&format!(" password={password}"));
        }
        let config = format!(
            "[databases]\n\
             * = {target}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = transaction\n\
             max_client_conn = 200\n\
             default_pool_size = 20\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             {prepared}\
             logfile = {log}\n",
            log = dir.path().join("pgbouncer.log").display()
        );
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, config).map_err(|e| format!("writing {}: {e}", ini.display()))?;
        // PgBouncer refuses to run as root: as root, it runs as the postgres user.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut command = if root {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status();
            if !chown.is_ok_and(|s| s.success()) {
                return Err("could not give PgBouncer's directory to the postgres user".into());
            }
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let child = command
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let mut bouncer = PgBouncer {
            child,
            port,
            user: user.to_owned(),
            password: password.clone(),
            database: database.to_owned(),
            dir,
        };
        // Something answering on the port is not enough: it may be another test's server,
        // which would stop under this one. PgBouncer logs when it listens.
        let listening = format!("listening on 127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if bouncer.log().contains(&listening) {
                return Ok(bouncer);
            }
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                return Err(format!(
                    "PgBouncer on port {port} exited ({status}):\n{}",
                    bouncer.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "PgBouncer did not listen on port {port} within 20 s:\n{}",
                    bouncer.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A URL through PgBouncer to the same database.
    pub fn url(&self) -> String {
        let credentials = match &self.password {
            Some(password) => format!("{}:{password}", self.user),
            None => self.user.clone(),
        };
        format!(
            "postgres://{credentials}@127.0.0.1:{}/{}",
            self.port, self.database
        )
    }

    /// What PgBouncer logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser passes the signal on; killing it ends PgBouncer.
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.path().display().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The password in a URL, if it has one.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let credentials = rest.split_once('@')?.0;
    credentials.split_once(':').map(|(_, p)| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_are_read_from_the_first_line() {
        assert_eq!(
            parse_version("PgBouncer 1.24.1\nlibevent 2.1.12-stable\n"),
            Some((1, 24))
        );
        assert_eq!(parse_version("PgBouncer 1.18.0\n"), Some((1, 18)));
        assert_eq!(parse_version("pgbouncer: command not found"), None);
    }
}
