//! Writing the config file so that a crash at any moment leaves either the
//! old file or the new one, never a broken or half-written one.
//!
//! Owns the write steps: a temporary file beside the config (0600), write,
//! fsync, rename over the config, fsync the directory. Must not validate or
//! decide anything: callers pass text that `Config::parse` already accepted.
//!
//! Debug builds (never release builds) honour `ADJUNCT_GATEWAY_CRASH_AT`: at
//! the named step the process logs `crash point <step> reached` and stops
//! there, so a test can SIGKILL it at exactly that step.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The steps of a write, in order; the names `ADJUNCT_GATEWAY_CRASH_AT` takes.
pub const STEPS: [&str; 5] = [
    "before-write",
    "half-written",
    "after-write",
    "after-fsync",
    "after-rename",
];

/// The temporary file a write of `path` goes through: `.<name>.tmp` beside
/// it, on the same file system so the rename is atomic. A crash leaves it
/// behind at worst; the next write truncates it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "config".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces the file at `path` with `text`, atomically and durably.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = temp_path(path);
    crash_point(STEPS[0]);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    // `mode` applies only to new files: a leftover temp file is tightened too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let (head, tail) = text.as_bytes().split_at(text.len() / 2);
    f.write_all(head)?;
    f.flush()?;
    crash_point(STEPS[1]);
    f.write_all(tail)?;
    crash_point(STEPS[2]);
    // The data must be on disk before the rename makes it the config, or a
    // power loss could leave the new name pointing at an empty file.
    f.sync_all()?;
    drop(f);
    crash_point(STEPS[3]);
    std::fs::rename(&tmp, path)?;
    crash_point(STEPS[4]);
    sync_dir(path)
}

/// Makes the rename itself durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Test hook: stop at `step` if `ADJUNCT_GATEWAY_CRASH_AT` names it.
#[cfg(debug_assertions)]
fn crash_point(step: &str) {
    if std::env::var("ADJUNCT_GATEWAY_CRASH_AT").is_ok_and(|s| s == step) {
        eprintln!("crash point {step} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(not(debug_assertions))]
fn crash_point(_step: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_privately_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, "old = 1\n").unwrap();
        write_atomic(&path, "new = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new = 2\n");
        assert!(!temp_path(&path).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
