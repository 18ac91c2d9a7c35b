//! Looks up PortOne certifications with `IamportClient`.
//!
//! `cargo run -p lookup -- imp_123456789012 …` uses `IMP_KEY`/`IMP_SECRET` (and optional
//! `IAMPORT_API_URL`) when set; otherwise it starts the built-in emulator and looks up its
//! sample persons. Personal fields are printed only as years and presence flags.

use std::process::ExitCode;

use iamport_tower::mock::{Emulator, sample_persons};
use iamport_tower::{Certification, IamportClient, ImpUid};

fn describe(cert: &Certification) -> String {
    format!(
        "certified={} born_in={} foreigner={:?} has_ci={} provider={}",
        cert.certified,
        cert.birth_date.map_or("?".into(), |d| d.year().to_string()),
        cert.foreigner,
        cert.unique_key.is_some(),
        cert.pg_provider.as_deref().unwrap_or("?"),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut ids: Vec<String> = std::env::args().skip(1).collect();
    let _emulator;
    let client = if std::env::var_os("IMP_KEY").is_some() {
        match IamportClient::from_env() {
            Ok(client) => client,
            Err(error) => {
                eprintln!("lookup: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let emulator = match Emulator::start().await {
            Ok(emulator) => emulator,
            Err(error) => {
                eprintln!("lookup: cannot start the emulator: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "No IMP_KEY set: using the built-in PortOne emulator at {}",
            emulator.url()
        );
        let client = emulator.client();
        if ids.is_empty() {
            ids = sample_persons()
                .iter()
                .filter_map(|p| p["imp_uid"].as_str().map(str::to_owned))
                .collect();
            ids.push("imp_999999999999".into());
            ids.push("imp_1/../../payments".into());
        }
        _emulator = emulator;
        client
    };
    for id in &ids {
        let outcome = match ImpUid::parse(id) {
            Err(error) => format!("refused before any request: {error}"),
            Ok(imp_uid) => match client.certification(&imp_uid).await {
                Ok(cert) => describe(&cert),
                Err(error) => format!("error: {error}"),
            },
        };
        println!("{id:>24}  {outcome}");
    }
    ExitCode::SUCCESS
}
