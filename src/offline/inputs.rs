//! Where offline commands read manifests from: `-f` repeated, a directory (recursively,
//! `.yaml`/`.yml`/`.json`), `-` for stdin, and stdin when no `-f` is given (as `review`
//! reads it). Each input keeps its name, so every message names the file it came from.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One input file, read whole.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// The path as given (or found under a directory), or `<stdin>`.
    pub name: String,
    pub text: String,
}

pub(crate) const STDIN: &str = "<stdin>";

/// Reads every input `files` names, in order; stdin when `files` is empty.
pub(crate) fn collect(files: &[String]) -> Result<Vec<Input>> {
    if files.is_empty() {
        return Ok(vec![read_stdin()?]);
    }
    let mut out = Vec::new();
    let mut stdin_read = false;
    for f in files {
        if f == "-" {
            if stdin_read {
                bail!("-f - is given twice; stdin can be read once");
            }
            stdin_read = true;
            out.push(read_stdin()?);
            continue;
        }
        let path = Path::new(f);
        let meta = std::fs::metadata(path).with_context(|| format!("reading {f}"))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            if found.is_empty() {
                bail!("{f}: directory holds no .yaml, .yml or .json file");
            }
            for p in found {
                out.push(read_file(&p)?);
            }
        } else {
            out.push(read_file(path)?);
        }
    }
    Ok(out)
}

fn read_stdin() -> Result<Input> {
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("reading stdin")?;
    let text = String::from_utf8(buf).map_err(|_| anyhow::anyhow!("{STDIN}: not UTF-8 text"))?;
    Ok(Input {
        name: STDIN.into(),
        text,
    })
}

pub(crate) fn read_file(path: &Path) -> Result<Input> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("reading {name}"))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{name}: not UTF-8 text"))?;
    Ok(Input { name, text })
}

/// Manifest files below `dir`, sorted so runs are reproducible. Hidden entries (`.git`)
/// are skipped; symlinked directories are not followed, so a link loop cannot hang a run.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let ty = e.file_type()?;
        let path = e.path();
        if ty.is_dir() {
            walk(&path, out)?;
        } else if is_manifest(&path) {
            out.push(path);
        }
    }
    Ok(())
}

pub(crate) fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}
