//! iamport-tower with plain hyper 1 and `tower::ServiceBuilder` — no web framework.
//!
//! ```text
//! cargo run -p hyper-service      # http://127.0.0.1:3001 (PORT overrides; 0 = any free port)
//! ```
//!
//! Without `IMP_KEY`/`IMP_SECRET` it runs against the built-in PortOne emulator (the default
//! `emulator` feature) and prints the emulator's sample ids as ready-to-paste `curl` lines,
//! each with the status it gets. `cargo build -p hyper-service --no-default-features` builds it
//! without the emulator and without axum anywhere in the tree: the production shape.
//!
//! The handler takes hyper's own `Request<Incoming>`: the layer runs in `query_only` mode
//! (PortOne's redirect flow, `?imp_uid=…`) and passes requests through untouched. To also
//! accept the popup flow's JSON/form bodies, drop `.query_only()` and take
//! `Request<iamport_tower::body::Body>` — the layer then reads the body and hands the same bytes on.

use std::convert::Infallible;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use iamport_tower::{CertificationLayer, Certified, IamportClient, require_certified};

/// Only people at least 19 full years old today in Korea (the legal adult age).
#[require_certified(min_age = 19)]
async fn adults_only(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = Certified::from_extensions(req.extensions())
        .map(|person| person.id.clone())
        .unwrap_or_default();
    let body = format!("Welcome! Verification {id} admitted: an adult.\n");
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// The emulator's sample people worth trying here: query, what it shows, the status.
#[cfg(feature = "emulator")]
const SAMPLES: &[(&str, &str, u16)] = &[
    ("imp_uid=imp_100000000001", "an adult, born 1990", 200),
    ("imp_uid=imp_100000000002", "a minor, born 2012", 403),
    (
        "imp_uid=imp_100000000005",
        "a verification not completed",
        403,
    ),
    (
        "imp_uid=imp_999999999999",
        "an id PortOne does not know",
        403,
    ),
    (
        "imp_uid=imp_100000000001&success=false",
        "a cancelled verification",
        400,
    ),
    ("", "no id at all", 400),
];

#[tokio::main]
async fn main() -> ExitCode {
    // Plain lines (no colour codes) when the output is a file or a pipe.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    #[cfg(feature = "emulator")]
    let emulator;
    let client = if std::env::var_os("IMP_KEY").is_some() {
        match IamportClient::from_env() {
            Ok(client) => client,
            Err(error) => {
                eprintln!("hyper-service: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        #[cfg(feature = "emulator")]
        {
            emulator = match iamport_mock::Emulator::start().await {
                Ok(emulator) => emulator,
                Err(error) => {
                    eprintln!("hyper-service: cannot start the emulator: {error}");
                    return ExitCode::FAILURE;
                }
            };
            println!(
                "No IMP_KEY/IMP_SECRET set: using the built-in PortOne emulator at {}",
                emulator.url()
            );
            emulator.client()
        }
        #[cfg(not(feature = "emulator"))]
        {
            eprintln!(
                "hyper-service: IMP_KEY is not set (and this build has no emulator: \
                 build with the default `emulator` feature to run without credentials)"
            );
            return ExitCode::FAILURE;
        }
    };

    // The access token, once, before the first request: it costs one round trip, not two.
    match client.warm_up().await {
        Ok(()) => {}
        Err(error @ iamport_tower::Error::BadCredentials) => {
            eprintln!("hyper-service: {error}");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            tracing::warn!(%error, "PortOne is not answering yet; the first request will try again");
        }
    }
    #[cfg(feature = "emulator")]
    let on_emulator = std::env::var_os("IMP_KEY").is_none();

    let service = tower::ServiceBuilder::new()
        .layer(CertificationLayer::new(client).query_only())
        .service_fn(adults_only);

    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let listener =
        match tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("hyper-service: cannot listen on port {port}: {error}");
                return ExitCode::FAILURE;
            }
        };
    let url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(error) => {
            eprintln!("hyper-service: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("hyper-service listening on {url}");
    #[cfg(feature = "emulator")]
    if on_emulator {
        print_samples(&url);
    }
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("hyper-service: accept failed: {error}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The sample ids as curl lines, each with what it shows and the status it gets.
#[cfg(feature = "emulator")]
fn print_samples(url: &str) {
    println!("Try it: adults only (min_age = 19), the redirect flow's ?imp_uid=…");
    let width = SAMPLES
        .iter()
        .map(|(query, ..)| url.len() + query.len())
        .max()
        .unwrap_or(0)
        + 2;
    for (query, what, status) in SAMPLES {
        let target = if query.is_empty() {
            format!("{url}/")
        } else {
            format!("{url}/?{query}")
        };
        println!(
            "  curl -i '{target}'{:pad$}  # {what} → {status}",
            "",
            pad = width - target.len()
        );
    }
    let minor = format!("{url}/?{}", SAMPLES[1].0);
    println!(
        "  curl -i -H 'Accept-Language: ko-KR,ko;q=0.9' '{minor}'  # the same refusal in Korean → 403"
    );
}
