//! `test`: runs every suite found, prints a table (or JSON/YAML), optionally JUnit XML;
//! exits 1 on any mismatch or broken suite.

use anyhow::{Context, Result};
use serde::Serialize;

use super::args::TestArgs;
use super::junit;
use super::output::{self, OutputFormat};
use super::suite::{self, SuiteResult};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TestReport<'a> {
    passed: usize,
    failed: usize,
    suites: &'a [SuiteResult],
}

pub fn test(args: &TestArgs) -> Result<i32> {
    let files = suite::find(&args.paths)?;
    let results: Vec<SuiteResult> = files.iter().map(|f| suite::run(f)).collect();
    if let Some(path) = &args.junit {
        std::fs::write(path, junit::render(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let cases = results.iter().flat_map(|s| &s.cases);
    let passed = cases.clone().filter(|c| c.passed).count();
    let failed =
        cases.filter(|c| !c.passed).count() + results.iter().filter(|s| s.error.is_some()).count();
    match args.output {
        OutputFormat::Text => print!("{}", table(&results, passed, failed)),
        f => print!(
            "{}",
            output::render(
                f,
                &TestReport {
                    passed,
                    failed,
                    suites: &results
                }
            )?
        ),
    }
    Ok(if results.iter().all(SuiteResult::passed) {
        0
    } else {
        1
    })
}

fn table(results: &[SuiteResult], passed: usize, failed: usize) -> String {
    let width = results
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("SUITE".len());
    let mut out = format!("{:<6}  {:<width$}  TEST\n", "RESULT", "SUITE");
    for s in results {
        if let Some(e) = &s.error {
            out.push_str(&format!(
                "{:<6}  {:<width$}  (suite not run)\n",
                "ERROR", s.name
            ));
            out.push_str(&format!("        {e}\n"));
        }
        for c in &s.cases {
            let r = if c.passed { "pass" } else { "FAIL" };
            out.push_str(&format!("{r:<6}  {:<width$}  {}\n", s.name, c.name));
            for f in &c.failures {
                out.push_str(&format!("        {f}\n"));
            }
        }
    }
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    out
}
