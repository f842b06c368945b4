//! Reading and writing the PKI files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{Error, Result};

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` (and its parents) readable by the owner only when missing: it holds private keys.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| Error::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Whether a file holds a secret: secrets are created with mode 0600.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrecy {
    Public,
    Secret,
}

/// Replaces `path` with `contents` so that a reader, or the next start after a crash, sees the
/// old file or the new one and never a torn one: write a temporary file beside it, fsync it,
/// rename it over `path`, fsync the directory. A secret's temporary file is created 0600, so the
/// key is never readable by others, not even for an instant.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], secrecy: Secrecy) -> Result<()> {
    let err = |source: io::Error| Error::Write {
        path: path.to_owned(),
        source,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        )));
    };
    let mut tmp_name = name.to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temporary file left by a crash may have other permissions; `mode` below only applies to a
    // file we create, so start from nothing.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(
        &mut options,
        match secrecy {
            Secrecy::Secret => 0o600,
            Secrecy::Public => 0o644,
        },
    );
    #[cfg(not(unix))]
    let _ = secrecy;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    sync_dir(dir).map_err(err)
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    // `Path::parent` of a bare file name is "", meaning the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Windows cannot open a directory as a file; NTFS journals the rename itself.
    Ok(())
}

/// PEM of one DER certificate, with `\n` line endings on every platform so that the files and
/// strings this crate makes compare equal wherever they were made.
pub(crate) fn cert_pem(der: &CertificateDer<'_>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

/// Every certificate in a PEM text, in order; at least one.
pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE PEM block".to_owned());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rampart-pki-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = temp_dir("atomic");
        let path = dir.join("a.key");
        write_atomic(&path, b"one", Secrecy::Secret).unwrap();
        write_atomic(&path, b"two", Secrecy::Secret).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.key"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temporary_with_open_mode_is_replaced() {
        let dir = temp_dir("stale");
        let path = dir.join("b.key");
        fs::write(dir.join("b.key.tmp"), b"old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.join("b.key.tmp"), fs::Permissions::from_mode(0o666)).unwrap();
        }
        write_atomic(&path, b"new", Secrecy::Secret).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parse_certs_needs_a_certificate() {
        assert!(parse_certs(b"").unwrap_err().contains("no CERTIFICATE"));
        assert!(
            parse_certs(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
