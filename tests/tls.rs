//! gRPC over TLS and mutual TLS (rustls), with certificates made by `openssl` for the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use socket_bridge::proto;
use socket_bridge::proto::bridge_service_client::BridgeServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA, a server certificate for 127.0.0.1 / localhost, and a client certificate.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // Extensions make the certificates X.509 v3, which rustls requires.
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    ]);
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            "",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "",
            "-days",
            "1",
        ];
        let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
        args[3] = &csr;
        args[10] = &pem;
        let ext = format!("{name}.ext");
        args.extend(["-extfile", &ext]);
        run(&args);
    }
}

fn certs() -> PathBuf {
    // The tests run in parallel threads of one process: the process id and a counter keep
    // their directories apart (a clock value did not: two threads could read the same one).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    dir
}

async fn tls_channel(bridge: &Bridge, dir: &Path, client_cert: bool) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap()))
        .domain_name("localhost");
    if client_cert {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join("client.pem")).unwrap(),
            std::fs::read(dir.join("client.key")).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://{}", bridge.grpc)).unwrap().tls_config(tls)?.connect().await
}

fn tls_args(dir: &Path, mutual: bool) -> Vec<String> {
    let mut a = vec![
        "--set".into(),
        format!("grpc.tls_cert_file=\"{}\"", dir.join("server.pem").display()),
        "--set".into(),
        format!("grpc.tls_key_file=\"{}\"", dir.join("server.key").display()),
    ];
    if mutual {
        a.extend(["--set".into(), format!("grpc.tls_client_ca_file=\"{}\"", dir.join("ca.pem").display())]);
    }
    a
}

#[tokio::test]
async fn grpc_over_tls_serves_tls_clients_and_refuses_plaintext() {
    let dir = certs();
    let bridge = Bridge::start(&tls_args(&dir, false)).await;
    let channel = tls_channel(&bridge, &dir, false).await.expect("TLS connect");
    let status = BridgeServiceClient::new(channel).status(proto::StatusRequest {}).await.expect("Status over TLS");
    assert_eq!(status.into_inner().connections, 0);
    let plain = Channel::from_shared(format!("http://{}", bridge.grpc)).unwrap().connect().await;
    if let Ok(plain) = plain {
        assert!(BridgeServiceClient::new(plain).status(proto::StatusRequest {}).await.is_err(), "plaintext must fail");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_configured_ca() {
    let dir = certs();
    let bridge = Bridge::start(&tls_args(&dir, true)).await;
    let with_cert = tls_channel(&bridge, &dir, true).await.expect("mTLS connect");
    BridgeServiceClient::new(with_cert)
        .status(proto::StatusRequest {})
        .await
        .expect("Status with a client certificate");
    match tls_channel(&bridge, &dir, false).await {
        Err(_) => {}
        Ok(channel) => {
            assert!(
                BridgeServiceClient::new(channel).status(proto::StatusRequest {}).await.is_err(),
                "no client certificate must fail"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tls_settings_are_checked_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socket-bridge"))
        .args(["--set", "grpc.tls_cert_file=\"/nonexistent/cert.pem\"", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("grpc.tls_key_file: required with grpc.tls_cert_file"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_socket-bridge"))
        .args(["--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args([
            "--set",
            "grpc.tls_cert_file=\"/nonexistent/cert.pem\"",
            "--set",
            "grpc.tls_key_file=\"/nonexistent/key.pem\"",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("grpc.tls_cert_file /nonexistent/cert.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
