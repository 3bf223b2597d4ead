//! Who may have which of the six COVID-19 benefits of DL 18/2020 (DOMAIN.md §5): decided on the
//! insured-positions registry alone, with machine-readable reasons for every refusal, so that a
//! citizen, an operator and the back office all read the same answer.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A benefit of the catalogue, by its stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BenefitCode {
    /// Art. 27: professionals with a VAT number and co.co.co. workers in the Gestione separata.
    ProfessionistiCococo,
    /// Art. 28: artigiani, commercianti, coltivatori diretti, coloni and mezzadri (AGO).
    AutonomiAgo,
    /// Art. 29: seasonal employees of tourism and thermal establishments.
    StagionaliTurismo,
    /// Art. 30: fixed-term agricultural workers.
    Agricoli,
    /// Art. 38: workers of the entertainment pension fund.
    Spettacolo,
    /// Artt. 23 and 25: the baby-sitting bonus.
    BonusBabySitting,
}

impl BenefitCode {
    pub const ALL: [BenefitCode; 6] = [
        BenefitCode::ProfessionistiCococo,
        BenefitCode::AutonomiAgo,
        BenefitCode::StagionaliTurismo,
        BenefitCode::Agricoli,
        BenefitCode::Spettacolo,
        BenefitCode::BonusBabySitting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BenefitCode::ProfessionistiCococo => "PROFESSIONISTI_COCOCO",
            BenefitCode::AutonomiAgo => "AUTONOMI_AGO",
            BenefitCode::StagionaliTurismo => "STAGIONALI_TURISMO",
            BenefitCode::Agricoli => "AGRICOLI",
            BenefitCode::Spettacolo => "SPETTACOLO",
            BenefitCode::BonusBabySitting => "BONUS_BABY_SITTING",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == code)
    }

    /// The five indemnities of artt. 27–30 and 38, of which a person may have one (art. 31).
    pub fn is_indemnity(self) -> bool {
        self != BenefitCode::BonusBabySitting
    }
}

/// The pension schemes a person may be enrolled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    GestioneSeparata,
    /// The AGO special schemes of the self-employed.
    Artigiani,
    Commercianti,
    /// Coltivatori diretti, coloni and mezzadri.
    ColtivatoriDiretti,
    /// Fondo pensione lavoratori dello spettacolo.
    Spettacolo,
    /// Employees (fondo pensione lavoratori dipendenti), agricultural workers included.
    Dipendenti,
    /// Any other mandatory scheme (professional funds, public employees…).
    Other,
}

impl Scheme {
    fn is_ago_special(self) -> bool {
        matches!(self, Scheme::Artigiani | Scheme::Commercianti | Scheme::ColtivatoriDiretti)
    }
}

/// From a day to a day (inclusive), or still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from: NaiveDate,
    pub to: Option<NaiveDate>,
}

impl Period {
    pub fn covers(&self, day: NaiveDate) -> bool {
        self.from <= day && self.to.is_none_or(|to| day <= to)
    }
}

/// One enrolment in a scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub scheme: Scheme,
    pub period: Period,
}

/// A seasonal tourism or thermal employment that ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeasonalEnd {
    pub ended_on: NaiveDate,
    /// Ended by the employer or at the end of the season, not by the worker's resignation.
    pub involuntary: bool,
}

/// A child of the applicant, for the baby-sitting bonus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub birth_date: NaiveDate,
    pub disabled: bool,
}

/// What the registry knows of a person, as eligibility needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsuredPosition {
    pub memberships: Vec<Membership>,
    pub vat_number: Option<Period>,
    pub cococo_contract: Option<Period>,
    pub pensioner: bool,
    pub seasonal_end: Option<SeasonalEnd>,
    pub agricultural_days_2019: u32,
    pub entertainment_contributions_2019: u32,
    /// In euro cents.
    pub entertainment_income_2019_cents: i64,
    pub employed_on_17_march_2020: bool,
    pub reddito_di_cittadinanza: bool,
    pub children: Vec<Child>,
    /// Doctors, nurses, police and the like (art. 25): a larger baby-sitting bonus.
    pub health_or_security_worker: bool,
}

/// Why a benefit is refused, in the stable UPPER_SNAKE form callers match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    NotInGestioneSeparata,
    NoVatNumberOrContractOn23February,
    NotInAgoSpecialScheme,
    OtherMandatoryScheme,
    Pensioner,
    NoInvoluntarySeasonalEnd,
    EmployedOn17March,
    FewerThan50AgriculturalDays,
    NotInEntertainmentFund,
    FewerThan30EntertainmentContributions,
    EntertainmentIncomeOver50000,
    RedditoDiCittadinanza,
    NoChildUnder12,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotInGestioneSeparata => "NOT_IN_GESTIONE_SEPARATA",
            Reason::NoVatNumberOrContractOn23February => "NO_VAT_NUMBER_OR_CONTRACT_ON_23_FEBRUARY",
            Reason::NotInAgoSpecialScheme => "NOT_IN_AGO_SPECIAL_SCHEME",
            Reason::OtherMandatoryScheme => "OTHER_MANDATORY_SCHEME",
            Reason::Pensioner => "PENSIONER",
            Reason::NoInvoluntarySeasonalEnd => "NO_INVOLUNTARY_SEASONAL_END",
            Reason::EmployedOn17March => "EMPLOYED_ON_17_MARCH",
            Reason::FewerThan50AgriculturalDays => "FEWER_THAN_50_AGRICULTURAL_DAYS",
            Reason::NotInEntertainmentFund => "NOT_IN_ENTERTAINMENT_FUND",
            Reason::FewerThan30EntertainmentContributions => {
                "FEWER_THAN_30_ENTERTAINMENT_CONTRIBUTIONS"
            }
            Reason::EntertainmentIncomeOver50000 => "ENTERTAINMENT_INCOME_OVER_50000",
            Reason::RedditoDiCittadinanza => "REDDITO_DI_CITTADINANZA",
            Reason::NoChildUnder12 => "NO_CHILD_UNDER_12",
        }
    }
}

fn day(year: i32, month: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, d).expect("a calendar day")
}

/// Art. 27: the VAT number or co.co.co. contract must be active on this day.
pub fn active_on() -> NaiveDate {
    day(2020, 2, 23)
}

/// Art. 29: the seasonal employment must have ended between these days.
pub fn seasonal_window() -> (NaiveDate, NaiveDate) {
    (day(2019, 1, 1), day(2020, 3, 17))
}

/// Arts. 29 and 38: no employment on this day (the decree's date).
pub fn decree_day() -> NaiveDate {
    day(2020, 3, 17)
}

/// Art. 23: children aged up to 12 on this day (schools closed from 5 March 2020).
pub fn school_closure_day() -> NaiveDate {
    day(2020, 3, 5)
}

/// Art. 38: the 2019 income ceiling, in cents.
pub const ENTERTAINMENT_INCOME_CEILING_CENTS: i64 = 5_000_000;

/// Whether `child` counts for the bonus: not older than 12 on the day schools closed, or
/// disabled at any age.
pub fn child_counts(child: &Child) -> bool {
    // "Not over 12" is every day before the thirteenth birthday.
    let thirteenth_birthday = child.birth_date.checked_add_months(chrono::Months::new(13 * 12));
    child.disabled || thirteenth_birthday.is_none_or(|d| d > school_closure_day())
}

/// Decides `benefit` for `position`: `Ok` when every condition holds, otherwise every reason it
/// fails (not only the first), in the order the law lists them.
pub fn evaluate(benefit: BenefitCode, position: &InsuredPosition) -> Result<(), Vec<Reason>> {
    let mut reasons = Vec::new();
    let p = position;
    let member_on = |scheme: Scheme, day: NaiveDate| {
        p.memberships.iter().any(|m| m.scheme == scheme && m.period.covers(day))
    };
    let any_other_on = |allowed: &dyn Fn(Scheme) -> bool, day: NaiveDate| {
        p.memberships.iter().any(|m| !allowed(m.scheme) && m.period.covers(day))
    };
    let feb23 = active_on();
    match benefit {
        BenefitCode::ProfessionistiCococo => {
            if !member_on(Scheme::GestioneSeparata, feb23) {
                reasons.push(Reason::NotInGestioneSeparata);
            }
            let active = |period: &Option<Period>| period.is_some_and(|x| x.covers(feb23));
            if !active(&p.vat_number) && !active(&p.cococo_contract) {
                reasons.push(Reason::NoVatNumberOrContractOn23February);
            }
            if any_other_on(&|s| s == Scheme::GestioneSeparata, feb23) {
                reasons.push(Reason::OtherMandatoryScheme);
            }
        }
        BenefitCode::AutonomiAgo => {
            if !p.memberships.iter().any(|m| m.scheme.is_ago_special() && m.period.covers(feb23)) {
                reasons.push(Reason::NotInAgoSpecialScheme);
            }
            let allowed = |s: Scheme| s.is_ago_special() || s == Scheme::GestioneSeparata;
            if any_other_on(&allowed, feb23) {
                reasons.push(Reason::OtherMandatoryScheme);
            }
        }
        BenefitCode::StagionaliTurismo => {
            let (from, to) = seasonal_window();
            let ended_in_window = p
                .seasonal_end
                .is_some_and(|e| e.involuntary && from <= e.ended_on && e.ended_on <= to);
            if !ended_in_window {
                reasons.push(Reason::NoInvoluntarySeasonalEnd);
            }
            if p.employed_on_17_march_2020 {
                reasons.push(Reason::EmployedOn17March);
            }
        }
        BenefitCode::Agricoli => {
            if p.agricultural_days_2019 < 50 {
                reasons.push(Reason::FewerThan50AgriculturalDays);
            }
        }
        BenefitCode::Spettacolo => {
            let in_fund = p
                .memberships
                .iter()
                .any(|m| m.scheme == Scheme::Spettacolo && m.period.from <= day(2019, 12, 31));
            if !in_fund {
                reasons.push(Reason::NotInEntertainmentFund);
            }
            if p.entertainment_contributions_2019 < 30 {
                reasons.push(Reason::FewerThan30EntertainmentContributions);
            }
            if p.entertainment_income_2019_cents > ENTERTAINMENT_INCOME_CEILING_CENTS {
                reasons.push(Reason::EntertainmentIncomeOver50000);
            }
            if p.employed_on_17_march_2020 {
                reasons.push(Reason::EmployedOn17March);
            }
        }
        BenefitCode::BonusBabySitting => {
            if !p.children.iter().any(child_counts) {
                reasons.push(Reason::NoChildUnder12);
            }
        }
    }
    if benefit.is_indemnity() {
        if p.pensioner {
            reasons.push(Reason::Pensioner);
        }
        // Art. 31: the indemnities are not paid to recipients of reddito di cittadinanza.
        if p.reddito_di_cittadinanza {
            reasons.push(Reason::RedditoDiCittadinanza);
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// What `benefit` pays `position`, in cents: €600, or €1,000 of baby-sitting bonus for health
/// and security workers (art. 25).
pub fn amount_cents(benefit: BenefitCode, position: &InsuredPosition) -> i64 {
    match benefit {
        BenefitCode::BonusBabySitting if position.health_or_security_worker => 100_000,
        _ => 60_000,
    }
}

/// Art. 31: one indemnity per person. The indemnity `benefit` is incompatible with any other
/// indemnity the person already has a live claim for; the baby-sitting bonus combines with any.
pub fn incompatible_with(benefit: BenefitCode, live: &[BenefitCode]) -> Option<BenefitCode> {
    if !benefit.is_indemnity() {
        return None;
    }
    live.iter().copied().find(|other| other.is_indemnity())
}

#[cfg(test)]
mod tests {
    use super::*;
    use BenefitCode::*;

    fn member(scheme: Scheme, from: NaiveDate, to: Option<NaiveDate>) -> Membership {
        Membership { scheme, period: Period { from, to } }
    }

    fn professional() -> InsuredPosition {
        InsuredPosition {
            memberships: vec![member(Scheme::GestioneSeparata, day(2015, 1, 1), None)],
            vat_number: Some(Period { from: day(2015, 1, 1), to: None }),
            ..Default::default()
        }
    }

    fn reasons(benefit: BenefitCode, p: &InsuredPosition) -> Vec<&'static str> {
        evaluate(benefit, p).err().unwrap_or_default().into_iter().map(Reason::as_str).collect()
    }

    #[test]
    fn a_professional_with_an_open_vat_number_in_the_gestione_separata_is_eligible() {
        assert_eq!(evaluate(ProfessionistiCococo, &professional()), Ok(()));
    }

    #[test]
    fn a_vat_number_opened_on_23_february_counts_and_one_opened_on_the_24th_does_not() {
        let mut p = professional();
        p.vat_number = Some(Period { from: day(2020, 2, 23), to: None });
        assert_eq!(evaluate(ProfessionistiCococo, &p), Ok(()));
        p.vat_number = Some(Period { from: day(2020, 2, 24), to: None });
        assert_eq!(reasons(ProfessionistiCococo, &p), ["NO_VAT_NUMBER_OR_CONTRACT_ON_23_FEBRUARY"]);
    }

    #[test]
    fn a_vat_number_closed_on_22_february_does_not_count_but_a_cococo_contract_active_then_does() {
        let mut p = professional();
        p.vat_number = Some(Period { from: day(2018, 1, 1), to: Some(day(2020, 2, 22)) });
        assert_eq!(reasons(ProfessionistiCococo, &p), ["NO_VAT_NUMBER_OR_CONTRACT_ON_23_FEBRUARY"]);
        p.cococo_contract = Some(Period { from: day(2019, 9, 1), to: Some(day(2020, 2, 23)) });
        assert_eq!(evaluate(ProfessionistiCococo, &p), Ok(()));
    }

    #[test]
    fn a_professional_also_enrolled_elsewhere_or_retired_is_refused_with_every_reason() {
        let mut p = professional();
        p.memberships.push(member(Scheme::Dipendenti, day(2019, 1, 1), None));
        p.pensioner = true;
        p.reddito_di_cittadinanza = true;
        assert_eq!(
            reasons(ProfessionistiCococo, &p),
            ["OTHER_MANDATORY_SCHEME", "PENSIONER", "REDDITO_DI_CITTADINANZA"]
        );
    }

    #[test]
    fn an_artisan_may_also_be_in_the_gestione_separata_but_not_in_another_scheme() {
        let mut p = InsuredPosition {
            memberships: vec![
                member(Scheme::Artigiani, day(2010, 1, 1), None),
                member(Scheme::GestioneSeparata, day(2018, 1, 1), None),
            ],
            ..Default::default()
        };
        assert_eq!(evaluate(AutonomiAgo, &p), Ok(()));
        p.memberships.push(member(Scheme::Other, day(2019, 1, 1), None));
        assert_eq!(reasons(AutonomiAgo, &p), ["OTHER_MANDATORY_SCHEME"]);
        assert_eq!(
            reasons(AutonomiAgo, &InsuredPosition::default()),
            ["NOT_IN_AGO_SPECIAL_SCHEME"]
        );
    }

    #[test]
    fn a_seasonal_worker_laid_off_between_1_january_2019_and_17_march_2020_is_eligible() {
        let (first, last) = seasonal_window();
        for ended_on in [first, last] {
            let p = InsuredPosition {
                seasonal_end: Some(SeasonalEnd { ended_on, involuntary: true }),
                ..Default::default()
            };
            assert_eq!(evaluate(StagionaliTurismo, &p), Ok(()), "{ended_on}");
        }
        for ended_on in [first.pred_opt().expect("day"), last.succ_opt().expect("day")] {
            let p = InsuredPosition {
                seasonal_end: Some(SeasonalEnd { ended_on, involuntary: true }),
                ..Default::default()
            };
            assert_eq!(reasons(StagionaliTurismo, &p), ["NO_INVOLUNTARY_SEASONAL_END"]);
        }
    }

    #[test]
    fn a_seasonal_worker_who_resigned_or_works_on_17_march_is_refused() {
        let p = InsuredPosition {
            seasonal_end: Some(SeasonalEnd { ended_on: day(2019, 10, 1), involuntary: false }),
            employed_on_17_march_2020: true,
            ..Default::default()
        };
        assert_eq!(
            reasons(StagionaliTurismo, &p),
            ["NO_INVOLUNTARY_SEASONAL_END", "EMPLOYED_ON_17_MARCH"]
        );
    }

    #[test]
    fn fifty_days_of_agricultural_work_in_2019_are_enough_and_forty_nine_are_not() {
        let p = |days| InsuredPosition { agricultural_days_2019: days, ..Default::default() };
        assert_eq!(evaluate(Agricoli, &p(50)), Ok(()));
        assert_eq!(reasons(Agricoli, &p(49)), ["FEWER_THAN_50_AGRICULTURAL_DAYS"]);
    }

    fn performer(contributions: u32, income_cents: i64) -> InsuredPosition {
        InsuredPosition {
            memberships: vec![member(Scheme::Spettacolo, day(2012, 3, 1), None)],
            entertainment_contributions_2019: contributions,
            entertainment_income_2019_cents: income_cents,
            ..Default::default()
        }
    }

    #[test]
    fn thirty_daily_contributions_and_at_most_fifty_thousand_euro_in_2019_make_a_performer_eligible(
    ) {
        assert_eq!(evaluate(Spettacolo, &performer(30, 5_000_000)), Ok(()));
        assert_eq!(
            reasons(Spettacolo, &performer(29, 5_000_001)),
            ["FEWER_THAN_30_ENTERTAINMENT_CONTRIBUTIONS", "ENTERTAINMENT_INCOME_OVER_50000"]
        );
    }

    #[test]
    fn a_performer_employed_on_17_march_is_refused() {
        let mut p = performer(40, 1_000_000);
        p.employed_on_17_march_2020 = true;
        assert_eq!(reasons(Spettacolo, &p), ["EMPLOYED_ON_17_MARCH"]);
    }

    #[test]
    fn a_child_of_twelve_on_5_march_2020_counts_one_of_thirteen_only_if_disabled() {
        let twelve = Child { birth_date: day(2007, 3, 6), disabled: false };
        let thirteen = Child { birth_date: day(2007, 3, 5), disabled: false };
        assert!(child_counts(&twelve));
        assert!(!child_counts(&thirteen));
        assert!(child_counts(&Child { disabled: true, ..thirteen }));
        let parent = |children| InsuredPosition { children, ..Default::default() };
        assert_eq!(evaluate(BonusBabySitting, &parent(vec![twelve])), Ok(()));
        assert_eq!(reasons(BonusBabySitting, &parent(vec![thirteen])), ["NO_CHILD_UNDER_12"]);
    }

    #[test]
    fn the_baby_sitting_bonus_is_not_barred_by_a_pension_or_reddito_di_cittadinanza() {
        let p = InsuredPosition {
            children: vec![Child { birth_date: day(2016, 1, 1), disabled: false }],
            pensioner: true,
            reddito_di_cittadinanza: true,
            ..Default::default()
        };
        assert_eq!(evaluate(BonusBabySitting, &p), Ok(()));
    }

    #[test]
    fn health_and_security_workers_get_a_thousand_euro_of_baby_sitting_bonus() {
        let mut p = InsuredPosition::default();
        assert_eq!(amount_cents(BonusBabySitting, &p), 60_000);
        p.health_or_security_worker = true;
        assert_eq!(amount_cents(BonusBabySitting, &p), 100_000);
        assert_eq!(amount_cents(Agricoli, &p), 60_000);
    }

    #[test]
    fn one_indemnity_per_person_but_the_baby_sitting_bonus_combines_with_any() {
        assert_eq!(
            incompatible_with(Agricoli, &[ProfessionistiCococo]),
            Some(ProfessionistiCococo)
        );
        assert_eq!(incompatible_with(Agricoli, &[BonusBabySitting]), None);
        assert_eq!(incompatible_with(BonusBabySitting, &[Agricoli]), None);
        assert_eq!(incompatible_with(Spettacolo, &[]), None);
    }

    #[test]
    fn codes_read_back_as_written() {
        for b in BenefitCode::ALL {
            assert_eq!(BenefitCode::parse(b.as_str()), Some(b));
        }
        assert_eq!(BenefitCode::parse("bonus_baby_sitting"), None);
    }
}
