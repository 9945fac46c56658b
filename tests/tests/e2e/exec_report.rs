//! `agent exec` end to end: what the report and the progress lines say about a step — its
//! documented fields for later expressions (`exit_code`, `error_class`, `outputs`), its
//! `name`, its wait for admission (`queued_ms`) and a failure the run tolerated.

use crate::common;
use crate::common::exec;

use exec::{Ws, assert_code, report, step};

/// Guards the step fields at run time and how a tolerated failure and a `name:` show: a
/// `continue`d failure's `error_class`/`exit_code` reach a later `when`, the report marks
/// it `continued` and names it, and stderr says `failed (continued)`, not `FAILED`.
#[test]
fn tolerated_failure_fields_names_and_marks() {
    let ws = Ws::new();
    ws.write(
        "wf.yaml",
        r#"workflow:
  name: fields
  stages:
    - name: fetch
      steps:
        - id: pull
          name: Pull the mirror
          on_failure: continue
          run: |
            echo "tries=2" >> "$AGENT_OUTPUT"
            echo "error_class=NetworkError" >> "$AGENT_OUTPUT"
            exit 7
    - name: react
      steps:
        - id: offline
          when: ${{ steps.pull.error_class == 'NetworkError' }}
          run: echo "code=${{ steps.pull.exit_code }} tries=${{ steps.pull.outputs.tries }}" > seen
        - id: online
          when: ${{ steps.pull.error_class == null }}
          run: touch wrong
"#,
    );
    let out = ws.exec("wf.yaml", &[]);
    assert_code(&out, 0);
    let r = report(&out);
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let pull = step(&r, "pull");
    assert_eq!(pull["status"], "failed");
    assert_eq!(pull["continued"], true, "{pull:#}");
    assert_eq!(pull["name"], "Pull the mirror", "{pull:#}");
    assert!(pull["queued_ms"].is_u64(), "{pull:#}");
    assert_eq!(step(&r, "offline")["status"], "succeeded", "{r:#}");
    assert!(step(&r, "offline").get("name").is_none());
    assert_eq!(step(&r, "online")["status"], "skipped", "{r:#}");
    assert_eq!(ws.read("seen").trim(), "code=7 tries=2");
    assert!(!ws.exists("wrong"));
    let err = common::stderr(&out);
    assert!(
        err.contains("  pull (Pull the mirror): failed (continued) in "),
        "{err}"
    );
    assert!(err.contains("stage fetch failed (continued) in "), "{err}");
    assert!(!err.contains("FAILED"), "{err}");
}
