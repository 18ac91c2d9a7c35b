//! `IamportClient` against the PortOne emulator, over real loopback sockets.

use std::time::{Duration, Instant};

use http::StatusCode;
use iamport_e2e::{Captured, serve_axum};
use iamport_mock::{Emulator, Endpoint, TEST_KEY, TEST_SECRET, person};
use iamport_tower::client::RetryPolicy;
use iamport_tower::{Error, IamportClient, ImpUid, Secret};
use serde_json::json;

const ADULT: &str = "imp_100000000001";

fn id(value: &str) -> ImpUid {
    value.parse().expect("test ids are valid")
}

#[tokio::test]
async fn one_token_for_many_lookups() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    for _ in 0..25 {
        let cert = client.certification(&id(ADULT)).await.unwrap();
        assert!(cert.certified);
    }
    assert_eq!(emulator.calls(Endpoint::GetToken), 1);
    assert_eq!(emulator.calls_for(ADULT), 25);
    assert_eq!(emulator.rejected_tokens(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_client_under_200_concurrent_lookups_fetches_one_token() {
    let emulator = Emulator::start().await.unwrap();
    // Latency makes the token request slow enough that every caller piles up behind it.
    emulator.set_latency(Duration::from_millis(50));
    let client = emulator.client();
    let lookups = (0..200).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.certification(&id(ADULT)).await })
    });
    for lookup in futures_util::future::join_all(lookups).await {
        assert!(lookup.unwrap().unwrap().certified);
    }
    assert_eq!(emulator.calls(Endpoint::GetToken), 1);
    assert_eq!(emulator.calls(Endpoint::GetCertification), 200);
}

#[tokio::test]
async fn token_lifetime_follows_the_server_clock_not_the_local_one() {
    for skew in [-7200, 7200] {
        let emulator = Emulator::start().await.unwrap();
        emulator.set_clock_offset(skew);
        let client = emulator.client();
        for _ in 0..10 {
            client.certification(&id(ADULT)).await.unwrap();
        }
        assert_eq!(emulator.calls(Endpoint::GetToken), 1, "skew {skew}");
        assert_eq!(emulator.rejected_tokens(), 0, "skew {skew}");
    }
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    // PortOne's rules at a smaller scale: a 4 s token, extended by 4 s when asked for in its
    // last 2 s. A client that renews ahead of expiry keeps one token alive and is never
    // refused; one that waits for expiry would see a 401 every 4 s.
    let emulator = Emulator::builder()
        .token_lifetime(
            Duration::from_secs(4),
            Duration::from_secs(2),
            Duration::from_secs(4),
        )
        .start()
        .await
        .unwrap();
    let client = emulator.client();
    let started = Instant::now();
    let mut lookups = 0;
    while started.elapsed() < Duration::from_secs(9) {
        client.certification(&id(ADULT)).await.unwrap();
        lookups += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token_calls = emulator.calls(Endpoint::GetToken);
    assert_eq!(
        emulator.rejected_tokens(),
        0,
        "a lookup used an expired token"
    );
    assert!(
        token_calls >= 3,
        "{token_calls} token calls over 9 s of 4 s tokens"
    );
    assert!(
        token_calls * 4 < lookups,
        "{token_calls} token calls for {lookups} lookups"
    );
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_lookup_retried() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    client.certification(&id(ADULT)).await.unwrap();
    emulator.revoke_token();
    let cert = client.certification(&id(ADULT)).await.unwrap();
    assert!(cert.certified);
    assert_eq!(emulator.calls(Endpoint::GetToken), 2);
    assert_eq!(emulator.rejected_tokens(), 1);
    assert_eq!(emulator.calls_for(ADULT), 3);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    emulator.fail_next(Endpoint::GetToken, 1, StatusCode::BAD_GATEWAY);
    emulator.fail_next(
        Endpoint::GetCertification,
        2,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(client.certification(&id(ADULT)).await.unwrap().certified);
    assert_eq!(emulator.calls(Endpoint::GetToken), 2);
    assert_eq!(emulator.calls_for(ADULT), 3);
}

#[tokio::test]
async fn server_errors_past_the_retry_budget_are_a_typed_error() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    emulator.fail_next(
        Endpoint::GetCertification,
        3,
        StatusCode::INTERNAL_SERVER_ERROR,
    );
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(
        matches!(error, Error::UpstreamStatus { status, .. } if status == StatusCode::INTERNAL_SERVER_ERROR),
        "{error:?}"
    );
    assert_eq!(emulator.calls_for(ADULT), 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    emulator.fail_next(Endpoint::GetCertification, 1, StatusCode::BAD_REQUEST);
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(
        matches!(error, Error::UpstreamStatus { status, .. } if status == StatusCode::BAD_REQUEST)
    );
    assert_eq!(emulator.calls_for(ADULT), 1);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    emulator.drop_next(Endpoint::GetCertification, 2);
    assert!(client.certification(&id(ADULT)).await.unwrap().certified);
    assert_eq!(emulator.calls_for(ADULT), 3);

    emulator.drop_next(Endpoint::GetCertification, 3);
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
}

/// Fetches the token, then looks `ADULT` up `n` times at once; each lookup must succeed.
async fn concurrent_lookups(client: &IamportClient, n: usize) {
    client.warm_up().await.unwrap();
    let calls = (0..n).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.certification(&id(ADULT)).await })
    });
    for call in futures_util::future::join_all(calls).await {
        assert!(call.unwrap().unwrap().certified);
    }
}

/// A TLS front for the emulator, as PortOne's servers are reached: `https://127.0.0.1:PORT`
/// with a certificate from the test CA (`fixtures/tls`), offering `alpn` in the handshake;
/// it passes the decrypted bytes to the emulator, which speaks whichever protocol the client
/// chose (HTTP/2 without TLS is h2c to it).
async fn tls_front(emulator: &Emulator, alpn: &[&[u8]]) -> String {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(include_bytes!("fixtures/tls/server.pem"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("fixtures/tls/server.key")).unwrap();
    let provider = std::sync::Arc::new(iamport_tower::client::crypto_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    let backend = emulator.addr();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://{front}")
}

const TEST_CA: &[u8] = include_bytes!("fixtures/tls/ca.pem");

/// The app's own `reqwest::Client`, trusting the test CA, reaches the TLS front: where the
/// server picks HTTP/2 in the handshake, 50 concurrent lookups share one connection; where
/// it offers HTTP/1.1 alone, each holds its own. The default client, which does not trust
/// the test CA, sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_client_with_its_own_root_reaches_tls_and_negotiates_http2() {
    let emulator = Emulator::start().await.unwrap();
    emulator.set_latency(Duration::from_millis(300));
    let client = |url: &str| {
        let roots = reqwest::Certificate::from_pem_bundle(TEST_CA).unwrap();
        let http = iamport_e2e::http_builder()
            .tls_certs_only(roots)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        IamportClient::builder()
            .base_url(url)
            .key(TEST_KEY)
            .secret(TEST_SECRET)
            .http_client(http)
            .build()
            .unwrap()
    };

    let h2 = tls_front(&emulator, &[b"h2", b"http/1.1"]).await;
    concurrent_lookups(&client(&h2), 50).await;
    assert_eq!(emulator.calls_for(ADULT), 50);
    assert_eq!(emulator.connections(), 1, "HTTP/2, picked in the handshake");

    let h1 = tls_front(&emulator, &[b"http/1.1"]).await;
    concurrent_lookups(&client(&h1), 50).await;
    assert_eq!(emulator.calls_for(ADULT), 100);
    assert!(
        emulator.connections() > 1 + 25,
        "HTTP/1.1: a connection per call in flight ({})",
        emulator.connections()
    );

    let before = emulator.connections();
    let untrusting = IamportClient::builder()
        .base_url(&h2)
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .build()
        .unwrap();
    let error = untrusting.certification(&id(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_eq!(
        emulator.connections(),
        before,
        "nothing reached the emulator"
    );
}

/// The default client offers HTTP/2 and HTTP/1.1 in its TLS handshake (reqwest then speaks
/// whichever the server picks), read from its ClientHello by a server that answers nothing.
#[tokio::test]
async fn the_default_client_offers_http2_and_http1_over_tls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (offered, mut hello) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(1);
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), socket);
        let start = acceptor.await.unwrap();
        let alpn = start
            .client_hello()
            .alpn()
            .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        offered.send(alpn).await.unwrap();
    });
    let client = IamportClient::builder()
        .base_url(format!("https://{address}"))
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .retry(RetryPolicy::NONE)
        .build()
        .unwrap();
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    let alpn = tokio::time::timeout(Duration::from_secs(10), hello.recv())
        .await
        .expect("a ClientHello")
        .expect("its ALPN");
    assert_eq!(alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[tokio::test]
async fn a_hung_upstream_times_out_within_the_bound() {
    let emulator = Emulator::start().await.unwrap();
    let bound = Duration::from_millis(1500);
    let client = emulator.client_builder().timeout(bound).build().unwrap();
    client.certification(&id(ADULT)).await.unwrap();
    emulator.set_latency(Duration::from_secs(60));
    let started = Instant::now();
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::Timeout(d) if d == bound),
        "{error:?}"
    );
    // Correctness, not speed: the call ended because of the bound, not the 60 s latency.
    assert!(
        elapsed >= bound && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable() {
    let emulator = Emulator::start().await.unwrap();
    let url = emulator.url();
    drop(emulator);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = IamportClient::builder()
        .base_url(url)
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .retry(RetryPolicy {
            max_retries: 1,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    // The message names the cause (hyper's own says only "client error (Connect)").
    let message = error.to_string();
    assert!(
        message.contains("cannot connect") && message.to_lowercase().contains("refused"),
        "{message}"
    );
}

/// Runs this test binary again for the child test below, with `env` set (the proxy variables
/// are read from the process environment, which a running test may not change), and checks
/// that the child passed.
async fn child(env: &[(&str, &str)]) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"));
    child
        .args([
            "--exact",
            "looks_up_through_whatever_proxy_the_environment_names",
            "--include-ignored",
            "--nocapture",
        ])
        .env("IAMPORT_E2E_CHILD", "1");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        child.env_remove(var).env_remove(var.to_lowercase());
    }
    child.envs(env.iter().copied());
    // Off the runtime: it waits for a process.
    let output = tokio::task::spawn_blocking(move || child.output().expect("child test"))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A `CONNECT` proxy on loopback: records each request line, then splices the tunnel.
async fn connect_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if inbound.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                log.lock().unwrap().push(line.clone());
                // `CONNECT host:port` (a tunnel) or `GET http://host:port/… ` (forwarded).
                let target = line.split(' ').nth(1).unwrap_or_default();
                let connect = line.starts_with("CONNECT ");
                let authority = if connect {
                    target
                } else {
                    let rest = target.strip_prefix("http://").unwrap_or_default();
                    rest.split('/').next().unwrap_or_default()
                };
                let Ok(mut outbound) = tokio::net::TcpStream::connect(authority).await else {
                    let _ = inbound.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let sent = if connect {
                    inbound
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                } else {
                    outbound.write_all(head.as_bytes()).await
                };
                if sent.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_named_in_the_environment_carries_every_call() {
    let emulator = Emulator::start().await.unwrap();
    let (proxy, seen) = connect_proxy().await;
    let url = emulator.url();
    child(&[("EMULATOR_URL", &url), ("HTTP_PROXY", &proxy)]).await;
    // The child's token request and lookup reached the emulator, through the proxy.
    assert_eq!(emulator.calls(Endpoint::GetToken), 1);
    assert_eq!(emulator.calls_for(ADULT), 1);
    assert_eq!(
        seen.lock().unwrap().first().map(String::as_str),
        Some(format!("POST {url}/users/getToken HTTP/1.1").as_str())
    );

    // `NO_PROXY` naming the host: straight to the emulator, the proxy sees nothing more.
    let through_proxy = seen.lock().unwrap().len();
    child(&[
        ("EMULATOR_URL", &url),
        ("HTTP_PROXY", &proxy),
        ("NO_PROXY", "127.0.0.1"),
    ])
    .await;
    assert_eq!(emulator.calls_for(ADULT), 2);
    assert_eq!(seen.lock().unwrap().len(), through_proxy);

    // `ALL_PROXY` with a SOCKS5 URL: accepted (reqwest speaks SOCKS); this proxy is not one,
    // so the call fails as unreachable rather than going around it.
    child(&[
        ("EMULATOR_URL", &url),
        ("ALL_PROXY", &proxy.replace("http://", "socks5://")),
        ("CHILD_EXPECTS", "unavailable"),
    ])
    .await;
    assert_eq!(
        emulator.calls_for(ADULT),
        2,
        "nothing went around the proxy"
    );
}

/// The child half of the test above (it does nothing when run on its own).
#[tokio::test]
#[ignore = "run by a_proxy_named_in_the_environment_carries_every_call"]
async fn looks_up_through_whatever_proxy_the_environment_names() {
    if std::env::var_os("IAMPORT_E2E_CHILD").is_none() {
        return;
    }
    let built = IamportClient::builder()
        .base_url(std::env::var("EMULATOR_URL").unwrap())
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .retry(RetryPolicy::NONE)
        .build();
    match std::env::var("CHILD_EXPECTS").as_deref() {
        Ok("unavailable") => {
            let error = built.unwrap().certification(&id(ADULT)).await.unwrap_err();
            assert!(
                matches!(error, Error::Unavailable(_) | Error::Timeout(_)),
                "{error:?}"
            );
        }
        _ => assert!(
            built
                .unwrap()
                .certification(&id(ADULT))
                .await
                .unwrap()
                .certified
        ),
    }
}

#[tokio::test]
async fn the_connect_timeout_covers_the_tls_handshake() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A server that accepts and never says a word: the TLS handshake stalls.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        }
    });
    let client = IamportClient::builder()
        .base_url(format!("https://{address}"))
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(600))
        .retry(RetryPolicy::NONE)
        .build()
        .unwrap();
    // Correctness, not speed: without a bound on the handshake the call would wait for the
    // 600 s whole-call bound.
    let error = tokio::time::timeout(Duration::from_secs(60), client.certification(&id(ADULT)))
        .await
        .expect("the connect timeout ends the call")
        .unwrap_err();
    assert!(matches!(error, Error::Timeout(_)), "{error:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_redirect_is_an_answer_never_followed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let elsewhere = {
        let hits = hits.clone();
        axum::Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "{}" }
        })
    };
    let elsewhere = serve_axum(elsewhere).await;
    let target = elsewhere.url.clone();
    let api = axum::Router::new().fallback(move || {
        let location = format!("{target}/users/getToken");
        async move { (StatusCode::FOUND, [(http::header::LOCATION, location)], "") }
    });
    let api = serve_axum(api).await;
    let client = IamportClient::builder()
        .base_url(api.url.clone())
        .key(TEST_KEY)
        .secret(TEST_SECRET)
        .build()
        .unwrap();
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::UpstreamStatus {
                status: StatusCode::FOUND,
                ..
            }
        ),
        "{error:?}"
    );
    // The credentials were not carried anywhere else.
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let emulator = Emulator::start().await.unwrap();
    let error = emulator
        .client()
        .certification(&id("imp_999999999999"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NotFound), "{error:?}");
}

#[tokio::test]
async fn bad_credentials_are_a_typed_error_that_hides_the_secret() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator
        .client_builder()
        .secret("definitely-wrong-secret")
        .build()
        .unwrap();
    let error = client.certification(&id(ADULT)).await.unwrap_err();
    assert!(matches!(error, Error::BadCredentials), "{error:?}");
    let shown = format!("{error} {error:?} {client:?}");
    assert!(!shown.contains("definitely-wrong-secret"), "{shown}");
    assert_eq!(emulator.calls(Endpoint::GetToken), 1, "401 is not retried");
}

#[tokio::test]
async fn garbage_answers_are_malformed() {
    let emulator = Emulator::start().await.unwrap();
    // No back-off after a failed token fetch: each call below fetches for itself.
    let client = emulator
        .client_builder()
        .token_retry_after(Duration::ZERO)
        .build()
        .unwrap();
    emulator.garbage_next(Endpoint::GetToken, 1);
    assert!(matches!(
        client.certification(&id(ADULT)).await,
        Err(Error::Malformed(_))
    ));
    assert_eq!(
        emulator.calls(Endpoint::GetToken),
        1,
        "garbage is not retried"
    );
    assert_eq!(emulator.calls_for(ADULT), 0);
    emulator.garbage_next(Endpoint::GetCertification, 1);
    assert!(matches!(
        client.certification(&id(ADULT)).await,
        Err(Error::Malformed(_))
    ));
    assert_eq!(emulator.calls(Endpoint::GetToken), 2);
    assert_eq!(emulator.calls_for(ADULT), 1, "the garbage was served");
    assert!(client.certification(&id(ADULT)).await.unwrap().certified);
}

#[tokio::test]
async fn fields_of_the_wrong_type_are_unknown_with_a_warning_naming_them() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    emulator.add_person(json!({
        "imp_uid": "imp_5", "certified": "yes", "name": 7, "birthday": "2001-02-30",
        "birth": 631119600, "unique_key": "CI-VALUE-OF-A-PERSON", "phone": 1012345678
    }));
    let (logs, _guard) = Captured::install();
    let cert = client.certification(&id("imp_5")).await.unwrap();
    assert!(!cert.certified, "an unreadable `certified` is not `true`");
    assert_eq!((cert.name, cert.phone), (None, None));
    // The unreadable `birthday` falls back to `birth` (1990-01-01 in Korea).
    assert_eq!(cert.birth_date.map(|d| d.year()), Some(1990));
    assert_eq!(cert.ci.as_deref(), Some("CI-VALUE-OF-A-PERSON"));
    let text = strip_ansi(&logs.text());
    for field in ["certified", "name", "birthday", "phone"] {
        assert!(
            text.contains(&format!("field={field} ")),
            "no WARN names `{field}`: {text}"
        );
    }
    assert!(text.contains("WARN"), "{text}");
    for value in ["2001-02-30", "1012345678", "CI-VALUE", "yes"] {
        assert!(
            !text.contains(value),
            "{value} leaked into the logs: {text}"
        );
    }
}

/// The log text without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn hostile_ids_never_reach_portone() {
    let emulator = Emulator::start().await.unwrap();
    let hostile = [
        "imp_1/../../payments/imp_2",
        "imp_1%2F..%2Fpayments",
        "imp_1/..",
        "../users/getToken",
        "imp_1 2",
        "imp_1\r\nX-Injected: 1",
        "imp_1?x=1",
        "imp_1#x",
        "imp_１２３",
        "",
        &format!("imp_{}", "1".repeat(100)),
    ];
    for raw in hostile {
        assert!(ImpUid::parse(raw).is_err(), "{raw:?} was accepted");
    }
    assert_eq!(emulator.calls(Endpoint::GetToken), 0);
    assert_eq!(emulator.calls(Endpoint::GetCertification), 0);
}

#[tokio::test]
async fn birth_dates_are_read_in_korea_time() {
    let emulator = Emulator::builder()
        .without_sample_persons()
        .start()
        .await
        .unwrap();
    let mut new_year = person("imp_2000", "정월생", "2000-01-01");
    new_year.as_object_mut().unwrap().remove("birthday");
    assert_eq!(new_year["birth"], 946_652_400);
    let mut before_1970 = person("imp_1965", "옛날생", "1965-03-01");
    before_1970.as_object_mut().unwrap().remove("birthday");
    // 1965-03-01T00:00+09:00
    assert_eq!(before_1970["birth"], -152_701_200);
    let with_birthday = person("imp_1999", "연말생", "1999-12-31");
    for p in [new_year, before_1970, with_birthday] {
        emulator.add_person(p);
    }
    let client = emulator.client();
    let born = |raw: &'static str| {
        let client = client.clone();
        async move {
            client
                .certification(&id(raw))
                .await
                .unwrap()
                .birth_date
                .unwrap()
        }
    };
    assert_eq!(born("imp_2000").await.to_string(), "2000-01-01");
    assert_eq!(born("imp_1965").await.to_string(), "1965-03-01");
    assert_eq!(born("imp_1999").await.to_string(), "1999-12-31");
}

#[tokio::test]
async fn delete_removes_the_record() {
    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    let deleted = client.delete_certification(&id(ADULT)).await.unwrap();
    assert_eq!(deleted.id, ADULT);
    assert!(matches!(
        client.certification(&id(ADULT)).await,
        Err(Error::NotFound)
    ));
    assert_eq!(emulator.calls(Endpoint::DeleteCertification), 1);
}

#[tokio::test]
async fn persons_load_from_a_wire_shaped_json_file() {
    let path = std::env::temp_dir().join(format!("iamport-persons-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"[{"imp_uid":"imp_424242424242","merchant_uid":null,"pg_provider":"inicis_unified",
            "name":"파일인","gender":null,"birthday":"1970-01-01","birth":-32400,
            "foreigner":false,"foreigner_v2":null,"certified":true,"certified_at":1512446940,
            "unique_key":"ci-from-file","unique_in_site":null,"origin":"https://x.example"}]"#,
    )
    .unwrap();
    let emulator = Emulator::builder()
        .without_sample_persons()
        .persons_file(&path)
        .unwrap()
        .start()
        .await
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let cert = emulator
        .client()
        .certification(&id("imp_424242424242"))
        .await
        .unwrap();
    assert_eq!(cert.birth_date.unwrap().to_string(), "1970-01-01");
    assert_eq!(cert.gender, None);
    assert_eq!(cert.foreigner, None);
    assert_eq!(cert.ci.as_deref(), Some("ci-from-file"));
    assert!(
        Emulator::builder()
            .persons_file("/nonexistent/persons.json")
            .is_err()
    );
}

#[tokio::test]
async fn no_secret_or_personal_data_in_debug_output_or_logs() {
    let (captured, _guard) = Captured::install();

    let emulator = Emulator::start().await.unwrap();
    let client = emulator.client();
    let cert = client.certification(&id(ADULT)).await.unwrap();
    emulator.revoke_token();
    emulator.fail_next(Endpoint::GetCertification, 1, StatusCode::BAD_GATEWAY);
    client.certification(&id(ADULT)).await.unwrap();
    let _ = client.certification(&id("imp_999")).await;

    let personal = [
        cert.name.clone().unwrap(),
        cert.phone.clone().unwrap(),
        cert.ci.clone().unwrap(),
        cert.di.clone().unwrap(),
        "1990-01-01".to_owned(),
        TEST_SECRET.to_owned(),
    ];
    let secret = Secret::new(TEST_SECRET);
    let shown = format!(
        "{cert:?} {cert:#?} {client:?} {secret:?} {secret} {:?}",
        emulator.client_builder()
    );
    let logs = captured.text();
    assert!(logs.contains("access token"), "the capture works: {logs}");
    for value in &personal {
        assert!(
            !shown.contains(value.as_str()),
            "Debug leaks {value}: {shown}"
        );
        assert!(!logs.contains(value.as_str()), "logs leak {value}: {logs}");
    }
}

#[tokio::test]
async fn the_emulator_speaks_portone_wire_format() {
    let emulator = Emulator::start().await.unwrap();
    let http = iamport_e2e::http();
    let url = emulator.url();
    // Form-encoded token request, as PortOne's PHP and Java clients send it.
    let token: serde_json::Value = http
        .post(format!("{url}/users/getToken"))
        .form(&[("imp_key", TEST_KEY), ("imp_secret", TEST_SECRET)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["code"], 0);
    let access = token["response"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(access.len(), 40);
    let life = token["response"]["expired_at"].as_i64().unwrap()
        - token["response"]["now"].as_i64().unwrap();
    assert_eq!(life, 1800);
    // Asking again returns the same token and expiry.
    let again: serde_json::Value = http
        .post(format!("{url}/users/getToken"))
        .json(&json!({"imp_key": TEST_KEY, "imp_secret": TEST_SECRET}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["response"]["access_token"], access.as_str());
    assert_eq!(
        again["response"]["expired_at"],
        token["response"]["expired_at"]
    );

    for auth in [access.clone(), format!("Bearer {access}")] {
        let response = http
            .get(format!("{url}/certifications/{ADULT}"))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], 0);
        assert_eq!(body["message"], serde_json::Value::Null);
        assert_eq!(body["response"]["imp_uid"], ADULT);
    }
    let unauthorized = http
        .get(format!("{url}/certifications/{ADULT}"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let missing = http
        .get(format!("{url}/certifications/imp_404"))
        .header("Authorization", &access)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": -1, "message": "인증결과가 존재하지 않습니다.", "response": null})
    );
    let wrong = http
        .post(format!("{url}/users/getToken"))
        .json(&json!({"imp_key": TEST_KEY, "imp_secret": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn tokens_asked_for_in_their_last_minute_are_extended() {
    let emulator = Emulator::builder()
        .token_lifetime(
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(300),
        )
        .start()
        .await
        .unwrap();
    let http = iamport_e2e::http();
    let ask = || async {
        let v: serde_json::Value = http
            .post(format!("{}/users/getToken", emulator.url()))
            .json(&json!({"imp_key": TEST_KEY, "imp_secret": TEST_SECRET}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["response"]["access_token"].as_str().unwrap().to_owned(),
            v["response"]["expired_at"].as_i64().unwrap(),
        )
    };
    let (first, expiry) = ask().await;
    let (second, extended) = ask().await;
    assert_eq!(first, second);
    assert_eq!(extended, expiry + 300);
}
