//! Command-line interface: wires the modules together, holds no business rules.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand, ValueEnum};

use crate::admission::{self, Endpoint, NamespaceFacts};
use crate::cluster::{Cluster, NoCluster};
use crate::config::{Config, PolicyMode};
use crate::metrics::{Metrics, ResultLabels};
use crate::server::{self, Limits, tls::ReloadingResolver};
use crate::webhook::Webhook;
use crate::{certs, manifest, reload};

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
    Serve(ServeArgs),
    /// Validate a config file: prints `ok`, or `FILE:LINE:COL: reason` and exits 1.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Answer one AdmissionReview from a file or stdin, exactly as the server would.
    Review {
        #[arg(long)]
        config: PathBuf,
        /// AdmissionReview JSON file, or `-` for stdin.
        #[arg(short = 'f', long = "file", default_value = "-")]
        file: String,
        #[arg(long, value_enum, default_value_t = EndpointArg::Mutate)]
        endpoint: EndpointArg,
    },
    /// Print manifests with their pod templates mutated as the webhook would mutate the pods.
    Mutate(ManifestArgs),
    /// Report registry-policy breaches in manifests; exits 1 if enforce mode would reject one.
    Verify(ManifestArgs),
    /// Generate a CA and a serving certificate for the webhook Service; prints the caBundle.
    Certs {
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "pullsecret-injector")]
        service: String,
        #[arg(long, default_value = "pullsecret-injector")]
        namespace: String,
        /// Extra DNS names or IP addresses for the certificate.
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(clap::Args, Debug)]
pub struct ManifestArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Manifest file (multi-document YAML, or JSON), or `-` for stdin.
    #[arg(short = 'f', long = "file")]
    pub file: String,
    /// Namespace for objects that do not name one.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum EndpointArg {
    Mutate,
    Validate,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Config file; without it the embedded example config is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where a generated self-signed CA and certificate are written when no --tls-cert is given.
    #[arg(long)]
    pub self_signed_dir: Option<PathBuf>,
    /// Require client certificates signed by this CA (only the API server may call).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Do not start the secret-sync controller even when cluster access exists.
    #[arg(long)]
    pub no_sync: bool,
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
    /// Seconds to finish in-flight reviews after SIGTERM.
    #[arg(long, default_value_t = 20)]
    pub drain_timeout: u64,
    /// Seconds the webhook may spend creating a missing pull secret before admitting a pod.
    #[arg(long, default_value_t = 2.0)]
    pub ensure_timeout: f64,
}

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

fn read_input(file: &str) -> Result<Vec<u8>> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("reading {file}"))
    }
}

fn load_config(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs a sub-command, returning the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Serve(args) => serve(args).await.map(|_| 0),
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("ok");
                Ok(0)
            }
            Err(e) => {
                println!("{e}");
                Ok(1)
            }
        },
        Command::Review {
            config,
            file,
            endpoint,
        } => {
            let cfg = load_config(&config)?;
            let body = read_input(&file)?;
            let endpoint = match endpoint {
                EndpointArg::Mutate => Endpoint::Mutate,
                EndpointArg::Validate => Endpoint::Validate,
            };
            match admission::review(endpoint, &body, &cfg, &NamespaceFacts::default()) {
                Ok(out) => {
                    println!("{}", String::from_utf8_lossy(&out));
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(2)
                }
            }
        }
        Command::Mutate(ManifestArgs {
            config,
            file,
            namespace,
        }) => {
            let cfg = load_config(&config)?;
            let text = String::from_utf8(read_input(&file)?).context("manifest is not UTF-8")?;
            let (format, mut docs) = manifest::read_documents(&text)?;
            for w in manifest::mutate_documents(&mut docs, &cfg, &namespace)? {
                eprintln!("warning: {w}");
            }
            print!("{}", manifest::write_documents(format, &docs)?);
            Ok(0)
        }
        Command::Verify(ManifestArgs {
            config,
            file,
            namespace,
        }) => {
            let cfg = load_config(&config)?;
            if cfg.policy.is_none() {
                bail!(
                    "{}: no `policy` section; nothing to verify",
                    config.display()
                );
            }
            let text = String::from_utf8(read_input(&file)?).context("manifest is not UTF-8")?;
            let (_, mut docs) = manifest::read_documents(&text)?;
            let breaches = manifest::verify_documents(&mut docs, &cfg, &namespace)?;
            let mut rejected = 0;
            for b in &breaches {
                println!("{}: {}: {}", b.object, b.mode.as_str(), b.offence.long);
                if b.mode == PolicyMode::Enforce {
                    rejected += 1;
                }
            }
            if breaches.is_empty() {
                println!("ok: no policy breaches");
            }
            Ok(if rejected > 0 { 1 } else { 0 })
        }
        Command::Certs {
            out_dir,
            service,
            namespace,
            dns,
            days,
        } => {
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
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
        #[cfg(not(unix))]
        let _ = private;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn connect_cluster(args: &ServeArgs) -> Option<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = match kube::config::Kubeconfig::read_from(path) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read kubeconfig; running without cluster access");
                    return None;
                }
            };
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .ok()?
        }
        None => kube::Config::infer().await.ok()?,
    };
    kube::Client::try_from(config).ok()
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

    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = args.self_signed_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("pullsecret-injector-{}", std::process::id()))
            });
            let b = certs::generate(
                &certs::service_names("pullsecret-injector", "pullsecret-injector"),
                30,
            )?;
            write_bundle(&dir, &b)?;
            let ca = dir.join("ca.crt");
            println!(
                "self-signed certificate generated; CA written to {}",
                ca.display()
            );
            (dir.join("tls.crt"), dir.join("tls.key"))
        }
    };
    let resolver = Arc::new(ReloadingResolver::new(cert.clone(), key.clone())?);
    let tls = Arc::new(server::tls::server_config(
        resolver.clone(),
        args.client_ca.as_deref(),
    )?);

    let (config_tx, config_rx) = tokio::sync::watch::channel(0u64);
    let cluster: Arc<dyn Cluster> = if args.no_sync {
        Arc::new(NoCluster)
    } else if args.config.is_none() {
        // The example config names sources; never act on whatever cluster the user's
        // kubeconfig happens to point at just because they tried the quick start.
        tracing::info!("embedded example config: secret sync disabled (pass --config to enable)");
        Arc::new(NoCluster)
    } else {
        match connect_cluster(&args).await {
            Some(client) => {
                start_sync(&args, client, config.clone(), config_rx, metrics.clone()).await?
            }
            None => {
                tracing::info!(
                    "no cluster access (no kubeconfig, not in a cluster): secret sync disabled"
                );
                Arc::new(NoCluster)
            }
        }
    };

    let mut webhook = Webhook::new(config.clone(), cluster, metrics.clone());
    webhook.ensure_timeout = Duration::from_secs_f64(args.ensure_timeout.max(0.0));
    let webhook = Arc::new(webhook);
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        ..Limits::default()
    };

    let listener = server::bind(args.listen).await?;
    let metrics_listener = server::bind(args.metrics_listen).await?;
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
    {
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
                result
            },
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_task = tokio::spawn(server::serve_plain(
        metrics_listener,
        server::metrics_router(webhook.clone()),
        wait(stop_rx.clone()),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
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
) -> Result<Arc<dyn Cluster>> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("pullsecret-injector-{}", std::process::id()))
    });
    tracing::info!(%identity, namespace = %args.release_namespace, "cluster access found: starting secret sync");
    crate::sync::start(
        client,
        config,
        changed,
        metrics,
        identity,
        args.release_namespace.clone(),
    )
    .await
}
