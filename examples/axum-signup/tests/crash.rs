//! `kill -9` of the demo at a random moment of a burst of signups on a slow database, then a
//! restart: nobody who got a 201 can get a second account — before or after the reservations'
//! leases end — and every account has its person's key (both were written in one
//! transaction). Needs `DATABASE_URL`; prints a skip notice without it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::PgPool;
use support::start_demo;

/// The emulator's people the demo admits (adults; `007` is registered at startup).
const PEOPLE: [&str; 2] = ["imp_100000000001", "imp_100000000003"];

/// Signups per person in one burst.
const BURST: usize = 15;

const ROUNDS: u64 = 6;

/// When round `round` kills the demo: moving through the burst (which lasts about 250 ms).
fn kill_after(round: u64) -> u64 {
    30 + 35 * round
}

async fn sql(pool: &PgPool, statement: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(pool)
        .await
        .unwrap();
}

async fn count(pool: &PgPool, query: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn signup(http: &reqwest::Client, url: &str, imp_uid: &str) -> Option<u16> {
    let response = http
        .post(format!("{url}/certifications"))
        .json(&serde_json::json!({ "imp_uid": imp_uid }))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_burst_never_gives_an_acknowledged_person_a_second_account() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "SKIPPED a_kill_during_a_burst_never_gives_an_acknowledged_person_a_second_account: \
             DATABASE_URL is not set — run: createdb -h 127.0.0.1 -U postgres test; \
             export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
        );
        return;
    };
    // The demo's tables in a schema of this run's own.
    let admin = PgPool::connect(&url).await.unwrap();
    let schema = format!("demo_crash_{}", std::process::id());
    sql(&admin, format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    sql(&admin, format!("CREATE SCHEMA {schema}")).await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let env = [("DATABASE_URL", scoped.as_str()), ("SIGNUP_BINDING", "off")];
    let http = reqwest_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let mut acknowledged_twice = Vec::new();
    let mut killed_mid_signup = 0;
    for round in 0..ROUNDS {
        let demo = start_demo(&env);
        if round == 0 {
            // A slow database: every account insert takes 50–150 ms.
            sql(
                &admin,
                format!(
                    "CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN PERFORM pg_sleep(0.05 + random() * 0.1); RETURN NEW; END $$; \
                     CREATE TRIGGER slow BEFORE INSERT ON {schema}.demo_accounts \
                     FOR EACH ROW EXECUTE FUNCTION {schema}.slow()"
                ),
            )
            .await;
        }
        // The burst, and a kill -9 at a moment that moves through it from round to round.
        let mut burst = Vec::new();
        for person in PEOPLE {
            for _ in 0..BURST {
                let (http, url) = (http.clone(), demo.url.clone());
                burst.push(tokio::spawn(async move {
                    (person, signup(&http, &url, person).await)
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(kill_after(round))).await;
        drop(demo); // SIGKILL
        // 201s per person, over the burst and after the restart.
        let mut created: BTreeMap<&str, usize> = BTreeMap::new();
        let mut unanswered = 0;
        for task in burst {
            match task.await.unwrap() {
                (person, Some(201)) => *created.entry(person).or_default() += 1,
                (_, None) => unanswered += 1,
                _ => {}
            }
        }
        killed_mid_signup += usize::from(unanswered > 0);

        // Restarted: the people who got a 201 are refused while the dead process's
        // reservations still hold, and after their leases end.
        let demo = start_demo(&env);
        let acknowledged: BTreeSet<&str> = created.keys().copied().collect();
        for person in &acknowledged {
            let status = signup(&http, &demo.url, person).await;
            if status != Some(409) {
                acknowledged_twice.push(format!(
                    "round {round}: {person} got {status:?} after a 201, before the leases ended"
                ));
            }
        }
        sql(
            &admin,
            format!(
                "UPDATE {schema}.iamport_unique_keys SET lease_until = now() - interval '1 second' \
                 WHERE NOT committed"
            ),
        )
        .await;
        for person in PEOPLE {
            if signup(&http, &demo.url, person).await == Some(201) {
                *created.entry(person).or_default() += 1;
            }
        }
        for (person, n) in &created {
            if *n > 1 {
                acknowledged_twice.push(format!("round {round}: {person} got {n} × 201"));
            }
        }
        // Both or neither: every account has its person's key, and no key lacks an account
        // (besides the sample person the demo registers at startup, as an import would).
        let accounts = count(
            &admin,
            format!("SELECT count(*) FROM {schema}.demo_accounts"),
        )
        .await;
        let keys = count(
            &admin,
            format!("SELECT count(*) FROM {schema}.iamport_accounts"),
        )
        .await;
        assert_eq!(
            accounts + 1,
            keys,
            "round {round}: {accounts} accounts, {keys} person keys (one imported)"
        );
        assert!(
            accounts <= PEOPLE.len() as i64,
            "round {round}: {accounts} accounts for {} people",
            PEOPLE.len()
        );
        eprintln!(
            "round {round}: killed after {} ms, {unanswered} signups unanswered, 201s {created:?}, \
             {accounts} accounts",
            kill_after(round)
        );
        drop(demo);
        // The next round starts with nobody signed up.
        sql(
            &admin,
            format!(
                "TRUNCATE {schema}.demo_accounts, {schema}.iamport_accounts, \
                 {schema}.iamport_unique_keys"
            ),
        )
        .await;
    }
    sql(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
    assert!(acknowledged_twice.is_empty(), "{acknowledged_twice:?}");
    // The path under test was taken: some kill landed while signups were in flight.
    assert!(
        killed_mid_signup > 0,
        "no kill landed during a burst: the test proved nothing"
    );
}

/// A `reqwest::ClientBuilder` with the tree's one crypto provider installed first (reqwest is
/// built with `rustls-no-provider`).
fn reqwest_builder() -> reqwest::ClientBuilder {
    let _ = iamport_tower::client::crypto_provider().install_default();
    reqwest::Client::builder()
}
