//! Certificates for the OVN databases' SSL, made when the operator brings none — as Kube-OVN's
//! installer does with `ENABLE_SSL=true` (ovs-pki: one CA, one certificate that every
//! component presents, as server and as client).
//!
//! OVS's SSL (ovsdb-server, ovn-controller, ovn-nbctl) and kovn's client check that a peer's
//! certificate chains to the CA, never its name (the members are dialled by address), so one
//! certificate for the role "ovn" serves every member and client. The files are written under
//! the names the `kovn-ovn-tls` Secret uses (`cacert`, `cert`, `key`) plus the CA's key
//! (`cakey`), which stays with the operator: it signs more certificates later, and is never put
//! in the cluster.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// How long the CA and the certificate are valid (ovs-pki's default).
const VALID_DAYS: i64 = 3650;

/// The files [`generate`] writes.
pub const FILES: [&str; 4] = ["cacert", "cert", "key", "cakey"];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("making the certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{dir} holds {present} but not {missing}: give a directory with key, cert and cacert, \
         or an empty one to have them made"
    )]
    Partial {
        dir: std::path::PathBuf,
        present: String,
        missing: String,
    },
}

/// Whether `dir` holds the Secret's three files; `Ok(false)` when it holds none of them, an
/// error when it holds some (a half-made directory is never completed with a new CA).
pub fn has_certificates(dir: &Path) -> Result<bool, PkiError> {
    let (present, missing): (Vec<&str>, Vec<&str>) = ["key", "cert", "cacert"]
        .into_iter()
        .partition(|f| dir.join(f).is_file());
    match (present.is_empty(), missing.is_empty()) {
        (_, true) => Ok(true),
        (true, _) => Ok(false),
        _ => Err(PkiError::Partial {
            dir: dir.to_owned(),
            present: present.join(", "),
            missing: missing.join(", "),
        }),
    }
}

/// Makes a CA and one certificate it signs, valid for both ends of a connection, and writes
/// them to `dir` (created if missing; the keys readable by the owner only).
pub fn generate(dir: &Path) -> Result<(), PkiError> {
    let now = time::OffsetDateTime::now_utc();
    let validity = |params: &mut CertificateParams| {
        // An hour back: nodes whose clocks lag a little accept it at once.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(VALID_DAYS);
    };
    let name = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "kovn");
        dn.push(DnType::CommonName, cn);
        dn
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = name("kovn OVN CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    // A DNS name of the role, as ovs-pki's certificates carry: some TLS stacks insist on a
    // subject alternative name even where nobody matches it.
    let mut leaf = CertificateParams::new(vec!["ovn".to_owned()])?;
    leaf.distinguished_name = name("ovn");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut leaf);
    let issuer = Issuer::new(ca, ca_key);
    let cert = leaf.signed_by(&key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write(&dir.join("cacert"), &ca_cert.pem(), 0o644)?;
    write(&dir.join("cert"), &cert.pem(), 0o644)?;
    write(&dir.join("key"), &key.serialize_pem(), 0o600)?;
    write(&dir.join("cakey"), &issuer.key().serialize_pem(), 0o600)?;
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let error = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_pem_with_private_keys_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_certificates(dir.path()).unwrap());
        generate(dir.path()).unwrap();
        assert!(has_certificates(dir.path()).unwrap());
        for file in FILES {
            let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{file}: {text:.40}");
        }
        use std::os::unix::fs::PermissionsExt;
        for key in ["key", "cakey"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
        }
        // Never overwritten: a second CA would cut every running member off.
        assert!(generate(dir.path()).is_err());
    }

    #[test]
    fn a_half_made_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cacert"), "x").unwrap();
        let error = has_certificates(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not key, cert"), "{error}");
    }
}
