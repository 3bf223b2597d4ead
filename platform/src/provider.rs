//! An authority asked over HTTP (the bank's account check, the state's identity-document
//! registry): one shape for all of them, as DESIGN.md has it. `POST <url>` with a JSON question,
//! answered `{"result": "MATCH" | "NO_MATCH" | "UNKNOWN"}` within a timeout. What the answer
//! means — and what no answer means — is for the service that asks.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What an authority says of the evidence it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Match,
    NoMatch,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "MATCH",
            Verdict::NoMatch => "NO_MATCH",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Deserialize)]
struct Reply {
    result: Verdict,
}

/// One configured authority.
#[derive(Clone, Debug)]
pub struct Provider {
    http: reqwest::Client,
    url: String,
}

impl Provider {
    /// `None` when `url` is empty: no authority configured.
    pub fn configured(url: &str, timeout: Duration) -> anyhow::Result<Option<Self>> {
        match url.trim() {
            "" => Ok(None),
            url => {
                let http = reqwest::Client::builder().timeout(timeout).build()?;
                Ok(Some(Self { http, url: url.to_owned() }))
            }
        }
    }

    /// The authority's verdict on `question`; an error when it did not answer in time or
    /// answered something else.
    pub async fn ask(&self, question: &impl Serialize) -> Result<Verdict, reqwest::Error> {
        let reply = self.http.post(&self.url).json(question).send().await?;
        Ok(reply.error_for_status()?.json::<Reply>().await?.result)
    }
}
