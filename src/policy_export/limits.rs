//! What the API server accepts and can afford.
//!
//! - **Size.** Each CEL expression may hold at most 100,000 code points (cel-go
//!   `parser/options.go`, the default the API server keeps); a longer one makes the
//!   policy's create fail. The per-site entry matching grows with the number of
//!   patterns, so this bounds the config: the export measures every expression it made
//!   and refuses rather than emit a policy the API server would reject.
//! - **Cost.** An expression stops at a runtime cost of 1,000,000 and a policy's
//!   evaluation at 10,000,000 (k8s.io/apiserver `pkg/apis/cel/config.go`: `PerCallLimit`,
//!   `RuntimeCELCostBudget`); past either, the policy fails (with `failurePolicy:
//!   Ignore` it does nothing). `tests/e2e_policy_export.rs` proves a config of 200
//!   entries on Pods of 50 images within both, through a real API server.

use serde_json::Value;

/// cel-go's `ExpressionSizeCodePointLimit` default.
pub const MAX_EXPRESSION_CODE_POINTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "{object} {field} would be a CEL expression of {size} characters; the API server \
         accepts at most {MAX_EXPRESSION_CODE_POINTS}. The config has too many patterns \
         for admission policies: merge them with `*` globs, or use the webhook"
    )]
    ExpressionTooLong {
        object: String,
        field: String,
        size: usize,
    },
}

/// Every CEL expression of the exported objects within the API server's size limit.
pub(crate) fn check(objects: &[Value]) -> Result<(), LimitError> {
    for o in objects {
        let object = format!(
            "{} {}",
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        );
        walk(&o["spec"], "spec", &mut |field, text| {
            let size = text.chars().count();
            if size > MAX_EXPRESSION_CODE_POINTS {
                return Err(LimitError::ExpressionTooLong {
                    object: object.clone(),
                    field: field.to_string(),
                    size,
                });
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn walk(
    v: &Value,
    path: &str,
    f: &mut impl FnMut(&str, &str) -> Result<(), LimitError>,
) -> Result<(), LimitError> {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                match x {
                    Value::String(s)
                        if matches!(
                            k.as_str(),
                            "expression" | "messageExpression" | "valueExpression"
                        ) =>
                    {
                        f(&p, s)?
                    }
                    _ => walk(x, &p, f)?,
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, &format!("{path}[{i}]"), f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_expression_over_the_limit() {
        let long = "x".repeat(MAX_EXPRESSION_CODE_POINTS + 1);
        let objects = vec![json!({
            "kind": "MutatingAdmissionPolicy", "metadata": {"name": "p"},
            "spec": {"variables": [{"name": "a", "expression": "1"}, {"name": "b", "expression": long}]}
        })];
        let e = check(&objects).unwrap_err();
        assert_eq!(
            e,
            LimitError::ExpressionTooLong {
                object: "MutatingAdmissionPolicy p".into(),
                field: "spec.variables[1].expression".into(),
                size: MAX_EXPRESSION_CODE_POINTS + 1
            }
        );
        let ok = vec![
            json!({"kind": "K", "metadata": {"name": "p"}, "spec": {"validations": [{"expression": "x".repeat(MAX_EXPRESSION_CODE_POINTS)}]}}),
        ];
        assert!(check(&ok).is_ok());
    }
}
