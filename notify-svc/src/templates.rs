//! The institute's message texts, in Italian, kept in the repository (`notify-svc/templates/`)
//! and rendered with minijinja. Each template has a `subject` and a `text` block, and a letter's
//! `boxed` block (a PIN half, printed in a box of its own). The parameters a template needs are
//! read from the template itself, so the texts and what `EnqueueMessage` checks cannot drift
//! apart; which of them are secrets, and which channels a template may go on, is declared here.

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use sportello_platform::error::FieldViolations;
use sportello_proto::notify::v1::Channel;
use std::collections::{BTreeMap, BTreeSet};

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

use Channel::{Email, Pec, Post, Sms};

/// Notices go wherever the citizen can be reached.
const ANY: &[Channel] = &[Sms, Email, Pec, Post];
/// Short secrets go to a phone or a mailbox, never on paper.
const ELECTRONIC: &[Channel] = &[Sms, Email, Pec];

/// What the code says of a template: what its text cannot say.
struct Spec {
    name: &'static str,
    source: &'static str,
    description: &'static str,
    /// Parameters that are secrets: given in `secret_params`, purged once the message is sent.
    secrets: &'static [&'static str],
    channels: &'static [Channel],
}

macro_rules! spec {
    ($name:literal, $description:literal, $secrets:expr, $channels:expr) => {
        Spec {
            name: $name,
            source: include_str!(concat!("../templates/", $name, ".j2")),
            description: $description,
            secrets: $secrets,
            channels: $channels,
        }
    };
}

const SPECS: &[Spec] = &[
    spec!("PIN_FIRST_HALF", "First half of a new PIN", &["pin_half"], ELECTRONIC),
    spec!("PIN_SECOND_HALF_LETTER", "Second half of a new PIN, by letter", &["pin_half"], &[Post]),
    spec!("PIN_ALREADY_ISSUED", "A PIN was requested by someone who has one", &[], ANY),
    spec!("PIN_CHANGED", "The citizen's PIN was changed", &[], ANY),
    spec!("PIN_RECOVERY_ATTEMPT", "A PIN recovery was started", &[], ANY),
    spec!("PIN_RECOVERY_CODE", "The code that confirms a PIN recovery", &["code"], ELECTRONIC),
    spec!("PIN_RESTORED_FIRST_HALF", "First half of a restored PIN", &["pin_half"], ELECTRONIC),
    spec!("PIN_RESTORED_SECOND_HALF", "Second half of a restored PIN", &["pin_half"], ANY),
    spec!("PIN_CONTACTS_CHANGED", "The contacts of the citizen's PIN were changed", &[], ANY),
    spec!("PIN_REVOKED", "The citizen's PIN was revoked", &[], ANY),
    spec!("PIN_UNLOCKED", "The citizen's PIN was unlocked", &[], ANY),
    spec!(
        "RESIDENCE_CHANGED",
        "The register of residents changed the citizen's residence or anagrafica",
        &[],
        ANY
    ),
    spec!("CLAIM_RECEIPT", "A claim was received, with its protocol number", &[], ANY),
    spec!("CLAIM_DECISION", "A claim was approved or rejected", &[], ANY),
    spec!("CLAIM_PAYMENT_DETAILS_CHANGED", "How a claim is paid was changed", &[], ANY),
    spec!("CLAIM_PAYMENT", "A claim's payment was ordered", &[], ANY),
    spec!("DISPOSITIVO_OUTCOME", "Outcome of a conversion to PIN dispositivo", &[], ANY),
    spec!("PIN_DISPOSITIVO_GRANTED", "The citizen's PIN became a PIN dispositivo", &[], ANY),
    spec!("PIN_DISPOSITIVO_REVOKED", "A PIN dispositivo was taken back on request", &[], ANY),
    spec!(
        "PIN_CONVERSION_IN_REVIEW",
        "A PIN dispositivo request went to the back office",
        &[],
        ANY
    ),
    spec!("PIN_CONVERSION_REJECTED", "A PIN dispositivo request was refused", &[], ANY),
    spec!("PIN_CONVERSION_STARTED", "A PIN dispositivo request was opened", &[], ANY),
    spec!(
        "PIN_CONVERSION_GUARDIAN_REVIEW",
        "A guardian's PIN dispositivo request went to the back office",
        &[],
        ANY
    ),
    spec!("DATA_EXPORTED", "A copy of all the citizen's data was exported", &[], ANY),
];

/// A template as integrators see it (ListTemplates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    pub name: &'static str,
    pub description: &'static str,
    pub channels: &'static [Channel],
    /// Parameters to give in `params`.
    pub params: Vec<String>,
    /// Parameters to give in `secret_params`.
    pub secret_params: Vec<String>,
}

/// Every template the suite may send, compiled once.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    described: Vec<Description>,
}

impl Templates {
    /// The templates shipped with the service.
    pub fn builtin() -> Self {
        let mut env = Environment::new();
        // A parameter a text uses but a message lacks is an error, never an empty hole.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut described = Vec::with_capacity(SPECS.len());
        for spec in SPECS {
            env.add_template(spec.name, spec.source).expect("the shipped templates compile");
            let used = env.get_template(spec.name).expect("just added").undeclared_variables(false);
            let secret_params: Vec<String> = spec.secrets.iter().map(|s| (*s).to_owned()).collect();
            let params = used
                .into_iter()
                .filter(|p| !spec.secrets.contains(&p.as_str()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            described.push(Description {
                name: spec.name,
                description: spec.description,
                channels: spec.channels,
                params,
                secret_params,
            });
        }
        Self { env, described }
    }

    /// Every template, in a stable order.
    pub fn list(&self) -> &[Description] {
        &self.described
    }

    /// Whether `template` exists and may go on `channel`.
    pub fn goes_on(&self, template: &str, channel: Channel) -> bool {
        self.get(template).is_some_and(|t| t.channels.contains(&channel))
    }

    fn get(&self, name: &str) -> Option<&Description> {
        self.described.iter().find(|d| d.name == name)
    }

    /// Checks at enqueue time that `template` exists, may go on `channel`, and that every
    /// parameter it needs is given (where it belongs: a secret in `secret_params`). Parameters a
    /// template does not use are ignored. A message that passes always renders.
    pub fn check(
        &self,
        template: &str,
        channel: Channel,
        params: &BTreeMap<String, String>,
        secret_params: &BTreeMap<String, String>,
    ) -> Result<(), FieldViolations> {
        let mut violations = FieldViolations::new();
        let Some(described) = self.get(template) else {
            violations.add("template", "is not a template this service has (see ListTemplates)");
            return violations.into_result(());
        };
        if channel != Channel::Unspecified && !described.channels.contains(&channel) {
            let names: Vec<&str> =
                described.channels.iter().map(|c| crate::domain::channel_name(*c)).collect();
            violations.add("channel", format!("{template} goes only by {}", names.join(", ")));
        }
        for param in &described.params {
            if !params.contains_key(param) {
                violations.add(format!("params[{param}]"), format!("{template} needs it"));
            }
        }
        for param in &described.secret_params {
            if !secret_params.contains_key(param) {
                violations.add(format!("secret_params[{param}]"), format!("{template} needs it"));
            }
        }
        violations.into_result(())
    }

    /// What a message says, with each of its secrets (a PIN half, a code) replaced by a mark:
    /// the text a citizen's export shows. `None` for a template this service no longer has.
    pub fn render_without_secrets(
        &self,
        template: &str,
        channel: Channel,
        params: &BTreeMap<String, String>,
    ) -> Option<Rendered> {
        let mut params = params.clone();
        for secret in &self.get(template)?.secret_params {
            params.insert(secret.clone(), "[riservato]".into());
        }
        let mut rendered = self.render(template, channel, &params).ok()?;
        rendered.html.clear();
        Some(rendered)
    }

    /// Renders `template` for `channel` with all of a message's parameters (secret ones included).
    /// Fails only for a message that did not pass [`Templates::check`]; the error names the
    /// template and what went wrong, never a parameter's value.
    pub fn render(
        &self,
        template: &str,
        _channel: Channel,
        params: &BTreeMap<String, String>,
    ) -> Result<Rendered, String> {
        let failed = |e: minijinja::Error| format!("template {template}: {}", e.kind());
        let compiled = self.env.get_template(template).map_err(failed)?;
        let mut captured = compiled.render_captured(params).map_err(failed)?;
        let (subject, text, boxed) = captured.with_state_mut(|state| {
            let subject = state.render_block("subject").map_err(failed)?.trim().to_owned();
            let text = state.render_block("text").map_err(failed)?.trim().to_owned();
            let boxed = match state.render_block("boxed") {
                Ok(boxed) => Some(boxed.trim().to_owned()),
                Err(e) if e.kind() == ErrorKind::UnknownBlock => None,
                Err(e) => return Err(failed(e)),
            };
            Ok((subject, text, boxed))
        })?;
        let html = html_of(&text);
        Ok(Rendered { subject, text, html, boxed })
    }
}

/// The HTML part of an email: the text's paragraphs, escaped.
fn html_of(text: &str) -> String {
    let paragraphs: String = text
        .split("\n\n")
        .map(|p| format!("<p>{}</p>\n", minijinja::HtmlEscape(p.trim())))
        .collect();
    format!("<!DOCTYPE html>\n<html lang=\"it\"><body>\n{paragraphs}</body></html>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Fields {
        fn fields(&self) -> Vec<&str>;
    }

    impl Fields for FieldViolations {
        fn fields(&self) -> Vec<&str> {
            self.iter().map(|(field, _)| field).collect()
        }
    }

    fn sample(names: &[String]) -> BTreeMap<String, String> {
        names.iter().map(|n| (n.clone(), format!("<{n}>"))).collect()
    }

    #[test]
    fn every_template_renders_on_every_channel_it_allows_with_the_parameters_it_declares() {
        let templates = Templates::builtin();
        assert_eq!(templates.list().len(), SPECS.len());
        for d in templates.list() {
            let params = sample(&d.params);
            let secrets = sample(&d.secret_params);
            templates.check(d.name, d.channels[0], &params, &secrets).expect(d.name);
            let mut all = params.clone();
            all.extend(secrets);
            for channel in d.channels {
                let rendered = templates.render(d.name, *channel, &all).expect(d.name);
                assert!(!rendered.subject.is_empty() && !rendered.text.is_empty(), "{}", d.name);
                for value in all.values() {
                    let shown = rendered.text.contains(value.as_str())
                        || rendered.boxed.as_deref() == Some(value.as_str());
                    assert!(shown, "{} shows {value}", d.name);
                }
            }
        }
    }

    #[test]
    fn the_first_pin_half_fits_in_one_sms() {
        let templates = Templates::builtin();
        let secrets = BTreeMap::from([("pin_half".to_owned(), "AB12CD34".to_owned())]);
        let sms = templates.render("PIN_FIRST_HALF", Sms, &secrets).expect("renders");
        assert!(sms.text.chars().count() <= 160, "{} characters", sms.text.chars().count());
        assert!(sms.text.contains("AB12CD34"));
    }

    #[test]
    fn the_letter_prints_the_second_half_in_its_box() {
        let templates = Templates::builtin();
        let secrets = BTreeMap::from([("pin_half".to_owned(), "EF56GH78".to_owned())]);
        let letter = templates.render("PIN_SECOND_HALF_LETTER", Post, &secrets).expect("renders");
        assert_eq!(letter.boxed.as_deref(), Some("EF56GH78"));
        assert!(!letter.text.contains("EF56GH78"), "the half is in the box only");
    }

    #[test]
    fn an_unknown_template_is_a_violation_on_the_template_field() {
        let err = Templates::builtin()
            .check("PIN_FIRST_HALVE", Sms, &BTreeMap::new(), &BTreeMap::new())
            .expect_err("unknown");
        assert_eq!(err.fields(), ["template"]);
    }

    #[test]
    fn a_missing_parameter_is_a_violation_naming_it() {
        let templates = Templates::builtin();
        let err = templates
            .check("PIN_FIRST_HALF", Sms, &BTreeMap::new(), &BTreeMap::new())
            .expect_err("no half");
        assert_eq!(err.fields(), ["secret_params[pin_half]"]);
        // A secret given as an ordinary parameter would be kept after sending: refused too.
        let in_the_open = BTreeMap::from([("pin_half".to_owned(), "AB12CD34".to_owned())]);
        let err = templates
            .check("PIN_FIRST_HALF", Sms, &in_the_open, &BTreeMap::new())
            .expect_err("in the open");
        assert_eq!(err.fields(), ["secret_params[pin_half]"]);
        let err = templates
            .check("CLAIM_RECEIPT", Email, &BTreeMap::new(), &BTreeMap::new())
            .expect_err("no protocol number");
        assert_eq!(
            err.fields(),
            ["params[benefit_title]", "params[protocol_number]", "params[submitted_at]"]
        );
    }

    #[test]
    fn a_pin_half_never_goes_on_a_channel_its_template_does_not_allow() {
        let secrets = BTreeMap::from([("pin_half".to_owned(), "AB12CD34".to_owned())]);
        let err = Templates::builtin()
            .check("PIN_FIRST_HALF", Post, &BTreeMap::new(), &secrets)
            .expect_err("not by post");
        assert_eq!(err.fields(), ["channel"]);
    }

    #[test]
    fn a_render_error_names_the_template_and_not_the_values() {
        let err = Templates::builtin()
            .render("CLAIM_RECEIPT", Email, &BTreeMap::from([("x".into(), "SECRET".into())]))
            .expect_err("missing");
        assert!(err.contains("CLAIM_RECEIPT") && !err.contains("SECRET"), "{err}");
    }
}
