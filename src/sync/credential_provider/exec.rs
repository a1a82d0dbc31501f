//! Running a plugin once: the request on stdin, the answer from stdout, with a timeout
//! and bounded output, and nothing left running afterwards.
//!
//! As the kubelet does (`k8s.io/kubernetes` v1.37.2 `pkg/credentialprovider/plugin/plugin.go`,
//! `ExecPlugin`): the command is exec'd directly (no shell), with this process's
//! environment plus the configured `env` (configured values win, as `mergeEnvVars`
//! appends them last), and stderr goes into the error. Unlike the kubelet, output is
//! capped (a plugin gone wrong cannot make the controller buffer gigabytes), the plugin
//! runs in its own process group and the whole group is killed on timeout (a plugin
//! that forked a helper holding the pipes cannot keep us waiting), and stdout never
//! appears in an error or a log, because it holds credentials.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// A `CredentialProviderResponse` is a few kilobytes; a megabyte is already absurd.
pub(crate) const STDOUT_LIMIT: usize = 1 << 20;
/// How much of stderr is kept for the error message; the rest is read and dropped so a
/// chatty plugin never blocks on a full pipe.
pub(crate) const STDERR_KEEP: usize = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    #[error("cannot start {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} did not finish within {}; killed{}", crate::duration::format(*.after), stderr_suffix(.stderr))]
    Timeout {
        command: String,
        after: Duration,
        stderr: String,
    },
    #[error("{command} exited with {status}{}", stderr_suffix(.stderr))]
    Exit {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{command} wrote more than {limit} bytes to stdout; killed")]
    TooLarge { command: String, limit: usize },
    #[error("talking to {command}: {source}")]
    Io {
        command: String,
        #[source]
        source: io::Error,
    },
}

fn stderr_suffix(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; stderr: {s}")
    }
}

impl ExecError {
    /// For the failure counter's `reason` label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ExecError::Spawn { .. } => "spawn",
            ExecError::Timeout { .. } => "timeout",
            ExecError::Exit { .. } => "exit",
            ExecError::TooLarge { .. } => "output_too_large",
            ExecError::Io { .. } => "io",
        }
    }
}

/// What one run of the plugin needs.
pub(crate) struct Invocation<'a> {
    pub(crate) command: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) stdin: &'a [u8],
    pub(crate) timeout: Duration,
    pub(crate) stdout_limit: usize,
}

enum Failed {
    TooLarge,
    Io(io::Error),
}

/// Runs the plugin to completion and returns its stdout, or why not.
pub(crate) async fn run(inv: &Invocation<'_>) -> Result<Vec<u8>, ExecError> {
    let command = inv.command.display().to_string();
    let mut cmd = Command::new(inv.command);
    cmd.args(inv.args)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        command: command.clone(),
        source,
    })?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut err_buf = Vec::new();

    let limit = inv.stdout_limit;
    let work = async {
        let write = async {
            if let Some(mut s) = stdin {
                // A plugin that exits without reading its request (EPIPE) is judged by its
                // exit status and output, not by this write.
                match s.write_all(inv.stdin).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                    Err(e) => return Err(Failed::Io(e)),
                }
                drop(s);
            }
            Ok(())
        };
        let out = async {
            match stdout {
                Some(s) => read_bounded(s, limit).await,
                None => Ok(Vec::new()),
            }
        };
        let err = async {
            if let Some(s) = stderr {
                drain_keeping(s, STDERR_KEEP, &mut err_buf)
                    .await
                    .map_err(Failed::Io)?;
            }
            Ok(())
        };
        let ((), out, ()) = tokio::try_join!(write, out, err)?;
        // Reaped only after the output is complete: until then the group leader exists,
        // so its process group id cannot have been reused when we kill the group.
        let status = child.wait().await.map_err(Failed::Io)?;
        Ok::<_, Failed>((out, status))
    };
    let result = tokio::time::timeout(inv.timeout, work).await;
    let stderr_text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    match result {
        Ok(Ok((out, status))) if status.success() => Ok(out),
        Ok(Ok((_, status))) => Err(ExecError::Exit {
            command,
            status: status.to_string(),
            stderr: stderr_text(&err_buf),
        }),
        Ok(Err(Failed::TooLarge)) => {
            kill_group(pid);
            let _ = child.kill().await;
            Err(ExecError::TooLarge { command, limit })
        }
        Ok(Err(Failed::Io(source))) => {
            kill_group(pid);
            let _ = child.kill().await;
            Err(ExecError::Io { command, source })
        }
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            Err(ExecError::Timeout {
                command,
                after: inv.timeout,
                stderr: stderr_text(&err_buf),
            })
        }
    }
}

/// SIGKILL to the plugin's whole process group (it leads it: `process_group(0)`). Only
/// called while the leader is not yet reaped, so the id still names that group.
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative pid
    // addresses the process group, which is the plugin's own (see above).
    let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
    if rc != 0 {
        tracing::debug!(pid, error = %io::Error::last_os_error(), "killing the plugin's process group");
    }
}

async fn read_bounded(mut r: impl AsyncRead + Unpin, limit: usize) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await.map_err(Failed::Io)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(Failed::TooLarge);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

async fn drain_keeping(
    mut r: impl AsyncRead + Unpin,
    keep: usize,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let room = keep.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
}

#[cfg(test)]
mod tests {
    //! Against /bin/sh scripts (the plugin contract is only "a program"; sh is the
    //! smallest one to write inline). The protocol itself is tested with the Rust test
    //! plugin in `tests/credential_provider.rs`.
    use super::*;
    use std::time::Instant;

    async fn sh(script: &str, timeout: Duration, limit: usize) -> Result<Vec<u8>, ExecError> {
        let args = ["-c".to_string(), script.to_string()];
        run(&Invocation {
            command: Path::new("/bin/sh"),
            args: &args,
            env: &[("PSI_TEST_VAR".into(), "from-config".into())],
            stdin: b"the request",
            timeout,
            stdout_limit: limit,
        })
        .await
    }

    #[tokio::test]
    async fn stdin_in_stdout_out_env_merged() {
        let out = sh(
            "cat; printf ' %s %s' \"$PSI_TEST_VAR\" \"${HOME:+home}\"",
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap();
        // The configured variable is set, and the inherited environment is kept.
        let want: &[u8] = if std::env::var_os("HOME").is_some() {
            b"the request from-config home"
        } else {
            b"the request from-config "
        };
        assert_eq!(out, want);
    }

    #[tokio::test]
    async fn non_zero_exit_carries_status_and_stderr_never_stdout() {
        let e = sh(
            "echo secret-token; echo boom >&2; exit 3",
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), "exit");
        let msg = e.to_string();
        assert!(
            msg.contains("exit status: 3") && msg.contains("stderr: boom"),
            "{msg}"
        );
        assert!(!msg.contains("secret-token"), "{msg}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // A helper in the background keeps stdout open; the plugin itself sleeps.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let t = Instant::now();
        let e = sh(&script, Duration::from_millis(300), 1024)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "timeout", "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "the background helper outlived the timeout"
        );
    }

    #[tokio::test]
    async fn output_over_the_limit_is_refused_and_killed() {
        let t = Instant::now();
        let e = sh("yes x", Duration::from_secs(10), 64 << 10)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "output_too_large", "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // stderr floods are drained, kept short, and do not block the plugin.
        let e = sh(
            "head -c 1000000 /dev/zero | tr '\\0' e >&2; exit 1",
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap_err();
        match e {
            ExecError::Exit { stderr, .. } => assert_eq!(stderr.len(), STDERR_KEEP),
            other => panic!("{other}"),
        }
    }

    #[tokio::test]
    async fn missing_command_and_plugin_not_reading_stdin() {
        let e = run(&Invocation {
            command: Path::new("/nonexistent/plugin"),
            args: &[],
            env: &[],
            stdin: b"",
            timeout: Duration::from_secs(1),
            stdout_limit: 1024,
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind(), "spawn");
        assert!(e.to_string().contains("/nonexistent/plugin"), "{e}");
        assert_eq!(
            sh("echo ok", Duration::from_secs(10), 1024).await.unwrap(),
            b"ok\n"
        );
    }
}
