//! Running PostgreSQL's tools and turning their failures into errors.

use std::process::{ExitStatus, Output, Stdio};

use crate::error::{PgEmbedError, Result};

/// How many trailing output lines an error carries.
pub(crate) const TAIL_LINES: usize = 20;

/// A finished command: how it ended and what it printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub command: String,
    pub status: ExitStatus,
    /// Standard output followed by standard error.
    pub output: String,
}

impl Finished {
    fn new(command: String, output: Output) -> Self {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Self {
            command,
            status: output.status,
            output: text,
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The error for this command having failed while doing `step`.
    pub fn failure(self, step: &'static str, fix: &'static str) -> PgEmbedError {
        self.failure_with(step, fix, "")
    }

    /// Like [`Finished::failure`], appending `extra` (e.g. a server log tail).
    pub fn failure_with(self, step: &'static str, fix: &'static str, extra: &str) -> PgEmbedError {
        let mut output = tail(&self.output, TAIL_LINES);
        if !extra.trim().is_empty() {
            if !output.is_empty() {
                output.push('\n');
            }
            output.push_str(extra);
        }
        PgEmbedError::CommandFailed {
            step,
            command: self.command,
            status: self.status.to_string(),
            fix,
            output,
        }
    }
}

/// Runs `cmd` to completion, capturing its output.
pub(crate) async fn run(cmd: &mut tokio::process::Command) -> Result<Finished> {
    let command = describe(cmd.as_std());
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| spawn_error(cmd.as_std(), source))?;
    Ok(Finished::new(command, output))
}

/// Blocking twin of [`run`], for the quick probes done while locating binaries.
pub(crate) fn run_blocking(cmd: &mut std::process::Command) -> Result<Finished> {
    let command = describe(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| spawn_error(cmd, source))?;
    Ok(Finished::new(command, output))
}

fn spawn_error(cmd: &std::process::Command, source: std::io::Error) -> PgEmbedError {
    PgEmbedError::Spawn {
        program: cmd.get_program().into(),
        source,
    }
}

/// The command line as a person would type it (without quoting; for messages only).
fn describe(cmd: &std::process::Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` non-empty-trailing lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn failure_carries_output_and_extra() {
        let output = std::process::Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output()
            .expect("sh runs");
        let finished = Finished::new("sh -c ...".into(), output);
        let message = finished
            .failure_with("testing", "do nothing", "log line")
            .to_string();
        assert!(message.starts_with("testing failed (`sh -c ...` exit status: 3): do nothing\n"));
        assert!(message.ends_with("out\nerr\nlog line"), "{message}");
    }
}
