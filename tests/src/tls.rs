//! Throwaway TLS material for the TLS tests (a single server in `tests/tests/failure/security.rs`, a
//! cluster in [`RedisCluster::start_with_tls`](crate::cluster::RedisCluster::start_with_tls)).

use std::path::Path;
use std::process::Command;

/// A throwaway CA and a server certificate for the IP address 127.0.0.1 (IP SAN), made with the
/// `openssl` CLI in `dir` (`ca.crt`, `server.crt`, `server.key`). The certificate is for client
/// authentication too: a TLS cluster bus (`tls-cluster yes`) always asks the connecting node for
/// its certificate. Returns the CA certificate
/// (PEM).
///
/// # Panics
/// When the `openssl` CLI is missing or fails.
pub fn make_certificates(dir: &Path) -> Vec<u8> {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("could not run `openssl` (install the openssl CLI): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cache-tests throwaway CA",
        ],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
        &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write server.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    std::fs::read(dir.join("ca.crt")).expect("read ca.crt")
}
