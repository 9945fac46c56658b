//! Cron lines of `on.schedule`: parsing (5 fields, or 6 with leading seconds) and the
//! checks validation reports.

/// Parses a cron line: 5 fields, or 6 with leading seconds.
pub fn parse_cron(line: &str) -> Result<croner::Cron, croner::errors::CronError> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(line)
}

const CRON_HINT: &str = "minute hour day-of-month month day-of-week, e.g. `0 3 * * 1-5`";

/// Checks a cron line: the number of fields, what croner makes of it, and that it fires at
/// all. The error is the message and, where one helps, a hint.
pub(crate) fn check_cron(line: &str) -> Result<(), (String, Option<&'static str>)> {
    let line = line.trim();
    let fields = line.split_whitespace().count();
    if !line.starts_with('@') && fields != 5 && fields != 6 {
        return Err((
            format!(
                "invalid cron expression `{line}`: expected 5 fields (or 6 with leading seconds), found {fields}"
            ),
            Some(CRON_HINT),
        ));
    }
    let cron = parse_cron(line).map_err(|e| {
        (
            format!(
                "invalid cron expression `{line}`: {}",
                lower_first(e.to_string().trim_end_matches('.'))
            ),
            Some(CRON_HINT),
        )
    })?;
    // A fixed start keeps validation deterministic; any real date has occurred since 2000
    // (2000 is a leap year, so 29 February counts).
    let start = chrono::DateTime::from_timestamp(946_684_800, 0).unwrap_or_default();
    if cron.find_next_occurrence(&start, true).is_err() {
        return Err((
            format!("cron expression `{line}` never fires (no such date)"),
            None,
        ));
    }
    Ok(())
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
