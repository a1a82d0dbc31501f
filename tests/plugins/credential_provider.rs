//! A kubelet credential provider plugin for the tests: speaks the
//! `credentialprovider.kubelet.k8s.io/v1` exec protocol (`k8s.io/kubelet` v0.37.2
//! `pkg/apis/credentialprovider/v1/types.go`) and answers as the test tells it.
//!
//! Standard library only, so a test builds it with one `rustc` call and it never becomes
//! a production binary. The test controls it through a directory named by the
//! environment variable `PSI_TEST_PLUGIN_DIR` (set through the entry's `env`, which so
//! is tested too):
//! - `mode` (read on every run; written atomically by the test) is one line:
//!   - `ok USER DURATION [KEY]`: credentials `USER` / `pw-USER` for `KEY` (default: the
//!     requested image's registry host), `cacheDuration: DURATION` (`-` leaves it out);
//!   - `partial USER`: credentials only for `other.example.com`;
//!   - `token USER`: like `ok USER 3s`, but only with a `serviceAccountToken` in the
//!     request, which it writes to `token`; `echo-token`: the token as the password;
//!   - `garbage`: not JSON; `wrongversion`: a v1alpha1 answer; `fail`: stderr and exit
//!     status 1; `hang`: sleeps a minute; `huge`: two megabytes of output;
//! - `requests` gets each request appended, one per line;
//! - `runs` gets one `.` per run.
//!
//! A request that is not a v1 `CredentialProviderRequest` with an image is refused with
//! exit status 4, as a real plugin would fail.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::exit;
use std::time::Duration;

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("test plugin: {msg}");
    exit(code)
}

fn append(path: PathBuf, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| fail(3, &format!("{}: {e}", path.display())));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| fail(3, &format!("{}: {e}", path.display())));
}

/// The string value of `"field":"…"` in compact JSON (what the controller sends).
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = json.find(&key)? + key.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

fn main() {
    let dir = PathBuf::from(
        std::env::var("PSI_TEST_PLUGIN_DIR")
            .unwrap_or_else(|_| fail(3, "PSI_TEST_PLUGIN_DIR is not set")),
    );
    let mut request = String::new();
    std::io::stdin()
        .read_to_string(&mut request)
        .unwrap_or_else(|e| fail(3, &format!("reading stdin: {e}")));
    append(dir.join("requests"), &format!("{}\n", request.trim()));
    append(dir.join("runs"), ".");
    if field(&request, "apiVersion") != Some("credentialprovider.kubelet.k8s.io/v1")
        || field(&request, "kind") != Some("CredentialProviderRequest")
    {
        fail(4, &format!("not a v1 CredentialProviderRequest: {request}"));
    }
    let image = field(&request, "image").unwrap_or_else(|| fail(4, "no image in the request"));
    let registry = image.split('/').next().unwrap_or(image);
    let mode = std::fs::read_to_string(dir.join("mode")).unwrap_or_else(|_| "ok default 1h".into());
    let words: Vec<&str> = mode.split_whitespace().collect();
    let answer = |user: &str, duration: Option<&str>, key: &str| {
        let duration = duration.map_or(String::new(), |d| format!(r#""cacheDuration":"{d}","#));
        format!(
            r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderResponse","cacheKeyType":"Registry",{duration}"auth":{{"{key}":{{"username":"{user}","password":"pw-{user}"}}}}}}"#
        )
    };
    let token = field(&request, "serviceAccountToken");
    let out = match words.as_slice() {
        ["token", user] => {
            let t = token.unwrap_or_else(|| fail(5, "no serviceAccountToken in the request"));
            std::fs::write(dir.join("token"), t)
                .unwrap_or_else(|e| fail(3, &format!("writing the token: {e}")));
            answer(user, Some("3s"), registry)
        }
        ["echo-token"] => {
            let t = token.unwrap_or_else(|| fail(5, "no serviceAccountToken in the request"));
            answer("u", Some("3s"), registry).replace("pw-u", t)
        }
        ["ok", user, duration, rest @ ..] => answer(
            user,
            (*duration != "-").then_some(*duration),
            rest.first().copied().unwrap_or(registry),
        ),
        ["partial", user] => answer(user, Some("1h"), "other.example.com"),
        ["garbage"] => "this is not json".to_string(),
        ["wrongversion"] => answer("u", Some("1h"), registry).replace("/v1\"", "/v1alpha1\""),
        ["fail"] => fail(1, "simulated failure: the cloud said no"),
        ["hang"] => {
            std::thread::sleep(Duration::from_secs(60));
            String::new()
        }
        ["huge"] => "x".repeat(2 << 20),
        _ => fail(3, &format!("unknown mode {mode:?}")),
    };
    print!("{out}");
}
