//! `agent import-gha`'s conversion (`agent::gha::convert`): real upstream workflows of
//! Python, Rust, Node and Go projects (`tests/fixtures/gha/workflows/`, provenance in the
//! README there) are converted and compared with committed snapshots
//! (`tests/fixtures/gha/snapshots/`; `UPDATE_SNAPSHOTS=1` rewrites them); every output
//! validates. Each row of the mapping table in `docs/import-gha.md` has a test below, and
//! a property test feeds generated workflow-shaped documents to show the conversion never
//! panics.

use agent::gha::convert;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gha")
}

/// Guards every fixture's conversion: the output matches its snapshot and passes our
/// validator, and the header names the source file.
#[test]
fn upstream_workflows_convert_to_their_snapshots() {
    let dir = fixtures().join("workflows");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 20, "{} fixtures", names.len());
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut mismatches = Vec::new();
    for path in names {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let label = format!(".github/workflows/{file}");
        let conv = convert(&label, &text, &stem);
        let yaml = conv
            .yaml
            .unwrap_or_else(|| panic!("{file}: no output: {:?}", conv.report.diagnostics));
        assert!(conv.report.valid, "{file}: {:?}", conv.report.diagnostics);
        dsl::parse_str(&format!("{stem}.yaml"), &yaml)
            .unwrap_or_else(|d| panic!("{file} does not validate:\n{}\n{yaml}", d.render()));
        assert!(
            yaml.starts_with(&format!("# Converted by `agent import-gha` from {label}.")),
            "{yaml}"
        );
        assert!(!conv.report.jobs.is_empty(), "{file}");
        let snap = fixtures().join("snapshots").join(format!("{stem}.yaml"));
        if update {
            std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
            std::fs::write(&snap, &yaml).unwrap();
        } else {
            let want = std::fs::read_to_string(&snap).unwrap_or_default();
            if want != yaml {
                mismatches.push(format!("{file}:\n{yaml}"));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "outputs differ from their snapshots (UPDATE_SNAPSHOTS=1 rewrites them):\n{}",
        mismatches.join("\n")
    );
}

/// Converts a small workflow; the output must validate.
fn conv(src: &str) -> (String, Vec<String>) {
    let c = convert("ci.yml", src, "ci");
    let yaml = c.yaml.clone().unwrap_or_default();
    if let Err(d) = dsl::parse_str("ci.yaml", &yaml) {
        panic!("does not validate:\n{}\n{yaml}", d.render());
    }
    let diags = c
        .report
        .diagnostics
        .iter()
        .map(|d| d.render("ci.yml"))
        .collect();
    (yaml, diags)
}

fn body(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn has(yaml: &str, want: &str) {
    assert!(body(yaml).contains(want), "missing {want:?} in:\n{yaml}");
}

fn diag(diags: &[String], want: &str) {
    assert!(
        diags.iter().any(|d| d.contains(want)),
        "no diagnostic with {want:?}: {diags:#?}"
    );
}

const JOB: &str = "jobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n";

/// Row `on.push`: branches and paths are kept, `paths-ignore` is a note.
#[test]
fn row_on_push() {
    let (y, d) = conv(&format!(
        "on:\n  push:\n    branches: [main]\n    paths: ['src/**']\n    paths-ignore: [docs]\n{JOB}"
    ));
    has(
        &y,
        "push:\n      branches:\n        - main\n      paths:\n        - src/**",
    );
    diag(&d, "ci.yml:5:5: note: `push.paths-ignore`");
}

/// Row `on.pull_request`: our language has a `pull_request` trigger, so the filters carry
/// over to it and no push trigger is made up.
#[test]
fn row_on_pull_request() {
    let (y, d) = conv(&format!("on:\n  pull_request:\n    paths: ['a/**']\n{JOB}"));
    has(&y, "pull_request:\n      paths:\n        - a/**");
    assert!(!body(&y).contains("push:"), "{y}");
    assert!(!d.iter().any(|x| x.contains("has no equivalent")), "{d:#?}");
}

/// Row `on.schedule` and `workflow_dispatch` inputs as typed parameters.
#[test]
fn row_schedule_and_dispatch_inputs() {
    let src = "on:\n  schedule:\n    - cron: '0 3 * * 1'\n  workflow_dispatch:\n    inputs:\n      level:\n        type: choice\n        options: [a, b]\n        default: a\n      dry-run:\n        type: boolean\n        default: false\n      count:\n        type: number\n        default: 3\njobs:\n  t:\n    runs-on: x\n    steps:\n      - run: echo ${{ inputs.level }} ${{ github.event.inputs.dry-run }} ${{ inputs.count }}\n";
    let (y, d) = conv(src);
    has(&y, "schedule:\n      - cron: '0 3 * * 1'");
    has(&y, "manual: true");
    has(
        &y,
        "- name: level\n      type: string\n      default: a\n      enum:\n        - a\n        - b",
    );
    has(
        &y,
        "- name: dry_run\n      type: boolean\n      default: false",
    );
    has(&y, "- name: count\n      type: number\n      default: 3");
    has(
        &y,
        "${{ parameters.level }} ${{ parameters.dry_run }} ${{ parameters.count }}",
    );
    diag(&d, "input `dry-run` is the parameter `dry_run`");
}

/// Row `workflow_call`: inputs are parameters, outputs are workflow outputs read from the
/// jobs' outputs.
#[test]
fn row_workflow_call() {
    let src = "on:\n  workflow_call:\n    inputs:\n      v: {type: string, required: true}\n    outputs:\n      out:\n        value: ${{ jobs.b.outputs.x }}\njobs:\n  b:\n    runs-on: x\n    outputs:\n      x: ${{ steps.s.outputs.y }}\n    steps:\n      - id: s\n        run: echo \"y=${{ inputs.v }}\" >> \"$GITHUB_OUTPUT\"\n";
    let (y, _) = conv(src);
    has(&y, "- name: v\n      type: string\n      required: true");
    has(&y, "outputs:\n    out: ${{ (steps.s.outputs.y) }}");
    has(&y, ">> \"$AGENT_OUTPUT\"");
}

/// Row `jobs` / `needs`: stages in dependency order; independent jobs are serialised
/// with a note; job outputs reach later jobs.
#[test]
fn row_jobs_needs_and_outputs() {
    let src = "on: push\njobs:\n  deploy:\n    needs: [build]\n    runs-on: x\n    steps:\n      - run: echo ${{ needs.build.outputs.v }}\n  build:\n    runs-on: x\n    outputs:\n      v: v${{ steps.ver.outputs.n }}\n    steps:\n      - id: ver\n        run: echo n=1 >> $GITHUB_OUTPUT\n  lint:\n    runs-on: x\n    steps:\n      - run: echo lint\n";
    let (y, d) = conv(src);
    let b = body(&y);
    let build = b.find("- name: build").unwrap();
    let deploy = b.find("- name: deploy").unwrap();
    assert!(build < deploy, "{b}");
    has(&y, "echo ${{ (format('v{0}', steps.ver.outputs.n)) }}");
    // `build` and `lint` need nothing: one `parallel: auto` stage, each job a chain.
    has(
        &y,
        "- name: build + lint\n      parallel: auto\n      max_parallel: 2\n      steps:\n        - id: ver\n          run: echo n=1 >> $AGENT_OUTPUT\n        - id: echo-lint\n          run: echo lint\n    - name: deploy",
    );
    diag(&d, "note: `runs-on` dropped");
}

/// Row `jobs` with a matrix beside an independent job: the matrix job keeps a stage of its
/// own (note); jobs that follow a chain get `needs` on their previous step.
#[test]
fn row_jobs_matrix_keeps_its_stage() {
    let src = "on: push\njobs:\n  a:\n    runs-on: x\n    env: {E: '1'}\n    steps:\n      - run: echo a1\n      - run: echo a2\n        env: {F: '2'}\n  b:\n    runs-on: x\n    steps:\n      - run: echo b\n  m:\n    runs-on: x\n    strategy: {matrix: {v: [1, 2]}}\n    steps:\n      - run: echo ${{ matrix.v }}\n";
    let (y, d) = conv(src);
    has(
        &y,
        "- id: echo-a2\n          needs:\n            - echo-a1\n          run: echo a2\n          env:\n            E: '1'\n            F: '2'",
    );
    has(&y, "- name: m\n      matrix:");
    diag(&d, "`m` keeps a stage of its own");
}

/// Row steps: `shell`, `working-directory`, `env`, `if`, `continue-on-error`,
/// `timeout-minutes`, `id`; job and workflow `env`; `defaults.run`.
#[test]
fn row_step_keys() {
    let src = "on: push\nenv:\n  A: '1'\ndefaults:\n  run:\n    shell: bash\njobs:\n  t:\n    runs-on: x\n    env:\n      B: two\n    defaults:\n      run:\n        working-directory: sub\n    timeout-minutes: 5\n    steps:\n      - id: one\n        name: First\n        run: echo $A $B $C\n        env:\n          C: ${{ env.A }}\n        if: github.ref == 'refs/heads/main'\n        continue-on-error: true\n        timeout-minutes: 2\n        working-directory: other\n        shell: python\n      - run: echo two\n";
    let (y, _) = conv(src);
    has(&y, "env:\n    A: '1'");
    has(
        &y,
        "- name: t\n      env:\n        B: two\n      working_directory: sub",
    );
    has(
        &y,
        "- id: one\n          name: First\n          when: ${{ env('AGENT_REF') == 'refs/heads/main' }}\n          run: echo $A $B $C\n          shell: python\n          working_directory: other\n          env:\n            C: ${{ env.A }}\n          timeout: '2m'\n          on_failure: continue",
    );
    has(
        &y,
        "run: echo two\n          shell: bash\n          timeout: '5m'",
    );
}

/// Row `strategy.matrix`: axes, include/exclude, fail-fast and max-parallel on the stage;
/// `${{ matrix.X }}` naming no key is null with a note.
#[test]
fn row_matrix() {
    let src = "on: push\njobs:\n  t:\n    runs-on: ${{ matrix.os }}\n    strategy:\n      fail-fast: false\n      max-parallel: 2\n      matrix:\n        os: [ubuntu-latest]\n        py: ['3.11', '3.12']\n        exclude:\n          - py: '3.11'\n        include:\n          - py: '3.12'\n            extra: yes\n    steps:\n      - run: echo ${{ matrix.py }} ${{ matrix.extra }} ${{ matrix.nope }}\n";
    let (y, d) = conv(src);
    has(
        &y,
        "matrix:\n        os:\n          - ubuntu-latest\n        py:\n          - '3.11'\n          - '3.12'\n        exclude:\n          - py: '3.11'\n        include:\n          - py: '3.12'\n            extra: 'yes'\n        fail_fast: false\n        max_parallel: 2",
    );
    has(&y, "echo ${{ matrix.py }} ${{ matrix.extra }} ${{ null }}");
    diag(&d, "`matrix.nope` is null here");
}

/// Row `concurrency`: group translated, `cancel-in-progress` as the overlap.
#[test]
fn row_concurrency() {
    let src = format!(
        "on: push\nconcurrency:\n  group: ${{{{ github.workflow }}}}-${{{{ github.ref }}}}\n  cancel-in-progress: true\n{JOB}"
    );
    let (y, _) = conv(&src);
    has(
        &y,
        "concurrency:\n    group: ${{ workflow.name }}-${{ env('AGENT_REF') }}\n    overlap: cancel_previous",
    );
}

/// Row `$GITHUB_OUTPUT` / `$GITHUB_ENV` / `$GITHUB_PATH` / `$GITHUB_STEP_SUMMARY` and the
/// `GITHUB_*` variables given from ours.
#[test]
fn row_github_files_and_variables() {
    let src = "on: push\njobs:\n  t:\n    runs-on: x\n    steps:\n      - run: |\n          echo a=1 >> $GITHUB_OUTPUT\n          echo B=2 >> \"$GITHUB_ENV\"\n          echo /x >> ${GITHUB_PATH}\n          echo done >> $GITHUB_STEP_SUMMARY\n          echo $GITHUB_SHA $GITHUB_WORKSPACE $RUNNER_TEMP\n";
    let (y, d) = conv(src);
    has(&y, "echo a=1 >> $AGENT_OUTPUT\n");
    has(&y, "echo B=2 >> \"$AGENT_ENV\"\n");
    has(&y, "echo /x >> ${AGENT_PATH}\n");
    has(&y, "GITHUB_SHA: ${{ env('AGENT_SHA') }}");
    has(&y, "GITHUB_WORKSPACE: ${{ env('AGENT_WORKSPACE') }}");
    has(&y, "GITHUB_STEP_SUMMARY: /dev/null");
    diag(&d, "ci.yml:10:25: note: step summaries are not kept here");
    has(&y, "RUNNER_TEMP: ${{ env('AGENT_TEMP') }}");
}

/// Row `services`: a known image runs as the host program; any other is an error.
#[test]
fn row_services() {
    let src = "on: push\njobs:\n  t:\n    runs-on: x\n    services:\n      db:\n        image: postgres:16\n        env:\n          POSTGRES_PASSWORD: pw\n        ports: ['5432:5432']\n      cache:\n        image: redis\n      es:\n        image: elasticsearch:8\n    steps:\n      - run: psql -p ${{ job.services.db.ports[5432] }}\n";
    let (y, d) = conv(src);
    has(
        &y,
        "services:\n        db:\n          run: |\n            data=$(mktemp -d)",
    );
    has(
        &y,
        "ready:\n            run: pg_isready -h 127.0.0.1 -p ${{ services.db.port }}",
    );
    has(&y, "exec redis-server --port \"$PORT\"");
    has(&y, "ready:\n            tcp: ${{ services.cache.port }}");
    has(&y, "psql -p ${{ services.db.port }}");
    diag(
        &d,
        "ci.yml:14:16: error: service image `elasticsearch:8` is not converted",
    );
}

/// Row contexts and functions: `github.*`, `runner.*`, `secrets.*`, `steps.X.outcome`,
/// `contains`, `startsWith`, `format`, `join`, `toJSON`, `fromJSON`, `hashFiles`,
/// `success()`, `always()`; an unknown context is an error at its place.
#[test]
fn row_expressions() {
    let src = "on: push\njobs:\n  t:\n    runs-on: x\n    steps:\n      - id: a\n        run: echo ${{ secrets.TOKEN }} ${{ runner.os }}\n      - if: always() && steps.a.outcome == 'success' && startsWith(github.ref, 'refs/tags/')\n        run: echo ${{ format('{0}-{1}', github.sha, join(fromJSON('[1,2]'), '+')) }} ${{ toJSON(hashFiles('*.lock')) }}\n      - if: ${{ contains(github.event.release.tag_name, 'v') }}\n        run: echo x\n";
    let (y, d) = conv(src);
    has(&y, "echo ${{ secrets.TOKEN }} ${{ 'Linux' }}");
    has(
        &y,
        "when: ${{ always() && ('success' if steps.a.status == 'succeeded' else ('skipped' if steps.a.status == 'skipped' else 'failure')) == 'success' && startswith(env('AGENT_REF'), 'refs/tags/') }}",
    );
    has(
        &y,
        "${{ format('{0}-{1}', repo.commit, join(from_json('[1,2]'), '+')) }} ${{ to_json(hash_files('*.lock')) }}",
    );
    diag(
        &d,
        "ci.yml:10:13: error: `github.event.release.tag_name` has no equivalent here",
    );
}

/// Row known actions: checkout (options to `checkout:`), setup-python/node/go/java,
/// rust-toolchain, cache, upload/download-artifact; any other action is an error with a
/// failing placeholder step.
#[test]
fn row_actions() {
    let src = "on: push\njobs:\n  b:\n    runs-on: x\n    steps:\n      - uses: actions/checkout@v4\n        with: {fetch-depth: 0, submodules: recursive}\n      - uses: actions/setup-python@v5\n        with: {python-version: '3.12', cache: pip}\n      - uses: actions/setup-node@v4\n        with: {node-version: 20}\n      - uses: actions/setup-go@v5\n        with: {go-version-file: go.mod}\n      - uses: actions/setup-java@v4\n        with: {java-version: '21', distribution: temurin}\n      - uses: dtolnay/rust-toolchain@nightly\n        with: {components: 'clippy, rustfmt'}\n      - uses: actions/cache@v4\n        with:\n          path: |\n            .venv\n            ~/.cache/pip\n          key: deps-${{ hashFiles('requirements.txt') }}\n      - run: make deps\n      - uses: actions/upload-artifact@v4\n        with: {name: dist, path: dist/, retention-days: 3}\n      - uses: some/action@v1\n  c:\n    needs: b\n    runs-on: x\n    steps:\n      - uses: actions/download-artifact@v4\n        with: {name: dist, path: out}\n";
    let (y, d) = conv(src);
    has(&y, "checkout:\n    depth: full\n    submodules: true");
    has(
        &y,
        "skill: setup-python\n          parameters:\n            version: '3.12'",
    );
    has(
        &y,
        "skill: setup-node\n          parameters:\n            version: 20",
    );
    has(
        &y,
        "skill: setup-go\n          parameters:\n            version_file: go.mod",
    );
    has(
        &y,
        "skill: setup-java\n          parameters:\n            version: '21'\n            distribution: temurin",
    );
    has(
        &y,
        "skill: rust-toolchain\n          parameters:\n            toolchain: nightly\n            components: clippy,rustfmt",
    );
    has(
        &y,
        "run: make deps\n          cache:\n            key:\n              - deps-${{ hash_files('requirements.txt') }}\n            paths:\n              - '.venv'",
    );
    has(
        &y,
        "artifacts:\n            - name: dist\n              paths:\n                - dist/\n              retention: '3d'",
    );
    has(
        &y,
        "cp -R \"${{ steps.upload-artifact.artifacts.dist }}/.\" 'out'",
    );
    has(&y, "exit 1");
    diag(
        &d,
        "ci.yml:27:15: error: action `some/action@v1` is not converted",
    );
    diag(&d, "cache path `~/.cache/pip` dropped");
}

/// Row `--check`: a file with an unknown action is not fully converted; one without is.
#[test]
fn report_says_what_was_converted() {
    let c = convert("ci.yml", &format!("on: push\n{JOB}"), "ci");
    assert!(c.report.converted && c.report.valid);
    assert_eq!(c.report.jobs[0].steps.len(), 1);
    let c = convert(
        "ci.yml",
        "on: push\njobs:\n  t:\n    runs-on: x\n    steps:\n      - uses: a/b@v1\n      - run: echo\n",
        "ci",
    );
    assert!(!c.report.converted);
    assert!(!c.report.jobs[0].steps[0].converted);
    assert!(c.report.jobs[0].steps[1].converted);
}

/// Guards against panics on malformed input: not YAML, not a mapping, no jobs, wrong
/// types everywhere.
#[test]
fn malformed_sources_are_reported() {
    for src in [
        "",
        "[1, 2",
        "- a\n- b\n",
        "name: x\n",
        "jobs: 3\n",
        "on: 5\njobs:\n  a: 1\n",
        "jobs:\n  a:\n    steps: 4\n",
        "jobs:\n  a:\n    steps:\n      - 1\n      - {uses: 3, run: 4}\n      - {}\n",
        "jobs:\n  a:\n    needs: [a]\n    steps: [{run: x}]\n",
        "jobs:\n  a:\n    strategy: {matrix: 3, fail-fast: maybe}\n    services: 5\n    steps: [{run: '${{ ((( }}'}]\n",
    ] {
        let c = convert("x.yml", src, "x");
        if let Some(y) = &c.yaml {
            // Whatever is written is at least YAML.
            dsl::yaml::parse_str(y).unwrap_or_else(|e| panic!("{src:?}: {e:?}\n{y}"));
        }
    }
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,6}",
        Just("${{ matrix.os }}".to_string()),
        Just("${{ steps.a.outputs.x }}".to_string()),
        Just("${{ needs.b.outputs.y }}".to_string()),
        Just("${{ github.event.x }} && ((".to_string()),
        Just("true".to_string()),
        Just("'quoted'".to_string()),
        Just("3.10".to_string()),
        Just("actions/checkout@v4".to_string()),
        Just("actions/upload-artifact@v4".to_string()),
        Just("echo $GITHUB_OUTPUT".to_string()),
        "[ -~]{0,12}",
    ]
}

fn yaml_value(depth: u32) -> BoxedStrategy<String> {
    let leaf = scalar()
        .prop_map(|s| serde_json::to_string(&s).unwrap())
        .boxed();
    if depth == 0 {
        return leaf;
    }
    let keys = prop_oneof![
        Just("run"),
        Just("uses"),
        Just("with"),
        Just("id"),
        Just("if"),
        Just("env"),
        Just("needs"),
        Just("steps"),
        Just("strategy"),
        Just("matrix"),
        Just("include"),
        Just("services"),
        Just("image"),
        Just("outputs"),
        Just("shell"),
        Just("timeout-minutes"),
        Just("path"),
        Just("name"),
        Just("push"),
        Just("inputs"),
    ];
    prop_oneof![
        leaf,
        prop::collection::vec(yaml_value(depth - 1), 0..4)
            .prop_map(|v| format!("[{}]", v.join(", "))),
        prop::collection::vec((keys, yaml_value(depth - 1)), 0..4).prop_map(|v| {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<String> = v
                .into_iter()
                .filter(|(k, _)| seen.insert(*k))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Generated workflow-shaped documents (jobs with steps, matrices, services, needs and
    /// expressions, well-formed or not) never make the conversion panic, and what it
    /// writes is YAML.
    #[test]
    fn conversion_never_panics(
        on in yaml_value(2),
        jobs in prop::collection::vec(("[a-c]", yaml_value(3)), 0..4),
    ) {
        let mut src = format!("on: {on}\njobs:\n");
        let mut seen = std::collections::HashSet::new();
        for (name, body) in jobs {
            if seen.insert(name.clone()) {
                src.push_str(&format!("  {name}: {body}\n"));
            }
        }
        let c = convert("p.yml", &src, "p");
        if let Some(y) = &c.yaml {
            prop_assert!(dsl::yaml::parse_str(y).is_ok(), "{}", y);
        }
    }
}
