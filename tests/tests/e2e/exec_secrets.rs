//! `agent exec` end to end: secrets from `--secret NAME` and `--secrets-file`, visible to
//! expressions, masked as `***` on the terminal and in the `--json` report, including their
//! base64, URL-encoded and JSON-escaped forms.

use crate::common;
use crate::common::exec;

use exec::{Ws, assert_code, report, step};

const SECRET: &str = "p4ss w0rd/+&=\"x";

fn b64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn secrets_are_masked_everywhere() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: sec
  stages:
    - name: s
      steps:
        - id: leak
          run: |
            echo "raw: ${{ secrets.TOKEN }}"
            printf '%s' "${{ secrets.TOKEN }}" | base64
            printf 'ab%s' "${{ secrets.TOKEN }}" | base64 >&2
            printf '%s' "${{ secrets.TOKEN }}" | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g' | tr 'a-f' 'A-F'; echo
            echo "from file: ${{ secrets.OTHER }}"
            echo "token=${{ secrets.TOKEN }}" >> "$AGENT_OUTPUT"
            echo "other=${{ secrets.OTHER }}" >> "$AGENT_OUTPUT"
        - id: fail
          run: echo "${{ secrets.TOKEN }}" && exit 3
"#,
    );
    ws.write("secrets.env", "# comment\nOTHER=file-secret-123\n");
    let out = ws.exec_env(
        "wf.yaml",
        &["--secret", "TOKEN", "--secrets-file", "secrets.env"],
        &[("TOKEN", SECRET)],
    );
    assert_code(&out, 1);
    let stderr = common::stderr(&out);
    let stdout = common::stdout(&out);
    assert!(stderr.contains("raw: ***"), "{stderr}");
    assert!(stderr.contains("from file: ***"), "{stderr}");
    let mut forms = vec![
        SECRET.to_string(),
        b64(SECRET.as_bytes()).trim_end_matches('=').to_string(),
        pct(SECRET),
        "file-secret-123".to_string(),
        serde_json::to_string(SECRET)
            .expect("json")
            .trim_matches('"')
            .to_string(),
    ];
    // The middle of an encoding at another alignment.
    let shifted = b64(format!("ab{SECRET}").as_bytes());
    forms.push(shifted[4..shifted.len() - 4].to_string());
    for form in &forms {
        assert!(
            !stderr.contains(form.as_str()),
            "{form:?} leaked on stderr:\n{stderr}"
        );
        assert!(
            !stdout.contains(form.as_str()),
            "{form:?} leaked in the report:\n{stdout}"
        );
    }
    let r = report(&out);
    assert_eq!(step(&r, "leak")["outputs"]["token"], "***");
    assert_eq!(step(&r, "leak")["outputs"]["other"], "***");
}

#[test]
fn missing_secret_is_an_invalid_invocation() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        "workflow:\n  name: s\n  stages:\n    - name: s\n      steps:\n        - id: a\n          run: touch ran\n",
    );
    let out = ws.exec("wf.yaml", &["--secret", "AGENT_TEST_SURELY_UNSET_VAR"]);
    assert_code(&out, 2);
    assert!(!ws.exists("ran"));
    let out = ws.exec("wf.yaml", &["--secrets-file", "nope.env"]);
    assert_code(&out, 2);
    assert!(!ws.exists("ran"));
}

/// Guards the minimal step environment: the variable behind `--secret` and any other variable
/// of the agent's environment are not readable by a step (a secret printed through `rev`
/// would defeat masking), neither as `$NAME` nor through `env('NAME')`; PATH and HOME are;
/// `--env-passthrough NAME` lets one through by name.
#[test]
fn steps_do_not_inherit_the_agent_environment() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: envs
  stages:
    - name: s
      steps:
        - id: look
          run: |
            echo "token=[$(printf '%s' "${TOKEN:-}" | rev)]"
            echo "other=[${OTHER_VAR:-}]"
            echo "expr=[${{ env('OTHER_VAR') }}]"
            echo "path-set=[${PATH:+yes}] home=[${HOME:-}]"
            env | cut -d= -f1 | sort | tr '\n' ' '; echo
"#,
    );
    let home = std::env::var("HOME").unwrap_or_default();
    let out = ws.exec_env(
        "wf.yaml",
        &["--secret", "TOKEN"],
        &[
            ("TOKEN", "s3cret-value"),
            ("OTHER_VAR", "visible-only-if-asked"),
        ],
    );
    assert_code(&out, 0);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("token=[]"), "{stderr}");
    assert!(stderr.contains("other=[]"), "{stderr}");
    assert!(stderr.contains("expr=[]"), "{stderr}");
    assert!(
        stderr.contains(&format!("path-set=[yes] home=[{home}]")),
        "{stderr}"
    );
    assert!(!stderr.contains("CARGO"), "{stderr}");
    let out = ws.exec_env(
        "wf.yaml",
        &["--secret", "TOKEN", "--env-passthrough", "OTHER_VAR"],
        &[
            ("TOKEN", "s3cret-value"),
            ("OTHER_VAR", "visible-only-if-asked"),
        ],
    );
    assert_code(&out, 0);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("other=[visible-only-if-asked]"), "{stderr}");
    assert!(stderr.contains("expr=[visible-only-if-asked]"), "{stderr}");
    assert!(stderr.contains("token=[]"), "{stderr}");
    let out = ws.exec_env("wf.yaml", &["--env-passthrough", "A-B"], &[]);
    assert_code(&out, 2);
}
