//! Records the target triple and the git commit for `--version`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown-target".to_string());
    println!("cargo:rustc-env=TCPFILE_TARGET={target}");

    println!("cargo:rerun-if-env-changed=TCPFILE_COMMIT");
    let commit = std::env::var("TCPFILE_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TCPFILE_COMMIT={commit}");

    // Without this line any change in the package would run the script again.
    println!("cargo:rerun-if-changed=build.rs");
    for path in files_that_move_with_head() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// HEAD, the branch's ref file and packed-refs, wherever git keeps them (a
/// worktree's `.git` is a file naming another folder). Only files that exist:
/// cargo takes a missing one as changed, and would rebuild the crate at every
/// build outside a git checkout.
fn files_that_move_with_head() -> Vec<PathBuf> {
    let mut names = vec!["HEAD".to_string(), "packed-refs".to_string()];
    names.extend(git(&["symbolic-ref", "--quiet", "HEAD"]));
    names
        .iter()
        .filter_map(|name| git(&["rev-parse", "--git-path", name]))
        .map(PathBuf::from)
        .filter(|path| path.exists())
        .collect()
}

/// What `git ARGS` prints, trimmed; `None` when git fails or prints nothing.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}
