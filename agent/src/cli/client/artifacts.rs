//! `agent artifacts RUN [NAME] [-o DIR]`: without NAME, the run's artifacts as a table (or
//! the API's JSON with `--json`); with NAME, downloads its `.tar.gz` and unpacks it into DIR
//! (default: the current directory), the files at their workspace-relative paths.

use std::path::PathBuf;

use super::http::encode;
use super::{Client, ServerArgs, block_on, print_json, table};
use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::model::api::ArtifactList;

/// Arguments of `agent artifacts`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ArtifactsArgs {
    /// The run.
    pub(crate) run: String,
    /// Download this artifact (default: list the run's artifacts).
    pub(crate) name: Option<String>,
    /// With NAME: the step that kept it, when several steps kept one of that name.
    #[arg(long, requires = "name")]
    pub(crate) step: Option<String>,
    /// With NAME: unpack into this directory (created if missing).
    #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
    pub(crate) output: PathBuf,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

/// `agent artifacts`.
pub(crate) fn artifacts(args: ArtifactsArgs) -> i32 {
    block_on(async move {
        let client = Client::from_env(&args.server)?;
        let run = encode(&args.run);
        let Some(name) = &args.name else {
            let (list, raw): (ArtifactList, _) =
                client.get(&format!("/api/v1/runs/{run}/artifacts")).await?;
            if args.server.json {
                print_json(&raw);
            } else if list.artifacts.is_empty() {
                println!("run {} has no artifacts", list.run_id);
            } else {
                let rows: Vec<Vec<String>> = list
                    .artifacts
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            a.step.clone(),
                            a.files.to_string(),
                            a.size.to_string(),
                            a.digest.chars().take(19).collect(),
                            a.expires_at
                                .clone()
                                .unwrap_or_else(|| "with the run".into()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["NAME", "STEP", "FILES", "BYTES", "DIGEST", "EXPIRES"],
                        &rows
                    )
                );
            }
            return Ok(EXIT_OK);
        };
        let mut path = format!("/api/v1/runs/{run}/artifacts/{}", encode(name));
        if let Some(step) = &args.step {
            path.push_str(&format!("?step={}", encode(step)));
        }
        let bytes = client.bytes(&path, "application/gzip").await?;
        let dest = args.output.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            crate::engine::archive::unpack_from(std::io::Cursor::new(bytes), &dest)
        })
        .await;
        match unpacked {
            Ok(Ok(())) => {
                if !args.server.json {
                    eprintln!(
                        "artifact `{name}` of run {} unpacked into {}",
                        args.run,
                        args.output.display()
                    );
                }
                Ok(EXIT_OK)
            }
            Ok(Err(e)) => {
                eprintln!(
                    "error: cannot unpack artifact `{name}` into {}: {e}",
                    args.output.display()
                );
                Ok(EXIT_FAILED)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(EXIT_FAILED)
            }
        }
    })
}
