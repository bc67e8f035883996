//! The certificates of an etcd deployment of cats, minted into one directory:
//!
//! ```text
//! ca.pem, ca-key.pem                   the CA etcd and every client trust
//! server.pem, server-key.pem           etcd's server certificate (serverAuth + clientAuth)
//! root.pem, root-key.pem               CN root: etcd's administrator (`catsd etcd-init`)
//! controller.pem, controller-key.pem   CN cats-controller: the controllers
//! node-<N>.pem, node-<N>-key.pem       CN cats-node-<N>: node N's agent
//! ```
//!
//! etcd started with `--client-cert-auth` takes a client's user from its certificate's CN,
//! so the CNs are the etcd users of [`crate::store::keys`]. Minting is idempotent: a CA that
//! is there is read back and signs what is missing; certificates that are there are kept.
//! Keys are written with mode 0600.

use std::{
    fmt,
    io::Write,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::store::{
    etcd::TlsFiles,
    keys::{CONTROLLER_USER, ROOT_USER, node_user},
};

/// The subject CN of a CA this module makes.
pub const CA_NAME: &str = "cats etcd CA";
/// The subject CN of etcd's server certificate (not an etcd user).
pub const SERVER_NAME: &str = "cats-etcd";
/// Names every server certificate holds, besides those asked for.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Years a certificate is valid (from the start of last year: clocks of other machines may
/// be a little behind).
const CA_YEARS: i32 = 20;
const LEAF_YEARS: i32 = 10;

/// A client of etcd: its user, and the stem of its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    Root,
    Controller,
    Node(String),
}

impl Client {
    /// The etcd user, the certificate's CN.
    pub fn user(&self) -> String {
        match self {
            Client::Root => ROOT_USER.to_string(),
            Client::Controller => CONTROLLER_USER.to_string(),
            Client::Node(n) => node_user(n),
        }
    }

    /// The file name without `.pem`: `root`, `controller`, `node-<N>`.
    pub fn stem(&self) -> String {
        match self {
            Client::Root => "root".to_string(),
            Client::Controller => "controller".to_string(),
            Client::Node(n) => format!("node-{n}"),
        }
    }
}

/// The files of one certificate directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CertDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    pub fn server(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    pub fn cert(&self, client: &Client) -> PathBuf {
        self.dir.join(format!("{}.pem", client.stem()))
    }

    pub fn key(&self, client: &Client) -> PathBuf {
        self.dir.join(format!("{}-key.pem", client.stem()))
    }

    /// What `client` connects to etcd with.
    pub fn tls(&self, client: &Client) -> TlsFiles {
        TlsFiles { ca: self.ca(), cert: self.cert(client), key: self.key(client) }
    }
}

/// What minting did to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub file: PathBuf,
    pub made: bool,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.made { "made" } else { "kept" };
        write!(f, "{verb} {}", self.file.display())
    }
}

/// Mints into `dir` (created if missing) what is not there yet: the CA, etcd's server
/// certificate for `localhost`, `127.0.0.1`, `::1` and `sans`, and the client certificates of
/// root, the controllers and each of `nodes`. Returns one [`Outcome`] per file.
///
/// A server certificate that is kept must already hold every name of `sans`: it is an error
/// otherwise (remove `server.pem` and `server-key.pem` to mint it again).
pub fn mint(dir: &Path, nodes: &[String], sans: &[String]) -> Result<Vec<Outcome>> {
    for n in nodes {
        if n.is_empty() || n.contains(['/', '\0']) || n.chars().any(char::is_whitespace) {
            bail!("invalid node name {n:?}");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = CertDir::new(dir);
    let mut out = Vec::new();
    let ca = ca(&files, &mut out)?;

    let mut names: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for s in sans {
        if !names.contains(s) {
            names.push(s.clone());
        }
    }
    let server = LeafSpec {
        cn: SERVER_NAME.to_string(),
        sans: names,
        usages: vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    };
    leaf(&ca, &server, &files.server(), &files.server_key(), &mut out)?;

    let clients = [Client::Root, Client::Controller]
        .into_iter()
        .chain(nodes.iter().map(|n| Client::Node(n.clone())));
    for client in clients {
        let spec = LeafSpec {
            cn: client.user(),
            sans: Vec::new(),
            usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        leaf(&ca, &spec, &files.cert(&client), &files.key(&client), &mut out)?;
    }
    Ok(out)
}

/// The CA of `files`, made if neither file is there.
fn ca(files: &CertDir, out: &mut Vec<Outcome>) -> Result<Issuer<'static, KeyPair>> {
    let (cert, key) = (files.ca(), files.ca_key());
    if both_there(&cert, &key)? {
        let key_pem = read(&key)?;
        let cert_pem = read(&cert)?;
        let pair = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("reading the key in {}", key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, pair)
            .with_context(|| format!("reading the CA certificate {}", cert.display()))?;
        out.push(Outcome { file: cert, made: false });
        out.push(Outcome { file: key, made: false });
        return Ok(issuer);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_YEARS);
    let pair = KeyPair::generate()?;
    let made = params.self_signed(&pair)?;
    write_new(&key, pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert, made.pem().as_bytes(), 0o644)?;
    out.push(Outcome { file: cert, made: true });
    out.push(Outcome { file: key, made: true });
    Ok(Issuer::new(params, pair))
}

struct LeafSpec {
    cn: String,
    sans: Vec<String>,
    usages: Vec<ExtendedKeyUsagePurpose>,
}

/// One certificate signed by `ca`, made if neither of its files is there.
fn leaf(
    ca: &Issuer<'_, KeyPair>,
    spec: &LeafSpec,
    cert: &Path,
    key: &Path,
    out: &mut Vec<Outcome>,
) -> Result<()> {
    if both_there(cert, key)? {
        let missing = missing_sans(&read(cert)?, &spec.sans)
            .with_context(|| format!("reading {}", cert.display()))?;
        if !missing.is_empty() {
            bail!(
                "{} is there but lacks {}: remove it and {} to mint it again",
                cert.display(),
                missing.join(", "),
                key.display()
            );
        }
        out.push(Outcome { file: cert.to_path_buf(), made: false });
        out.push(Outcome { file: key.to_path_buf(), made: false });
        return Ok(());
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&spec.cn);
    params.subject_alt_names = spec.sans.iter().map(|s| san(s)).collect::<Result<_>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = spec.usages.clone();
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_YEARS);
    let pair = KeyPair::generate()?;
    let made = params.signed_by(&pair, ca)?;
    write_new(key, pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, made.pem().as_bytes(), 0o644)?;
    out.push(Outcome { file: cert.to_path_buf(), made: true });
    out.push(Outcome { file: key.to_path_buf(), made: true });
    Ok(())
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// An IP address is an IP SAN (what TLS clients match an IP endpoint against), anything
/// else a DNS name.
fn san(s: &str) -> Result<SanType> {
    Ok(match IpAddr::from_str(s) {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            s.to_string().try_into().with_context(|| format!("{s:?} is not a DNS name"))?,
        ),
    })
}

/// The names of `wanted` that the certificate in `pem` does not hold.
fn missing_sans(pem: &str, wanted: &[String]) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).context("not PEM")?;
    let cert = pem.parse_x509().context("not an X.509 certificate")?;
    let mut held = Vec::new();
    if let Some(ext) = cert.subject_alternative_name().context("bad SAN extension")? {
        use x509_parser::extensions::GeneralName;
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => held.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes")),
                        _ => continue,
                    };
                    held.push(ip.to_string());
                }
                _ => {}
            }
        }
    }
    let normal = |s: &str| IpAddr::from_str(s).map(|ip| ip.to_string()).unwrap_or(s.to_string());
    Ok(wanted.iter().filter(|w| !held.contains(&normal(w))).cloned().collect())
}

/// From January 1st of last year, for `years` years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Close enough: off by a day around new year at most, and we start a year early.
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year - 1 + years, 1, 1);
}

/// Both files are there (true), or neither (false); one without the other is an error.
fn both_there(cert: &Path, key: &Path) -> Result<bool> {
    match (cert.exists(), key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => bail!("{} is there without {}", cert.display(), key.display()),
        (false, true) => bail!("{} is there without {}", key.display(), cert.display()),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a file that must not exist yet, with `mode`, under a temporary name first so a
/// crash leaves no half file behind.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    // A hard link fails if `path` appeared meanwhile: never replaces what someone else made.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cats-certs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn mints_then_keeps_and_adds() {
        let dir = temp_dir("mint");
        let first = mint(&dir, &["gw".to_string()], &["10.0.0.1".to_string()]).unwrap();
        assert!(first.iter().all(|o| o.made), "{first:?}");
        assert_eq!(first.len(), 10, "ca, server, root, controller, node-gw: cert and key each");
        let files = CertDir::new(&dir);
        use std::os::unix::fs::PermissionsExt;
        for key in [files.ca_key(), files.server_key(), files.key(&Client::Node("gw".into()))] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let ca_before = std::fs::read(files.ca()).unwrap();

        let second =
            mint(&dir, &["gw".to_string(), "edge1".to_string()], &["10.0.0.1".into()]).unwrap();
        let made: Vec<_> = second.iter().filter(|o| o.made).map(|o| o.file.clone()).collect();
        assert_eq!(made, [dir.join("node-edge1.pem"), dir.join("node-edge1-key.pem")]);
        assert_eq!(std::fs::read(files.ca()).unwrap(), ca_before);
        assert_eq!(second[0].to_string(), format!("kept {}", files.ca().display()));

        // The kept CA signed the new certificate: it names the CA as its issuer.
        let pem = std::fs::read(files.cert(&Client::Node("edge1".into()))).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.issuer().to_string(), format!("CN={CA_NAME}"));
        assert_eq!(cert.subject().to_string(), "CN=cats-node-edge1");

        let err = mint(&dir, &[], &["etcd.example".to_string()]).unwrap_err();
        assert!(format!("{err:#}").contains("lacks etcd.example"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_names_are_ip_or_dns() {
        let dir = temp_dir("sans");
        mint(&dir, &[], &["etcd.example".into(), "fd00::1".into()]).unwrap();
        let pem = read(&CertDir::new(&dir).server()).unwrap();
        let wanted: Vec<String> =
            ["localhost", "127.0.0.1", "::1", "etcd.example", "fd00:0::1"].map(String::from).into();
        assert_eq!(missing_sans(&pem, &wanted).unwrap(), Vec::<String>::new());
        assert_eq!(missing_sans(&pem, &["10.1.1.1".into()]).unwrap(), ["10.1.1.1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let dir = temp_dir("half");
        mint(&dir, &[], &[]).unwrap();
        std::fs::remove_file(dir.join("root-key.pem")).unwrap();
        let err = mint(&dir, &[], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("without"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
