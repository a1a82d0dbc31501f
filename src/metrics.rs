//! Prometheus metrics, one registry per process, served as text on a plain-HTTP listener
//! apart from the webhook port (scrapers should not need the webhook's client CA).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub operation: &'static str,
    /// `allowed`, `patched`, `denied`, `warned`, `invalid` (HTTP 400/413).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

impl ResultLabels {
    pub fn of<T, E>(r: &Result<T, E>) -> ResultLabels {
        ResultLabels {
            result: if r.is_ok() { "success" } else { "failure" },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `created`, `updated`, `deleted`.
    pub action: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub admission_requests: Family<RequestLabels, Counter>,
    pub admission_duration: Family<EndpointLabels, Histogram>,
    pub secrets_injected: Family<RegistryLabels, Counter>,
    pub always_pull_forced: Counter,
    pub policy_offences: Family<ModeLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub inflight: Gauge,
    pub sync_reconciles: Family<ResultLabels, Counter>,
    pub sync_copies: Family<ActionLabels, Counter>,
    pub sync_conflicts: Counter,
    pub admission_secret_ensures: Family<ResultLabels, Counter>,
    /// When the served certificate expires (seconds since the epoch).
    pub tls_certificate_expiry: Gauge,
    /// 1 while this replica holds the sync Lease and may write, else 0.
    pub sync_leader: Gauge,
    /// Requests the sync controller sent to the API server, by verb (watches excluded).
    pub sync_api_requests: Family<VerbLabels, Counter>,
    /// Per credential-provider entry, on the replica that runs the plugins: when its
    /// plugin last answered usably (seconds since the epoch).
    pub provider_last_success: Family<RegistryLabels, Gauge>,
    /// When the credentials the copies hold expire (last success + `cacheDuration`);
    /// absent when the plugin gave no lifetime.
    pub provider_expiry: Family<RegistryLabels, Gauge>,
    /// When the plugin runs next (after a success or a failure's backoff).
    pub provider_next_refresh: Family<RegistryLabels, Gauge>,
    pub provider_failures: Family<ProviderFailureLabels, Counter>,
    /// Offences the last audit found in running pods, by namespace and rule; at most
    /// [`AUDIT_NAMESPACE_LABELS`] namespaces by name, the rest summed as `_other`.
    pub audit_offences: Family<AuditLabels, Gauge>,
    /// Pods the last audit judged.
    pub audit_pods: Gauge,
    /// How long the last audit took (judging and writing its reports).
    pub audit_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When the last audit finished, in seconds since the epoch.
    pub audit_last_run: Gauge,
    /// Requests the audit sent to the API server, by verb (the Pod watch excluded).
    pub audit_api_requests: Family<VerbLabels, Counter>,
}

/// Namespaces named in `audit_offences` labels; beyond them, `_other`.
pub const AUDIT_NAMESPACE_LABELS: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub namespace: String,
    /// `deny`, `allow`, `requireAlwaysPull`, `invalidImage`, `unreadablePod`.
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderFailureLabels {
    pub registry: String,
    /// `spawn`, `timeout`, `exit`, `output_too_large`, `io`, `malformed`, `partial_auth`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pullsecret_injector");
        let admission_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by endpoint, operation and outcome",
            admission_requests.clone(),
        );
        let admission_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0,
            ])
        });
        registry.register(
            "admission_duration_seconds",
            "Time from request body received to response ready",
            admission_duration.clone(),
        );
        let secrets_injected = Family::<RegistryLabels, Counter>::default();
        registry.register(
            "secrets_injected",
            "imagePullSecrets added to pods, by registry entry",
            secrets_injected.clone(),
        );
        let always_pull_forced = Counter::default();
        registry.register(
            "always_pull_forced",
            "Containers and image volumes whose pull policy was set to Always",
            always_pull_forced.clone(),
        );
        let policy_offences = Family::<ModeLabels, Counter>::default();
        registry.register(
            "policy_offences",
            "Registry-rule offences found, by policy mode",
            policy_offences.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config file reloads",
            config_reloads.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads",
            tls_reloads.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "admission_inflight",
            "Reviews being answered now",
            inflight.clone(),
        );
        let sync_reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "sync_reconciles",
            "Secret-sync reconcile passes",
            sync_reconciles.clone(),
        );
        let sync_copies = Family::<ActionLabels, Counter>::default();
        registry.register(
            "sync_copies",
            "Managed secret copies created, updated or deleted",
            sync_copies.clone(),
        );
        let sync_conflicts = Counter::default();
        registry.register(
            "sync_conflicts",
            "Same-name secrets not owned by this tool, left untouched",
            sync_conflicts.clone(),
        );
        let admission_secret_ensures = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admission_secret_ensures",
            "Pre-admission checks that the managed copies of injected secrets exist (created when missing)",
            admission_secret_ensures.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate in use expires, in seconds since the epoch",
            tls_certificate_expiry.clone(),
        );
        let sync_leader = Gauge::default();
        registry.register(
            "sync_leader",
            "1 while this replica holds the sync Lease and may write copies, else 0",
            sync_leader.clone(),
        );
        let sync_api_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "sync_api_requests",
            "API requests sent by the sync controller and the admission-time create, by verb (watches excluded)",
            sync_api_requests.clone(),
        );
        let provider_last_success = Family::<RegistryLabels, Gauge>::default();
        registry.register(
            "credential_provider_last_success_timestamp_seconds",
            "When the entry's credential provider plugin last answered with usable credentials, in seconds since the epoch",
            provider_last_success.clone(),
        );
        let provider_expiry = Family::<RegistryLabels, Gauge>::default();
        registry.register(
            "credential_provider_expiry_timestamp_seconds",
            "When the credentials from the entry's credential provider expire (its cacheDuration), in seconds since the epoch",
            provider_expiry.clone(),
        );
        let provider_next_refresh = Family::<RegistryLabels, Gauge>::default();
        registry.register(
            "credential_provider_next_refresh_timestamp_seconds",
            "When the entry's credential provider plugin runs next, in seconds since the epoch",
            provider_next_refresh.clone(),
        );
        let provider_failures = Family::<ProviderFailureLabels, Counter>::default();
        registry.register(
            "credential_provider_refresh_failures",
            "Credential provider runs that gave no usable credentials, by entry and reason",
            provider_failures.clone(),
        );
        let audit_offences = Family::<AuditLabels, Gauge>::default();
        registry.register(
            "audit_offences",
            "Registry-rule offences of running pods found by the last background audit, by namespace (the 50 with most offences, the rest as _other) and rule",
            audit_offences.clone(),
        );
        let audit_pods = Gauge::default();
        registry.register(
            "audit_pods",
            "Pods judged by the last background audit",
            audit_pods.clone(),
        );
        let audit_duration = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "audit_duration_seconds",
            "How long the last background audit took, judging and writing its reports",
            audit_duration.clone(),
        );
        let audit_last_run = Gauge::default();
        registry.register(
            "audit_last_run_timestamp_seconds",
            "When the last background audit finished, in seconds since the epoch",
            audit_last_run.clone(),
        );
        let audit_api_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "audit_api_requests",
            "Requests the background audit sent to the API server, by verb (its Pod watch excluded)",
            audit_api_requests.clone(),
        );
        Metrics {
            registry,
            audit_offences,
            audit_pods,
            audit_duration,
            audit_last_run,
            audit_api_requests,
            admission_requests,
            admission_duration,
            secrets_injected,
            always_pull_forced,
            policy_offences,
            config_reloads,
            tls_reloads,
            inflight,
            sync_reconciles,
            sync_copies,
            sync_conflicts,
            admission_secret_ensures,
            tls_certificate_expiry,
            sync_leader,
            sync_api_requests,
            provider_last_success,
            provider_expiry,
            provider_next_refresh,
            provider_failures,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}
