//! The configuration file: parsed with positions so every complaint names
//! `FILE:LINE:COL`, validated completely before use, and compiled into the matchers the
//! admission decision reads. A config is immutable once built; reload swaps a whole new
//! one in, so a request never sees half of an old and half of a new config.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::image::ImageRef;
use crate::matcher::{Matcher, Pattern, glob};

/// Indexes into `Config::registries` of the entries one image matches: a few at most, so
/// on the stack (asked once per image of every reviewed pod).
pub type EntryIds = smallvec::SmallVec<[usize; 4]>;

/// `FILE:LINE:COL: reason` — the one error shape `check` prints and reload logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) file: String,
    pub(crate) line: u64,
    pub(crate) col: u64,
    pub(crate) reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// When to force `imagePullPolicy: Always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullScope {
    #[default]
    None,
    /// Images matched by any registry entry in scope.
    Private,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Enforce,
    Warn,
    Audit,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Warn => "warn",
            PolicyMode::Audit => "audit",
        }
    }
}

// ---------- raw (as written) ----------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    registries: Vec<S<RawRegistry>>,
    #[serde(default)]
    namespaces: Option<RawGlobalNamespaces>,
    #[serde(default)]
    always_pull_images: PullScope,
    #[serde(default)]
    inject_only_if_present: bool,
    #[serde(default)]
    repair_stuck_pods: bool,
    #[serde(default)]
    policy: Option<RawPolicy>,
    #[serde(default)]
    audit: Option<S<RawAudit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAudit {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    max_results_per_report: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRegistry {
    name: S<String>,
    #[serde(rename = "match")]
    patterns: S<Vec<S<String>>>,
    secret: S<String>,
    #[serde(default)]
    always_pull: bool,
    #[serde(default)]
    namespaces: Option<RawScope>,
    #[serde(default)]
    source: Option<S<RawSource>>,
    #[serde(default)]
    service_accounts: Vec<S<String>>,
}

/// `{namespace, name}` (a Secret) or `{credentialProvider: …}`; which one is checked in
/// [`Compiler::source`], so the error can say what was mixed up.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSource {
    #[serde(default)]
    namespace: Option<S<String>>,
    #[serde(default)]
    name: Option<S<String>>,
    #[serde(default)]
    credential_provider: Option<S<RawCredentialProvider>>,
}

/// The kubelet's `CredentialProvider` config entry, trimmed to what one exec needs
/// (`k8s.io/kubelet` `pkg/apis/config/v1` `CredentialProvider`: `args`, `env`; our
/// `command` is its `pluginBinDir` + `name` as one absolute path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCredentialProvider {
    command: S<String>,
    #[serde(default)]
    args: Vec<S<String>>,
    #[serde(default)]
    env: Vec<S<RawEnvVar>>,
    image: S<String>,
    #[serde(default)]
    timeout: Option<S<String>>,
    #[serde(default)]
    min_refresh: Option<S<String>>,
    #[serde(default)]
    max_refresh: Option<S<String>>,
    #[serde(default)]
    service_account_token: Option<S<RawTokenSource>>,
}

/// KEP-4412's `serviceAccountToken`: the kubelet passes the pod's token; we request one
/// for a configured ServiceAccount.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenSource {
    namespace: S<String>,
    name: S<String>,
    audience: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvVar {
    name: S<String>,
    value: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    include: Vec<S<String>>,
    #[serde(default)]
    exclude: Vec<S<String>>,
    #[serde(default)]
    selector: Option<S<LabelSelector>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobalNamespaces {
    #[serde(default)]
    exclude: Vec<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    #[serde(default)]
    mode: PolicyMode,
    #[serde(default)]
    allow: Option<Vec<S<String>>>,
    #[serde(default)]
    deny: Vec<S<String>>,
    #[serde(default)]
    require_always_pull: PullScope,
    #[serde(default)]
    exempt_namespaces: Vec<S<String>>,
    #[serde(default)]
    overrides: Vec<S<RawOverride>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawOverride {
    namespaces: S<Vec<S<String>>>,
    #[serde(default)]
    mode: Option<PolicyMode>,
    #[serde(default)]
    allow: Option<Vec<S<String>>>,
    #[serde(default)]
    deny: Option<Vec<S<String>>>,
    #[serde(default)]
    require_always_pull: Option<PullScope>,
}

// ---------- compiled ----------

/// Namespace globs plus an optional label selector; all given conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct NamespaceScope {
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
    /// The selector as written, for `export-policies` (which compiles it to CEL).
    pub(crate) selector: Option<LabelSelector>,
    compiled_selector: Option<Selector>,
}

impl NamespaceScope {
    /// `labels` is `None` when the namespace's labels are unknown (no cluster access);
    /// a selector then counts as satisfied, because injecting a reference to a secret that
    /// turns out not to be needed is harmless while omitting a needed one breaks pulls.
    pub fn contains(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        if !self.include.is_empty() && !self.include.iter().any(|g| glob(g, namespace)) {
            return false;
        }
        if self.exclude.iter().any(|g| glob(g, namespace)) {
            return false;
        }
        match (&self.compiled_selector, labels) {
            (Some(sel), Some(l)) => sel.matches(l),
            _ => true,
        }
    }

    /// True when membership depends on namespace labels.
    pub fn has_selector(&self) -> bool {
        self.compiled_selector.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Where an entry's credentials come from. Both kinds feed the same delivery path: the
/// sync planner sees a validated `dockerconfigjson` either way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A Secret copied as it is.
    Secret(SecretRef),
    /// A kubelet credential provider plugin, exec'd by the sync leader.
    CredentialProvider(Arc<CredentialProvider>),
}

impl Source {
    pub(crate) fn secret(&self) -> Option<&SecretRef> {
        match self {
            Source::Secret(r) => Some(r),
            Source::CredentialProvider(_) => None,
        }
    }
}

/// Default for `timeout`: the kubelet's own catch-all for exec plugins
/// (`k8s.io/kubernetes` v1.37.2 `pkg/credentialprovider/plugin/plugin.go`, `ExecPlugin`:
/// `context.WithTimeout(ctx, 1*time.Minute)`).
pub(crate) const PROVIDER_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const PROVIDER_TIMEOUT_MAX: Duration = Duration::from_secs(300);
pub(crate) const PROVIDER_MIN_REFRESH: Duration = Duration::from_secs(30);
pub(crate) const PROVIDER_MAX_REFRESH: Duration = Duration::from_secs(3600);
/// No floor below this: a plugin is a process and usually a cloud API call.
pub(crate) const PROVIDER_REFRESH_FLOOR: Duration = Duration::from_secs(1);

/// One credential provider plugin and how to run it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialProvider {
    /// The entry it serves: a provider source's identity, so two entries never share one
    /// (their `match` patterns, which its answer must cover, differ).
    pub(crate) registry: String,
    /// Absolute path, exec'd directly (no shell).
    pub(crate) command: PathBuf,
    pub(crate) args: Vec<String>,
    /// Added to this process's environment, later ones winning, as the kubelet does.
    pub(crate) env: Vec<(String, String)>,
    /// The `image` of the `CredentialProviderRequest`; matched by the entry's patterns.
    pub(crate) image: String,
    pub(crate) timeout: Duration,
    /// Floor and ceiling of the refresh interval.
    pub(crate) min_refresh: Duration,
    pub(crate) max_refresh: Duration,
    /// Pass a token of this ServiceAccount as the request's `serviceAccountToken`.
    pub(crate) service_account_token: Option<TokenSource>,
}

/// Whose token a workload-identity plugin gets, and for which audience.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenSource {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) audience: String,
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) name: String,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) secret: String,
    pub(crate) always_pull: bool,
    pub(crate) namespaces: NamespaceScope,
    pub(crate) source: Option<Source>,
    pub(crate) service_accounts: Vec<String>,
}

/// One set of registry rules (global, or an override's merged result).
#[derive(Debug, Clone)]
pub struct Rules {
    pub(crate) mode: PolicyMode,
    /// `None` = every registry is allowed (only `deny` applies).
    pub(crate) allow: Option<Matcher<()>>,
    pub(crate) deny: Matcher<()>,
    pub(crate) require_always_pull: PullScope,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) global: Rules,
    pub(crate) exempt_namespaces: Vec<String>,
    /// Namespace globs → rules; first match wins.
    pub(crate) overrides: Vec<(Vec<String>, Rules)>,
}

impl Policy {
    /// The rules for a namespace, or `None` when it is exempt.
    pub fn rules_for(&self, namespace: &str) -> Option<&Rules> {
        self.which_rules(namespace).map(|(_, r)| r)
    }

    /// The rules for a namespace with where they come from: `None` for the global rules,
    /// `Some(i)` for `overrides[i]` (the first whose globs hold the namespace). `None`
    /// overall when the namespace is exempt.
    pub fn which_rules(&self, namespace: &str) -> Option<(Option<usize>, &Rules)> {
        if self.exempt_namespaces.iter().any(|g| glob(g, namespace)) {
            return None;
        }
        Some(
            self.overrides
                .iter()
                .position(|(globs, _)| globs.iter().any(|g| glob(g, namespace)))
                .map_or((None, &self.global), |i| (Some(i), &self.overrides[i].1)),
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub(crate) registries: Vec<Registry>,
    /// Pattern → index into `registries`.
    pub(crate) matcher: Matcher<usize>,
    pub(crate) exclude_namespaces: Vec<String>,
    pub(crate) always_pull: PullScope,
    pub(crate) inject_only_if_present: bool,
    pub(crate) repair_stuck_pods: bool,
    pub(crate) policy: Option<Policy>,
    pub(crate) audit: Audit,
}

/// The background audit of running Pods (`audit:`), run by the controller's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub(crate) enabled: bool,
    /// Results kept in one namespace's report; the summary still counts them all.
    pub(crate) max_results_per_report: usize,
}

/// Default `audit.maxResultsPerReport`: a report of 100 results is about 60 KiB.
pub(crate) const AUDIT_MAX_RESULTS_DEFAULT: usize = 100;
/// Upper bound of `audit.maxResultsPerReport`: etcd's default request limit is 1.5 MiB, and a
/// result with its message is at most about 1.2 KiB.
pub(crate) const AUDIT_MAX_RESULTS_LIMIT: usize = 1000;

impl Default for Audit {
    fn default() -> Self {
        Audit {
            enabled: false,
            max_results_per_report: AUDIT_MAX_RESULTS_DEFAULT,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            col: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &file)
    }

    /// Parses YAML (JSON is YAML, so both are accepted). `file` is used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        // A file of only comments (or `---`) holds no config, just like an empty one; the
        // YAML library would read it as null and complain about a type instead.
        let blank = text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        });
        if blank {
            return Err(ConfigError {
                file: file.into(),
                line: 1,
                col: 1,
                reason: "config is empty (expected at least `registries:`)".into(),
            });
        }
        // The field path (`registries[0].match`) is recorded while deserialising, so a type
        // error names the field as the README promises, not just a position.
        let mut path = String::new();
        let raw: RawConfig = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| {
            let loc = e.location();
            ConfigError {
                file: file.into(),
                line: loc.map_or(0, |l| l.line()),
                col: loc.map_or(0, |l| l.column()),
                reason: with_path(
                    &path,
                    &one_line(&e.without_snippet().to_string()),
                    loc.map_or("a value", |l| node_at(text, l.line(), l.column())),
                ),
            }
        })?;
        Compiler { file }.compile(raw)
    }

    /// The compiled patterns (pattern → index of its registry entry).
    pub fn matcher(&self) -> &Matcher<usize> {
        &self.matcher
    }

    pub fn is_namespace_excluded(&self, namespace: &str) -> bool {
        self.exclude_namespaces.iter().any(|g| glob(g, namespace))
    }

    /// The one answer to "which registry entries apply to this image in this namespace",
    /// used by mutate, validate, the offline commands and stuck-pod repair: indexes into
    /// `registries`, in the matcher's order and without repeats, of entries with a pattern matching `img` whose
    /// namespace scope contains `namespace`. `labels` is `None` when the namespace's
    /// labels are unknown (no cluster access, or not cached yet): selectors then count as
    /// satisfied. Namespace exclusion is the caller's first check, not repeated here.
    pub fn entries_for(
        &self,
        img: &ImageRef,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> EntryIds {
        let mut out = EntryIds::new();
        self.matcher.for_each_match(img, |_, &i| {
            if !out.contains(&i) && self.registries[i].namespaces.contains(namespace, labels) {
                out.push(i);
            }
        });
        out
    }
}

/// serde-saphyr's messages may span lines, repeat the position and end in advice for
/// programmers (`set DuplicateKeyPolicy in Options`, `use from_str_multiple`); keep the
/// reason only.
fn one_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = first
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(first);
    let first = match first.find("; use from_str_multiple") {
        Some(i) => &first[..i],
        None => first,
    };
    if first.starts_with("multiple YAML documents detected") {
        return "a config is one YAML document; found more after `---`".into();
    }
    first.trim_end_matches('.').to_string()
}

/// `registries[0].match: expected a list of patterns, got a string`: the field path in
/// front (without the `.value` steps our `Spanned` wrappers add), and the library's
/// `expected sequence start` turned into words a config author uses, with what was
/// written instead read from the text at the error's position.
fn with_path(path: &str, reason: &str, got: &str) -> String {
    let path = path.replace(".value.", ".").replace(".value[", "[");
    let path = path.strip_suffix(".value").unwrap_or(&path);
    let expected = match reason {
        "expected sequence start" if path.ends_with(".match") => Some("a list of patterns"),
        "expected sequence start" => Some("a list"),
        "expected mapping start" => Some("a mapping"),
        "expected string scalar" => Some("a string"),
        "invalid boolean" => Some("true or false"),
        _ => None,
    };
    let reason = match expected {
        Some(e) => format!("expected {e}, got {got}"),
        None => reason.replace('`', "'"),
    };
    if path.is_empty() || path == "." || path == "?" {
        reason
    } else {
        format!("{path}: {reason}")
    }
}

/// What kind of YAML node starts at `line:col` (1-based), for "got …" in messages.
fn node_at(text: &str, line: u64, col: u64) -> &'static str {
    let rest: String = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .map(|l| l.chars().skip(col.saturating_sub(1) as usize).collect())
        .unwrap_or_default();
    let rest = rest.trim_start();
    if rest.starts_with('[') || rest == "-" || rest.starts_with("- ") {
        "a list"
    } else if rest.starts_with('{') {
        "a mapping"
    } else if rest.is_empty() || rest.starts_with('~') || rest.starts_with("null") {
        "nothing"
    } else {
        "a string"
    }
}

struct Compiler<'a> {
    file: &'a str,
}

impl Compiler<'_> {
    fn err<T>(&self, s: &S<T>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line: s.referenced.line(),
            col: s.referenced.column(),
            reason: reason.into(),
        }
    }

    fn compile(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut registries = Vec::new();
        let mut matcher = Matcher::new();
        let mut names = HashSet::new();
        for (i, r) in raw.registries.iter().enumerate() {
            let reg = self.registry(i, r, &mut names)?;
            for p in &reg.patterns {
                matcher.insert(p.clone(), i);
            }
            registries.push(reg);
        }
        let exclude_namespaces = match &raw.namespaces {
            Some(n) => self.globs(&n.exclude, "namespaces.exclude")?,
            None => Vec::new(),
        };
        let policy = raw.policy.as_ref().map(|p| self.policy(p)).transpose()?;
        let audit = raw
            .audit
            .as_ref()
            .map(|a| self.audit(a))
            .transpose()?
            .unwrap_or_default();
        Ok(Config {
            registries,
            matcher,
            exclude_namespaces,
            always_pull: raw.always_pull_images,
            inject_only_if_present: raw.inject_only_if_present,
            repair_stuck_pods: raw.repair_stuck_pods,
            policy,
            audit,
        })
    }

    fn audit(&self, a: &S<RawAudit>) -> Result<Audit, ConfigError> {
        let max = match &a.value.max_results_per_report {
            None => AUDIT_MAX_RESULTS_DEFAULT,
            Some(m) => usize::try_from(m.value)
                .ok()
                .filter(|n| (1..=AUDIT_MAX_RESULTS_LIMIT).contains(n))
                .ok_or_else(|| {
                    self.err(
                        m,
                        format!(
                            "audit.maxResultsPerReport: {} is out of range 1..={AUDIT_MAX_RESULTS_LIMIT}",
                            m.value
                        ),
                    )
                })?,
        };
        Ok(Audit {
            enabled: a.value.enabled,
            max_results_per_report: max,
        })
    }

    fn registry(
        &self,
        i: usize,
        r: &S<RawRegistry>,
        names: &mut HashSet<String>,
    ) -> Result<Registry, ConfigError> {
        let v = &r.value;
        let field = |f: &str| format!("registries[{i}].{f}");
        if !is_label_value(&v.name.value) {
            return Err(self.err(
                &v.name,
                format!(
                    "{}: {:?} must be 1-63 characters of a-z, 0-9, '-', '_' or '.'",
                    field("name"),
                    v.name.value
                ),
            ));
        }
        if !names.insert(v.name.value.clone()) {
            return Err(self.err(
                &v.name,
                format!(
                    "{}: duplicate registry name {:?}",
                    field("name"),
                    v.name.value
                ),
            ));
        }
        if v.patterns.value.is_empty() {
            return Err(self.err(
                &v.patterns,
                format!("{}: at least one pattern is required", field("match")),
            ));
        }
        let mut patterns = Vec::new();
        for p in &v.patterns.value {
            let pat = Pattern::parse(&p.value)
                .map_err(|e| self.err(p, format!("{}: {e}", field("match"))))?;
            patterns.push(pat);
        }
        check_dns_subdomain(&v.secret.value)
            .map_err(|why| self.err(&v.secret, format!("{}: {why}", field("secret"))))?;
        let namespaces = match &v.namespaces {
            Some(s) => self.scope(s, &field("namespaces"))?,
            None => NamespaceScope::default(),
        };
        let source = match &v.source {
            Some(src) => Some(self.source(src, &v.name.value, &patterns, &field("source"))?),
            None => None,
        };
        let mut service_accounts = Vec::new();
        for sa in &v.service_accounts {
            check_dns_subdomain(&sa.value)
                .map_err(|why| self.err(sa, format!("{}: {why}", field("serviceAccounts"))))?;
            service_accounts.push(sa.value.clone());
        }
        Ok(Registry {
            name: v.name.value.clone(),
            patterns,
            secret: v.secret.value.clone(),
            always_pull: v.always_pull,
            namespaces,
            source,
            service_accounts,
        })
    }

    fn source(
        &self,
        src: &S<RawSource>,
        registry: &str,
        patterns: &[Pattern],
        field: &str,
    ) -> Result<Source, ConfigError> {
        let v = &src.value;
        match (&v.namespace, &v.name, &v.credential_provider) {
            (None, None, Some(cp)) => Ok(Source::CredentialProvider(Arc::new(self.provider(
                cp,
                registry,
                patterns,
                &format!("{field}.credentialProvider"),
            )?))),
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(self.err(
                src,
                format!(
                    "{field}: give either namespace and name (a Secret) or credentialProvider, not both"
                ),
            )),
            (Some(ns), Some(name), None) => {
                check_dns_label(&ns.value)
                    .map_err(|why| self.err(ns, format!("{field}.namespace: {why}")))?;
                check_dns_subdomain(&name.value)
                    .map_err(|why| self.err(name, format!("{field}.name: {why}")))?;
                Ok(Source::Secret(SecretRef {
                    namespace: ns.value.clone(),
                    name: name.value.clone(),
                }))
            }
            (None, None, None) => Err(self.err(
                src,
                format!("{field}: needs namespace and name (a Secret) or credentialProvider"),
            )),
            (None, Some(_), None) => Err(self.err(src, format!("{field}: missing field 'namespace'"))),
            (Some(_), None, None) => Err(self.err(src, format!("{field}: missing field 'name'"))),
        }
    }

    fn provider(
        &self,
        cp: &S<RawCredentialProvider>,
        registry: &str,
        patterns: &[Pattern],
        field: &str,
    ) -> Result<CredentialProvider, ConfigError> {
        let v = &cp.value;
        let command = Path::new(&v.command.value);
        // Absolute, so what runs does not depend on the working directory or PATH; the
        // file itself need not exist here (`check` runs where the plugin is not installed).
        if !command.is_absolute() || v.command.value.contains('\0') {
            return Err(self.err(
                &v.command,
                format!(
                    "{field}.command: {:?} must be an absolute path (it is exec'd directly, without a shell)",
                    v.command.value
                ),
            ));
        }
        let mut args = Vec::new();
        for a in &v.args {
            if a.value.contains('\0') {
                return Err(self.err(a, format!("{field}.args: an argument cannot contain NUL")));
            }
            args.push(a.value.clone());
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for (i, e) in v.env.iter().enumerate() {
            let (name, value) = (&e.value.name, &e.value.value);
            let ok = name
                .value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(self.err(
                    name,
                    format!(
                        "{field}.env[{i}].name: {:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        name.value
                    ),
                ));
            }
            if env.iter().any(|(n, _)| n == &name.value) {
                return Err(self.err(
                    name,
                    format!("{field}.env[{i}].name: {:?} is set twice", name.value),
                ));
            }
            if value.value.contains('\0') {
                return Err(self.err(value, format!("{field}.env[{i}].value: cannot contain NUL")));
            }
            env.push((name.value.clone(), value.value.clone()));
        }
        // The kubelet only asks a plugin about images its `matchImages` cover; ours are
        // the entry's patterns, so the image asked about must be one of theirs.
        let img = crate::image::parse(&v.image.value)
            .map_err(|e| self.err(&v.image, format!("{field}.image: {e}")))?;
        if !patterns.iter().any(|p| p.matches(&img)) {
            return Err(self.err(
                &v.image,
                format!(
                    "{field}.image: {:?} is not matched by the entry's match patterns",
                    v.image.value
                ),
            ));
        }
        let timeout = self.duration(&v.timeout, &format!("{field}.timeout"), PROVIDER_TIMEOUT)?;
        if timeout.is_zero() || timeout > PROVIDER_TIMEOUT_MAX {
            let at = v.timeout.as_ref().expect("the default is in range");
            return Err(self.err(
                at,
                format!("{field}.timeout: must be more than 0 and at most 5m"),
            ));
        }
        let min_refresh = self.duration(
            &v.min_refresh,
            &format!("{field}.minRefresh"),
            PROVIDER_MIN_REFRESH,
        )?;
        if min_refresh < PROVIDER_REFRESH_FLOOR {
            let at = v.min_refresh.as_ref().expect("the default is in range");
            return Err(self.err(at, format!("{field}.minRefresh: must be at least 1s")));
        }
        let max_refresh = self.duration(
            &v.max_refresh,
            &format!("{field}.maxRefresh"),
            PROVIDER_MAX_REFRESH,
        )?;
        if max_refresh < min_refresh {
            let at = v
                .max_refresh
                .as_ref()
                .or(v.min_refresh.as_ref())
                .expect("defaults are ordered");
            return Err(self.err(
                at,
                format!(
                    "{field}.maxRefresh: {} is less than minRefresh {}",
                    crate::duration::format(max_refresh),
                    crate::duration::format(min_refresh)
                ),
            ));
        }
        let service_account_token = match &v.service_account_token {
            None => None,
            Some(t) => {
                let f = format!("{field}.serviceAccountToken");
                let t = &t.value;
                check_dns_label(&t.namespace.value)
                    .map_err(|why| self.err(&t.namespace, format!("{f}.namespace: {why}")))?;
                check_dns_subdomain(&t.name.value)
                    .map_err(|why| self.err(&t.name, format!("{f}.name: {why}")))?;
                if t.audience.value.trim().is_empty() {
                    return Err(self.err(
                        &t.audience,
                        format!("{f}.audience: must not be empty (the plugin's cloud checks it)"),
                    ));
                }
                Some(TokenSource {
                    namespace: t.namespace.value.clone(),
                    name: t.name.value.clone(),
                    audience: t.audience.value.clone(),
                })
            }
        };
        Ok(CredentialProvider {
            registry: registry.to_string(),
            command: command.to_path_buf(),
            args,
            env,
            image: v.image.value.clone(),
            timeout,
            min_refresh,
            max_refresh,
            service_account_token,
        })
    }

    fn duration(
        &self,
        d: &Option<S<String>>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match d {
            None => Ok(default),
            Some(d) => {
                crate::duration::parse(&d.value).map_err(|e| self.err(d, format!("{field}: {e}")))
            }
        }
    }

    fn scope(&self, s: &RawScope, field: &str) -> Result<NamespaceScope, ConfigError> {
        if let Some(sel) = &s.selector {
            check_selector(&sel.value)
                .map_err(|why| self.err(sel, format!("{field}.selector{why}")))?;
        }
        let compiled_selector = match &s.selector {
            Some(sel) => Some(
                Selector::try_from(sel.value.clone())
                    .map_err(|e| self.err(sel, format!("{field}.selector: {e}")))?,
            ),
            None => None,
        };
        Ok(NamespaceScope {
            include: self.globs(&s.include, &format!("{field}.include"))?,
            exclude: self.globs(&s.exclude, &format!("{field}.exclude"))?,
            selector: s.selector.as_ref().map(|sel| sel.value.clone()),
            compiled_selector,
        })
    }

    /// Namespace globs: namespace-name characters plus `*`.
    fn globs(&self, globs: &[S<String>], field: &str) -> Result<Vec<String>, ConfigError> {
        globs
            .iter()
            .map(|g| {
                let ok = !g.value.is_empty()
                    && g.value.len() <= 63
                    && g.value.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*'
                    });
                if ok {
                    Ok(g.value.clone())
                } else {
                    Err(self.err(
                        g,
                        format!(
                            "{field}: {:?} is not a namespace name or glob (a-z, 0-9, '-', '*')",
                            g.value
                        ),
                    ))
                }
            })
            .collect()
    }

    fn patterns(&self, list: &[S<String>], field: &str) -> Result<Matcher<()>, ConfigError> {
        let mut m = Matcher::new();
        for p in list {
            let pat = Pattern::parse(&p.value).map_err(|e| self.err(p, format!("{field}: {e}")))?;
            m.insert(pat, ());
        }
        Ok(m)
    }

    fn policy(&self, p: &RawPolicy) -> Result<Policy, ConfigError> {
        let global = Rules {
            mode: p.mode,
            allow: p
                .allow
                .as_ref()
                .map(|a| self.patterns(a, "policy.allow"))
                .transpose()?,
            deny: self.patterns(&p.deny, "policy.deny")?,
            require_always_pull: p.require_always_pull,
        };
        let mut overrides = Vec::new();
        for (i, o) in p.overrides.iter().enumerate() {
            let f = format!("policy.overrides[{i}]");
            let o = &o.value;
            if o.namespaces.value.is_empty() {
                return Err(self.err(
                    &o.namespaces,
                    format!("{f}.namespaces: at least one namespace glob is required"),
                ));
            }
            let globs = self.globs(&o.namespaces.value, &format!("{f}.namespaces"))?;
            let rules = Rules {
                mode: o.mode.unwrap_or(global.mode),
                allow: match &o.allow {
                    Some(a) => Some(self.patterns(a, &format!("{f}.allow"))?),
                    None => global.allow.clone(),
                },
                deny: match &o.deny {
                    Some(d) => self.patterns(d, &format!("{f}.deny"))?,
                    None => global.deny.clone(),
                },
                require_always_pull: o.require_always_pull.unwrap_or(global.require_always_pull),
            };
            overrides.push((globs, rules));
        }
        Ok(Policy {
            global,
            exempt_namespaces: self.globs(&p.exempt_namespaces, "policy.exemptNamespaces")?,
            overrides,
        })
    }
}

/// What the API server's `LabelSelectorAsSelector` rejects, which kube's `Selector` lets
/// through: `In`/`NotIn` need values, `Exists`/`DoesNotExist` must have none. A selector
/// Kubernetes would refuse must not silently mean something here. The error starts with
/// the path below `selector` (`.matchExpressions[0]: …`).
fn check_selector(sel: &LabelSelector) -> Result<(), String> {
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let n = e.values.as_ref().map_or(0, Vec::len);
        let why = match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => "needs at least one value",
            "Exists" | "DoesNotExist" if n > 0 => "must not have values",
            "In" | "NotIn" | "Exists" | "DoesNotExist" => continue,
            _ => {
                return Err(format!(
                    ".matchExpressions[{i}].operator: {:?} is not In, NotIn, Exists or DoesNotExist",
                    e.operator
                ));
            }
        };
        return Err(format!(
            ".matchExpressions[{i}]: operator {} {why} (key {:?})",
            e.operator, e.key
        ));
    }
    Ok(())
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// RFC 1123 subdomain, what Kubernetes requires of Secret and ServiceAccount names.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1-253 characters"));
    }
    for label in s.split('.') {
        check_dns_label(label).map_err(|_| {
            format!("{s:?} is not a valid Kubernetes name (lower-case alphanumerics, '-' and '.')")
        })?;
    }
    Ok(())
}

/// RFC 1123 label, what Kubernetes requires of namespace names.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid namespace name (1-63 lower-case alphanumerics or '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "c.yaml").unwrap_err().to_string()
    }

    #[test]
    fn example_config_parses() {
        let c = Config::parse(
            include_str!("../examples/config.yaml"),
            "examples/config.yaml",
        )
        .unwrap();
        assert!(!c.registries.is_empty());
    }

    #[test]
    fn json_is_accepted() {
        let c = Config::parse(
            r#"{"registries":[{"name":"g","match":["ghcr.io/acme"],"secret":"g"}],"alwaysPullImages":"all"}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(c.always_pull, PullScope::All);
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let e = err(
            "registries:\n  - name: a\n    match: [ghcr.io]\n    secret: s\n  - name: a\n    match: [quay.io]\n    secret: t\n",
        );
        assert_eq!(
            e,
            "c.yaml:5:11: registries[1].name: duplicate registry name \"a\""
        );
        let e = err(
            "registries:\n  - name: a\n    match:\n      - ghcr.io\n      - library/nginx\n    secret: s\n",
        );
        assert!(
            e.starts_with(
                "c.yaml:5:9: registries[0].match: invalid registry pattern \"library/nginx\""
            ),
            "{e}"
        );
        let e = err("registries:\n  - name: a\n    match: [ghcr.io]\n    secret: Bad_Name\n");
        assert!(e.starts_with("c.yaml:4:13: registries[0].secret:"), "{e}");
    }

    #[test]
    fn serde_errors_have_positions() {
        let e = err("registries: []\nalwaysPullImages: sometimes\n");
        assert!(e.starts_with("c.yaml:2:"), "{e}");
        assert!(e.contains("sometimes"), "{e}");
        let e = err("registries:\n  - name: a\n    matches: [x.io]\n    secret: s\n");
        assert!(e.starts_with("c.yaml:3:"), "{e}");
        assert!(e.contains("matches"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err("registries: [\n");
        assert!(e.starts_with("c.yaml:"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field_path_without_library_advice() {
        let e = err("registries:\n  - name: a\n    match: ghcr.io\n    secret: s\n");
        assert_eq!(
            e,
            "c.yaml:3:12: registries[0].match: expected a list of patterns, got a string"
        );
        let e = err(
            "registries:\n  - {name: a, match: [a.io], secret: s}\n  - {name: b, match: [b.io], secret: s}\n  - name: c\n    match: [c.io]\n",
        );
        assert!(e.contains("registries[2]: missing field 'secret'"), "{e}");
        let e = err("registries: []\nregistries: []\n");
        assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
        assert!(e.contains("duplicate"), "{e}");
        let e = err("registries: []\n---\nregistries: []\n");
        assert!(!e.contains("from_str_multiple"), "{e}");
        assert_eq!(err("# only a comment\n\n# another\n"), err(""));
    }

    #[test]
    fn selectors_kubernetes_rejects_are_rejected() {
        let cfg = |expr: &str| {
            format!(
                "registries:\n  - name: a\n    match: [a.io]\n    secret: s\n    namespaces:\n      selector: {{matchExpressions: [{expr}]}}\n"
            )
        };
        let e = err(&cfg("{key: k, operator: Exists, values: [x]}"));
        assert!(
            e.contains("registries[0].namespaces.selector.matchExpressions[0]: operator Exists must not have values"),
            "{e}"
        );
        let e = err(&cfg("{key: k, operator: In, values: []}"));
        assert!(e.contains("operator In needs at least one value"), "{e}");
        let e = err(&cfg("{key: k, operator: Has}"));
        assert!(e.contains("\"Has\" is not In, NotIn"), "{e}");
        assert!(Config::parse(&cfg("{key: k, operator: Exists}"), "c.yaml").is_ok());
    }

    #[test]
    fn scope_and_policy() {
        let c = Config::parse(
            "registries:\n  - name: a\n    match: [ghcr.io]\n    secret: s\n    namespaces: {include: [\"team-*\"], exclude: [team-legacy], selector: {matchLabels: {x: y}}}\npolicy:\n  mode: warn\n  allow: [\"*\"]\n  exemptNamespaces: [kube-system]\n  overrides:\n    - namespaces: [\"prod-*\"]\n      mode: enforce\n",
            "c.yaml",
        )
        .unwrap();
        let s = &c.registries[0].namespaces;
        let labels: BTreeMap<String, String> = [("x".to_string(), "y".to_string())].into();
        assert!(s.contains("team-a", Some(&labels)));
        assert!(s.contains("team-a", None));
        assert!(!s.contains("team-a", Some(&BTreeMap::new())));
        assert!(!s.contains("team-legacy", Some(&labels)));
        assert!(!s.contains("other", Some(&labels)));
        let p = c.policy.unwrap();
        assert!(p.rules_for("kube-system").is_none());
        assert_eq!(p.rules_for("prod-1").unwrap().mode, PolicyMode::Enforce);
        assert_eq!(p.rules_for("dev").unwrap().mode, PolicyMode::Warn);
    }

    const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    fn provider_cfg(source: &str) -> String {
        format!(
            "registries:\n  - name: ecr\n    match: [\"{ECR}\"]\n    secret: ecr-pull\n    source:\n{source}"
        )
    }

    #[test]
    fn credential_provider_sources() {
        let c = Config::parse(
            &provider_cfg(&format!(
                "      credentialProvider:\n        command: /plugins/ecr-credential-provider\n        args: [get-credentials]\n        env: [{{name: AWS_REGION, value: eu-west-1}}]\n        image: {ECR}/any\n        timeout: 10s\n        minRefresh: 1s\n        maxRefresh: 30m\n"
            )),
            "c.yaml",
        )
        .unwrap();
        let Some(Source::CredentialProvider(p)) = &c.registries[0].source else {
            panic!("{:?}", c.registries[0].source)
        };
        assert_eq!(p.registry, "ecr");
        assert_eq!(p.command, Path::new("/plugins/ecr-credential-provider"));
        assert_eq!(p.args, vec!["get-credentials"]);
        assert_eq!(p.env, vec![("AWS_REGION".into(), "eu-west-1".into())]);
        assert_eq!(p.image, format!("{ECR}/any"));
        assert_eq!(
            (p.timeout, p.min_refresh, p.max_refresh),
            (
                Duration::from_secs(10),
                Duration::from_secs(1),
                Duration::from_secs(1800)
            )
        );
        // defaults: the kubelet's one-minute timeout, 30 s floor, 1 h ceiling
        let c = Config::parse(
            &provider_cfg(&format!(
                "      credentialProvider: {{command: /p, image: {ECR}/x}}\n"
            )),
            "c.yaml",
        )
        .unwrap();
        let Some(Source::CredentialProvider(p)) = &c.registries[0].source else {
            panic!()
        };
        assert_eq!(
            (p.timeout, p.min_refresh, p.max_refresh),
            (PROVIDER_TIMEOUT, PROVIDER_MIN_REFRESH, PROVIDER_MAX_REFRESH)
        );
        assert!(p.args.is_empty() && p.env.is_empty());
        assert_eq!(p.service_account_token, None);
        let c = Config::parse(
            &provider_cfg(&format!(
                "      credentialProvider:\n        command: /p\n        image: {ECR}/x\n        serviceAccountToken: {{namespace: psi, name: ecr-puller, audience: sts.amazonaws.com}}\n"
            )),
            "c.yaml",
        )
        .unwrap();
        let Some(Source::CredentialProvider(p)) = &c.registries[0].source else {
            panic!()
        };
        assert_eq!(
            p.service_account_token,
            Some(TokenSource {
                namespace: "psi".into(),
                name: "ecr-puller".into(),
                audience: "sts.amazonaws.com".into()
            })
        );
    }

    #[test]
    fn credential_provider_errors_name_the_field() {
        let e = |source: &str| err(&provider_cfg(source));
        let cp = |fields: &str| {
            format!("      credentialProvider: {{command: /p, image: \"{ECR}/x\"{fields}}}\n")
        };
        let cases = [
            (
                format!(
                    "      namespace: creds\n      name: s\n      credentialProvider: {{command: /p, image: {ECR}/x}}\n"
                ),
                "c.yaml:6:7: registries[0].source: give either namespace and name (a Secret) or credentialProvider, not both",
            ),
            (
                "      {}\n".to_string(),
                "registries[0].source: needs namespace and name (a Secret) or credentialProvider",
            ),
            (
                "      namespace: creds\n".to_string(),
                "registries[0].source: missing field 'name'",
            ),
            (
                format!("      credentialProvider: {{command: plugins/ecr, image: {ECR}/x}}\n"),
                "registries[0].source.credentialProvider.command: \"plugins/ecr\" must be an absolute path (it is exec'd directly, without a shell)",
            ),
            (
                "      credentialProvider: {command: /p, image: ghcr.io/x}\n".to_string(),
                "registries[0].source.credentialProvider.image: \"ghcr.io/x\" is not matched by the entry's match patterns",
            ),
            (
                "      credentialProvider: {command: /p, image: \"Bad Image\"}\n".to_string(),
                "registries[0].source.credentialProvider.image:",
            ),
            (
                "      credentialProvider: {image: x}\n".to_string(),
                "missing field 'command'",
            ),
            (
                cp(", timeout: 0s"),
                "registries[0].source.credentialProvider.timeout: must be more than 0 and at most 5m",
            ),
            (
                cp(", timeout: 10m"),
                "timeout: must be more than 0 and at most 5m",
            ),
            (
                cp(", timeout: soon"),
                "registries[0].source.credentialProvider.timeout: \"soon\" is not a duration",
            ),
            (
                cp(", minRefresh: 500ms"),
                "registries[0].source.credentialProvider.minRefresh: must be at least 1s",
            ),
            (
                cp(", maxRefresh: 10s"),
                "registries[0].source.credentialProvider.maxRefresh: 10s is less than minRefresh 30s",
            ),
            (
                cp(", env: [{name: A-B, value: x}]"),
                "registries[0].source.credentialProvider.env[0].name: \"A-B\" is not an environment variable name",
            ),
            (
                cp(", env: [{name: A, value: x}, {name: A, value: y}]"),
                "env[1].name: \"A\" is set twice",
            ),
            (cp(", shell: true"), "unknown field 'shell'"),
            (
                cp(", serviceAccountToken: {namespace: psi, name: x, audience: ''}"),
                "registries[0].source.credentialProvider.serviceAccountToken.audience: must not be empty",
            ),
            (
                cp(", serviceAccountToken: {namespace: Psi, name: x, audience: a}"),
                "serviceAccountToken.namespace:",
            ),
            (
                cp(", serviceAccountToken: {name: x, audience: a}"),
                "missing field 'namespace'",
            ),
        ];
        for (src, want) in cases {
            let got = e(&src);
            assert!(got.contains(want), "{src}\n  got:  {got}\n  want: {want}");
            assert!(got.starts_with("c.yaml:"), "{got}");
        }
    }
}
