//! Mirrors and workspaces against real repositories made with the git CLI in temp dirs.

use crate::common;
use common::git;
use common::git_daemon::GitDaemon;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent::daemon::{CheckoutMethod, Mirror, MirrorError, Workspace};
use git2::Oid;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn commit_all(dir: &Path, message: &str) -> Oid {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    Oid::from_str(&git(dir, &["rev-parse", "HEAD"])).unwrap()
}

/// A source repository on `main`.
fn source_repo(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    src
}

/// Everything under `dir` (but `.git`): path -> (kind, content, executable).
fn snapshot(dir: &Path) -> BTreeMap<String, (char, Vec<u8>, bool)> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (char, Vec<u8>, bool)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(
                    rel,
                    ('l', target.into_os_string().into_encoded_bytes(), false),
                );
            } else if meta.is_dir() {
                out.insert(rel, ('d', Vec::new(), false));
                walk(base, &path, out);
            } else {
                let exec = meta.permissions().mode() & 0o100 != 0;
                out.insert(rel, ('f', std::fs::read(&path).unwrap(), exec));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// A repository with nested directories, an executable, a symlink, binary and empty files.
fn rich_repo(root: &Path) -> (PathBuf, Oid, Oid) {
    let src = source_repo(root);
    write(&src, "README.md", "# app\n");
    write(&src, "src/main.rs", "fn main() {}\n");
    write(&src, "src/deep/er/mod.rs", "// deep\n");
    write(&src, "empty.txt", "");
    std::fs::write(src.join("blob.bin"), [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
    write(&src, "run.sh", "#!/bin/sh\necho hi\n");
    let mut perms = std::fs::metadata(src.join("run.sh")).unwrap().permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(src.join("run.sh"), perms).unwrap();
    std::os::unix::fs::symlink("src/main.rs", src.join("link")).unwrap();
    let first = commit_all(&src, "first");
    write(&src, "README.md", "# app v2\n");
    std::fs::remove_file(src.join("empty.txt")).unwrap();
    let second = commit_all(&src, "second");
    (src, first, second)
}

/// What `git clone` of `src` makes at `dest`: the reference a workspace is compared with.
fn git_clone(src: &Path, dest: &Path) {
    let parent = dest.parent().expect("dest has a parent");
    git(
        parent,
        &["clone", "-q", src.to_str().unwrap(), dest.to_str().unwrap()],
    );
}

#[test]
fn checkout_writes_the_exact_tree_of_the_commit() {
    let root = tempfile::tempdir().unwrap();
    let (src, first, second) = rich_repo(root.path());
    let state = root.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();

    for method in [
        CheckoutMethod::Auto,
        CheckoutMethod::Direct,
        CheckoutMethod::Libgit2,
    ] {
        for commit in [first, second] {
            let dest = root.path().join(format!("ws-{method:?}-{commit}"));
            let ws = Workspace::create(&mirror, commit, &dest, method).unwrap();
            assert_eq!(ws.commit(), commit);
            // What `git` itself checks out for that commit.
            let reference = root.path().join(format!("ref-{commit}"));
            git_clone(&src, &reference);
            git(&reference, &["checkout", "-q", &commit.to_string()]);
            assert_eq!(
                snapshot(ws.path()),
                snapshot(&reference),
                "{method:?} {commit}"
            );
            assert!(!ws.path().join(".git").exists());
            std::fs::remove_dir_all(&reference).unwrap();
        }
    }
}

#[test]
fn gitattributes_filters_are_applied_like_git_does() {
    let root = tempfile::tempdir().unwrap();
    let src = source_repo(root.path());
    write(&src, ".gitattributes", "*.txt text eol=crlf\n*.bin -text\n");
    write(&src, "notes.txt", "one\ntwo\n");
    write(&src, "raw.bin", "one\ntwo\n");
    write(&src, "sub/more.txt", "three\n");
    let commit = commit_all(&src, "attributes");
    let state = root.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();
    let ws = Workspace::for_run(&mirror, commit, &state, 1).unwrap();
    let reference = root.path().join("reference");
    git_clone(&src, &reference);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("notes.txt")).unwrap(),
        "one\r\ntwo\r\n"
    );
    assert_eq!(snapshot(ws.path()), snapshot(&reference));
}

#[test]
fn a_workspace_shares_no_file_with_the_mirror() {
    let root = tempfile::tempdir().unwrap();
    let (src, _, second) = rich_repo(root.path());
    let state = root.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();
    let ws = Workspace::for_run(&mirror, second, &state, 7).unwrap();
    assert_eq!(ws.path(), state.join("workspaces/7"));

    fn inodes(dir: &Path, out: &mut BTreeSet<(u64, u64)>, nlink_one: bool) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                inodes(&path, out, nlink_one);
            } else {
                if nlink_one && meta.is_file() {
                    assert_eq!(meta.nlink(), 1, "{} is hardlinked", path.display());
                }
                out.insert((meta.dev(), meta.ino()));
            }
        }
    }
    let mut cache = BTreeSet::new();
    inodes(mirror.path(), &mut cache, false);
    let mut work = BTreeSet::new();
    inodes(ws.path(), &mut work, true);
    assert!(!work.is_empty());
    assert!(cache.is_disjoint(&work));

    // A step scribbling over its workspace leaves the mirror intact.
    for (path, _) in snapshot(ws.path()) {
        let full = ws.path().join(&path);
        if std::fs::symlink_metadata(&full).unwrap().is_file() {
            std::fs::write(&full, "scribbled").unwrap();
        }
    }
    let again = Workspace::create(
        &mirror,
        second,
        &root.path().join("again"),
        CheckoutMethod::Auto,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(again.path().join("README.md")).unwrap(),
        "# app v2\n"
    );
}

#[test]
fn a_workspace_is_removed_on_drop_unless_kept() {
    let root = tempfile::tempdir().unwrap();
    let (src, first, _) = rich_repo(root.path());
    let state = root.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();

    let ws = Workspace::for_run(&mirror, first, &state, 1).unwrap();
    let path = ws.path().to_path_buf();
    // A step that took write permission away from a directory does not keep it alive.
    let sub = path.join("src/deep");
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o500)).unwrap();
    drop(ws);
    assert!(!path.exists());

    let mut kept = Workspace::for_run(&mirror, first, &state, 2).unwrap();
    kept.set_keep(true);
    let kept_path = kept.path().to_path_buf();
    drop(kept);
    assert!(kept_path.join("README.md").exists());
    // A later checkout for the same run (after a crash) starts from a fresh directory.
    std::fs::write(kept_path.join("leftover"), "x").unwrap();
    let fresh = Workspace::for_run(&mirror, first, &state, 2).unwrap();
    assert!(!fresh.path().join("leftover").exists());
    let path = fresh.into_kept_path();
    assert!(path.exists());

    // create refuses an existing directory.
    assert!(matches!(
        Workspace::create(&mirror, first, &path, CheckoutMethod::Auto),
        Err(MirrorError::WorkspaceExists(_))
    ));
    let explicit = Workspace::for_run(&mirror, first, &state, 3).unwrap();
    let explicit_path = explicit.path().to_path_buf();
    explicit.remove().unwrap();
    assert!(!explicit_path.exists());

    // On boot, leftovers of runs that are over go; kept ones stay.
    for run in [4, 5] {
        Workspace::for_run(&mirror, first, &state, run)
            .unwrap()
            .into_kept_path();
    }
    let removed = Workspace::remove_stale(&state, |name| name == "2" || name == "5").unwrap();
    assert_eq!(removed, ["4"]);
    assert!(Workspace::path_for_run(&state, 2).exists());
    assert!(Workspace::path_for_run(&state, 5).exists());
    assert!(
        Workspace::remove_stale(&root.path().join("none"), |_| false)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn mirror_follows_the_remote_with_fetch() {
    let root = tempfile::tempdir().unwrap();
    let src = source_repo(root.path());
    write(&src, "a.txt", "1\n");
    let c1 = commit_all(&src, "one");
    let state = root.path().join("state");
    let mut mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();
    assert_eq!(mirror.path(), state.join("mirrors/app.git"));
    assert_eq!(mirror.default_branch().as_deref(), Some("main"));
    assert_eq!(mirror.branches().unwrap(), vec![("main".to_string(), c1)]);
    assert_eq!(mirror.commit_info(c1).unwrap().message, "one\n");
    assert_eq!(mirror.commit_info(c1).unwrap().author, "Ada");

    write(&src, "a.txt", "2\n");
    let c2 = commit_all(&src, "two");
    git(&src, &["branch", "dev"]);
    git(&src, &["tag", "v1", &c1.to_string()]);
    assert_eq!(mirror.branch_head("main").unwrap(), Some(c1));
    mirror.fetch().unwrap();
    assert_eq!(mirror.branch_head("main").unwrap(), Some(c2));
    assert_eq!(mirror.branch_head("dev").unwrap(), Some(c2));
    assert_eq!(mirror.resolve_commit("v1").unwrap(), c1);
    assert_eq!(mirror.resolve_commit(&c2.to_string()[..10]).unwrap(), c2);
    assert!(matches!(
        mirror.resolve_commit("nope"),
        Err(MirrorError::UnknownCommit(_))
    ));

    // Deleted branches are pruned; a reopened mirror keeps what it has without network.
    git(&src, &["branch", "-D", "dev"]);
    mirror.fetch().unwrap();
    assert_eq!(mirror.branch_head("dev").unwrap(), None);
    drop(mirror);
    let reopened = Mirror::open(&state, "app").unwrap();
    assert_eq!(reopened.branch_head("main").unwrap(), Some(c2));
    let again = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();
    assert_eq!(again.branch_head("main").unwrap(), Some(c2));

    // Names that are not plain directory names are refused.
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(matches!(
            Mirror::open_or_clone(&state, bad, src.to_str().unwrap()),
            Err(MirrorError::InvalidName(_))
        ));
    }
    // A remote that does not exist leaves no mirror behind.
    let missing = root.path().join("missing");
    assert!(Mirror::open_or_clone(&state, "gone", missing.to_str().unwrap()).is_err());
    assert!(!Mirror::path_for(&state, "gone").exists());
    let leftovers: Vec<_> = std::fs::read_dir(state.join("mirrors"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("app.git")]);
}

#[test]
fn changed_paths_between_commits() {
    let root = tempfile::tempdir().unwrap();
    let src = source_repo(root.path());
    write(&src, "docs/a.md", "a");
    write(&src, "src/lib.rs", "1");
    write(
        &src,
        "old.txt",
        "old content that is long enough to be a rename",
    );
    let c1 = commit_all(&src, "one");
    write(&src, "src/lib.rs", "2");
    write(&src, "src/new.rs", "new");
    std::fs::remove_file(src.join("docs/a.md")).unwrap();
    git(&src, &["mv", "old.txt", "renamed.txt"]);
    let c2 = commit_all(&src, "two");
    let state = root.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();

    assert_eq!(
        mirror.changed_paths(Some(c1), c2).unwrap(),
        [
            "docs/a.md",
            "old.txt",
            "renamed.txt",
            "src/lib.rs",
            "src/new.rs"
        ]
    );
    assert!(mirror.changed_paths(Some(c2), c2).unwrap().is_empty());
    assert_eq!(
        mirror.changed_paths(None, c1).unwrap(),
        ["docs/a.md", "old.txt", "src/lib.rs"]
    );
}

#[test]
fn workflow_files_are_read_at_a_commit_without_checkout() {
    let root = tempfile::tempdir().unwrap();
    let src = source_repo(root.path());
    write(&src, "README.md", "no workflows yet");
    let c0 = commit_all(&src, "zero");
    write(&src, ".workflows/build.yaml", "workflow:\n  name: build\n");
    write(&src, ".workflows/a.yml", "workflow:\n  name: a\n");
    write(&src, ".workflows/notes.txt", "not a workflow");
    write(&src, ".workflows/skills/tool.yaml", "command: x");
    std::fs::write(src.join(".workflows/latin1.yaml"), b"name: caf\xe9\n").unwrap();
    let c1 = commit_all(&src, "one");
    write(&src, ".workflows/build.yaml", "workflow:\n  name: build2\n");
    let c2 = commit_all(&src, "two");
    let state = root.path().join("state");
    let mirror = Mirror::open_or_clone(&state, "app", src.to_str().unwrap()).unwrap();

    assert!(mirror.read_workflow_files(c0).unwrap().is_empty());
    let files = mirror.read_workflow_files(c1).unwrap();
    let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".workflows/a.yml",
            ".workflows/build.yaml",
            ".workflows/latin1.yaml"
        ]
    );
    assert_eq!(files[1].text, "workflow:\n  name: build\n");
    assert_eq!(files[2].text, "name: caf\u{fffd}\n");
    assert_eq!(
        mirror.read_workflow_files(c2).unwrap()[1].text,
        "workflow:\n  name: build2\n"
    );
    let unknown = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
    assert!(matches!(
        mirror.read_workflow_files(unknown),
        Err(MirrorError::UnknownCommit(_))
    ));
}

#[test]
fn a_file_url_and_a_git_daemon_remote_are_mirrored() {
    let root = tempfile::tempdir().unwrap();
    let src = source_repo(root.path());
    write(&src, "a.txt", "served\n");
    let c1 = commit_all(&src, "one");
    let state = root.path().join("state");

    let url = format!("file://{}", src.display());
    let mirror = Mirror::open_or_clone(&state, "by-file", &url).unwrap();
    assert_eq!(mirror.branch_head("main").unwrap(), Some(c1));

    // git daemon on 127.0.0.1.
    let daemon = GitDaemon::start(root.path());
    let port = daemon.port;
    let result = (|| {
        let url = format!("git://127.0.0.1:{port}/src");
        let mut mirror = Mirror::open_or_clone(&state, "by-daemon", &url)?;
        let first = mirror.branch_head("main")?;
        write(&src, "a.txt", "served again\n");
        let c2 = commit_all(&src, "two");
        mirror.fetch()?;
        let ws = Workspace::for_run(&mirror, c2, &state, "d1")?;
        let text = std::fs::read_to_string(ws.path().join("a.txt")).unwrap();
        Ok::<_, MirrorError>((first, mirror.branch_head("main")?, c2, text))
    })();
    drop(daemon);
    let (first, head, c2, text) = result.unwrap();
    assert_eq!(first, Some(c1));
    assert_eq!(head, Some(c2));
    assert_eq!(text, "served again\n");
}
