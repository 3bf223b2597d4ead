//! The automatic decision, right after acceptance and never in the submission's path (a slow
//! bank check must not slow click day): cash claims and accounts the bank check confirms are
//! approved, accounts it says belong to someone else are rejected, and the rest wait for the
//! back office. Claims are leased, so several instances may decide at once.

use crate::domain::claim::Status;
use crate::store::{ClaimRecord, Decided, Store};
use serde::Serialize;
use sportello_platform::now_millis;
use sportello_platform::provider::{Provider, Verdict};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BATCH: i64 = 256;
const LEASE_MS: i64 = 30_000;
const POLL: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Question<'a> {
    iban: &'a str,
    fiscal_code: &'a str,
}

/// The account-verification provider (as the Italian banks' CheckIBAN service answers): asked
/// `{"iban", "fiscal_code"}`.
#[derive(Clone, Debug)]
pub struct AccountCheck(pub Provider);

impl AccountCheck {
    pub async fn verify(&self, iban: &str, fiscal_code: &str) -> Result<Verdict, reqwest::Error> {
        self.0.ask(&Question { iban, fiscal_code }).await
    }
}

/// Decides submitted claims until `shutdown`.
#[derive(Clone, Debug)]
pub struct Decider {
    pub store: Store,
    /// `None`: no bank check configured, so accounts are verified by the back office.
    pub check: Option<AccountCheck>,
    /// Woken when a decision queued a notice.
    pub relay: Arc<Notify>,
}

impl Decider {
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let store = self.store.clone();
        crate::background::keep_up(
            "automatic decision",
            &store,
            BATCH,
            POLL,
            wake,
            shutdown,
            || self.once(),
        )
        .await;
    }

    /// Decides one batch; returns how many claims it took.
    pub async fn once(&self) -> Result<i64, sqlx::Error> {
        let claims = self
            .store
            .claim_undecided(crate::background::batch_size(&self.store, BATCH), LEASE_MS)
            .await?;
        let taken = claims.len() as i64;
        let decisions = claims.into_iter().map(|c| async move { (self.decision(&c).await, c) });
        let mut decided = Vec::new();
        for (decision, claim) in futures::future::join_all(decisions).await {
            match decision {
                // It stands only if the claim is still paid to the account checked.
                Some(d) => decided.push((claim.id, claim.iban, d)),
                None => {
                    let wait = sportello_platform::backoff::backoff_ms(1, 5_000, 300_000);
                    self.store.decide_later(&claim.id, now_millis() + wait).await?;
                }
            }
        }
        // One commit for the batch: on click day the decisions share the writer with the rush.
        self.store.decide_all(decided).await?;
        if taken > 0 {
            self.relay.notify_waiters();
        }
        Ok(taken)
    }

    /// The decision on `claim`, or `None` to try again later (the bank check did not answer).
    async fn decision(&self, claim: &ClaimRecord) -> Option<Decided> {
        let decided = |to, reasons: &[&str]| Decided {
            to,
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            by: None,
            note: String::new(),
            traceparent: None,
        };
        let Some(iban) = &claim.iban else {
            return Some(decided(Status::Approved, &[]));
        };
        let Some(check) = &self.check else {
            return Some(decided(Status::InReview, &["ACCOUNT_NOT_VERIFIED"]));
        };
        match check.verify(iban, &claim.fiscal_code).await {
            Ok(Verdict::Match) => Some(decided(Status::Approved, &[])),
            Ok(Verdict::NoMatch) => Some(decided(Status::Rejected, &["IBAN_NOT_OWNED"])),
            Ok(Verdict::Unknown) => Some(decided(Status::InReview, &["IBAN_OWNERSHIP_UNKNOWN"])),
            Err(e) => {
                tracing::warn!(error = %e, "account verification failed; retrying later");
                None
            }
        }
    }
}
