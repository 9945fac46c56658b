//! The archives of step artifacts: the files matching an `artifacts:` entry's `paths` are
//! packed into a `.tar.gz` stored in the state directory under the SHA-256 of its bytes
//! (content-addressed: identical artifacts share one file), and unpacked where a run (or
//! `agent artifacts`) wants them. [`ArtifactStore`] is what a run is given: the directory,
//! and the [`ArtifactLookup`] that answers `from:` (the daemon's store; `agent exec` has
//! none). Collecting them in a run is `artifacts.rs`.
//!
//! Archives are deterministic (sorted entries, fixed times and owners, mode 644 or 755 by
//! the executable bit), so the same files give the same digest. Paths never leave the
//! workspace: a pattern that is absolute or has a `..` component, and a matched symlink
//! whose target is outside the workspace, are refused.

use std::collections::HashSet;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::model::report::ArtifactReport;

/// Most directory entries one collection looks at.
const MAX_WALK_ENTRIES: usize = 1_000_000;

/// What [`ArtifactLookup::latest`] answers.
pub(crate) type LookupFuture =
    Pin<Box<dyn Future<Output = Result<Option<ArtifactReport>, String>> + Send>>;

/// Finds another workflow's artifact for `from:`.
pub(crate) trait ArtifactLookup: Send + Sync + std::fmt::Debug {
    /// Artifact `name` of the latest successful run of `workflow` on this run's branch that
    /// has one (its report with `from` filled in), or `None`.
    fn latest(&self, workflow: &str, name: &str) -> LookupFuture;
}

/// Where a run keeps artifacts.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactStore {
    /// The archives, `<dir>/<hex>.tar.gz` (`state_dir::artifacts_dir`).
    pub dir: PathBuf,
    /// Resolves `from:`; `None`: `from:` fails the step.
    pub lookup: Option<Arc<dyn ArtifactLookup>>,
}

/// The file of the archive with digest `sha256:<hex>` (`None` for a malformed digest).
pub(crate) fn blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| dir.join(format!("{hex}.tar.gz")))
}

/// A packed artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packed {
    /// `sha256:<hex>` of the archive.
    pub(crate) digest: String,
    /// Bytes of the archive.
    pub(crate) size: u64,
    /// Files in it.
    pub(crate) files: u64,
}

/// Checks one `paths` pattern: relative, without `..`; answers it without a leading `./`.
fn check_pattern(pattern: &str) -> Result<&str, String> {
    let p = pattern.strip_prefix("./").unwrap_or(pattern);
    if p.is_empty() {
        return Err("an empty path".into());
    }
    if Path::new(p).is_absolute() {
        return Err(format!(
            "`{pattern}` is an absolute path; paths are relative to the workspace"
        ));
    }
    if Path::new(p).components().any(|c| c == Component::ParentDir) {
        return Err(format!("`{pattern}` leaves the workspace (`..`)"));
    }
    Ok(p)
}

/// The workspace files matching `patterns` (a pattern naming a directory takes everything
/// under it), sorted by their workspace-relative path: `(relative path, file to read)`.
/// `.git` and the state directory holding `store` (`agent exec`'s `.agent/` sits in the
/// workspace) are never walked.
pub(crate) fn matching_files(
    workdir: &Path,
    patterns: &[String],
    store: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut set = globset::GlobSetBuilder::new();
    for pattern in patterns {
        let p = check_pattern(pattern)?.trim_end_matches('/');
        for glob in [p.to_string(), format!("{p}/**")] {
            let g = globset::GlobBuilder::new(&glob)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid glob `{pattern}`: {}", e.kind()))?;
            set.add(g);
        }
    }
    let set = set.build().map_err(|e| e.to_string())?;
    let root = workdir
        .canonicalize()
        .map_err(|e| format!("cannot read the workspace: {e}"))?;
    let mut files = Vec::new();
    let mut seen = 0usize;
    let mut visited: HashSet<PathBuf> = HashSet::from([root.clone()]);
    if let Some(state) = store.parent().and_then(|p| p.canonicalize().ok()) {
        visited.insert(state);
    }
    let mut stack = vec![(root.clone(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return Err(format!(
                    "the workspace has more than {MAX_WALK_ENTRIES} entries"
                ));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let matched = set.is_match(&path_rel);
            let mut path = entry.path();
            let mut is_dir = file_type.is_dir();
            if file_type.is_symlink() {
                // Only a symlink that could be collected (it matches, or a file under it
                // may) is judged; its target must be inside the workspace.
                let under = set.is_match(format!("{path_rel}/x"));
                if !matched && !under {
                    continue;
                }
                let target = std::fs::canonicalize(&path).map_err(|e| {
                    format!("`{path_rel}` is a symlink that cannot be followed: {e}")
                })?;
                if !target.starts_with(&root) {
                    return Err(format!(
                        "`{path_rel}` is a symlink pointing outside the workspace (to `{}`)",
                        target.display()
                    ));
                }
                is_dir = target.is_dir();
                path = target;
            }
            if is_dir {
                if name != ".git" && visited.insert(path.clone()) {
                    stack.push((path, path_rel));
                }
            } else if matched && path.is_file() {
                files.push((path_rel, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Packs the files matching `patterns` into a deterministic `.tar.gz` stored in `dir` under
/// its digest. No matching file is an error.
pub(crate) fn pack(workdir: &Path, patterns: &[String], dir: &Path) -> Result<Packed, String> {
    let files = matching_files(workdir, patterns, dir)?;
    if files.is_empty() {
        return Err(format!(
            "no file matches {}",
            patterns
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = write_archive(&files, &tmp);
    let (hex, size) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let digest = format!("sha256:{hex}");
    let blob = dir.join(format!("{hex}.tar.gz"));
    if blob.exists() {
        let _ = std::fs::remove_file(&tmp);
        touch(&blob);
    } else {
        std::fs::rename(&tmp, &blob).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot store the archive: {e}")
        })?;
    }
    Ok(Packed {
        digest,
        size,
        files: files.len() as u64,
    })
}

/// Writes the archive of `files` to `out`; answers its SHA-256 (hex) and size.
fn write_archive(files: &[(String, PathBuf)], out: &Path) -> Result<(String, u64), String> {
    let file = std::fs::File::create(out).map_err(|e| format!("cannot write the archive: {e}"))?;
    let hashing = HashingWriter {
        inner: io::BufWriter::new(file),
        hash: Sha256::new(),
        size: 0,
    };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (rel, path) in files {
        // The walk judged `path` a file inside the workspace; a symlink put in its place
        // since then is not followed.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| format!("cannot read `{rel}`: {e}"))?;
        tar.append_file(rel, &mut file)
            .map_err(|e| format!("cannot read `{rel}`: {e}"))?;
    }
    let gz = tar
        .into_inner()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    let mut hashing = gz
        .finish()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    hashing
        .inner
        .flush()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    file.sync_all()
        .map_err(|e| format!("cannot write the archive: {e}"))?;
    let hex: String = hashing
        .hash
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, hashing.size))
}

/// Unpacks an archive into `dest` (created; entries never land outside it).
pub(crate) fn unpack(blob: &Path, dest: &Path) -> io::Result<()> {
    let file = std::fs::File::open(blob)?;
    unpack_from(io::BufReader::new(file), dest)
}

/// Unpacks a `.tar.gz` stream into `dest` (created), keeping the executable bit; the tar
/// reader refuses entries that would land outside `dest`.
pub(crate) fn unpack_from(archive: impl io::Read, dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive.unpack(dest)
}

/// Sets a kept archive's modification time to now: the retention sweep spares archives
/// written or reused since the oldest running run started.
pub(crate) fn touch(blob: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(blob) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Deletes the archives in `dir` whose digest is not in `keep` and that were last written
/// before `spare_since` (archives of runs still running are newer); answers how many.
pub(crate) fn sweep(
    dir: &Path,
    keep: &HashSet<String>,
    spare_since: std::time::SystemTime,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let digest = match name.strip_suffix(".tar.gz") {
            Some(hex) => format!("sha256:{hex}"),
            None if name.starts_with(".tmp-") => String::new(),
            None => continue,
        };
        if keep.contains(&digest) {
            continue;
        }
        let recent = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= spare_since);
        if !recent && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A writer that hashes and counts what goes through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }

    /// Guards the archive format: the same files give the same digest, a directory pattern
    /// takes what is under it, bytes and the executable bit survive the round trip.
    #[test]
    fn packing_is_deterministic_and_round_trips() {
        let ws = tempfile::tempdir().expect("ws");
        let store = tempfile::tempdir().expect("store");
        write(ws.path(), "dist/a.bin", &[0, 1, 2, 255]);
        write(ws.path(), "dist/sub/run.sh", b"#!/bin/sh\necho hi\n");
        write(ws.path(), "other.txt", b"no");
        let exe = ws.path().join("dist/sub/run.sh");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let a = pack(ws.path(), &["dist".into()], store.path()).expect("pack");
        let b = pack(ws.path(), &["./dist/**".into()], store.path()).expect("pack");
        assert_eq!(a, b);
        assert_eq!(a.files, 2);
        let out = tempfile::tempdir().expect("out");
        unpack(
            &blob_path(store.path(), &a.digest).expect("path"),
            out.path(),
        )
        .expect("unpack");
        assert_eq!(
            std::fs::read(out.path().join("dist/a.bin")).expect("read"),
            [0, 1, 2, 255]
        );
        let mode = std::fs::metadata(out.path().join("dist/sub/run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{mode:o}");
        assert!(!out.path().join("other.txt").exists());
    }

    /// Guards the workspace boundary: `..`, absolute paths and symlinks leading outside are
    /// refused with the offending path named; nothing matching is an error too.
    #[test]
    fn escaping_paths_are_refused() {
        let ws = tempfile::tempdir().expect("ws");
        let outside = tempfile::tempdir().expect("outside");
        write(outside.path(), "secret", b"s");
        write(ws.path(), "ok.txt", b"ok");
        std::os::unix::fs::symlink(outside.path().join("secret"), ws.path().join("link"))
            .expect("symlink");
        let store = tempfile::tempdir().expect("store");
        let err = pack(ws.path(), &["../x".into()], store.path()).expect_err("..");
        assert!(err.contains("leaves the workspace"), "{err}");
        let err = pack(ws.path(), &["/etc/passwd".into()], store.path()).expect_err("abs");
        assert!(err.contains("absolute"), "{err}");
        let err = pack(ws.path(), &["*".into()], store.path()).expect_err("symlink");
        assert!(
            err.contains("`link` is a symlink pointing outside"),
            "{err}"
        );
        let err = pack(ws.path(), &["nothing/*".into()], store.path()).expect_err("none");
        assert!(err.contains("no file matches `nothing/*`"), "{err}");
        assert!(pack(ws.path(), &["ok.txt".into()], store.path()).is_ok());
    }

    /// Guards the sweep: unreferenced archives older than the cut go, kept and recent ones
    /// stay.
    #[test]
    fn sweep_removes_unreferenced_archives_only() {
        let dir = tempfile::tempdir().expect("dir");
        let a = format!("{}.tar.gz", "a".repeat(64));
        let b = format!("{}.tar.gz", "b".repeat(64));
        std::fs::write(dir.path().join(&a), b"x").expect("a");
        std::fs::write(dir.path().join(&b), b"x").expect("b");
        let keep = HashSet::from([format!("sha256:{}", "a".repeat(64))]);
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(sweep(dir.path(), &keep, past), 0, "recent archives stay");
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(sweep(dir.path(), &keep, future), 1);
        assert!(dir.path().join(&a).exists() && !dir.path().join(&b).exists());
    }
}
