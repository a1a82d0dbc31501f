//! The offline commands' flags, kept with the commands (`cli` only wires them in).

use std::path::PathBuf;

use super::output::OutputFormat;

/// Where the server config comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigSource {
    /// The server's config file.
    #[arg(long, required_unless_present = "values", conflicts_with = "values")]
    pub config: Option<PathBuf>,
    /// Chart values file(s) instead of --config: the config the chart would render from
    /// them (merged over the chart's own values.yaml, in order, as `helm -f` does).
    #[arg(long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
}

/// What `mutate` and `verify` read.
#[derive(clap::Args, Debug, Clone)]
pub struct InputArgs {
    #[command(flatten)]
    pub config: ConfigSource,
    /// Manifest file, directory (recursively: .yaml, .yml, .json) or `-` for stdin; may be
    /// repeated. Without it stdin is read.
    #[arg(short = 'f', long = "file")]
    pub files: Vec<String>,
    /// Namespace for objects that do not name one.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Namespace labels, so `selector` scopes are evaluated: a map
    /// `namespace: {label: value}`, or Namespace objects. Namespace objects among the
    /// inputs count too.
    #[arg(long, value_name = "FILE")]
    pub namespace_labels: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MutateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// yaml or json: the manifests in that format (default: the input's); text: a
    /// summary of the changes per object.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<OutputFormat>,
    /// Print a unified diff of only what changed instead of the whole manifests.
    #[arg(long)]
    pub diff: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also exit 1 on warn-mode offences and mutation warnings (invalid images).
    #[arg(long)]
    pub fail_on_warn: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigSource,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum EndpointArg {
    Mutate,
    Validate,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub config: ConfigSource,
    /// AdmissionReview JSON file, or `-` for stdin.
    #[arg(short = 'f', long = "file", default_value = "-")]
    pub file: String,
    #[arg(long, value_enum, default_value_t = EndpointArg::Mutate)]
    pub endpoint: EndpointArg,
    /// Namespace labels for `selector` scopes (as for `mutate`).
    #[arg(long, value_name = "FILE")]
    pub namespace_labels: Option<PathBuf>,
    /// json (default): the AdmissionReview response; yaml: the same as YAML; text: the
    /// verdict, patch and warnings for people.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TestArgs {
    /// Suite files, or directories searched for `pullsecret-injector-test.yaml`.
    #[arg(default_value = ".")]
    pub paths: Vec<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}
