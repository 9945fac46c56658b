//! `isolate: true`: a step runs in a private copy of the workspace, so that rewriting a
//! lockfile or deleting test data does not reach the steps beside it (matrix instances,
//! parallel steps) or after it.
//!
//! - The copy is made once when the step is about to run (after its `when`), before its
//!   first try; its retries share it. It is a sibling of the workspace
//!   (`.NAME.isolate-RUN-N`, on the same filesystem so that copy-on-write can work), or,
//!   when the workspace's parent is not writable, inside the run's protocol directory.
//! - Regular files are cloned (`FICLONE`, a reflink) where the filesystem allows it (btrfs,
//!   XFS, bcachefs, ...) and copied otherwise; never hard-linked, since a rewrite in place
//!   would then reach the workspace. Directories, permissions and symbolic links (as links)
//!   are kept; sockets and FIFOs are left out.
//! - The step's working directory, `AGENT_WORKSPACE` and its relative paths point into the
//!   copy; its outputs (`$AGENT_OUTPUT`, context updates, `$AGENT_ENV`) live in the run's
//!   protocol directory and work as for any step. Expressions (`hash_files()`,
//!   `file_exists()`, `run.workspace`) still read the shared workspace.
//! - The copy is removed when the step ends, whatever its outcome (also when the run is
//!   cancelled); nothing in it goes back to the workspace. Whatever should outlive the step
//!   is an output or an artifact, collected before the copy goes ([`Isolated::path`]).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a copy cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyStats {
    /// Regular files cloned copy-on-write.
    pub(crate) cloned: u64,
    /// Regular files copied byte for byte.
    pub(crate) copied: u64,
    /// Bytes written by those copies.
    pub(crate) bytes: u64,
}

/// Copies the tree `src` to `dst` (which must not exist): directories with their
/// permissions, regular files cloned copy-on-write where possible and copied otherwise,
/// symbolic links as links. Other file types are left out.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    std::fs::create_dir(dst)?;
    // Directory permissions are set last: a read-only directory must first be filled.
    let mut dirs: Vec<(PathBuf, std::fs::Permissions)> =
        vec![(dst.to_path_buf(), std::fs::metadata(src)?.permissions())];
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
    let mut reflinks = true;
    while let Some((from_dir, to_dir)) = stack.pop() {
        for entry in std::fs::read_dir(&from_dir)? {
            let entry = entry?;
            let from = entry.path();
            let to = to_dir.join(entry.file_name());
            let meta = std::fs::symlink_metadata(&from)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                std::fs::create_dir(&to)?;
                std::fs::set_permissions(&to, PermissionsExt::from_mode(0o700))?;
                dirs.push((to.clone(), meta.permissions()));
                stack.push((from, to));
            } else if kind.is_file() {
                // Once a clone has fallen back to a copy, the filesystem cannot clone: the
                // rest is copied straight away (a failed clone costs a file creation).
                let cloned = if reflinks {
                    reflink_copy::reflink_or_copy(&from, &to)?
                } else {
                    Some(std::fs::copy(&from, &to)?)
                };
                match cloned {
                    None => {
                        stats.cloned += 1;
                        std::fs::set_permissions(&to, meta.permissions())?;
                    }
                    Some(n) => {
                        // `fs::copy` keeps the permission bits.
                        reflinks = false;
                        stats.copied += 1;
                        stats.bytes += n;
                    }
                }
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            }
        }
    }
    for (dir, perms) in dirs.into_iter().rev() {
        std::fs::set_permissions(&dir, perms)?;
    }
    Ok(stats)
}

/// Removes a tree made by [`copy_tree`], read-only directories included.
fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    // A directory without write permission keeps its entries: open them up and retry.
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    if let Err(err) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove an isolated workspace copy");
    }
}

/// A step's private copy of the workspace; removed when dropped.
#[derive(Debug)]
pub(crate) struct Isolated {
    path: PathBuf,
    /// The workspace it copies.
    workspace: PathBuf,
}

impl Isolated {
    /// Copies `workspace` for one step (`key` makes the name unique in the run), giving it
    /// to `user` when the run has one. Blocking: call it off the async threads.
    pub(crate) fn create(
        workspace: &Path,
        fallback_dir: &Path,
        run_id: &str,
        key: u64,
        user: Option<&runners::RunUser>,
    ) -> io::Result<(Isolated, CopyStats)> {
        let name = workspace
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workspace".into());
        let safe: String = run_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(64)
            .collect();
        let leaf = format!(".{name}.isolate-{safe}-{key}");
        // A leftover of the same name is this run's own, from before a crash.
        let attempt = |p: &Path| {
            if p.exists() {
                remove_tree(p);
            }
            let r = copy_tree(workspace, p);
            if r.is_err() {
                remove_tree(p);
            }
            r
        };
        let (path, stats) = match workspace.parent().map(|d| d.join(&leaf)) {
            Some(p) => match attempt(&p) {
                Ok(stats) => (p, stats),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    let p = fallback_dir.join(leaf.trim_start_matches('.'));
                    (p.clone(), attempt(&p)?)
                }
                Err(e) => return Err(e),
            },
            None => {
                let p = fallback_dir.join(leaf.trim_start_matches('.'));
                (p.clone(), attempt(&p)?)
            }
        };
        let isolated = Isolated {
            path,
            workspace: workspace.to_path_buf(),
        };
        if let Some(user) = user {
            user.chown_tree(&isolated.path)?;
        }
        Ok((isolated, stats))
    }

    /// Where the copy is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `dir` (the workspace or a directory in it) moved into the copy.
    pub(crate) fn rebase(&self, dir: &Path) -> PathBuf {
        match dir.strip_prefix(&self.workspace) {
            Ok(rest) => self.path.join(rest),
            Err(_) => dir.to_path_buf(),
        }
    }

    /// Removes the copy off the async threads.
    pub(crate) async fn remove(self) {
        let path = self.path.clone();
        std::mem::forget(self);
        let _ = tokio::task::spawn_blocking(move || remove_tree(&path)).await;
    }
}

/// Makes the private copy of the workspace for step `id` of the run (see the module doc);
/// the error is the step's failure message.
pub(crate) async fn for_step(
    ctx: &super::run_ctx::RunCtx<'_>,
    id: &str,
) -> Result<Isolated, String> {
    let workspace = ctx.workdir.clone();
    let fallback = ctx.rundir.path().to_path_buf();
    let run_id = ctx.run_id.to_string();
    let key = ctx.next_seq();
    let user = ctx.run_user.clone();
    let made = tokio::task::spawn_blocking(move || {
        Isolated::create(&workspace, &fallback, &run_id, key, user.as_deref())
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))
    .and_then(|r| r);
    match made {
        Ok((isolated, stats)) => {
            tracing::debug!(step = id, copy = %isolated.path.display(), cloned = stats.cloned,
                copied = stats.copied, bytes = stats.bytes, "isolated workspace");
            Ok(isolated)
        }
        Err(e) => Err(format!(
            "step `{id}`: cannot make the isolated copy of the workspace: {e}"
        )),
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the isolation itself: a file rewritten in place or deleted in the copy is
    /// unchanged in the workspace (no hard links), modes and symbolic links are kept, a
    /// read-only directory is copied and removed, and dropping the copy removes it.
    #[test]
    fn a_copy_is_private_and_goes_away() {
        let root = tempfile::tempdir().expect("tempdir");
        let ws = root.path().join("ws");
        std::fs::create_dir_all(ws.join("data/ro")).expect("mkdir");
        std::fs::write(ws.join("Cargo.lock"), "v1\n").expect("write");
        std::fs::write(ws.join("data/keep.txt"), "keep\n").expect("write");
        std::fs::write(ws.join("data/ro/x"), "x").expect("write");
        std::fs::write(ws.join("run.sh"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(ws.join("run.sh"), PermissionsExt::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink("data/keep.txt", ws.join("link")).expect("symlink");
        std::fs::set_permissions(ws.join("data/ro"), PermissionsExt::from_mode(0o555))
            .expect("chmod");

        let fallback = root.path().join("fallback");
        let (iso, stats) = Isolated::create(&ws, &fallback, "r-1", 7, None).expect("copy");
        let copy = iso.path().to_path_buf();
        assert_eq!(
            copy.parent(),
            Some(root.path()),
            "a sibling of the workspace"
        );
        assert_eq!(stats.cloned + stats.copied, 4, "{stats:?}");
        assert_eq!(iso.rebase(&ws.join("data")), copy.join("data"));

        // Rewrite in place (same inode) and delete in the copy.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(copy.join("Cargo.lock"))
                .expect("open");
            f.write_all(b"v2").expect("rewrite");
        }
        std::fs::remove_file(copy.join("data/keep.txt")).expect("delete");
        assert_eq!(
            std::fs::read_to_string(ws.join("Cargo.lock")).expect("read"),
            "v1\n"
        );
        assert!(ws.join("data/keep.txt").exists());
        let mode = std::fs::metadata(copy.join("run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(copy.join("link")).expect("link"),
            Path::new("data/keep.txt")
        );
        assert_eq!(
            std::fs::metadata(copy.join("data/ro"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o555
        );
        drop(iso);
        assert!(!copy.exists(), "the copy is removed");
        std::fs::set_permissions(ws.join("data/ro"), PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
}
