//! A run's workspace: an exact commit written into a fresh directory from a mirror's objects.
//!
//! The workspace shares no file with the mirror: every file is written anew from the object
//! database (no hardlinks, no alternates, no `.git`), so nothing a step does to its workspace
//! can reach the cache. It is removed when the [`Workspace`] is dropped, unless kept (for
//! `keep_failed_workspaces`).
//!
//! Speed: `git clone --local` hardlinks the object files and then checks out with an index.
//! We skip both the links and the index: the tree is listed once, directories are made, and
//! the blobs are read and written by a few threads, each with its own handle on the mirror's
//! object database. Trees with a `.gitattributes` anywhere (which may ask for end-of-line or
//! other filters) go through libgit2's checkout instead, which applies them as `git clone`
//! would (tested against it).

use std::fmt::Display;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
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
