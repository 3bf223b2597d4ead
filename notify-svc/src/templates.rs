//! The institute's message texts, in Italian, kept in the repository and rendered with a
//! message's parameters. (Skeleton: the real registry replaces `render` and `check`.)

use sportello_platform::error::FieldViolations;
use sportello_proto::notify::v1::Channel;
use std::collections::BTreeMap;

/// A message rendered for its channel.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// Email/PEC subject; the letter's title.
    pub subject: String,
    /// Plain text: the SMS, the email's text part, the letter's body.
    pub text: String,
    /// The email's HTML part.
    pub html: String,
    /// What a letter prints in a box of its own (a PIN half), if anything.
    pub boxed: Option<String>,
}

// Rendered texts may hold secrets.
impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered").finish_non_exhaustive()
    }
}

/// Every template the suite may send.
#[derive(Clone, Debug, Default)]
pub struct Templates {}

impl Templates {
    /// The templates shipped with the service.
    pub fn builtin() -> Self {
        Self {}
    }

    /// Checks at enqueue time that `template` exists and every parameter it needs is given.
    pub fn check(
        &self,
        _template: &str,
        _params: &BTreeMap<String, String>,
        _secret_params: &BTreeMap<String, String>,
    ) -> Result<(), FieldViolations> {
        Ok(())
    }

    /// Renders `template` for `channel` with all of a message's parameters (secret ones included).
    pub fn render(
        &self,
        template: &str,
        _channel: Channel,
        params: &BTreeMap<String, String>,
    ) -> Result<Rendered, String> {
        let text = params.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n");
        Ok(Rendered { subject: template.to_owned(), html: text.clone(), text, boxed: None })
    }
}
