//! Files the CLIs replace whole (the operator's session, the configuration `staff add` edits):
//! written under a temporary name in the same directory, created with their final mode (never
//! readable by others, not even for a moment), then renamed over the old one, so a crash leaves
//! the old file or the new, never half.

use anyhow::Context as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Replaces `file` with `bytes`, the new file of `mode`.
pub fn replace(file: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = file.file_name().with_context(|| format!("{} needs a file name", file.display()))?;
    let temp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    // A leftover of a crashed run with our pid; `create_new` below never follows a link
    // someone planted under the temporary name.
    let _ = std::fs::remove_file(&temp);
    let write = || -> std::io::Result<()> {
        let mut out =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temp, file)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
        .with_context(|| format!("writing {}", file.display()))
}
