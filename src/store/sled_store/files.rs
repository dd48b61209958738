//! The store's directory and files: private to the gateway's user.

use std::path::Path;

use super::StoreError;

/// Makes sure the store's directory exists and only its owner can enter it:
/// a new one is created `0700` whatever the umask, so the files sled writes
/// into it, now and later, are out of everyone else's reach. An existing one
/// that others may enter is left as the operator made it, with a warning.
/// True when the directory was created now.
pub(super) fn private_dir(path: &Path) -> Result<bool, StoreError> {
    let cannot = |e: std::io::Error| {
        StoreError::Unavailable(format!(
            "cannot open {}: cannot create its directory: {e}",
            path.display()
        ))
    };
    if path.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    store = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the token store's directory is open to other users; make it private with: chmod -R go-rwx {}",
                    path.display()
                );
            }
        }
        return Ok(false);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(path).map_err(cannot)?;
        // `mode` is filtered by the umask: set it outright.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(cannot)?;
    }
    #[cfg(not(unix))]
    builder.create(path).map_err(cannot)?;
    Ok(true)
}

/// Files of a store just created: `0600`, directories `0700`, whatever the
/// umask made them.
pub(super) fn private_files(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let (mode, is_dir) = match e.file_type() {
                    Ok(t) if t.is_dir() => (0o700, true),
                    Ok(t) if t.is_file() => (0o600, false),
                    _ => continue,
                };
                if let Err(err) =
                    std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode))
                {
                    tracing::warn!(file = %e.path().display(), error = %err, "cannot make a token store file private");
                }
                if is_dir {
                    stack.push(e.path());
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
