//! A cached bare mirror of one repository, and reading commits straight from it.
//!
//! Each configured repository gets `state_dir/mirrors/<name>.git`: created by a fetch into a
//! fresh bare repository (cloned into a temporary directory and renamed into place, so a crash
//! never leaves a half-made mirror under the real name), then kept current with
//! [`Mirror::fetch`] (every branch and tag, pruned). Runs never touch it: they get a
//! [`Workspace`](super::Workspace) written from its objects. Reading workflow files and
//! diffing commits for path filters happens here without any checkout.
//!
//! Transports: local paths, `file://`, `git://`, `http://` and `https://` (no ssh). A
//! repository's `credentials` name environment variables read at each clone and fetch and
//! answered to HTTP authentication; their values never appear in an error or a log line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, ObjectType, Oid,
    RemoteCallbacks, Repository,
};

use crate::config::Credentials;

/// The user name sent with a token when the credentials name no `username_env`.
pub const TOKEN_USERNAME: &str = "x-access-token";

/// How many times one fetch answers the remote's authentication request before giving up
/// (libgit2 asks again after every rejection).
const MAX_AUTH_ATTEMPTS: u32 = 2;

/// Errors from mirrors and workspaces.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A repository name that cannot be a directory name.
    #[error("invalid repository name `{0}`: use letters, digits, `.`, `_` and `-`")]
    InvalidName(String),
    /// A git operation failed.
    #[error("{action} `{target}`: {source}")]
    Git {
        /// What we were doing.
        action: &'static str,
        /// The repository, URL, commit or path concerned.
        target: String,
        /// The underlying git error.
        source: git2::Error,
    },
    /// A file-system operation failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A commit (or branch) that the mirror does not have.
    #[error("commit `{0}` not found in the mirror (fetch first?)")]
    UnknownCommit(String),
    /// A tree entry whose name would escape the workspace (`..`, `.git`, a slash).
    #[error("refusing to check out unsafe path `{0}`")]
    UnsafePath(String),
    /// A checkout destination that already exists.
    #[error("workspace `{0}` already exists")]
    WorkspaceExists(PathBuf),
    /// An environment variable named by a repository's `credentials` is not set (or not
    /// UTF-8). Carries the variable's name, never a value.
    #[error(
        "fetch `{url}`: environment variable `{variable}` (credentials of repository `{repo}`) is not set"
    )]
    MissingCredential {
        /// The repository's configured name.
        repo: String,
        /// The URL fetched.
        url: String,
        /// The variable's name.
        variable: String,
    },
    /// The remote refused the configured credentials (or kept asking for them).
    #[error("fetch `{url}`: the remote rejected the credentials from {variables}")]
    CredentialsRejected {
        /// The URL fetched.
        url: String,
        /// The variables the credentials came from, such as `` `GIT_USER`/`GIT_TOKEN` ``.
        variables: String,
    },
    /// The remote asked for authentication that is not configured or not supported.
    #[error("fetch `{url}`: {reason}")]
    AuthenticationRequired {
        /// The URL fetched.
        url: String,
        /// What was asked and missing.
        reason: String,
    },
}

impl MirrorError {
    pub(crate) fn git(
        action: &'static str,
        target: impl Into<String>,
    ) -> impl FnOnce(git2::Error) -> MirrorError {
        let target = target.into();
        move |source| MirrorError::Git {
            action,
            target,
            source,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> MirrorError {
        let path = path.into();
        move |source| MirrorError::Io {
            action,
            path,
            source,
        }
    }
}

/// A workflow file read from a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFile {
    /// Its path in the repository, such as `.workflows/build.yaml`.
    pub path: String,
    /// Its text. Invalid UTF-8 is replaced by U+FFFD, so the parser reports the place.
    pub text: String,
}

/// Who made a commit and why, for `repo.message` and `repo.author`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The full commit id.
    pub id: String,
    /// The commit message.
    pub message: String,
    /// The author's name.
    pub author: String,
    /// The author's email.
    pub email: String,
}

/// The fetch refspecs of a mirror: every branch and tag, force-updated.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// The longest a connection to a remote may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets libgit2's network timeouts for every later fetch and clone of this process: opening
/// a connection may take `min(10 s, timeout)`; a read or write on it that waits longer than
/// `timeout` fails the fetch (libgit2 reports "timed out"). Without them a remote that
/// accepts and then stays silent would hold its repository's watcher forever.
///
/// libgit2 keeps these settings in plain globals: call this before other threads use git.
pub fn set_network_timeouts(timeout: Duration) -> Result<(), MirrorError> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    let wrap = |source: git2::Error| MirrorError::Git {
        action: "set the network timeouts of",
        target: "libgit2".to_string(),
        source,
    };
    // SAFETY: called at start-up (`agent daemon`, before its runtime's threads exist) and in
    // tests before any fetch; nothing else reads or writes these globals concurrently.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(
            timeout.min(CONNECT_TIMEOUT),
        ))
        .map_err(wrap)?;
        git2::opts::set_server_timeout_in_milliseconds(millis(timeout)).map_err(wrap)?;
    }
    Ok(())
}

/// Removes the user information (`user:password@`) of a URL wherever it appears in `text`.
pub(crate) fn redact(text: &str, url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    let clean = format!("{scheme}://***@{}", &rest[at + 1..]);
    text.replace(url, &clean)
}

/// A cached bare mirror of a repository.
pub struct Mirror {
    name: String,
    url: String,
    path: PathBuf,
    repo: Repository,
    /// The environment variables to authenticate with (names only).
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("path", &self.path)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Checks that a repository name can name a directory.
fn check_name(name: &str) -> Result<(), MirrorError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(MirrorError::InvalidName(name.to_string()))
    }
}

/// A URL as errors show it: without any `user:password@` written into it.
fn shown_url(url: &str) -> String {
    redact(url, url)
}

/// A local path becomes absolute (libgit2 resolves relative paths against the process's
/// current directory at fetch time, which may change); URLs stay as they are.
fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    match std::fs::canonicalize(url) {
        Ok(path) => path.to_string_lossy().into_owned(),
        Err(_) => url.to_string(),
    }
}

impl Mirror {
    /// The directory of the mirror of `name` under `state_dir`.
    pub fn path_for(state_dir: &Path, name: &str) -> PathBuf {
        crate::state_dir::mirror_dir(state_dir, name)
    }

    /// Opens the mirror of `name` under `state_dir`, cloning it from `url` first if it does
    /// not exist (or is unreadable). An existing mirror is not fetched: call
    /// [`Mirror::fetch`]. If `url` changed since the clone, the mirror follows the new one.
    pub fn open_or_clone(state_dir: &Path, name: &str, url: &str) -> Result<Mirror, MirrorError> {
        Mirror::open_or_clone_with(state_dir, name, url, None)
    }

    /// [`Mirror::open_or_clone`] authenticating with `credentials` (environment variable
    /// names, read at the clone and at every later [`Mirror::fetch`]).
    pub fn open_or_clone_with(
        state_dir: &Path,
        name: &str,
        url: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Mirror, MirrorError> {
        check_name(name)?;
        let url = normalize_url(url);
        let path = Mirror::path_for(state_dir, name);
        if path.exists() {
            match Repository::open_bare(&path) {
                Ok(repo) => {
                    let mut mirror = Mirror {
                        name: name.to_string(),
                        url: url.clone(),
                        path,
                        repo,
                        credentials: credentials.cloned(),
                    };
                    mirror.follow_url()?;
                    return Ok(mirror);
                }
                Err(err) => {
                    tracing::warn!(mirror = %path.display(), error = %err,
                        "unreadable mirror, cloning it again");
                    remove_tree(&path)?;
                }
            }
        }
        Mirror::clone_into(&path, name, &url, credentials)
    }

    /// Opens an existing mirror without any network access (a second handle for another
    /// thread: a `Mirror` is `Send` but not `Sync`).
    pub fn open(state_dir: &Path, name: &str) -> Result<Mirror, MirrorError> {
        check_name(name)?;
        let path = Mirror::path_for(state_dir, name);
        let repo = Repository::open_bare(&path)
            .map_err(MirrorError::git("open mirror", path.display().to_string()))?;
        let url = repo
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().ok().map(str::to_string))
            .unwrap_or_default();
        Ok(Mirror {
            name: name.to_string(),
            url,
            path,
            repo,
            credentials: None,
        })
    }

    /// The same mirror, authenticating its fetches with `credentials` (environment variable
    /// names).
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Mirror {
        self.credentials = credentials;
        self
    }

    /// Clones into a temporary sibling directory, then renames it into place.
    fn clone_into(
        path: &Path,
        name: &str,
        url: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Mirror, MirrorError> {
        let parent = path.parent().expect("a mirror path has a parent");
        std::fs::create_dir_all(parent).map_err(MirrorError::io("create directory", parent))?;
        // Leftovers of a clone interrupted by a crash (of another process: clones of this
        // process may be in flight, and carry our pid).
        let prefix = format!(".{name}.git.tmp-");
        let ours = format!("{prefix}{}-", std::process::id());
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if file_name.starts_with(&prefix) && !file_name.starts_with(&ours) {
                    remove_tree(&entry.path())?;
                }
            }
        }
        static CLONES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CLONES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!("{ours}{n}"));
        let repo = Repository::init_bare(&tmp)
            .map_err(MirrorError::git("create mirror", tmp.display().to_string()))?;
        repo.remote_with_fetch("origin", url, MIRROR_REFSPECS[0])
            .map_err(MirrorError::git("add remote", shown_url(url)))?;
        repo.remote_add_fetch("origin", MIRROR_REFSPECS[1])
            .map_err(MirrorError::git("add remote", shown_url(url)))?;
        let mut mirror = Mirror {
            name: name.to_string(),
            url: url.to_string(),
            path: tmp.clone(),
            repo,
            credentials: credentials.cloned(),
        };
        if let Err(err) = mirror.fetch() {
            let _ = remove_tree(&tmp);
            return Err(err);
        }
        drop(mirror);
        if path.exists() {
            // Another clone (a watcher, a run) finished first: use its mirror.
            remove_tree(&tmp)?;
        } else if let Err(err) = std::fs::rename(&tmp, path) {
            let _ = remove_tree(&tmp);
            if !path.exists() {
                return Err(MirrorError::io("rename mirror into", path)(err));
            }
        }
        let repo = Repository::open_bare(path)
            .map_err(MirrorError::git("open mirror", path.display().to_string()))?;
        Ok(Mirror {
            name: name.to_string(),
            url: url.to_string(),
            path: path.to_path_buf(),
            repo,
            credentials: credentials.cloned(),
        })
    }

    /// Points `origin` at the configured URL if it changed.
    fn follow_url(&mut self) -> Result<(), MirrorError> {
        let current = self
            .repo
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().ok().map(str::to_string));
        if current.as_deref() != Some(self.url.as_str()) {
            if current.is_none() {
                self.repo
                    .remote_with_fetch("origin", &self.url, MIRROR_REFSPECS[0])
                    .map_err(MirrorError::git("add remote", shown_url(&self.url)))?;
                self.repo
                    .remote_add_fetch("origin", MIRROR_REFSPECS[1])
                    .map_err(MirrorError::git("add remote", shown_url(&self.url)))?;
            } else {
                self.repo
                    .remote_set_url("origin", &self.url)
                    .map_err(MirrorError::git("set remote url", shown_url(&self.url)))?;
            }
        }
        Ok(())
    }

    /// Fetches every branch and tag from the remote (removing the ones it deleted) and points
    /// the mirror's `HEAD` at the remote's default branch.
    pub fn fetch(&mut self) -> Result<(), MirrorError> {
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(MirrorError::git("find remote of", &self.name))?;
        let auth = std::cell::RefCell::new(AuthState::default());
        let mut opts = FetchOptions::new();
        opts.prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        if let Some(credentials) = &self.credentials {
            let mut callbacks = RemoteCallbacks::new();
            callbacks.credentials(|_url, url_user, allowed| {
                answer_credentials(credentials, url_user, allowed, &mut auth.borrow_mut())
            });
            opts.remote_callbacks(callbacks);
        }
        let fetched = remote.fetch(&MIRROR_REFSPECS, Some(&mut opts), Some("agent: fetch"));
        drop(opts);
        if let Err(err) = fetched {
            return Err(self.fetch_error(err, auth.into_inner()));
        }
        if let Ok(head) = remote.default_branch()
            && let Ok(head) = head.as_str()
            && head.starts_with("refs/heads/")
            && self.repo.find_reference(head).is_ok()
        {
            let current = self
                .repo
                .find_reference("HEAD")
                .ok()
                .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string));
            if current.as_deref() != Some(head) {
                self.repo
                    .set_head(head)
                    .map_err(MirrorError::git("set HEAD of", &self.name))?;
            }
        }
        Ok(())
    }

    /// The error of a failed fetch: the authentication outcome when that is why it failed
    /// (the messages name variables, never values), else libgit2's.
    fn fetch_error(&self, err: git2::Error, auth: AuthState) -> MirrorError {
        let url = shown_url(&self.url);
        match auth.failure {
            Some(AuthFailure::Missing(variable)) => MirrorError::MissingCredential {
                repo: self.name.clone(),
                url,
                variable,
            },
            Some(AuthFailure::Rejected) => MirrorError::CredentialsRejected {
                url,
                variables: self
                    .credentials
                    .as_ref()
                    .map(describe_variables)
                    .unwrap_or_default(),
            },
            Some(AuthFailure::Unsupported(reason)) => {
                MirrorError::AuthenticationRequired { url, reason }
            }
            None => MirrorError::Git {
                action: "fetch",
                target: url,
                source: err,
            },
        }
    }

    /// The repository's configured name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The URL (or absolute local path) fetched from.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The mirror's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying git2 repository (read it; do not write).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The remote's default branch (the branch its `HEAD` names), if known.
    pub fn default_branch(&self) -> Option<String> {
        let head = self.repo.find_reference("HEAD").ok()?;
        let target = head.symbolic_target().ok()??;
        let branch = target.strip_prefix("refs/heads/")?;
        self.repo
            .find_reference(target)
            .ok()
            .map(|_| branch.to_string())
    }

    /// Every branch with the commit it points at, by name.
    pub fn branches(&self) -> Result<Vec<(String, Oid)>, MirrorError> {
        let refs = self
            .repo
            .references_glob("refs/heads/*")
            .map_err(MirrorError::git("list branches of", &self.name))?;
        let mut out = Vec::new();
        for reference in refs.flatten() {
            let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit()) else {
                continue;
            };
            if let Some(branch) = name.strip_prefix("refs/heads/") {
                out.push((branch.to_string(), commit.id()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every tag with the commit it points at (annotated tags peeled), by name. Tags of
    /// anything but a commit are left out.
    pub(crate) fn tags(&self) -> Result<Vec<(String, Oid)>, MirrorError> {
        let refs = self
            .repo
            .references_glob("refs/tags/*")
            .map_err(MirrorError::git("list tags of", &self.name))?;
        let mut out = Vec::new();
        for reference in refs.flatten() {
            let (Ok(name), Ok(commit)) = (reference.name(), reference.peel_to_commit()) else {
                continue;
            };
            if let Some(tag) = name.strip_prefix("refs/tags/") {
                out.push((tag.to_string(), commit.id()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Fetches one ref of the remote into the same name in the mirror (such as a forge's
    /// `refs/pull/7/head`) and answers the commit it points at.
    pub(crate) fn fetch_ref(&mut self, name: &str) -> Result<Oid, MirrorError> {
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(MirrorError::git("find remote of", &self.name))?;
        let auth = std::cell::RefCell::new(AuthState::default());
        let mut opts = FetchOptions::new();
        // No FETCH_HEAD: the git watcher may fetch into the same mirror at the same time.
        opts.download_tags(AutotagOption::None)
            .update_fetchhead(false);
        if let Some(credentials) = &self.credentials {
            let mut callbacks = RemoteCallbacks::new();
            callbacks.credentials(|_url, url_user, allowed| {
                answer_credentials(credentials, url_user, allowed, &mut auth.borrow_mut())
            });
            opts.remote_callbacks(callbacks);
        }
        let refspec = format!("+{name}:{name}");
        let fetched = remote.fetch(
            &[refspec.as_str()],
            Some(&mut opts),
            Some("agent: fetch ref"),
        );
        drop(opts);
        if let Err(err) = fetched {
            return Err(self.fetch_error(err, auth.into_inner()));
        }
        self.repo
            .find_reference(name)
            .and_then(|r| r.peel_to_commit())
            .map(|c| c.id())
            .map_err(|_| MirrorError::UnknownCommit(name.to_string()))
    }

    /// The commit a branch points at, or `None` if there is no such branch.
    pub fn branch_head(&self, branch: &str) -> Result<Option<Oid>, MirrorError> {
        let name = format!("refs/heads/{branch}");
        match self.repo.find_reference(&name) {
            Ok(reference) => reference
                .peel_to_commit()
                .map(|c| Some(c.id()))
                .map_err(MirrorError::git("resolve", name)),
            Err(err) if err.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(err) => Err(MirrorError::Git {
                action: "resolve",
                target: name,
                source: err,
            }),
        }
    }

    /// Resolves a commit id (full or abbreviated), branch or tag to a commit id.
    pub fn resolve_commit(&self, spec: &str) -> Result<Oid, MirrorError> {
        self.repo
            .revparse_single(spec)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
            .map_err(|_| MirrorError::UnknownCommit(spec.to_string()))
    }

    /// Message and author of a commit.
    pub fn commit_info(&self, commit: Oid) -> Result<CommitInfo, MirrorError> {
        let c = self.find_commit(commit)?;
        let author = c.author();
        Ok(CommitInfo {
            id: commit.to_string(),
            message: String::from_utf8_lossy(c.message_bytes()).into_owned(),
            author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
        })
    }

    /// Looks a commit up, mapping "missing" to [`MirrorError::UnknownCommit`].
    pub(crate) fn find_commit(&self, commit: Oid) -> Result<git2::Commit<'_>, MirrorError> {
        self.repo
            .find_commit(commit)
            .map_err(|_| MirrorError::UnknownCommit(commit.to_string()))
    }

    /// The files that differ between two commits (added, deleted, modified, type-changed;
    /// a rename counts as both paths), sorted, for `on.push.paths` filters. With no `old`
    /// commit (a branch seen for the first time) every file of `new` counts as changed. An
    /// `old` commit the mirror does not have is [`MirrorError::UnknownCommit`]; the caller
    /// decides (after a force-push, treating it as `None` is the safe choice).
    pub fn changed_paths(&self, old: Option<Oid>, new: Oid) -> Result<Vec<String>, MirrorError> {
        let new_tree = self
            .find_commit(new)?
            .tree()
            .map_err(MirrorError::git("read tree of", new.to_string()))?;
        let old_tree = match old {
            Some(old) => Some(
                self.find_commit(old)?
                    .tree()
                    .map_err(MirrorError::git("read tree of", old.to_string()))?,
            ),
            None => None,
        };
        let diff = self
            .repo
            .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)
            .map_err(MirrorError::git("diff", format!("{old:?}..{new}")))?;
        let mut paths = Vec::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path_bytes()
                    && !file.id().is_zero()
                {
                    paths.push(String::from_utf8_lossy(path).into_owned());
                }
            }
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// The `.workflows/*.yaml` and `.workflows/*.yml` files at a commit (direct children of
    /// `.workflows` only; subdirectories such as `skills/` are not workflows), sorted by path.
    /// Reads the objects; no checkout.
    pub fn read_workflow_files(&self, commit: Oid) -> Result<Vec<WorkflowFile>, MirrorError> {
        let tree = self
            .find_commit(commit)?
            .tree()
            .map_err(MirrorError::git("read tree of", commit.to_string()))?;
        let Some(dir) = tree.get_name(".workflows") else {
            return Ok(Vec::new());
        };
        if dir.kind() != Some(ObjectType::Tree) {
            return Ok(Vec::new());
        }
        let dir = self
            .repo
            .find_tree(dir.id())
            .map_err(MirrorError::git("read tree", ".workflows"))?;
        let mut files = Vec::new();
        for entry in dir.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            if !is_yaml || entry.kind() != Some(ObjectType::Blob) {
                continue;
            }
            let path = format!(".workflows/{name}");
            let blob = self
                .repo
                .find_blob(entry.id())
                .map_err(MirrorError::git("read", &path))?;
            files.push(WorkflowFile {
                path,
                text: String::from_utf8_lossy(blob.content()).into_owned(),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// Why authentication failed during one fetch.
#[derive(Debug)]
enum AuthFailure {
    /// This variable is not set.
    Missing(String),
    /// The remote asked again after every answer.
    Rejected,
    /// The remote asked for something other than a user name and password.
    Unsupported(String),
}

/// The credential callback's memory across one fetch.
#[derive(Debug, Default)]
struct AuthState {
    attempts: u32,
    failure: Option<AuthFailure>,
}

/// `` `USER`/`SECRET` `` or `` `SECRET` ``: where credentials come from, for messages.
fn describe_variables(credentials: &Credentials) -> String {
    let names: Vec<String> = [&credentials.username_env, &credentials.password_env]
        .into_iter()
        .flatten()
        .map(|name| format!("`{name}`"))
        .collect();
    names.join("/")
}

/// Reads an environment variable named by the credentials; unset or not UTF-8 is missing.
fn read_variable(name: &str, state: &mut AuthState) -> Result<String, git2::Error> {
    std::env::var(name).map_err(|_| {
        state.failure = Some(AuthFailure::Missing(name.to_string()));
        git2::Error::from_str(&format!("environment variable `{name}` is not set"))
    })
}

/// Answers libgit2's request for credentials: user name and secret from the environment,
/// read now (a rotated token is picked up by the next fetch). Gives up after
/// [`MAX_AUTH_ATTEMPTS`] answers, since libgit2 asks again after each rejection.
fn answer_credentials(
    credentials: &Credentials,
    url_user: Option<&str>,
    allowed: CredentialType,
    state: &mut AuthState,
) -> Result<Cred, git2::Error> {
    if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        let reason = format!("the remote asks for unsupported authentication ({allowed:?})");
        state.failure = Some(AuthFailure::Unsupported(reason.clone()));
        return Err(git2::Error::from_str(&reason));
    }
    if state.attempts >= MAX_AUTH_ATTEMPTS {
        state.failure = Some(AuthFailure::Rejected);
        return Err(git2::Error::from_str("the remote rejected the credentials"));
    }
    state.attempts += 1;
    let Some(secret_name) = credentials.password_env.as_deref() else {
        let reason = "the remote asks for a password and the credentials name no \
                      `password_env` or `token_env`"
            .to_string();
        state.failure = Some(AuthFailure::Unsupported(reason.clone()));
        return Err(git2::Error::from_str(&reason));
    };
    let user = match credentials.username_env.as_deref() {
        Some(name) => read_variable(name, state)?,
        None => url_user
            .filter(|u| !u.is_empty())
            .unwrap_or(TOKEN_USERNAME)
            .to_string(),
    };
    let secret = read_variable(secret_name, state)?;
    Cred::userpass_plaintext(&user, &secret)
}

/// Removes a directory tree, first giving back write permission where a step took it away.
pub(crate) fn remove_tree(path: &Path) -> Result<(), MirrorError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            match std::fs::remove_dir_all(path) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(MirrorError::Io {
                    action: "remove",
                    path: path.to_path_buf(),
                    source: err,
                }),
            }
        }
    }
}

/// Adds owner rwx to every directory under `path` (not following symlinks).
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = std::fs::set_permissions(path, perms);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libgit2_speaks_https() {
        assert!(git2::Version::get().https(), "git2 built without https");
    }

    #[test]
    fn credentials_are_asked_for_a_bounded_number_of_times() {
        let credentials = Credentials {
            username_env: None,
            password_env: Some("PATH".to_string()),
        };
        let mut state = AuthState::default();
        for _ in 0..MAX_AUTH_ATTEMPTS {
            let cred = answer_credentials(
                &credentials,
                None,
                CredentialType::USER_PASS_PLAINTEXT,
                &mut state,
            );
            assert!(cred.is_ok());
        }
        let again = answer_credentials(
            &credentials,
            None,
            CredentialType::USER_PASS_PLAINTEXT,
            &mut state,
        );
        assert!(again.is_err());
        assert!(matches!(state.failure, Some(AuthFailure::Rejected)));
    }

    #[test]
    fn errors_show_urls_without_their_user_information() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = "http://bob:hunter2@127.0.0.1:1/r.git";
        let err = Mirror::open_or_clone(tmp.path(), "r", url).expect_err("nothing listens");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("http://***@127.0.0.1:1/r.git"), "{text}");
    }

    #[test]
    fn only_user_and_password_authentication_is_answered() {
        let credentials = Credentials {
            username_env: None,
            password_env: Some("PATH".to_string()),
        };
        let mut state = AuthState::default();
        let cred = answer_credentials(&credentials, None, CredentialType::SSH_KEY, &mut state);
        assert!(cred.is_err());
        assert!(matches!(state.failure, Some(AuthFailure::Unsupported(_))));
        assert_eq!(
            describe_variables(&Credentials {
                username_env: Some("U".into()),
                password_env: Some("P".into()),
            }),
            "`U`/`P`"
        );
    }
}
