//! Atomic outputs: write into a hidden sibling directory or file, then rename it into
//! place. An interrupted or failed writer leaves the target untouched (and its staging
//! directory or file is removed when dropped).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A staging directory next to `target`, removed on drop unless committed.
pub struct StagingDir {
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Creates `<parent>/.<name>.tmp-<pid>-<host>` for `target`, after removing the staging
    /// directories that dead processes of this host left in `<parent>`.
    pub fn new(target: &Path) -> Result<Self> {
        let path = hidden_sibling(target)?;
        if let Some(parent) = path.parent() {
            remove_stale_staging(parent);
        }
        if path.exists() {
            std::fs::remove_dir_all(&path).ok();
        }
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(StagingDir { path, target: target.to_path_buf(), committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the staging directory to the target. An existing target is replaced only if
    /// `may_replace` says so.
    pub fn commit(mut self, may_replace: impl Fn(&Path) -> bool) -> Result<PathBuf> {
        if self.target.exists() {
            if !may_replace(&self.target) {
                bail!("{} exists and does not look like an output of this tool; pass --force to replace it", self.target.display());
            }
            keep_hidden_files(&self.target, &self.path);
            // One atomic swap: a reader (or a kill) sees the old directory or the new one,
            // never neither; the staging name then holds the old one, removed below.
            match rename_exchange(&self.path, &self.target) {
                Ok(()) => {
                    std::fs::remove_dir_all(&self.path).ok();
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                    // A filesystem without RENAME_EXCHANGE: move the old one aside first.
                    let old = self.path.with_extension("old");
                    std::fs::remove_dir_all(&old).ok();
                    std::fs::rename(&self.target, &old).with_context(|| format!("cannot move old {} aside", self.target.display()))?;
                    std::fs::rename(&self.path, &self.target)
                        .with_context(|| format!("cannot move output into {}", self.target.display()))?;
                    std::fs::remove_dir_all(&old).ok();
                }
                Err(e) => return Err(e).with_context(|| format!("cannot move output into {}", self.target.display())),
            }
        } else {
            std::fs::rename(&self.path, &self.target).with_context(|| format!("cannot move output into {}", self.target.display()))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl StagingDir {
    /// Moves the staging directory to the target, or to `<target>-2`, `-3`, ... when another
    /// writer (another process too) took that name first: a finished output is never lost at
    /// the rename and never replaces another.
    pub fn commit_unique(mut self) -> Result<PathBuf> {
        let name = self.target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for n in 1..10_000 {
            let candidate = if n == 1 { self.target.clone() } else { self.target.with_file_name(format!("{name}-{n}")) };
            match rename_noreplace(&self.path, &candidate) {
                Ok(()) => {
                    self.committed = true;
                    return Ok(candidate);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot move output into {}", candidate.display())),
            }
        }
        bail!("cannot find a free name for {}", self.target.display())
    }
}

/// Swaps two existing paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn rename_exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

/// `rename` that fails with `EEXIST` instead of replacing an existing target (Linux
/// `renameat2(RENAME_NOREPLACE)`).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    renameat2(from, to, libc::RENAME_NOREPLACE)
}

/// Linux `renameat2(from, to, flags)`, both paths resolved like rename(2).
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput));
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them like rename(2).
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Refuses an output directory that is, or contains, an input (`flag` names the input's
/// flag): replacing the output would delete it.
pub fn refuse_output_over_input(out: &Path, input: &Path, flag: &str) -> Result<()> {
    refuse_replacing_input(out, "--out", input, flag)
}

/// [`refuse_output_over_input`] for an output given by `out_flag`.
pub fn refuse_replacing_input(out: &Path, out_flag: &str, input: &Path, flag: &str) -> Result<()> {
    let (out_abs, in_abs) = (absolute(out), absolute(input));
    if in_abs.starts_with(&out_abs) {
        bail!(
            "{out_flag} {} contains {flag} {}: replacing the output would delete the input; choose another {out_flag}",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// Refuses an output (`out_flag`) inside an input (`flag`): writing it would change the
/// input.
pub fn refuse_output_inside_input(out: &Path, out_flag: &str, input: &Path, flag: &str) -> Result<()> {
    let (out_abs, in_abs) = (absolute(out), absolute(input));
    if out_abs.starts_with(&in_abs) && out_abs != in_abs {
        bail!(
            "{out_flag} {} is inside {flag} {}: writing it would change the input; choose another {out_flag}",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// `p` made absolute with links resolved as far as it exists (the rest appended as given).
fn absolute(p: &Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

/// `<parent>/.<name>.tmp-<pid>` for `target`, creating the parent directory.
fn hidden_sibling(target: &Path) -> Result<PathBuf> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create directory {}", parent.display()))?;
    let name = target
        .file_name()
        .with_context(|| {
            format!("{}: an output must be named (such as processed_data or out.csv), not a directory like . or ..", target.display())
        })?
        .to_string_lossy()
        .into_owned();
    Ok(parent.join(format!(".{name}.tmp-{}-{}", std::process::id(), host_name())))
}

/// This machine's name, as staging names carry it (several hosts may share a directory).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = if ok { String::from_utf8_lossy(&buf[..len]).into_owned() } else { String::new() };
    name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect()
}

/// Removes hidden staging directories and files in `dir` (`.<name>.tmp-<pid>-<host>`) whose
/// process on this host is gone: what a killed run left behind.
fn remove_stale_staging(dir: &Path) {
    let host = host_name();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, tail)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { continue };
        let Some((pid, h)) = tail.split_once('-') else { continue };
        let Ok(pid) = pid.parse::<i32>() else { continue };
        let h = h.strip_suffix(".old").unwrap_or(h);
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if h == host && !alive && pid != std::process::id() as i32 {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p).ok();
            } else {
                std::fs::remove_file(&p).ok();
            }
        }
    }
}

/// A file written under a hidden sibling name and renamed onto its target when complete,
/// so the target is never half-written; removed on drop unless committed.
pub struct StagingFile {
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagingFile {
    /// Creates `<parent>/.<name>.tmp-<pid>` for `target` and opens it for writing. A
    /// symbolic link is written through (its target file is replaced, the link stays); a
    /// directory, or a link to one, is refused.
    pub fn create(target: &Path) -> Result<(Self, std::fs::File)> {
        let target = output_file(target)?;
        let path = hidden_sibling(&target)?;
        let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", target.display()))?;
        Ok((StagingFile { path, target, committed: false }, file))
    }

    /// Renames the written file onto the target (replacing an existing file).
    pub fn commit(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.path, &self.target).with_context(|| format!("cannot move output into {}", self.target.display()))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagingFile {
    fn drop(&mut self) {
        if !self.committed {
            std::fs::remove_file(&self.path).ok();
        }
    }
}

/// The file an output path names: the path itself, or the file a chain of symbolic links
/// ends at; a directory is an error.
fn output_file(target: &Path) -> Result<PathBuf> {
    let mut file = target.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&file) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&file).with_context(|| format!("cannot read the link {}", file.display()))?;
                file = file.parent().unwrap_or(Path::new(".")).join(link);
            }
            Ok(m) if m.is_dir() => bail!("{} is a directory; name a file to write", target.display()),
            _ => return Ok(file),
        }
    }
    bail!("{}: too many levels of symbolic links", target.display())
}

/// Copies hidden files (such as `.gitkeep`) of the directory being replaced into the new one.
fn keep_hidden_files(old: &Path, new: &Path) {
    let Ok(entries) = std::fs::read_dir(old) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let hidden = name.to_string_lossy().starts_with('.');
        if hidden && e.file_type().map(|t| t.is_file()).unwrap_or(false) && !new.join(&name).exists() {
            std::fs::copy(e.path(), new.join(&name)).ok();
        }
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            std::fs::remove_dir_all(&self.path).ok();
        }
    }
}

/// Writes `bytes` to `dir/name` atomically (temporary file, then rename).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("cannot write {}", dir.join(name).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_left_by_dead_processes_is_removed_and_live_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = host_name();
        let stale = d.path().join(format!(".run_a.tmp-{dead}-{host}"));
        let live = d.path().join(format!(".run_b.tmp-1-{host}"));
        let other_host = d.path().join(format!(".run_c.tmp-{dead}-elsewhere"));
        for p in [&stale, &live, &other_host] {
            std::fs::create_dir(p).unwrap();
        }
        let s = StagingDir::new(&d.path().join("run_d")).unwrap();
        assert!(!stale.exists(), "a dead process's staging directory was kept");
        assert!(live.exists() && other_host.exists(), "a live or foreign staging directory was removed");
        assert!(s.path().exists());
    }

    #[test]
    fn a_file_output_writes_through_a_link_and_refuses_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.csv");
        std::fs::write(&real, "old").unwrap();
        let link = d.path().join("link.csv");
        std::os::unix::fs::symlink("real.csv", &link).unwrap();
        let (staged, mut f) = StagingFile::create(&link).unwrap();
        std::io::Write::write_all(&mut f, b"new").unwrap();
        staged.commit().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");

        let dir_link = d.path().join("dir_link");
        std::os::unix::fs::symlink(d.path(), &dir_link).unwrap();
        for target in [&dir_link, &d.path().to_path_buf()] {
            let err = StagingFile::create(target).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("is a directory; name a file to write"), "{err}");
        }
        assert!(std::fs::symlink_metadata(&dir_link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn commit_replaces_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let s = StagingDir::new(&target).unwrap();
        std::fs::write(s.path().join("a"), "1").unwrap();
        s.commit(|_| false).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "1");

        let s = StagingDir::new(&target).unwrap();
        std::fs::write(s.path().join("a"), "2").unwrap();
        assert!(s.commit(|_| false).is_err());
        assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "1");

        let s = StagingDir::new(&target).unwrap();
        let staged = s.path().to_path_buf();
        std::fs::write(s.path().join("a"), "3").unwrap();
        drop(s);
        assert!(!staged.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out")]);
    }

    #[test]
    fn staged_file_appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub").join("rows.csv");
        let (s, mut f) = StagingFile::create(&target).unwrap();
        std::io::Write::write_all(&mut f, b"a,b\n").unwrap();
        assert!(!target.exists());
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);

        std::fs::write(&target, "old\n").unwrap();
        let (s, mut f) = StagingFile::create(&target).unwrap();
        std::io::Write::write_all(&mut f, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old\n");
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }
}
