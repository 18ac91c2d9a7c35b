//! One soak run: set up, load and faults until the deadline, settle, check, clean up.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iamport_mock::Emulator;
use iamport_mock::proxy::FreezableProxy;
use iamport_tower::unique::{KEY_SECRET_ENV, PostgresStore};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row as _};

use crate::check::{self, Account, Evidence};
use crate::faults::{self, Stall};
use crate::fleet::Replica;
use crate::ledger::Ledger;
use crate::load::{self, Shared, Stats};
use crate::population;
use crate::store::{Names, StoreKind, address_of, with_address};
use crate::{Options, bounds};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The command that reruns this run.
fn rerun(options: &Options) -> String {
    format!(
        "cargo run --release -p iamport-soak -- --minutes {} --store {} --seed {} --workers {} --persons {}",
        options.duration.as_secs_f64() / 60.0,
        options.store.as_str(),
        options.seed,
        options.workers,
        options.persons
    )
}

pub(crate) async fn run(options: Options) -> ExitCode {
    println!(
        "iamport-soak: seed {}; rerun: {}",
        options.seed,
        rerun(&options)
    );
    let names = Names::new(options.seed);
    let database = match connect(&options.database_url).await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("iamport-soak: cannot reach PostgreSQL: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = soak(&options, &names, &database).await;
    cleanup(&options, &names, &database).await;
    match outcome {
        Ok(lines) => {
            println!("\n{}", check::render(&lines));
            match lines.iter().find_map(|l| l.violation.clone()) {
                None => {
                    println!(
                        "PASSED: every invariant held (seed {}, store {}).",
                        options.seed,
                        options.store.as_str()
                    );
                    ExitCode::SUCCESS
                }
                Some(violation) => {
                    println!(
                        "FAILED: {violation}\nseed {}; rerun with: {}",
                        options.seed,
                        rerun(&options)
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            println!(
                "FAILED to run the soak: {error}\nseed {}; rerun with: {}",
                options.seed,
                rerun(&options)
            );
            ExitCode::FAILURE
        }
    }
}

async fn connect(url: &str) -> Result<PgPool, BoxError> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?)
}

/// Runs `sql` (one or more statements, no parameters).
async fn execute(database: &PgPool, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(database).await?;
    Ok(())
}

/// The PostgreSQL store's two tables, named for this run.
fn postgres_store(database: &PgPool, names: &Names) -> Result<PostgresStore, BoxError> {
    Ok(PostgresStore::new(database.clone())
        .table(&names.unique_table())?
        .accounts_table(&names.keys_table())?
        .create_tables(false))
}

fn random_secret() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(48)
        .collect()
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn soak(
    options: &Options,
    names: &Names,
    database: &PgPool,
) -> Result<Vec<check::Line>, BoxError> {
    // The tables: two accounts tables (no `UNIQUE` on the person: the app does only what the
    // crate's docs ask), and the store's two when it is PostgreSQL.
    let replica_names = ["a", "b"];
    for name in replica_names {
        execute(
            database,
            format!(
                "CREATE TABLE {} (\n\
                   id BIGSERIAL PRIMARY KEY,\n\
                   store_key TEXT NOT NULL,\n\
                   verification_id TEXT NOT NULL,\n\
                   api TEXT NOT NULL,\n\
                   session TEXT NOT NULL,\n\
                   created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                names.accounts_table(name)
            ),
        )
        .await?;
    }
    if options.store == StoreKind::Postgres {
        postgres_store(database, names)?.migrate().await?;
    }

    // The emulator and its population.
    let emulator = Arc::new(Emulator::builder().without_sample_persons().start().await?);
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let ledger = Arc::new(Ledger::default());
    let mut persons = Vec::with_capacity(options.persons);
    for (i, (person, record)) in population::generate(&mut rng, options.persons)
        .into_iter()
        .enumerate()
    {
        emulator.add_person(record);
        ledger.verified(&person.template, i, None);
        persons.push(person);
    }
    let persons = Arc::new(persons);

    // The store, behind a freezable proxy where one can stand. With PostgreSQL the store is
    // on the app's own pool, so the app's database is what stalls.
    let (stall, app_database, store_urls, store_name) = match options.store {
        StoreKind::Postgres => {
            let upstream =
                address_of(&options.database_url).ok_or("DATABASE_URL has no address")?;
            let proxy = Arc::new(FreezableProxy::start(upstream).await?);
            let url = with_address(&options.database_url, proxy.addr).ok_or("bad DATABASE_URL")?;
            (Stall::Proxy(proxy), url, vec![], names.unique_table())
        }
        StoreKind::Redis => {
            let upstream = address_of(&options.redis_url).ok_or("REDIS_URL has no address")?;
            let proxy = Arc::new(FreezableProxy::start(upstream).await?);
            let url = with_address(&options.redis_url, proxy.addr).ok_or("bad REDIS_URL")?;
            (
                Stall::Proxy(proxy),
                options.database_url.clone(),
                vec![url],
                names.redis_prefix(),
            )
        }
        StoreKind::RedisCluster => {
            if options.cluster_urls.is_empty() {
                return Err(
                    "--store redis-cluster needs REDIS_CLUSTER_URLS (eval \"$(.ci/redis-cluster)\")"
                        .into(),
                );
            }
            (
                Stall::ClusterPause(options.cluster_urls.clone()),
                options.database_url.clone(),
                options.cluster_urls.clone(),
                names.redis_prefix(),
            )
        }
    };

    // The replicas.
    let dir = std::env::temp_dir().join(format!("iamport-soak-{}", names.run));
    std::fs::create_dir_all(&dir)?;
    let env = vec![
        (KEY_SECRET_ENV.to_owned(), random_secret()),
        ("SOAK_BINDING_SECRET".to_owned(), random_secret()),
    ];
    let mut replicas = Vec::new();
    for name in replica_names {
        let port = free_port()?;
        let mut args = vec![
            "--name".into(),
            name.into(),
            "--port".into(),
            port.to_string(),
            "--emulator".into(),
            emulator.url(),
            "--database-url".into(),
            app_database.clone(),
            "--accounts-table".into(),
            names.accounts_table(name),
            "--store".into(),
            options.store.as_str().into(),
            "--store-name".into(),
            store_name.clone(),
        ];
        for url in &store_urls {
            args.extend(["--store-url".into(), url.clone()]);
        }
        if options.store == StoreKind::Postgres {
            args.extend(["--keys-table".into(), names.keys_table()]);
        }
        replicas.push(Arc::new(Replica::new(
            name,
            port,
            args,
            dir.join(format!("replica-{name}.log")),
            env.clone(),
        )));
    }
    for replica in &replicas {
        replica.start().await?;
    }
    println!(
        "replicas up at {} and {}; store {}; load {} workers for {:.1} min; request bound {:.0} s; logs in {}",
        replicas[0].url,
        replicas[1].url,
        options.store.as_str(),
        options.workers,
        options.duration.as_secs_f64() / 60.0,
        bounds::request().as_secs_f64(),
        dir.display()
    );

    // Load, faults and the RSS watch, until the deadline.
    let start = Instant::now();
    let deadline = start + options.duration;
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(Shared {
        emulator: emulator.url(),
        replicas: replicas.clone(),
        ledger: ledger.clone(),
        stats: stats.clone(),
        adults: load::adults(&persons),
        persons: persons.clone(),
    });
    let workers: Vec<_> = (0..options.workers)
        .map(|i| {
            tokio::spawn(load::worker(
                shared.clone(),
                options.seed.wrapping_add(1 + i as u64),
                deadline,
            ))
        })
        .collect();
    let schedule = faults::schedule(options.seed, options.duration);
    println!("fault schedule: {} faults", schedule.len());
    let stall = Arc::new(stall);
    let injector = {
        let (emulator, replicas, stall) = (emulator.clone(), replicas.clone(), stall.clone());
        let seed = options.seed;
        tokio::spawn(faults::inject(
            schedule, start, seed, emulator, stall, replicas,
        ))
    };
    let warm_up = (options.duration / 10)
        .max(Duration::from_secs(20))
        .min(options.duration / 2);
    let watcher = {
        let replicas = replicas.clone();
        tokio::spawn(async move {
            let mut peaks = vec![0u64; replicas.len()];
            let mut last_report = Instant::now();
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if start.elapsed() < warm_up {
                    continue;
                }
                for (peak, replica) in peaks.iter_mut().zip(&replicas) {
                    if let Some(kib) = replica.rss_kib() {
                        *peak = (*peak).max(kib);
                    }
                }
                if last_report.elapsed() >= Duration::from_secs(60) {
                    last_report = Instant::now();
                    println!(
                        "  {:.0} s: peak RSS after warm-up {:?} KiB",
                        start.elapsed().as_secs_f64(),
                        peaks
                    );
                }
            }
            peaks
        })
    };
    let mut progress = tokio::time::interval(Duration::from_secs(60));
    progress.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => break,
            _ = progress.tick() => println!(
                "  {:.0} s: {} requests, {} accounts answered 201",
                start.elapsed().as_secs_f64(),
                stats.requests.load(std::sync::atomic::Ordering::Relaxed),
                load::lock(&stats.created).len()
            ),
        }
    }
    for worker in workers {
        let _ = worker.await;
    }
    let injected = injector.await?;
    let peaks = watcher.await?;
    let elapsed = start.elapsed();

    // Settle: no faults, the store thawed, background commits finished, replicas stopped.
    emulator.clear_faults();
    if let Stall::Proxy(proxy) = &*stall {
        proxy.thaw();
    }
    tokio::time::sleep(bounds::STORE_TIMEOUT * 3).await;
    for replica in &replicas {
        replica.stop().await;
    }

    let mut accounts = Vec::new();
    for name in replica_names {
        let replica = replicas
            .iter()
            .find(|r| r.name == name)
            .map_or("?", |r| r.name);
        let sql = format!(
            "SELECT store_key, verification_id, session FROM {}",
            names.accounts_table(name)
        );
        for row in sqlx::query(AssertSqlSafe(sql)).fetch_all(database).await? {
            accounts.push(Account {
                replica,
                store_key: row.try_get(0)?,
                verification_id: row.try_get(1)?,
                session: row.try_get(2)?,
            });
        }
    }
    // The accounts' keys the handlers recorded in their accounts' transactions.
    let keys = if options.store == StoreKind::Postgres {
        let sql = format!("SELECT encode(key, 'hex') FROM {}", names.keys_table());
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(database).await?;
        Some(
            rows.iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<HashSet<_>, _>>()?,
        )
    } else {
        None
    };
    let rss_kib = replicas
        .iter()
        .map(|r| r.name)
        .zip(peaks)
        .collect::<Vec<_>>();
    Ok(check::check(&Evidence {
        accounts: &accounts,
        keys: keys.as_ref(),
        ledger: &ledger,
        persons: &persons,
        stats: &stats,
        injected: &injected,
        rss_kib,
        rss_limit_kib: options.rss_limit_mib * 1024,
        request_bound: bounds::request(),
        elapsed,
    }))
}

/// Drops this run's tables and keys.
async fn cleanup(options: &Options, names: &Names, database: &PgPool) {
    let mut tables = vec![names.accounts_table("a"), names.accounts_table("b")];
    if options.store == StoreKind::Postgres {
        tables.extend([names.unique_table(), names.keys_table()]);
    }
    for table in tables {
        let _ = execute(database, format!("DROP TABLE IF EXISTS {table}")).await;
    }
    let urls = match options.store {
        StoreKind::Postgres => return,
        StoreKind::Redis => vec![options.redis_url.clone()],
        StoreKind::RedisCluster => options.cluster_urls.clone(),
    };
    let pattern = format!("{}*", names.redis_prefix());
    for url in urls {
        let clean = async {
            let client = redis::Client::open(url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            let mut cursor: u64 = 0;
            for _ in 0..10_000 {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await?;
                for key in keys {
                    let _: redis::RedisResult<()> = redis::cmd("DEL")
                        .arg(key)
                        .query_async(&mut connection)
                        .await;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            Ok::<_, redis::RedisError>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), clean).await;
    }
}
