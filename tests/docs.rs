//! The README's chart values reference stays in step with `values.yaml`: every top-level
//! value must be documented there.

use serde_json::Value;

#[test]
fn every_chart_value_is_in_the_readme_reference() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root.join("charts/pullsecret-injector/values.yaml")).unwrap(),
    )
    .unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("Values reference:")
        .expect("README has a values reference");
    let section = &readme[start
        ..readme[start..]
            .find("\n## ")
            .map_or(readme.len(), |i| start + i)];
    let missing: Vec<&String> = values
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !section.contains(&format!("`{k}")) && !section.contains(&format!("`{k}.")))
        .collect();
    assert!(
        missing.is_empty(),
        "values not documented in README's values reference: {missing:?}"
    );
}
