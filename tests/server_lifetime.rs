//! What a `serve` process leaves behind: no orphaned server once the process that started
//! it has ended, and no generated key material once it has shut down.

mod support;

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::*;

/// Set in the environment of the helper invocation of this test binary: `exit` or `hang`.
const HELPER_ENV: &str = "PSI_TEST_HELPER_PARENT";

/// Not a test of its own: the "test-like parent" the orphan tests run as a child process.
/// It keeps a `Server` in a `static OnceLock`, exactly like `mutate_https` and
/// `policy_enforce`, reports the server's pid, then ends: by returning (the test binary
/// exits and never drops the static) or by hanging until it is SIGKILLed.
#[test]
#[ignore = "helper process for orphaned_server_exits_* (does nothing on its own)"]
fn helper_parent_holds_server_in_static() {
    let Ok(how) = std::env::var(HELPER_ENV) else {
        return;
    };
    static S: OnceLock<Server> = OnceLock::new();
    let server = S.get_or_init(|| Server::start(CONFIG, &[]));
    println!("SERVER_PID={}", server.child.id());
    if how == "hang" {
        std::thread::sleep(Duration::from_secs(120));
    }
}

/// Starts the helper parent and returns it with the pid of the server it started. The
/// helper's temp files (the `Server`'s folder, never dropped) go to `tmp`, which the
/// calling test removes.
fn start_helper_parent(how: &str, tmp: &Path) -> (Child, u32) {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_parent_holds_server_in_static",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, how)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run this test binary as the helper parent");
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let mut pid = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // the harness prints `test NAME ... ` on the same line first
        if let Some((_, p)) = line.split_once("SERVER_PID=") {
            pid = Some(p.trim().parse::<u32>().unwrap());
            break;
        }
    }
    // keep reading: the harness's own output must not hit a closed pipe and fail the helper
    std::thread::spawn(move || for _ in lines {});
    let pid = pid.expect("the helper parent reports its server's pid");
    (parent, pid)
}

/// Whether `pid` is a live process. An orphan is re-parented to PID 1, which in a container
/// may never reap it, so a zombie counts as gone: it has exited and holds nothing.
#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // `pid (comm) STATE ...`; comm may contain spaces or parentheses.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
    }
}

/// Waits (bounded) for the orphaned server to exit; kills it if it does not, so a failing
/// run leaves nothing behind either.
#[cfg(target_os = "linux")]
fn assert_exits(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > deadline {
            unsafe_kill(pid, "KILL");
            panic!("server {pid} outlived the process that started it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `Server` in a `static` is never dropped; it must still not outlive the test binary.
#[cfg(target_os = "linux")]
#[test]
fn orphaned_server_exits_when_its_parent_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut parent, pid) = start_helper_parent("exit", tmp.path());
    let status = wait_with_deadline(&mut parent, Duration::from_secs(60));
    assert!(status.success(), "helper parent failed: {status}");
    assert_exits(pid);
}

/// Nor when the test binary is killed outright (no destructor, no handler runs).
#[cfg(target_os = "linux")]
#[test]
fn orphaned_server_exits_when_its_parent_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut parent, pid) = start_helper_parent("hang", tmp.path());
    assert!(alive(pid), "the server runs while its parent does");
    parent.kill().unwrap();
    let _ = parent.wait();
    assert_exits(pid);
}

/// A `serve` process spawned directly (no `--tls-cert`), with what it printed.
struct Serve {
    child: Child,
    ca: PathBuf,
    addr: String,
}

/// A failing assertion must not leave the server running.
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(tmpdir: &Path, extra: &[&str]) -> Serve {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            // this test's own server must not outlive it either
            "--exit-on-stdin-eof",
        ])
        .args(extra)
        // std::env::temp_dir() honours TMPDIR: keep the generated folder where we can see it
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut lines: Lines<BufReader<ChildStdout>> =
        BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut ca, mut addr) = (None, None);
    for line in lines.by_ref().take(5) {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("self-signed certificate generated; CA written to ") {
            ca = Some(PathBuf::from(p));
        }
        if let Some(rest) = line.strip_prefix("listening on https://") {
            addr = Some(rest.split_once(' ').unwrap().0.to_string());
            break;
        }
    }
    // keep draining stdout so the child never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        ca: ca.expect("serve reports where the CA is"),
        addr: addr.expect("serve reports its address"),
    }
}

/// The CA works for a client while the server runs (the README's `curl --cacert`).
async fn healthz(s: &Serve) {
    let resp = client_trusting(&s.ca)
        .get(format!("https://{}/healthz", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The README quick start (`serve` with neither `--tls-cert` nor `--self-signed-dir`): the
/// folder it generates in the temp directory is gone after SIGTERM or Ctrl-C.
#[cfg(unix)]
#[tokio::test]
async fn generated_temp_folder_is_removed_on_clean_shutdown() {
    for sig in ["TERM", "INT"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = serve(tmp.path(), &[]);
        let dir = s.ca.parent().unwrap().to_path_buf();
        assert_eq!(
            dir,
            tmp.path()
                .join(format!("pullsecret-injector-{}", s.child.id()))
        );
        assert!(dir.join("tls.crt").is_file());
        assert!(dir.join("tls.key").is_file());
        assert!(
            !dir.join("ca.key").exists(),
            "the CA's private key is never written"
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tls.key")), 0o600);
        healthz(&s).await;

        unsafe_kill(s.child.id(), sig);
        let status = wait_with_deadline(&mut s.child, Duration::from_secs(30));
        assert!(status.success(), "SIG{sig}: {status}");
        assert!(!dir.exists(), "SIG{sig}: {} left behind", dir.display());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}

/// In the user's `--self-signed-dir` the private key is removed; the public certificates and
/// anything else already there stay.
#[cfg(unix)]
#[tokio::test]
async fn user_self_signed_dir_loses_only_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    // a key already there is truncated and tightened before ours goes in
    std::fs::write(dir.join("tls.key"), "old").unwrap();
    let mut s = serve(tmp.path(), &["--self-signed-dir", dir.to_str().unwrap()]);
    assert_eq!(s.ca, dir.join("ca.crt"));
    assert_eq!(mode(&dir.join("tls.key")), 0o600);
    assert!(!dir.join("ca.key").exists());
    healthz(&s).await;

    unsafe_kill(s.child.id(), "TERM");
    assert!(wait_with_deadline(&mut s.child, Duration::from_secs(30)).success());
    assert!(!dir.join("tls.key").exists(), "tls.key left behind");
    assert!(!dir.join("ca.key").exists());
    assert!(dir.join("ca.crt").is_file());
    assert!(dir.join("tls.crt").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// Closing stdin is a clean shutdown like SIGTERM: exit 0, key material removed.
#[tokio::test]
async fn stdin_eof_is_a_clean_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = serve(tmp.path(), &[]);
    let dir = s.ca.parent().unwrap().to_path_buf();
    healthz(&s).await;
    drop(s.child.stdin.take());
    let status = wait_with_deadline(&mut s.child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Without the flag a closed stdin means nothing (a daemon may well run with stdin closed).
#[tokio::test]
async fn closed_stdin_alone_does_not_stop_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_running = child.try_wait().unwrap().is_none();
    unsafe_kill(child.id(), "TERM");
    let _ = wait_with_deadline(&mut child, Duration::from_secs(30));
    assert!(still_running, "serve exited on its own");
}
