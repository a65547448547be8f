//! What operators rely on when they deploy the binary: `--check-config`, `--health-check`,
//! logs fit for aggregators (no colour codes outside a terminal, JSON lines on stdout when
//! asked), and gRPC reflection in both protocol versions tools use.

mod common;

use std::process::Stdio;

use common::{Bridge, WAIT};
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_socket-bridge");

fn example_config() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config/socket-bridge.toml").to_owned()
}

/// Runs the binary to completion (bounded) and returns its exit code, stdout and stderr.
async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(WAIT, Command::new(BIN).args(args).env_remove("RUST_LOG").output())
        .await
        .expect("the command finished in time")
        .expect("run socket-bridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_accepts_the_example_config_and_exits_without_starting() {
    let (code, stdout, stderr) = run(&["--config", &example_config(), "--check-config"]).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.starts_with("configuration OK: http 127.0.0.1:3000 grpc 127.0.0.1:50051"), "{stdout}");
}

#[tokio::test]
async fn check_config_names_every_invalid_setting_and_exits_2() {
    let (code, _, stderr) = run(&[
        "--check-config",
        "--set",
        "auth.mode=jwt",
        "--set",
        "socketio.ping_timeout_ms=0",
        "--set",
        "http.listen=nowhere",
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    for setting in ["http.listen", "grpc.api_keys", "auth.jwt.secret", "socketio.ping_timeout_ms"] {
        assert!(stderr.contains(setting), "{setting} not named in: {stderr}");
    }
}

/// A public key file that cannot be read passes the settings' own validation (a path is
/// set) and would only fail when the bridge starts; --check-config finds it too.
#[tokio::test]
async fn check_config_reads_the_jwt_key_and_tls_files_start_up_would_read() {
    let (code, stdout, stderr) = run(&[
        "--check-config",
        "--set",
        "auth.mode=jwt",
        "--set",
        "auth.jwt.algorithms=[\"RS256\"]",
        "--set",
        "auth.jwt.public_key_file=\"/nonexistent/jwt-public.pem\"",
        "--set",
        "grpc.api_keys=[\"deployment-test-key-0123456789\"]",
        "--set",
        "grpc.tls_cert_file=\"/nonexistent/cert.pem\"",
        "--set",
        "grpc.tls_key_file=\"/nonexistent/key.pem\"",
    ])
    .await;
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("auth.jwt.public_key_file: No such file"), "{stderr}");
    assert!(stderr.contains("grpc.tls_cert_file /nonexistent/cert.pem"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[tokio::test]
async fn health_check_passes_against_a_running_bridge_and_fails_when_none_listens() {
    let bridge = Bridge::start(&[]).await;
    let http = bridge.http.to_string();
    let (code, stdout, stderr) = run(&["--health-check", "--http-listen", &http]).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("200"), "{stdout}");
    // A wildcard listen address is asked on loopback, as in the container image.
    let wildcard = format!("0.0.0.0:{}", bridge.http.port());
    let (code, stdout, stderr) =
        run(&["--health-check", "--http-listen", &wildcard, "--set", "auth.allow_dev_on_public_interface=true"]).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    drop(bridge);

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (code, _, stderr) = run(&["--health-check", "--http-listen", &free]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("unhealthy:"), "{stderr}");
}

/// Reads lines from a child's stream into a channel.
fn lines(stream: impl AsyncRead + Unpin + Send + 'static) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects lines until one contains `marker` (bounded by WAIT).
async fn until(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = rx.recv().await {
            let hit = line.contains(marker);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "no line with {marker:?}; got:\n{}", seen.join("\n"));
    seen
}

fn spawn_logging(args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn socket-bridge")
}

/// Console logs redirected to a pipe (as by journald, a container runtime or `> file`) are
/// plain text: colour codes would land in every line as raw escape bytes.
#[tokio::test]
async fn human_console_logs_written_to_a_pipe_carry_no_colour_codes() {
    let mut child = spawn_logging(&["--set", "log.format=human"], &[]);
    let mut stderr = lines(child.stderr.take().unwrap());
    let seen = until(&mut stderr, "socket-bridge ready").await;
    // Dev mode warns at start, so a WARN line (coloured yellow at a terminal) is among them.
    assert!(seen.iter().any(|l| l.contains("WARN")), "{seen:#?}");
    for line in &seen {
        assert!(!line.contains('\x1b'), "escape code in {line:?}");
    }
    child.kill().await.unwrap();
}

/// `--log-stdout` (the container image sets SOCKET_BRIDGE_LOG_STDOUT=true): every console
/// line on stdout, one JSON object each, and nothing on stderr.
#[tokio::test]
async fn log_stdout_writes_json_lines_on_stdout_and_nothing_on_stderr() {
    let mut child = spawn_logging(&["--set", "log.format=json"], &[("SOCKET_BRIDGE_LOG_STDOUT", "true")]);
    let mut stdout = lines(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let seen = until(&mut stdout, "socket-bridge ready").await;
    for line in &seen {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(entry["level"].is_string() && entry["timestamp"].is_string(), "{line}");
    }
    child.kill().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, stderr.read_to_string(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "stderr: {rest}");
}

/// grpcurl speaks reflection v1; older ghz releases and several GUI clients speak only
/// v1alpha. Both list every service (each other included) and serve the API's descriptors.
#[tokio::test]
async fn reflection_v1_and_v1alpha_both_list_the_services_and_describe_push() {
    let bridge = Bridge::start(&[]).await;
    let channel = bridge.channel().await;
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "socketbridge.v1.BridgeService",
    ];

    macro_rules! reflect {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let mut client = ServerReflectionClient::new(channel.clone());
            let requests = vec![
                ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                },
                ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::FileContainingSymbol("socketbridge.v1.BridgeService".into())),
                },
            ];
            let mut answers = tokio::time::timeout(WAIT, client.server_reflection_info(tokio_stream::iter(requests)))
                .await
                .expect("answer in time")
                .expect("reflection call")
                .into_inner();
            let mut services = Vec::new();
            let mut files = Vec::new();
            for _ in 0..2 {
                let answer = tokio::time::timeout(WAIT, answers.message()).await.unwrap().unwrap().unwrap();
                match answer.message_response {
                    Some(MessageResponse::ListServicesResponse(list)) => {
                        services = list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                    }
                    Some(MessageResponse::FileDescriptorResponse(fd)) => files = fd.file_descriptor_proto,
                    other => panic!("unexpected reflection answer: {other:?}"),
                }
            }
            (services, files)
        }};
    }

    let v1 = reflect!(v1);
    let v1alpha = reflect!(v1alpha);
    for (version, (mut services, files)) in [("v1", v1), ("v1alpha", v1alpha)] {
        services.sort();
        assert_eq!(services, expected, "services listed through reflection {version}");
        let methods: Vec<String> = files
            .iter()
            .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor"))
            .flat_map(|file| file.service)
            .filter(|s| s.name() == "BridgeService")
            .flat_map(|s| s.method.into_iter().map(|m| m.name().to_owned()))
            .collect();
        assert!(methods.iter().any(|m| m == "Push"), "reflection {version}: BridgeService methods {methods:?}");
    }
}
