//! A `run:` step with an explicit `shell:`: the script is written to a file in the run's
//! private directory and the shell runs that file, as GitHub Actions does (`bash` named
//! explicitly is `bash --noprofile --norc -eo pipefail {0}`; see [`runners::plan_shell_file`]).
//! Without `shell:` scripts keep running through `runners::plan_script` (direct exec or
//! `bash --noprofile --norc -e -c`, no file).

use super::run_ctx::RunCtx;

/// Writes `text` to a script file for step `id` and returns how `shell` runs it. The error
/// is the step's failure message.
pub(crate) fn plan(
    ctx: &RunCtx<'_>,
    id: &str,
    shell: &str,
    text: &str,
) -> Result<runners::ScriptPlan, String> {
    let safe: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let file = ctx.rundir.path().join(format!(
        "script-{}-{safe}{}",
        ctx.next_seq(),
        runners::script_file_suffix(shell)
    ));
    let plan = runners::plan_shell_file(shell, &file)?;
    let mut body = text.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    std::fs::write(&file, body)
        .map_err(|e| format!("cannot write the script file {}: {e}", file.display()))?;
    // The run's user reads it (the directory is theirs already).
    if let Some(user) = &ctx.run_user {
        user.chown(&file)
            .map_err(|e| format!("cannot hand the script file to the run's user: {e}"))?;
    }
    Ok(plan)
}
