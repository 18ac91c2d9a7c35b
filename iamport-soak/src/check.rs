//! The invariants, checked after the run against the soak's own truth (the population it
//! gave the emulator, the tickets it saw minted), and the table that reports them.
//!
//! The table holds counts only: no name, phone, birth date, CI or DI, and no secret.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::faults::{Fault, Injected};
use crate::ledger::Ledger;
use crate::load::{Stats, lock};
use crate::population::{Kind, Person};

/// One row of a replica's accounts table.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) replica: &'static str,
    pub(crate) store_key: String,
    pub(crate) verification_id: String,
    pub(crate) session: String,
}

/// Everything the check reads.
#[derive(Debug)]
pub(crate) struct Evidence<'a> {
    pub(crate) accounts: &'a [Account],
    /// The PostgreSQL store's accounts' keys (hex), `None` with another store.
    pub(crate) keys: Option<&'a HashSet<String>>,
    pub(crate) ledger: &'a Ledger,
    pub(crate) persons: &'a [Person],
    pub(crate) stats: &'a Stats,
    pub(crate) injected: &'a Injected,
    /// Per replica: the largest RSS seen after warm-up, KiB.
    pub(crate) rss_kib: Vec<(&'static str, u64)>,
    pub(crate) rss_limit_kib: u64,
    pub(crate) request_bound: Duration,
    pub(crate) elapsed: Duration,
}

/// One line of the table.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) what: String,
    pub(crate) figure: String,
    /// `None`: a figure for information, not an invariant.
    pub(crate) holds: Option<bool>,
    /// Why it failed, for the closing note.
    pub(crate) violation: Option<String>,
}

fn figure(what: impl Into<String>, figure: impl ToString) -> Line {
    Line {
        what: what.into(),
        figure: figure.to_string(),
        holds: None,
        violation: None,
    }
}

fn invariant(what: impl Into<String>, figure: impl ToString, holds: bool, why: String) -> Line {
    Line {
        what: what.into(),
        figure: figure.to_string(),
        holds: Some(holds),
        violation: (!holds).then_some(why),
    }
}

/// The lines of the table, figures and invariants, in the order they are printed.
pub(crate) fn check(e: &Evidence<'_>) -> Vec<Line> {
    let mut lines = Vec::new();
    let stats = e.stats;

    // The load.
    lines.push(figure(
        "run length",
        format!("{:.0} s", e.elapsed.as_secs_f64()),
    ));
    lines.push(figure(
        "requests to the replicas",
        stats.requests.load(Ordering::Relaxed),
    ));
    for (scenario, n) in lock(&stats.by_scenario).iter() {
        lines.push(figure(format!("  scenario: {scenario}"), n));
    }
    let statuses = stats.statuses();
    let class = |lo: u16, hi: u16| -> u64 {
        statuses
            .iter()
            .filter(|(s, _)| (lo..=hi).contains(*s))
            .map(|(_, n)| n)
            .sum()
    };
    for (label, lo, hi) in [
        ("answers 2xx", 200, 299),
        ("answers 4xx", 400, 499),
        ("answers 5xx", 500, 599),
    ] {
        let detail: Vec<String> = statuses
            .iter()
            .filter(|(s, _)| (lo..=hi).contains(*s))
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        lines.push(figure(
            format!("  {label}"),
            format!("{} ({})", class(lo, hi), detail.join(" ")),
        ));
    }
    lines.push(figure(
        "verifications at the emulator",
        e.ledger.verifications(),
    ));
    lines.push(figure(
        "load steps at the emulator that failed",
        stats.setup_failures.load(Ordering::Relaxed),
    ));
    lines.push(figure(
        "connections cut by a SIGKILL",
        stats.cut_by_kill.load(Ordering::Relaxed),
    ));
    lines.push(figure("accounts created", e.accounts.len()));

    // Admission against the truth.
    let mut refused_kinds: HashMap<Kind, u64> = HashMap::new();
    let (mut unknown, mut unbound) = (0u64, 0u64);
    let mut per_person: HashMap<usize, u64> = HashMap::new();
    let mut first_wrong = None;
    for account in e.accounts {
        let Some(verified) = e.ledger.lookup(&account.verification_id) else {
            unknown += 1;
            first_wrong.get_or_insert_with(|| {
                format!(
                    "replica {} admitted an id the soak never verified",
                    account.replica
                )
            });
            continue;
        };
        *per_person.entry(verified.person).or_default() += 1;
        let kind = e.persons[verified.person].kind;
        if !kind.admissible() {
            *refused_kinds.entry(kind).or_default() += 1;
            first_wrong.get_or_insert_with(|| {
                format!(
                    "replica {} admitted a {} person (verification {})",
                    account.replica,
                    kind.as_str(),
                    account.verification_id
                )
            });
        }
        let bound = verified
            .ticket
            .as_deref()
            .and_then(|t| e.ledger.session_of(t))
            .is_some_and(|owner| owner == account.session);
        if !bound {
            unbound += 1;
            first_wrong.get_or_insert_with(|| {
                format!(
                    "replica {} admitted verification {} from a session that did not start it",
                    account.replica, account.verification_id
                )
            });
        }
    }
    for kind in [Kind::Young, Kind::Foreigner, Kind::Uncertified] {
        let n = refused_kinds.get(&kind).copied().unwrap_or(0);
        lines.push(invariant(
            format!(
                "admitted {} persons (born 2000+ / foreign / uncertified)",
                kind.as_str()
            ),
            n,
            n == 0,
            first_wrong.clone().unwrap_or_default(),
        ));
    }
    lines.push(invariant(
        "admitted unbound verifications",
        unbound,
        unbound == 0,
        first_wrong.clone().unwrap_or_default(),
    ));
    lines.push(invariant(
        "admitted ids unknown to the emulator's truth",
        unknown,
        unknown == 0,
        first_wrong.clone().unwrap_or_default(),
    ));

    // One account per person, across both replicas.
    let doubled = per_person.values().filter(|&&n| n > 1).count();
    let worst = per_person.values().copied().max().unwrap_or(0);
    let mut keys = HashSet::new();
    let doubled_keys = e
        .accounts
        .iter()
        .filter(|a| !keys.insert(a.store_key.as_str()))
        .count();
    lines.push(figure("persons with an account", per_person.len()));
    lines.push(invariant(
        "persons with more than one account (both replicas)",
        format!("{doubled} (most: {worst}; repeated store keys: {doubled_keys})"),
        doubled == 0 && doubled_keys == 0,
        format!("{doubled} persons have more than one account across the two replicas"),
    ));
    if let Some(keys) = e.keys {
        // Written in one transaction: every account has its key, every key its account.
        let without_key = e
            .accounts
            .iter()
            .filter(|a| !keys.contains(&a.store_key))
            .count();
        let accounts: HashSet<&str> = e.accounts.iter().map(|a| a.store_key.as_str()).collect();
        let orphans = keys
            .iter()
            .filter(|k| !accounts.contains(k.as_str()))
            .count();
        lines.push(invariant(
            "accounts without their key, keys without their account",
            format!("{without_key}, {orphans} (keys: {})", keys.len()),
            without_key == 0 && orphans == 0,
            format!(
                "{without_key} accounts have no key in the accounts' keys table, {orphans} keys no account"
            ),
        ));
        lines.push(figure(
            "second accounts refused by record_account (keys table)",
            stats.refused_by_keys_table.load(Ordering::Relaxed),
        ));
    }

    // Answers the load saw.
    let wrong = lock(&stats.wrongly_admitted).clone();
    lines.push(invariant(
        "2xx answers to requests that must be refused",
        wrong.len(),
        wrong.is_empty(),
        wrong.first().cloned().unwrap_or_default(),
    ));
    let ids: HashSet<&str> = e
        .accounts
        .iter()
        .map(|a| a.verification_id.as_str())
        .collect();
    let created = lock(&stats.created).clone();
    let missing = created
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .count();
    lines.push(invariant(
        "201 answers without an account row",
        format!("{missing} of {}", created.len()),
        missing == 0 && !created.is_empty(),
        if created.is_empty() {
            "no signup succeeded at all: the load did not exercise admission".into()
        } else {
            format!("{missing} signups answered 201 have no account row")
        },
    ));

    // Bounded answers.
    let unanswered = stats.unanswered.load(Ordering::Relaxed);
    let over = stats.over_bound.load(Ordering::Relaxed);
    let max = stats.max_latency_ms.load(Ordering::Relaxed);
    lines.push(invariant(
        format!(
            "requests unanswered or later than {:.0} s",
            e.request_bound.as_secs_f64()
        ),
        format!(
            "{} (slowest answer {:.1} s)",
            unanswered + over,
            max as f64 / 1000.0
        ),
        unanswered + over == 0,
        format!("{unanswered} requests unanswered, {over} answered after the bound"),
    ));

    // Memory.
    for (replica, kib) in &e.rss_kib {
        lines.push(invariant(
            format!(
                "replica {replica} peak RSS after warm-up (limit {} MiB)",
                e.rss_limit_kib / 1024
            ),
            format!("{:.1} MiB", *kib as f64 / 1024.0),
            *kib > 0 && *kib <= e.rss_limit_kib,
            format!(
                "replica {replica} RSS {:.1} MiB (limit {} MiB, or never measured)",
                *kib as f64 / 1024.0,
                e.rss_limit_kib / 1024
            ),
        ));
    }

    // Faults: injected with evidence, every kind.
    for fault in Fault::ALL {
        let attempted = e.injected.attempted.get(&fault).copied().unwrap_or(0);
        let effective = e.injected.effective.get(&fault).copied().unwrap_or(0);
        lines.push(invariant(
            format!("fault: {}", fault.name()),
            format!("{effective} injected ({attempted} scheduled)"),
            effective >= 1,
            format!("fault \"{}\" was never injected with effect", fault.name()),
        ));
    }
    lines.push(invariant(
        "fault injector errors",
        e.injected.errors.len(),
        e.injected.errors.is_empty(),
        e.injected.errors.first().cloned().unwrap_or_default(),
    ));
    lines
}

/// The table, as printed (and pasted into RELIABILITY.md).
pub(crate) fn render(lines: &[Line]) -> String {
    let width = lines
        .iter()
        .map(|l| l.what.chars().count())
        .max()
        .unwrap_or(10);
    let mut out = String::new();
    out.push_str(&format!("| {:<width$} | {:<40} | ok |\n", "what", "figure"));
    out.push_str(&format!(
        "|{}|{}|----|\n",
        "-".repeat(width + 2),
        "-".repeat(42)
    ));
    for line in lines {
        let ok = match line.holds {
            None => "",
            Some(true) => "✓",
            Some(false) => "✗",
        };
        out.push_str(&format!(
            "| {:<width$} | {:<40} | {ok:<2} |\n",
            line.what, line.figure
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    fn person(kind: Kind, i: usize) -> Person {
        Person {
            template: format!("imp_{i:012}"),
            kind,
        }
    }

    /// A run where everything held, then one thing each broken: the check must notice.
    fn verdict(accounts: &[Account], ledger: &Ledger, stats: &Stats) -> Option<String> {
        verdict_with_keys(accounts, None, ledger, stats)
    }

    fn verdict_with_keys(
        accounts: &[Account],
        keys: Option<&HashSet<String>>,
        ledger: &Ledger,
        stats: &Stats,
    ) -> Option<String> {
        let persons = vec![
            person(Kind::Adult, 0),
            person(Kind::Young, 1),
            person(Kind::Adult, 2),
        ];
        let mut injected = Injected::default();
        for fault in Fault::ALL {
            injected.attempted.insert(fault, 1);
            injected.effective.insert(fault, 1);
        }
        check(&Evidence {
            accounts,
            keys,
            ledger,
            persons: &persons,
            stats,
            injected: &injected,
            rss_kib: vec![("a", 10_000), ("b", 10_000)],
            rss_limit_kib: 128 * 1024,
            request_bound: Duration::from_secs(29),
            elapsed: Duration::from_secs(60),
        })
        .into_iter()
        .find_map(|l| l.violation)
    }

    fn account(replica: &'static str, key: &str, id: &str, session: &str) -> Account {
        Account {
            replica,
            store_key: key.into(),
            verification_id: id.into(),
            session: session.into(),
        }
    }

    fn world() -> (Ledger, Stats) {
        let ledger = Ledger::default();
        ledger.ticket_minted("t1", "s1");
        ledger.ticket_minted("t2", "s2");
        ledger.ticket_minted("t3", "s3");
        ledger.verified("imp_1", 0, Some("t1"));
        ledger.verified("imp_2", 0, Some("t2"));
        ledger.verified("imp_3", 1, Some("t3"));
        ledger.verified("imp_000000000002", 2, None);
        let stats = Stats::default();
        lock(&stats.created).push("imp_1".into());
        (ledger, stats)
    }

    #[test]
    fn a_clean_run_passes() {
        let (ledger, stats) = world();
        let accounts = [account("a", "k0", "imp_1", "s1")];
        assert_eq!(verdict(&accounts, &ledger, &stats), None);
    }

    #[test]
    fn a_second_account_on_the_other_replica_fails() {
        let (ledger, stats) = world();
        let accounts = [
            account("a", "k0", "imp_1", "s1"),
            account("b", "k0", "imp_2", "s2"),
        ];
        let violation = verdict(&accounts, &ledger, &stats).unwrap();
        assert!(violation.contains("more than one account"), "{violation}");
    }

    #[test]
    fn an_account_without_its_key_or_a_key_without_its_account_fails() {
        let (ledger, stats) = world();
        let accounts = [account("a", "k0", "imp_1", "s1")];
        let keys = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<HashSet<_>>();
        assert_eq!(
            verdict_with_keys(&accounts, Some(&keys(&["k0"])), &ledger, &stats),
            None
        );
        for wrong in [keys(&[]), keys(&["k0", "k9"])] {
            let violation = verdict_with_keys(&accounts, Some(&wrong), &ledger, &stats).unwrap();
            assert!(violation.contains("accounts' keys table"), "{violation}");
        }
    }

    #[test]
    fn an_admitted_minor_fails() {
        let (ledger, stats) = world();
        let accounts = [
            account("a", "k0", "imp_1", "s1"),
            account("b", "k1", "imp_3", "s3"),
        ];
        let violation = verdict(&accounts, &ledger, &stats).unwrap();
        assert!(violation.contains("young"), "{violation}");
    }

    #[test]
    fn an_admission_from_another_session_or_without_a_ticket_fails() {
        let (ledger, stats) = world();
        for stolen in [
            account("b", "k2", "imp_2", "s1"),
            account("b", "k2", "imp_000000000002", "s1"),
        ] {
            let accounts = [account("a", "k0", "imp_1", "s1"), stolen];
            let violation = verdict(&accounts, &ledger, &stats).unwrap();
            assert!(violation.contains("did not start it"), "{violation}");
        }
    }

    #[test]
    fn an_unanswered_request_or_a_missing_fault_fails() {
        let (ledger, stats) = world();
        let accounts = [account("a", "k0", "imp_1", "s1")];
        stats.unanswered.fetch_add(1, Ordering::Relaxed);
        let violation = verdict(&accounts, &ledger, &stats).unwrap();
        assert!(violation.contains("unanswered"), "{violation}");

        let (ledger, stats) = world();
        let persons = vec![person(Kind::Adult, 0)];
        let lines = check(&Evidence {
            accounts: &accounts,
            keys: None,
            ledger: &ledger,
            persons: &persons,
            stats: &stats,
            injected: &Injected::default(),
            rss_kib: vec![("a", 10_000)],
            rss_limit_kib: 128 * 1024,
            request_bound: Duration::from_secs(29),
            elapsed: Duration::from_secs(60),
        });
        let violation = lines.into_iter().find_map(|l| l.violation).unwrap();
        assert!(violation.contains("never injected"), "{violation}");
    }
}
