//! Certificates for `ssl:` databases, made with ovs-pki as OVN's operators (and Kube-OVN's
//! installer) make them: certificate authorities, each with certificates it signed, in a
//! directory of the test's own. ovs-pki names a certificate `<name> id:<uuid>`, never an
//! address.

use std::path::{Path, PathBuf};

use crate::db_server::ServerSsl;
use crate::error::{Result, SandboxError};

/// A key, its certificate, and the CA certificate to check the peer's against.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

impl CertFiles {
    pub fn as_server(&self) -> ServerSsl {
        ServerSsl {
            private_key: self.private_key.clone(),
            certificate: self.certificate.clone(),
            ca_cert: self.ca_cert.clone(),
        }
    }

    /// Copies the three files into `dir` under Kube-OVN's Secret names (`key`, `cert`,
    /// `cacert`), as the `kube-ovn-tls` Secret is mounted.
    pub fn install_as_secret(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
        for (from, to) in [
            (&self.private_key, "key"),
            (&self.certificate, "cert"),
            (&self.ca_cert, "cacert"),
        ] {
            std::fs::copy(from, dir.join(to)).map_err(crate::error::io_error(from))?;
        }
        Ok(())
    }
}

/// Certificate authorities and what they signed, under one directory (removed on drop).
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// `authorities` initialised, then each `(authority, name)` requested and signed.
    pub fn new(dir: &Path, authorities: &[&str], signed: &[(&str, &str)]) -> Result<Pki> {
        std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
        let pki = Pki {
            dir: dir.to_owned(),
        };
        // ovs-pki writes requests and certificates to its working directory.
        let ovs_pki = |args: &[&str]| -> Result<()> {
            let out = std::process::Command::new("ovs-pki")
                .args(args)
                .current_dir(&pki.dir)
                .output()
                .map_err(|e| SandboxError::Invalid(format!("ovs-pki (openvswitch-common): {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(SandboxError::Invalid(format!(
                    "ovs-pki {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        };
        for ca in authorities {
            ovs_pki(&[&pki.ca_dir(ca), "init", "--force"])?;
        }
        for (ca, name) in signed {
            ovs_pki(&[&pki.ca_dir(ca), "req", name])?;
            ovs_pki(&[&pki.ca_dir(ca), "-b", "sign", name, "switch"])?;
        }
        Ok(pki)
    }

    fn ca_dir(&self, ca: &str) -> String {
        format!("--dir={}", self.dir.join(ca).display())
    }

    /// `name`'s key and certificate, with `ca`'s certificate.
    pub fn files(&self, name: &str, ca: &str) -> CertFiles {
        CertFiles {
            private_key: self.dir.join(format!("{name}-privkey.pem")),
            certificate: self.dir.join(format!("{name}-cert.pem")),
            ca_cert: self.dir.join(ca).join("switchca/cacert.pem"),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
