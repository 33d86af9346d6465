//! Crontab expressions as users write them, translated in this one place to the `cron` crate
//! (which wants seconds first, counts weekdays from 1 = Sunday and ANDs the two day fields).

/// A checked schedule: the expression as written and its translation.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub cron: cron::Schedule,
}
