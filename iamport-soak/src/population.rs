//! The generated population the emulator holds: who each person is, by the soak's own
//! independent reading of the policy (not the crate's).
//!
//! Each person is one template in the emulator (`imp_0000…` ids, below the range the
//! emulator draws fresh ids from); every verification the load makes copies a template under
//! a new id, so the same person is verified many times under different ids, through v1 and
//! v2, and keeps one CI.

use serde_json::{Value, json};

/// What the policy makes of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Korean national born 1999 or before, verified: admitted once.
    Adult,
    /// Born 2000 or later (minors among them): refused.
    Young,
    /// Foreign national (an adult): refused (`foreigners = false`).
    Foreigner,
    /// The verification did not complete (`certified: false`): refused.
    Uncertified,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Adult => "adult",
            Self::Young => "young",
            Self::Foreigner => "foreigner",
            Self::Uncertified => "uncertified",
        }
    }

    /// The soak's own oracle of the policy
    /// (`max_birth_year = 1999, foreigners = false`, `certified`).
    pub(crate) fn admissible(self) -> bool {
        self == Self::Adult
    }
}

/// One generated person.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    /// The emulator template's id.
    pub(crate) template: String,
    pub(crate) kind: Kind,
}

/// `n` persons drawn from `rng`, and each one's record for the emulator.
///
/// The mix: 60 % adults, 20 % young, 10 % foreigners, 10 % uncertified. Birthdays include
/// the year boundary itself (1999-12-31 admitted, 2000-01-01 refused), and one record in ten
/// carries only PortOne's old `birth` (midnight in Korea as a Unix time), not `birthday`.
pub(crate) fn generate(rng: &mut fastrand::Rng, n: usize) -> Vec<(Person, Value)> {
    (0..n)
        .map(|i| {
            let roll = rng.u32(0..100);
            let kind = match roll {
                0..60 => Kind::Adult,
                60..80 => Kind::Young,
                80..90 => Kind::Foreigner,
                _ => Kind::Uncertified,
            };
            let birthday = match (kind, rng.u32(0..20)) {
                (Kind::Young, 0) => "2000-01-01".to_owned(),
                (Kind::Young, _) => date(rng, 2000, 2019),
                (_, 0) => "1999-12-31".to_owned(),
                _ => date(rng, 1940, 1999),
            };
            let template = format!("imp_{:012}", 100_000 + i);
            // A name that is plainly synthetic; with the birthday it seeds the CI.
            let mut record = iamport_mock::person(&template, &format!("soak-{i}"), &birthday);
            match kind {
                Kind::Foreigner => {
                    record["foreigner"] = json!(true);
                    record["foreigner_v2"] = json!(true);
                }
                Kind::Uncertified => record["certified"] = json!(false),
                Kind::Adult | Kind::Young => {}
            }
            if rng.u32(0..10) == 0
                && let Some(object) = record.as_object_mut()
            {
                object.remove("birthday");
            }
            (Person { template, kind }, record)
        })
        .collect()
}

fn date(rng: &mut fastrand::Rng, from: i32, to: i32) -> String {
    let year = rng.i32(from..=to);
    let month = rng.u32(1..=12);
    let day = rng.u32(1..=28);
    format!("{year:04}-{month:02}-{day:02}")
}
