//! Command-line interface: wires the modules together, holds no business rules.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};

use crate::cluster::{Cluster, NoCluster};
use crate::config::Config;
use crate::metrics::{Metrics, ResultLabels};
use crate::server::listen::ListenAddr;
use crate::server::{self, Limits, tls::ReloadingResolver};
use crate::webhook::Webhook;
use crate::{certs, offline, reload};

/// The example configuration, used by `serve` when no `--config` is given.
pub const EMBEDDED_CONFIG: &str = include_str!("../examples/config.yaml");

#[derive(Parser, Debug)]
#[command(
    name = "pullsecret-injector",
    version,
    about = "Kubernetes admission webhook that injects imagePullSecrets by image registry"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTPS admission webhook.
    Serve(Box<ServeArgs>),
    /// Validate a config: prints `ok` (warnings on stderr), or `FILE:LINE:COL: reason` on
    /// stderr and exits 1.
    Check(offline::CheckArgs),
    /// Answer one AdmissionReview from a file or stdin, exactly as the server would.
    Review(offline::ReviewArgs),
    /// Print manifests with their pod templates mutated as the webhook would mutate the pods.
    Mutate(offline::MutateArgs),
    /// Report registry-policy breaches in manifests; exits 1 if enforce mode would reject one.
    Verify(offline::VerifyArgs),
    /// Run test suites (`pullsecret-injector-test.yaml`); exits 1 on any mismatch.
    Test(offline::TestArgs),
    /// Print the config as MutatingAdmissionPolicy and ValidatingAdmissionPolicy objects
    /// (with bindings) that do what the webhook does, with no webhook (Kubernetes 1.36+).
    ExportPolicies(crate::policy_export::ExportArgs),
    /// Judge the running Pods of a cluster against the config's registry rules, as the
    /// controller's background audit does; prints them and writes nothing. Exits 1 if a
    /// Pod breaks an `enforce` or `audit` rule.
    Audit(crate::audit::AuditArgs),
    /// Generate a CA and a serving certificate for the webhook Service; prints the caBundle.
    Certs(CertsArgs),
}

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    #[arg(long)]
    pub out_dir: PathBuf,
    #[arg(long, default_value = "pullsecret-injector")]
    pub service: String,
    #[arg(long, default_value = "pullsecret-injector")]
    pub namespace: String,
    /// Extra DNS names or IP addresses for the certificate.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Validity in days (at least 1).
    #[arg(long, default_value_t = 365, allow_negative_numbers = true)]
    pub days: i64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A flag given twice takes the last value, so the chart's `extraArgs` can override the
/// flags the chart itself sets.
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Config file; without it the embedded example config is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Webhook address: IP:PORT, localhost:PORT, or :PORT for every IPv4 and IPv6 address.
    #[arg(long, default_value = ":8443")]
    pub listen: ListenAddr,
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where a generated self-signed CA certificate and serving certificate are written when
    /// no --tls-cert is given (default: a fresh `pullsecret-injector-<pid>` folder in the
    /// system temp directory, removed on exit). The CA's private key is never written; the
    /// serving key (tls.key) is removed on exit.
    #[arg(long)]
    pub self_signed_dir: Option<PathBuf>,
    /// Self-managed certificates: keep a CA and serving certificate in this Secret (in
    /// the release namespace), write the CA bundle into the webhook configurations named
    /// below, and rotate both before they expire. Needs cluster access.
    #[arg(long, conflicts_with_all = ["tls_cert", "self_signed_dir", "no_cluster_access"])]
    pub managed_certs: Option<String>,
    /// The Service the API server dials (the certificate is for its cluster DNS names).
    #[arg(
        long,
        default_value = "pullsecret-injector",
        requires = "managed_certs"
    )]
    pub managed_certs_service: String,
    /// More DNS names or IP addresses for the self-managed certificate.
    #[arg(long, requires = "managed_certs")]
    pub managed_certs_dns: Vec<String>,
    /// MutatingWebhookConfiguration whose caBundle the self-managed CA bundle goes into.
    #[arg(long, requires = "managed_certs")]
    pub mutating_webhook_configuration: Vec<String>,
    /// ValidatingWebhookConfiguration whose caBundle the self-managed CA bundle goes into.
    #[arg(long, requires = "managed_certs")]
    pub validating_webhook_configuration: Vec<String>,
    /// Lifetime of a self-managed CA (`d`, `h`, `m` or `s`); a successor starts in its
    /// last third.
    #[arg(long, default_value = "1825d", value_parser = parse_duration, requires = "managed_certs")]
    pub ca_validity: time::Duration,
    /// Lifetime of a self-managed serving certificate; re-issued in its last third.
    #[arg(long, default_value = "365d", value_parser = parse_duration, requires = "managed_certs")]
    pub cert_validity: time::Duration,
    /// How long a new CA bundle must have been on every webhook configuration before the
    /// new CA signs (API servers reload webhook configurations asynchronously).
    #[arg(long, default_value = "60s", value_parser = parse_duration, requires = "managed_certs")]
    pub ca_propagation: time::Duration,
    /// Require client certificates signed by this CA (only the API server may call).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Plain-HTTP address of `/metrics`, `/healthz` and `/readyz` (never asks for a client
    /// certificate, so the kubelet's probes work with `--client-ca`). Same forms as `--listen`.
    #[arg(long, default_value = ":9090")]
    pub metrics_listen: ListenAddr,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write nothing to the cluster (no secret copies, no Lease, no admission-time
    /// create), but still read namespaces and which pull secrets exist, so namespace
    /// `selector` scopes and `injectOnlyIfPresent` keep working.
    #[arg(long)]
    pub no_sync: bool,
    /// Never contact the API server: namespace labels and existing secrets are unknown
    /// (selectors count as satisfied, `injectOnlyIfPresent` injects).
    #[arg(long)]
    pub no_cluster_access: bool,
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace holding the leader-election Lease (the release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "pullsecret-injector")]
    pub release_namespace: String,
    /// Leader-election identity; defaults to the hostname (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds to keep serving after SIGTERM while reporting unready, so the endpoint is
    /// removed from the Service before the listener closes (the kubelet's SIGTERM and the
    /// endpoint removal race; ingress controllers wait the same way).
    #[arg(long, default_value_t = 5)]
    pub shutdown_delay: u64,
    /// Seconds to finish in-flight reviews after that.
    #[arg(long, default_value_t = 20)]
    pub drain_timeout: u64,
    /// Seconds the webhook may spend creating a missing pull secret before admitting a pod.
    #[arg(long, default_value_t = 2.0)]
    pub ensure_timeout: f64,
    /// Seconds a whole request (body included) may take before it is answered 408.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Seconds a connection may stay open with no request in flight (after the TLS
    /// handshake, between keep-alive requests, idle HTTP/2).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Connections served at once; more wait in the listen backlog. Lowered to what the
    /// open-file limit allows (the soft limit is first raised to the hard one).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Shut down (as on SIGTERM) when stdin reaches end-of-file. For test harnesses: the
    /// parent holds the write end, and the kernel closes it however the parent ends (even
    /// SIGKILL or a `static` that is never dropped), so the server cannot outlive it.
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
}

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // The text format escapes request-derived fields with `{:?}`, bidi controls
        // included; JSON needs its writer to (see `logging`).
        LogFormat::Json => b
            .json()
            .with_writer(|| crate::logging::BidiEscaping(std::io::stderr()))
            .try_init(),
        LogFormat::Text => b.try_init(),
    };
}

fn load_config(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Parses the command line. Installed as `kubectl-pullsecret_injector` (krew's name for
/// the plugin `pullsecret-injector`), kubectl runs this binary for
/// `kubectl pullsecret-injector …`; help and errors then name that command.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("kubectl-"));
    let mut cmd = Cli::command();
    if plugin {
        cmd = cmd.bin_name("kubectl pullsecret-injector");
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs a sub-command, returning the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Serve(args) => serve(*args).await.map(|_| 0),
        Command::Check(args) => offline::check(&args),
        Command::Review(args) => offline::review(&args),
        Command::Mutate(args) => offline::mutate(&args),
        Command::Verify(args) => offline::verify(&args),
        Command::Test(args) => offline::test(&args),
        Command::ExportPolicies(args) => crate::policy_export::run(&args),
        Command::Audit(args) => crate::audit::audit(&args).await,
        Command::Certs(CertsArgs {
            out_dir,
            service,
            namespace,
            dns,
            days,
        }) => {
            offline::certs_input::check(&service, &namespace, &dns, days)?;
            let mut names = certs::service_names(&service, &namespace);
            names.extend(dns);
            let b = certs::generate(&names, days)?;
            write_bundle(&out_dir, &b)?;
            use base64::Engine;
            eprintln!(
                "wrote ca.crt, ca.key, tls.crt, tls.key to {} (SANs: {})",
                out_dir.display(),
                names.join(", ")
            );
            println!(
                "{}",
                base64::engine::general_purpose::STANDARD.encode(b.ca_pem.as_bytes())
            );
            Ok(0)
        }
    }
}

fn write_bundle(dir: &Path, b: &certs::Bundle) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text, private) in [
        ("ca.crt", &b.ca_pem, false),
        ("ca.key", &b.ca_key_pem, true),
        ("tls.crt", &b.cert_pem, false),
        ("tls.key", &b.key_pem, true),
    ] {
        write_file(&dir.join(name), text, private)?;
    }
    Ok(())
}

/// Writes `text` to `path`; a private file is readable by its owner only from the moment it
/// exists, so a key is never briefly world-readable between write and chmod.
fn write_file(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` only applies to a new file: tighten an existing one (already truncated, so
    // its old content is gone) before the key goes in.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The certificate `serve` generates for itself when no `--tls-cert` is given. Dropping it
/// (whenever `serve` returns: clean shutdown or error) removes the key material again, so
/// a stopped server leaves no usable key behind.
struct SelfSigned {
    dir: PathBuf,
    /// We created `dir` in the temp directory: nothing in it is anyone else's, remove it all.
    /// Otherwise it is the user's `--self-signed-dir`: remove only the key, and keep the
    /// public certificates (harmless, and a user who chose the folder may still refer to them).
    owned_dir: bool,
}

impl SelfSigned {
    /// Generates a CA and a serving certificate for localhost and the in-cluster names and
    /// writes `ca.crt`, `tls.crt` and `tls.key`. The CA's private key is not written at all:
    /// the server never signs anything, and the `certs` command exists for a lasting CA.
    fn create(dir: Option<&Path>) -> Result<SelfSigned> {
        let b = certs::generate(
            &certs::service_names("pullsecret-injector", "pullsecret-injector"),
            30,
        )?;
        let this = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
                SelfSigned {
                    dir: d.to_path_buf(),
                    owned_dir: false,
                }
            }
            None => SelfSigned {
                dir: create_private_temp_dir()?,
                owned_dir: true,
            },
        };
        // From here on `this` cleans up whatever part was written if a later write fails.
        write_file(&this.ca_path(), &b.ca_pem, false)?;
        write_file(&this.cert_path(), &b.cert_pem, false)?;
        write_file(&this.key_path(), &b.key_pem, true)?;
        Ok(this)
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn cert_path(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }
    fn key_path(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let result = if self.owned_dir {
            std::fs::remove_dir_all(&self.dir)
        } else {
            std::fs::remove_file(self.key_path())
        };
        match result {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), "removed the generated key material")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the generated key material")
            }
        }
    }
}

/// Creates a new, owner-only `pullsecret-injector-<pid>` folder in the temp directory. The
/// name is predictable and the temp directory shared, so an existing folder (left by a
/// crashed run with the same pid, or planted by another user) is never reused: its owner
/// could read the key we would put in it. A numbered sibling is created instead.
fn create_private_temp_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    let pid = std::process::id();
    for n in 0..100u32 {
        let name = match n {
            0 => format!("pullsecret-injector-{pid}"),
            _ => format!("pullsecret-injector-{pid}-{n}"),
        };
        let path = base.join(name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!(
        "cannot create a fresh pullsecret-injector-{pid} folder in {}; pass --self-signed-dir",
        base.display()
    )
}

/// Resolves on SIGTERM or Ctrl-C, or, with `--exit-on-stdin-eof`, when stdin closes.
/// Returns what triggered it, for the log.
async fn shutdown_signal(exit_on_stdin_eof: bool) -> &'static str {
    let stdin_closed = async move {
        if !exit_on_stdin_eof {
            return std::future::pending().await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A plain thread, not tokio's stdin: a blocking read can't be cancelled, and tokio
        // would wait for it at runtime shutdown. The thread ends with the process.
        let spawned = std::thread::Builder::new()
            .name("stdin-eof".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 512];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // An unreadable stdin means the parent is gone just the same.
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            });
        if let Err(e) = spawned {
            // Without the watcher we could outlive our parent; better to stop now.
            tracing::error!(error = %e, "cannot watch stdin");
            return;
        }
        // A dropped sender (the thread died) counts as closed too.
        let _ = rx.await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot install a SIGTERM handler");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = stdin_closed => "stdin closed",
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = stdin_closed => "stdin closed",
    }
}

/// `90d`, `12h`, `30m`, `45s`: a positive whole number and one unit.
fn parse_duration(s: &str) -> Result<time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?}: expected a positive number and a unit (d, h, m, s)"))?;
    match unit {
        "d" => Ok(time::Duration::days(n)),
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        "s" => Ok(time::Duration::seconds(n)),
        _ => Err(format!("{s:?}: the unit must be d, h, m or s")),
    }
}

/// The cluster client. An explicit `--kubeconfig` that cannot be read, parsed or used is
/// an error (the user asked for that cluster); without one, the in-cluster or default
/// kubeconfig is tried and its absence means "no cluster access".
pub(crate) async fn connect_cluster(kubeconfig: Option<&Path>) -> Result<Option<kube::Client>> {
    let Some(path) = kubeconfig else {
        return Ok(match kube::Config::infer().await {
            Ok(c) => kube::Client::try_from(c).ok(),
            Err(e) => {
                tracing::debug!(error = %e, "no in-cluster or default kubeconfig");
                None
            }
        });
    };
    let shown = path.display();
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("--kubeconfig {shown}: cannot read"))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("--kubeconfig {shown}: cannot use"))?;
    let client = kube::Client::try_from(config)
        .with_context(|| format!("--kubeconfig {shown}: cannot build a client"))?;
    // Fail now, with the reason, rather than log watch errors forever.
    tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("--kubeconfig {shown}: cannot reach the API server"))?;
    Ok(Some(client))
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    init_tracing(args.log_format);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let config = match &args.config {
        Some(p) => load_config(p)?,
        None => {
            tracing::info!(
                "no --config given: using the embedded example config (examples/config.yaml)"
            );
            Config::parse(EMBEDDED_CONFIG, "<embedded examples/config.yaml>")
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let config = Arc::new(ArcSwap::from_pointee(config));
    let metrics = Arc::new(Metrics::new());

    // Held until `serve` returns, when dropping it removes the generated key.
    let mut self_signed = None;
    let mut managed = None;
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        _ if args.managed_certs.is_some() => (PathBuf::new(), PathBuf::new()),
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let s = SelfSigned::create(args.self_signed_dir.as_deref())?;
            println!(
                "self-signed certificate generated; CA written to {}",
                s.ca_path().display()
            );
            let paths = (s.cert_path(), s.key_path());
            self_signed = Some(s);
            paths
        }
    };
    let resolver = match &args.managed_certs {
        Some(secret) => {
            let client = connect_cluster(args.kubeconfig.as_deref())
                .await?
                .context("--managed-certs needs cluster access (in-cluster or --kubeconfig)")?;
            let mut names =
                certs::service_names(&args.managed_certs_service, &args.release_namespace);
            names.extend(args.managed_certs_dns.iter().cloned());
            let opts = crate::managed_certs::Options {
                secret: secret.clone(),
                namespace: args.release_namespace.clone(),
                names,
                mutating: args.mutating_webhook_configuration.clone(),
                validating: args.validating_webhook_configuration.clone(),
                ca_validity: args.ca_validity,
                cert_validity: args.cert_validity,
                propagation: args.ca_propagation,
            };
            let (resolver, running) =
                crate::managed_certs::start(client, opts, metrics.clone()).await?;
            managed = Some(running);
            resolver
        }
        None => {
            let r = Arc::new(ReloadingResolver::new(cert.clone(), key.clone())?);
            r.record_expiry(&metrics);
            r
        }
    };
    let tls = Arc::new(server::tls::server_config(
        resolver.clone(),
        args.client_ca.as_deref(),
    )?);

    let (config_tx, config_rx) = tokio::sync::watch::channel(0u64);
    let mut sync = None;
    if args.no_cluster_access {
        tracing::info!("--no-cluster-access: namespace labels and existing secrets unknown");
    } else if args.config.is_none() {
        // The example config names sources; never act on whatever cluster the user's
        // kubeconfig happens to point at just because they tried the quick start.
        tracing::info!("embedded example config: secret sync disabled (pass --config to enable)");
    } else {
        match connect_cluster(args.kubeconfig.as_deref()).await? {
            Some(client) => {
                sync = Some(
                    start_sync(&args, client, config.clone(), config_rx, metrics.clone()).await?,
                )
            }
            None => tracing::info!(
                "no cluster access (no kubeconfig, not in a cluster): secret sync disabled"
            ),
        }
    }
    let cluster: Arc<dyn Cluster> = match &sync {
        Some(s) => s.cluster(),
        None => Arc::new(NoCluster),
    };

    let mut webhook = Webhook::new(config.clone(), cluster, metrics.clone());
    webhook.ensure_timeout = Duration::from_secs_f64(args.ensure_timeout.max(0.0));
    let webhook = Arc::new(webhook);
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_connections: server::connection_budget(
            usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        ),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        ..Limits::default()
    };

    let listener = server::listen::bind(args.listen).await?;
    let metrics_listener = server::listen::bind(args.metrics_listen).await?;
    println!(
        "listening on https://{} (metrics on http://{}/metrics)",
        listener.local_addr()?,
        metrics_listener.local_addr()?
    );

    if let Some(path) = args.config.clone() {
        let config = config.clone();
        let metrics = metrics.clone();
        reload::spawn(
            "config",
            vec![path.clone()],
            Duration::from_secs(10),
            move || {
                let result = Config::load(&path)
                    .map(|c| config.store(Arc::new(c)))
                    .map_err(|e| e.to_string());
                metrics
                    .config_reloads
                    .get_or_create(&ResultLabels::of(&result))
                    .inc();
                if result.is_ok() {
                    config_tx.send_modify(|n| *n += 1);
                }
                result
            },
        );
    }
    let tls_reload = (args.managed_certs.is_none()).then(|| {
        let resolver = resolver.clone();
        let metrics = metrics.clone();
        reload::spawn(
            "tls certificate",
            vec![cert, key],
            Duration::from_secs(10),
            move || {
                let result = resolver.reload().map_err(|e| format!("{e:#}"));
                metrics
                    .tls_reloads
                    .get_or_create(&ResultLabels::of(&result))
                    .inc();
                if result.is_ok() {
                    resolver.record_expiry(&metrics);
                }
                result
            },
        )
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let wait = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_task = tokio::spawn(server::serve_plain(
        metrics_listener,
        server::metrics_router(webhook.clone()),
        wait(stop_rx.clone()),
    ));
    let exit_on_stdin_eof = args.exit_on_stdin_eof;
    {
        let stop_tx = stop_tx.clone();
        let webhook = webhook.clone();
        let delay = Duration::from_secs(args.shutdown_delay);
        tokio::spawn(async move {
            let why = shutdown_signal(exit_on_stdin_eof).await;
            // Unready first, still serving: the endpoint leaves the Service while
            // requests routed here meanwhile are answered.
            webhook
                .serving
                .store(false, std::sync::atomic::Ordering::Release);
            tracing::info!(
                signal = why,
                delay_seconds = delay.as_secs(),
                "shutdown requested: unready, serving until the delay ends"
            );
            tokio::time::sleep(delay).await;
            let _ = stop_tx.send(true);
        });
    }
    // The sync controller's supervisor: a task of it ending is a fault that stops the
    // server and makes the process exit non-zero; on a normal stop it releases the Lease.
    // Likewise for self-managed certificates: the loop ending is a fault.
    let managed_task = managed.map(|mut running| {
        let stop_tx = stop_tx.clone();
        let mut stopping = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                e = running.failed() => {
                    tracing::error!(error = %format!("{e:#}"), "self-managed certificates failed; shutting down");
                    let _ = stop_tx.send(true);
                    Err(e)
                }
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    running.stop();
                    Ok(())
                }
            }
        })
    });
    let sync_task = sync.map(|mut running| {
        let stop_tx = stop_tx.clone();
        let mut stopping = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                e = running.failed() => {
                    tracing::error!(error = %e, "secret sync failed; shutting down");
                    let _ = stop_tx.send(true);
                    Err(e)
                }
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    running.shutdown().await;
                    Ok(())
                }
            }
        })
    });
    webhook
        .serving
        .store(true, std::sync::atomic::Ordering::Release);
    server::serve_tls(
        listener,
        tls,
        server::router(webhook.clone(), &limits),
        limits,
        wait(stop_rx),
    )
    .await?;
    let _ = metrics_task.await;
    if let Some(t) = sync_task {
        t.await.context("secret sync supervisor")??;
    }
    if let Some(t) = managed_task {
        t.await.context("managed certificate supervisor")??;
    }
    // Stop watching the certificate folder before removing it, so the watcher neither
    // reacts to the removal nor trips over a directory that is already gone.
    if let Some(t) = tls_reload {
        t.abort();
        let _ = t.await;
    }
    drop(self_signed);
    tracing::info!("stopped");
    Ok(())
}

/// Starts the secret-sync controller (see `sync`): every replica keeps the caches the
/// webhook reads; the Lease holder reconciles.
async fn start_sync(
    args: &ServeArgs,
    client: kube::Client,
    config: Arc<ArcSwap<Config>>,
    changed: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<Metrics>,
) -> Result<crate::sync::Running> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("pullsecret-injector-{}", std::process::id()))
    });
    let access = if args.no_sync {
        tracing::info!(
            "cluster access found; --no-sync: reading namespaces and pull secrets, writing nothing"
        );
        crate::sync::Access::ReadOnly
    } else {
        tracing::info!(%identity, namespace = %args.release_namespace, "cluster access found: starting secret sync");
        crate::sync::Access::ReadWrite
    };
    crate::sync::start(
        client,
        config,
        changed,
        metrics,
        identity,
        args.release_namespace.clone(),
        access,
    )
    .await
    .map_err(anyhow::Error::from)
}
