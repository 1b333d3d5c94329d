//! The one folder walk: image files under folders, recursively, in sorted order. Symbolic
//! links are followed, but each directory is entered once (link cycles end) and each file is
//! listed once; only regular files are returned (a FIFO or socket named `x.jpg` is skipped).

use anyhow::{Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File extensions picked up when walking folders (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "jpe"];

/// The inputs to score, and how many files in walked folders were not images by extension.
#[derive(Debug, Default)]
pub struct Inputs {
    pub files: Vec<PathBuf>,
    pub ignored: usize,
}

/// Whether the file name ends in one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Regular files under `dir`, recursively, in sorted order; hidden entries are left out.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut walk = Walk::default();
    if let Ok(root) = std::fs::canonicalize(dir) {
        walk.above = root.ancestors().map(Path::to_path_buf).collect();
    }
    walk.dir(dir)?;
    Ok(walk.files)
}

/// Identity of a file or directory: (device, inode).
type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[derive(Default)]
struct Walk {
    /// The walk's root and every directory above it, resolved: a link back up to one of them
    /// would re-walk the tree (or a sibling of the root) and is not followed.
    above: Vec<PathBuf>,
    dirs_seen: HashSet<FileId>,
    files_seen: HashSet<FileId>,
    files: Vec<PathBuf>,
}

impl Walk {
    fn dir(&mut self, dir: &Path) -> Result<()> {
        let meta = std::fs::metadata(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        if !self.dirs_seen.insert(file_id(&meta)) {
            return Ok(());
        }
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            // Follows links; a dangling link is skipped like any unreadable entry.
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                if std::fs::canonicalize(&p).is_ok_and(|c| self.above.contains(&c)) {
                    continue;
                }
                self.dir(&p)?;
            } else if meta.is_file() && self.files_seen.insert(file_id(&meta)) {
                self.files.push(p);
            }
        }
        Ok(())
    }
}

/// Expands files and folders (recursively, in sorted order). Files named explicitly are
/// always scored, whatever their extension; missing ones become error rows.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Inputs> {
    let mut out = Inputs::default();
    for p in paths {
        if p.is_dir() {
            let (images, others): (Vec<PathBuf>, Vec<PathBuf>) = files_under(p)?.into_iter().partition(|p| has_image_extension(p));
            out.files.extend(images);
            out.ignored += others.len();
        } else {
            out.files.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_cycles_visit_each_file_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a.jpg"), b"x").unwrap();
        std::fs::write(d.path().join("sub/b.png"), b"x").unwrap();
        std::os::unix::fs::symlink(".", d.path().join("self")).unwrap();
        std::os::unix::fs::symlink("..", d.path().join("sub/up")).unwrap();
        std::os::unix::fs::symlink("a.jpg", d.path().join("z.jpg")).unwrap();
        let files = files_under(d.path()).unwrap();
        let names: Vec<String> = files.iter().map(|p| p.strip_prefix(d.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a.jpg", "sub/b.png"]);
    }

    #[test]
    fn fifos_are_not_files() {
        let d = tempfile::tempdir().unwrap();
        let fifo = std::ffi::CString::new(d.path().join("x.jpg").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::fs::write(d.path().join("y.jpg"), b"x").unwrap();
        let inputs = collect_inputs(&[d.path().to_path_buf()]).unwrap();
        assert_eq!(inputs.files, [d.path().join("y.jpg")]);
        assert_eq!(inputs.ignored, 0);
    }
}
