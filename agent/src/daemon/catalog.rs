//! The workflows of a repository at a commit, by file and by name, parsed once per commit.
//!
//! Push triggers, cron, manual and hook runs and recovery all ask the same question (which
//! workflows does this commit have, and which file is workflow `NAME`); they read the answer
//! here. A commit's files never change, so a [`Catalog`] is cached by repository and commit
//! (the last [`CACHE_SIZE`] commits asked for).
//!
//! A file whose `name:` an earlier file (in path order) already has is invalid: workflows are
//! triggered and listed by name, so it could never be reached.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dsl::Workflow;
use git2::Oid;

use crate::daemon::run::mirror::{Mirror, MirrorError};

/// How many commits' catalogs are kept.
pub(crate) const CACHE_SIZE: usize = 32;

/// A cached catalog's key: the mirror's directory and the commit.
type CacheKey = (PathBuf, Oid);

/// The workflow files of one commit, in path order.
#[derive(Debug)]
pub(crate) struct Catalog {
    files: Vec<ParsedFile>,
}

impl Catalog {
    /// The catalog of `commit` in `mirror`: from the cache, or read and parsed now.
    pub(crate) fn at(mirror: &Mirror, commit: Oid) -> Result<Arc<Catalog>, MirrorError> {
        static CACHE: Mutex<VecDeque<(CacheKey, Arc<Catalog>)>> = Mutex::new(VecDeque::new());
        let key = (mirror.path().to_path_buf(), commit);
        let lock = || {
            CACHE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((_, found)) = lock().iter().find(|(k, _)| *k == key) {
            return Ok(found.clone());
        }
        let catalog = Arc::new(Catalog {
            files: parse_all(mirror, commit)?,
        });
        let mut cache = lock();
        if !cache.iter().any(|(k, _)| *k == key) {
            if cache.len() >= CACHE_SIZE {
                cache.pop_front();
            }
            cache.push_back((key, catalog.clone()));
        }
        Ok(catalog)
    }

    /// The valid workflows as `(path, workflow)`, in path order.
    pub(crate) fn valid(&self) -> impl Iterator<Item = (&str, &Workflow)> {
        self.files.iter().filter_map(|f| match f {
            ParsedFile::Valid { path, workflow } => Some((path.as_str(), &**workflow)),
            ParsedFile::Invalid { .. } => None,
        })
    }

    /// The workflow named `name` and its file.
    pub(crate) fn by_name(&self, name: &str) -> Option<(&str, &Workflow)> {
        self.valid().find(|(_, wf)| wf.name.value == name)
    }

    /// The file at `path`.
    pub(crate) fn by_file(&self, path: &str) -> Option<&ParsedFile> {
        self.files.iter().find(|f| f.path() == path)
    }

    /// The diagnostics of the invalid file whose stem is `stem` (an invalid file has no
    /// name, so it is known by its stem).
    pub(crate) fn invalid_by_stem(&self, stem: &str) -> Option<&str> {
        self.files.iter().find_map(|f| match f {
            ParsedFile::Invalid {
                stem: s,
                diagnostics,
                ..
            } if s == stem => Some(diagnostics.as_str()),
            _ => None,
        })
    }
}

/// Every workflow file of a commit, parsed (a clone of the commit's cached [`Catalog`]).
pub(crate) fn workflows_at(mirror: &Mirror, commit: Oid) -> Result<Vec<ParsedFile>, MirrorError> {
    Ok(Catalog::at(mirror, commit)?.files.clone())
}

/// A workflow file read at a commit: the valid workflow, or its stem and diagnostics.
#[derive(Debug, Clone)]
pub(crate) enum ParsedFile {
    /// A valid workflow.
    Valid {
        /// Its path in the repository.
        path: String,
        /// The workflow.
        workflow: Box<Workflow>,
    },
    /// A file with errors.
    Invalid {
        /// Its path in the repository.
        path: String,
        /// The file stem, which names the failed run.
        stem: String,
        /// The rendered diagnostics.
        diagnostics: String,
    },
}

impl ParsedFile {
    /// The file's path in the repository.
    pub(crate) fn path(&self) -> &str {
        match self {
            ParsedFile::Valid { path, .. } | ParsedFile::Invalid { path, .. } => path,
        }
    }
}

/// Reads and parses every workflow file of a commit (uncached). A file whose `name:` an earlier file
/// (in path order) already has is invalid: workflows are triggered and listed by name, so
/// it could never be reached.
fn parse_all(mirror: &Mirror, commit: Oid) -> Result<Vec<ParsedFile>, MirrorError> {
    let files = mirror.read_workflow_files(commit)?;
    let mut names: std::collections::HashMap<String, String> = Default::default();
    Ok(files
        .into_iter()
        .map(|file| match dsl::parse_str(&file.path, &file.text) {
            Ok((workflow, _warnings)) => match names.get(&workflow.name.value) {
                Some(first) => {
                    let source = dsl::SourceFile::new(&file.path, Some(file.text.clone()));
                    let diagnostic = dsl::Diagnostic::error(
                        workflow.name.span,
                        format!(
                            "duplicate workflow name `{}`: `{first}` has it too, and a workflow is triggered and listed by its name",
                            workflow.name.value
                        ),
                    )
                    .with_hint("give each workflow file its own `name:`")
                    .in_file(&source);
                    ParsedFile::Invalid {
                        stem: file_stem(&file.path),
                        diagnostics: diagnostic.render(),
                        path: file.path,
                    }
                }
                None => {
                    names.insert(workflow.name.value.clone(), file.path.clone());
                    ParsedFile::Valid {
                        path: file.path,
                        workflow: Box::new(workflow),
                    }
                }
            },
            Err(diags) => ParsedFile::Invalid {
                stem: file_stem(&file.path),
                diagnostics: diags.render(),
                path: file.path,
            },
        })
        .collect())
}

/// The stem of a repository path: `.workflows/build.yaml` -> `build`.
fn file_stem(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .unwrap_or(name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_name_invalid_files() {
        assert_eq!(file_stem(".workflows/build.yaml"), "build");
        assert_eq!(file_stem(".workflows/x.y.yml"), "x.y");
    }
}
