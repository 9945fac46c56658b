//! A run's workspace: an exact commit written into a fresh directory from a mirror's objects,
//! then made a git working tree ([`Workspace::arrange`], [`add_git`]).
//!
//! Every file of the tree is written anew from the object database (no hardlinks), so
//! nothing a step does to its files can reach the cache. Its `.git` borrows the mirror's
//! object database through `objects/info/alternates`, as `git clone --shared` does: git
//! only reads there, a step's own objects go into the workspace's `.git`. It is removed
//! when the [`Workspace`] is dropped, unless kept (for `keep_failed_workspaces`).
//!
//! Speed: `git clone --local` hardlinks the object files and then checks out with an index.
//! We skip the links: the tree is listed once, directories are made, and the blobs are read
//! and written by a few threads, each with its own handle on the mirror's object database;
//! the index is then made from the tree with the written files' stat data. Trees with a
//! `.gitattributes` anywhere (which may ask for end-of-line or other filters) go through
//! libgit2's checkout instead, which applies them as `git clone` would (tested against it).

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

use crate::daemon::run::mirror::{Mirror, MirrorError, remove_tree};

/// How a workspace is written; [`CheckoutMethod::Auto`] is right outside benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckoutMethod {
    /// Direct parallel writes, or libgit2 when the tree has `.gitattributes`.
    #[default]
    Auto,
    /// Always libgit2's `checkout_tree` (applies filters; slower).
    Libgit2,
    /// Always the direct writer (ignores `.gitattributes` filters).
    Direct,
}

/// A checked-out commit in a directory of its own, removed on drop unless kept.
#[derive(Debug)]
pub struct Workspace {
    path: PathBuf,
    commit: Oid,
    keep: bool,
}

/// One thing to write, from the tree listing.
enum Entry {
    Dir(PathBuf),
    File { path: PathBuf, oid: Oid, exec: bool },
    Symlink { path: PathBuf, oid: Oid },
}

impl Workspace {
    /// The workspace directory of run `run_id`: `state_dir/workspaces/<run_id>`.
    pub fn path_for_run(state_dir: &Path, run_id: impl Display) -> PathBuf {
        crate::state_dir::workspace_dir(state_dir, run_id)
    }

    /// Checks `commit` out for a run into `state_dir/workspaces/<run_id>`, first removing
    /// what a previous attempt (before a crash) may have left there.
    pub fn for_run(
        mirror: &Mirror,
        commit: Oid,
        state_dir: &Path,
        run_id: impl Display,
    ) -> Result<Workspace, MirrorError> {
        let path = Workspace::path_for_run(state_dir, run_id);
        remove_tree(&path)?;
        Workspace::create(mirror, commit, &path, CheckoutMethod::Auto)
    }

    /// Removes the workspace directories under `state_dir/workspaces` that `keep` does not
    /// claim (called with the directory name, a run id): on boot, the leftovers of runs that
    /// ended while the daemon was down. Returns the names removed, sorted.
    pub fn remove_stale(
        state_dir: &Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, MirrorError> {
        let dir = crate::state_dir::workspaces_dir(state_dir);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(MirrorError::Io {
                    action: "list",
                    path: dir,
                    source: err,
                });
            }
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(MirrorError::io("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep(&name) {
                remove_tree(&entry.path())?;
                removed.push(name);
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// Checks `commit` out into `dest`, which must not exist yet (its parent is created).
    pub fn create(
        mirror: &Mirror,
        commit: Oid,
        dest: &Path,
        method: CheckoutMethod,
    ) -> Result<Workspace, MirrorError> {
        if dest.exists() {
            return Err(MirrorError::WorkspaceExists(dest.to_path_buf()));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(MirrorError::io("create directory", parent))?;
        }
        std::fs::create_dir(dest).map_err(MirrorError::io("create workspace", dest))?;
        // From here on, a failure removes the half-written directory (on drop).
        let workspace = Workspace {
            path: dest.to_path_buf(),
            commit,
            keep: false,
        };
        let tree = mirror
            .find_commit(commit)?
            .tree()
            .map_err(MirrorError::git("read tree of", commit.to_string()))?;
        let entries = list_tree(&tree)?;
        let has_attributes = entries.iter().any(|e| match e {
            Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path.file_name().is_some_and(|n| n == ".gitattributes")
            }
            Entry::Dir(_) => false,
        });
        let use_libgit2 = match method {
            CheckoutMethod::Auto => has_attributes,
            CheckoutMethod::Libgit2 => true,
            CheckoutMethod::Direct => false,
        };
        if use_libgit2 {
            checkout_libgit2(mirror.path(), &tree, dest)?;
        } else {
            write_entries(mirror.path(), &entries, dest)?;
        }
        Ok(workspace)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit checked out.
    pub fn commit(&self) -> Oid {
        self.commit
    }

    /// Whether the directory survives the drop of this value (default: no).
    pub fn set_keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Keeps the directory and returns its path.
    pub fn into_kept_path(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }

    /// Removes the directory now, reporting failure (drop only logs it).
    pub fn remove(mut self) -> Result<(), MirrorError> {
        self.keep = true;
        remove_tree(&self.path)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.keep
            && let Err(err) = remove_tree(&self.path)
        {
            tracing::warn!(workspace = %self.path.display(), error = %err,
                "cannot remove workspace");
        }
    }
}

/// Lists a tree in pre-order: directories before their contents. Submodules become empty
/// directories, as `git clone` without `--recursive` leaves them.
fn list_tree(tree: &git2::Tree<'_>) -> Result<Vec<Entry>, MirrorError> {
    let mut entries = Vec::new();
    let mut bad_path = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name_bytes();
        // A tree from a hostile remote could hold names that escape the workspace.
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name == b".git"
            || name.contains(&b'/')
        {
            bad_path = Some(format!("{dir}{}", String::from_utf8_lossy(name)));
            return TreeWalkResult::Abort;
        }
        let mut path = PathBuf::from(dir);
        path.push(std::ffi::OsStr::from_bytes(name));
        match entry.kind() {
            Some(ObjectType::Tree) => entries.push(Entry::Dir(path)),
            Some(ObjectType::Blob) => {
                let mode = entry.filemode();
                if mode == 0o120000 {
                    entries.push(Entry::Symlink {
                        path,
                        oid: entry.id(),
                    });
                } else {
                    entries.push(Entry::File {
                        path,
                        oid: entry.id(),
                        exec: mode & 0o111 != 0,
                    });
                }
            }
            Some(ObjectType::Commit) => entries.push(Entry::Dir(path)),
            _ => {}
        }
        TreeWalkResult::Ok
    })
    .map_err(|err| match &bad_path {
        Some(path) => MirrorError::UnsafePath(path.clone()),
        None => MirrorError::Git {
            action: "list tree",
            target: tree.id().to_string(),
            source: err,
        },
    })?;
    if let Some(path) = bad_path {
        return Err(MirrorError::UnsafePath(path));
    }
    Ok(entries)
}

/// Writes the listed entries under `dest`: directories first, then files and symlinks in
/// parallel chunks, each thread reading blobs through its own handle on the mirror.
fn write_entries(mirror: &Path, entries: &[Entry], dest: &Path) -> Result<(), MirrorError> {
    for entry in entries {
        if let Entry::Dir(path) = entry {
            let full = dest.join(path);
            std::fs::create_dir(&full).map_err(MirrorError::io("create directory", full))?;
        }
    }
    let files: Vec<&Entry> = entries
        .iter()
        .filter(|e| !matches!(e, Entry::Dir(_)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 8)
        .min(files.len().div_ceil(64).max(1));
    if threads <= 1 {
        let repo = open_objects(mirror)?;
        return write_files(&repo, &files, dest);
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let repo = open_objects(mirror)?;
                    write_files(&repo, part, dest)
                })
            })
            .collect();
        let mut result = Ok(());
        for handle in handles {
            let outcome = handle.join().unwrap_or_else(|_| {
                Err(MirrorError::Io {
                    action: "write workspace",
                    path: dest.to_path_buf(),
                    source: std::io::Error::other("a checkout thread panicked"),
                })
            });
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    })
}

/// A handle on the mirror for reading objects.
fn open_objects(mirror: &Path) -> Result<Repository, MirrorError> {
    Repository::open_bare(mirror).map_err(MirrorError::git(
        "open mirror",
        mirror.display().to_string(),
    ))
}

/// Writes files and symlinks with blobs read from `repo`.
fn write_files(repo: &Repository, files: &[&Entry], dest: &Path) -> Result<(), MirrorError> {
    let odb = repo.odb().map_err(MirrorError::git(
        "open objects of",
        repo.path().display().to_string(),
    ))?;
    for entry in files {
        match entry {
            Entry::File { path, oid, exec } => {
                let object = odb
                    .read(*oid)
                    .map_err(MirrorError::git("read blob", oid.to_string()))?;
                let full = dest.join(path);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if *exec { 0o777 } else { 0o666 })
                    .open(&full)
                    .map_err(MirrorError::io("create", &full))?;
                file.write_all(object.data())
                    .map_err(MirrorError::io("write", &full))?;
            }
            Entry::Symlink { path, oid } => {
                let object = odb
                    .read(*oid)
                    .map_err(MirrorError::git("read blob", oid.to_string()))?;
                let full = dest.join(path);
                let target = std::ffi::OsStr::from_bytes(object.data());
                std::os::unix::fs::symlink(target, &full)
                    .map_err(MirrorError::io("create symlink", &full))?;
            }
            Entry::Dir(_) => {}
        }
    }
    Ok(())
}

/// libgit2's checkout of `tree` into the empty directory `dest`, applying `.gitattributes`
/// filters. A bare repository has no work tree to read attributes from, so the tree is loaded
/// into an in-memory index set on a private handle of the mirror: libgit2 then finds the
/// attributes in that index. Nothing is written to the mirror (`update_index(false)`).
fn checkout_libgit2(mirror: &Path, tree: &git2::Tree<'_>, dest: &Path) -> Result<(), MirrorError> {
    let target = tree.id().to_string();
    let repo = open_objects(mirror)?;
    let tree = repo
        .find_tree(tree.id())
        .map_err(MirrorError::git("read tree", &target))?;
    let mut index = git2::Index::new().map_err(MirrorError::git("load index of", &target))?;
    index
        .read_tree(&tree)
        .map_err(MirrorError::git("load index of", &target))?;
    repo.set_index(&mut index)
        .map_err(MirrorError::git("load index of", &target))?;
    let mut opts = git2::build::CheckoutBuilder::new();
    opts.force()
        .recreate_missing(true)
        .update_index(false)
        .target_dir(dest);
    repo.checkout_index(Some(&mut index), Some(&mut opts))
        .map_err(MirrorError::git("check out", target))
}

/// How a run's sources are laid out in its workspace (the workflow's `checkout`).
#[derive(Debug, Clone, Default)]
pub struct CheckoutSpec {
    /// `checkout: false`: an empty workspace.
    pub disabled: bool,
    /// The branch the run is for: `refs/heads/BRANCH` at the commit.
    pub branch: Option<String>,
    /// Commits of history visible (`None`: all of it).
    pub depth: Option<u32>,
    /// Every tag of the repository as `refs/tags/*`.
    pub tags: bool,
    /// The tag the run is for (a tag push): `refs/tags/TAG` is there even without `tags`,
    /// so `git describe --tags` names it.
    pub tag: Option<String>,
    /// `git submodule update --init --recursive` after the checkout.
    pub submodules: bool,
    /// A directory inside the workspace for the sources (relative, no `..`).
    pub path: Option<String>,
}

impl Workspace {
    /// Lays the checked-out tree out as `spec` says and makes it a git working tree: with
    /// `checkout: false` the workspace is emptied; with a `path` the tree moves into that
    /// subdirectory; then [`add_git`] gives it its `.git`. Returns the sources' directory.
    pub(crate) fn arrange(
        &self,
        mirror: &Mirror,
        spec: &CheckoutSpec,
    ) -> Result<PathBuf, MirrorError> {
        if spec.disabled {
            let entries =
                std::fs::read_dir(&self.path).map_err(MirrorError::io("list", &self.path))?;
            for entry in entries {
                let entry = entry.map_err(MirrorError::io("list", &self.path))?;
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&path)?;
                } else {
                    std::fs::remove_file(&path).map_err(MirrorError::io("remove", &path))?;
                }
            }
            return Ok(self.path.clone());
        }
        let dir = match spec.path.as_deref().filter(|p| !p.is_empty() && *p != ".") {
            None => self.path.clone(),
            Some(sub) => {
                let rel = Path::new(sub);
                let safe = rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(n) if n != ".git"));
                if !safe {
                    return Err(MirrorError::UnsafePath(sub.to_string()));
                }
                // The tree moves aside, the workspace is made again, the tree moves in.
                let mut aside = self.path.clone().into_os_string();
                aside.push(".checkout");
                let aside = PathBuf::from(aside);
                remove_tree(&aside)?;
                std::fs::rename(&self.path, &aside).map_err(MirrorError::io("move", &self.path))?;
                let dest = self.path.join(rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(MirrorError::io("create directory", parent))?;
                }
                std::fs::rename(&aside, &dest).map_err(MirrorError::io("move", &dest))?;
                dest
            }
        };
        add_git(mirror, self.commit, &dir, spec)?;
        Ok(dir)
    }
}

/// Makes `dir`, holding the tree of `commit` as written by [`Workspace::create`], a git
/// working tree as `git clone --shared` of the mirror would: `.git/objects/info/alternates`
/// names the mirror's object database (nothing copied or linked; a step's own commits go
/// into the workspace's `.git`), HEAD is detached at the commit, `refs/heads/BRANCH` and
/// `refs/remotes/origin/BRANCH` point at it, `origin` is the repository's URL, the tags
/// are there when asked, history is cut at `depth` commits (`.git/shallow`), and the index
/// holds the files' stat data so that `git status` is clean without reading them again.
pub fn add_git(
    mirror: &Mirror,
    commit: Oid,
    dir: &Path,
    spec: &CheckoutSpec,
) -> Result<(), MirrorError> {
    let git = dir.join(".git");
    let objects = std::path::absolute(mirror.path().join("objects"))
        .map_err(MirrorError::io("resolve", mirror.path()))?;
    for sub in [
        "objects/info",
        "objects/pack",
        "refs/heads",
        "refs/tags",
        "refs/remotes/origin",
    ] {
        let d = git.join(sub);
        std::fs::create_dir_all(&d).map_err(MirrorError::io("create directory", &d))?;
    }
    let write = |name: &str, text: &[u8]| -> Result<(), MirrorError> {
        let path = git.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(MirrorError::io("create directory", parent))?;
        }
        std::fs::write(&path, text).map_err(MirrorError::io("write", &path))
    };
    let mut alternates = objects.into_os_string().into_vec();
    alternates.push(b'\n');
    write("objects/info/alternates", &alternates)?;
    write("HEAD", format!("{commit}\n").as_bytes())?;
    let url = mirror.url().replace('\\', "\\\\").replace('"', "\\\"");
    write(
        "config",
        format!(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\
             \tlogallrefupdates = true\n[remote \"origin\"]\n\turl = \"{url}\"\n\
             \tfetch = +refs/heads/*:refs/remotes/origin/*\n"
        )
        .as_bytes(),
    )?;
    if let Some(branch) = spec
        .branch
        .as_deref()
        .filter(|b| git2::Reference::is_valid_name(&format!("refs/heads/{b}")))
    {
        write(
            &format!("refs/heads/{branch}"),
            format!("{commit}\n").as_bytes(),
        )?;
        write(
            &format!("refs/remotes/origin/{branch}"),
            format!("{commit}\n").as_bytes(),
        )?;
    }
    let repo = mirror.repository();
    if spec.tags {
        let mut packed = String::from("# pack-refs with: peeled\n");
        let refs = repo
            .references_glob("refs/tags/*")
            .map_err(MirrorError::git("list tags of", mirror.name()))?;
        for reference in refs.flatten() {
            let (Ok(name), Some(target)) = (reference.name(), reference.target()) else {
                continue;
            };
            packed.push_str(&format!("{target} {name}\n"));
            if let Ok(peeled) = reference.peel_to_commit()
                && peeled.id() != target
            {
                packed.push_str(&format!("^{}\n", peeled.id()));
            }
        }
        write("packed-refs", packed.as_bytes())?;
    } else if let Some(tag) = spec
        .tag
        .as_deref()
        .filter(|t| git2::Reference::is_valid_name(&format!("refs/tags/{t}")))
        && let Ok(reference) = repo.find_reference(&format!("refs/tags/{tag}"))
        && let Some(target) = reference.target()
    {
        // The tag object itself (annotated tags stay annotated for `git describe`).
        write(
            &format!("refs/tags/{tag}"),
            format!("{target}\n").as_bytes(),
        )?;
    }
    if let Some(depth) = spec.depth {
        let shallow = shallow_boundary(repo, commit, depth.max(1))?;
        if !shallow.is_empty() {
            let text: String = shallow.iter().map(|o| format!("{o}\n")).collect();
            write("shallow", text.as_bytes())?;
        }
    }
    write_index(dir, commit)?;
    if spec.submodules && dir.join(".gitmodules").exists() {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["submodule", "update", "--init", "--recursive"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(MirrorError::io("run git submodule update in", dir))?;
        if !out.status.success() {
            return Err(MirrorError::Io {
                action: "update submodules in",
                path: dir.to_path_buf(),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ),
            });
        }
    }
    Ok(())
}

/// The commits at `depth` (counted from 1 at `commit`) that have parents: the cut of a
/// clone with `--depth depth`.
fn shallow_boundary(repo: &Repository, commit: Oid, depth: u32) -> Result<Vec<Oid>, MirrorError> {
    let mut seen = std::collections::HashSet::new();
    let mut level = vec![commit];
    seen.insert(commit);
    for _ in 1..depth {
        let mut next = Vec::new();
        for oid in &level {
            let c = repo
                .find_commit(*oid)
                .map_err(MirrorError::git("read commit", oid.to_string()))?;
            for parent in c.parent_ids() {
                if seen.insert(parent) {
                    next.push(parent);
                }
            }
        }
        if next.is_empty() {
            return Ok(Vec::new());
        }
        level = next;
    }
    let mut cut = Vec::new();
    for oid in level {
        let c = repo
            .find_commit(oid)
            .map_err(MirrorError::git("read commit", oid.to_string()))?;
        if c.parent_count() > 0 {
            cut.push(oid);
        }
    }
    cut.sort();
    Ok(cut)
}

/// Writes `.git/index` for the tree of `commit`, already written in `dir`, with each
/// file's stat data.
fn write_index(dir: &Path, commit: Oid) -> Result<(), MirrorError> {
    use std::os::unix::fs::MetadataExt;
    let target = dir.display().to_string();
    let repo = Repository::open(dir).map_err(MirrorError::git("open workspace", &target))?;
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(MirrorError::git("read tree of", commit.to_string()))?;
    let mut index = repo
        .index()
        .map_err(MirrorError::git("open index of", &target))?;
    index
        .read_tree(&tree)
        .map_err(MirrorError::git("load index of", &target))?;
    let entries: Vec<git2::IndexEntry> = index.iter().collect();
    for mut entry in entries {
        if entry.mode == 0o160000 {
            continue;
        }
        let full = dir.join(std::ffi::OsStr::from_bytes(&entry.path));
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        entry.ctime = git2::IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32);
        entry.mtime = git2::IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32);
        entry.dev = meta.dev() as u32;
        entry.ino = meta.ino() as u32;
        entry.uid = meta.uid();
        entry.gid = meta.gid();
        entry.file_size = meta.size() as u32;
        index
            .add(&entry)
            .map_err(MirrorError::git("load index of", &target))?;
    }
    index
        .write()
        .map_err(MirrorError::git("write index of", target))
}
