//! Secrets: where their values come from (`SLUICE_SECRET_<NAME>` environment variables), the
//! sealing of the process's credentials out of its environment at start-up, and the masking
//! of secret values as `***` in every log line, output and error message.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;

/// The prefix of the environment variables secrets are read from: `SLUICE_SECRET_OPENAI_KEY`
/// is the secret `OPENAI_KEY`, used in templates as `{{ secrets.OPENAI_KEY }}`.
pub const ENV_PREFIX: &str = "SLUICE_SECRET_";

/// What replaces a secret value wherever it appears.
const MASK: &str = "***";

/// Environment variables that carry the process's own credentials (the database URL may hold
/// a password). With every `SLUICE_SECRET_*`, they are sealed away at start-up and never
/// reach a task.
pub const CREDENTIAL_VARS: &[&str] = &[
    "SLUICE_API_TOKEN",
    "SLUICE_GITHUB_WEBHOOK_SECRET",
    "SLUICE_ADMIN_PASSWORD",
    "SLUICE_DATABASE_URL",
];

/// Whether the environment variable `name` holds a secret or a credential.
pub fn is_credential(name: &str) -> bool {
    name.starts_with(ENV_PREFIX) || CREDENTIAL_VARS.contains(&name)
}

/// The credentials taken out of the environment by [`seal_process`], by variable name.
static SEALED: OnceLock<Vec<(OsString, OsString)>> = OnceLock::new();

/// Why the process could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot make this process unreadable to other processes (PR_SET_DUMPABLE): {0}")]
    Dumpable(std::io::Error),
}

/// Keeps the process's secrets and credentials from the tasks it runs, which may run as the
/// same user:
///
/// - every credential variable ([`is_credential`]) is read once, kept in memory for
///   [`Secrets::from_env`] and [`credential`], and removed from the environment;
/// - its text is also zeroed in the environment block the kernel set up at exec time, which is
///   what `/proc/PID/environ` shows and which `remove_var` leaves untouched;
/// - the process is made non-dumpable, so `/proc/PID/environ`, `/proc/PID/mem` and ptrace are
///   closed to other processes of the same user (core dumps are off too).
///
/// # Safety
///
/// Must be called while the process has a single thread, before anything else reads or
/// changes the environment.
pub unsafe fn seal_process() -> Result<(), SealError> {
    if SEALED.get().is_some() {
        return Ok(());
    }
    let taken: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| name.to_str().is_some_and(is_credential))
        .collect();
    for (name, _) in &taken {
        // SAFETY: the caller guarantees a single thread.
        unsafe { std::env::remove_var(name) };
    }
    if let Some((start, end)) = exec_time_environment() {
        // SAFETY: the range is this process's own environment block, as the kernel reports it.
        unsafe { wipe_credentials(start, end) };
    }
    let _ = SEALED.set(taken);
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(SealError::Dumpable(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The value of a credential variable: as sealed at start-up, or from the environment in a
/// process that was not sealed.
pub fn credential(name: &str) -> Option<OsString> {
    match SEALED.get() {
        Some(sealed) => sealed
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone()),
        None => std::env::var_os(name),
    }
}

/// The credential variables of this process, sealed or still in the environment.
fn credentials() -> Vec<(OsString, OsString)> {
    match SEALED.get() {
        Some(sealed) => sealed.clone(),
        None => std::env::vars_os()
            .filter(|(name, _)| name.to_str().is_some_and(is_credential))
            .collect(),
    }
}

/// Where the environment block the kernel wrote at exec time lies: `env_start` and `env_end`,
/// fields 50 and 51 of `/proc/self/stat`.
fn exec_time_environment() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; everything after its `)` is numeric.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start: usize = fields.get(47)?.parse().ok()?;
    let end: usize = fields.get(48)?.parse().ok()?;
    (start != 0 && start < end).then_some((start, end))
}

/// Zeroes every `NAME=value` entry of a credential in the block `start..end`.
///
/// # Safety
///
/// `start..end` must be this process's exec-time environment block (mapped and writable), and
/// no other thread may read it meanwhile.
unsafe fn wipe_credentials(start: usize, end: usize) {
    let base = start as *mut u8;
    let len = end - start;
    let mut entry = 0;
    while entry < len {
        let mut stop = entry;
        // SAFETY: `stop < len` keeps every read inside the block.
        while stop < len && unsafe { *base.add(stop) } != 0 {
            stop += 1;
        }
        // SAFETY: `entry..stop` lies inside the block.
        let text = unsafe { std::slice::from_raw_parts(base.add(entry), stop - entry) };
        let credential = text
            .iter()
            .position(|b| *b == b'=')
            .and_then(|eq| std::str::from_utf8(&text[..eq]).ok())
            .is_some_and(is_credential);
        if credential {
            // SAFETY: as above; the entry is no longer in `environ`, so nothing points at it.
            unsafe { std::ptr::write_bytes(base.add(entry), 0, stop - entry) };
        }
        entry = stop + 1;
    }
}

/// The secrets known to this process, by name.
///
/// `Debug` shows names only, so a secret can never reach a log through `{:?}`.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl Secrets {
    /// Reads every `SLUICE_SECRET_<NAME>` environment variable (as sealed at start-up, see
    /// [`seal_process`]). Variables whose name or value is not UTF-8 are skipped: they could be
    /// neither referenced in a template nor masked reliably.
    pub fn from_env() -> Self {
        Self::from_pairs(credentials().into_iter().filter_map(|(key, value)| {
            let name = key.to_str()?.strip_prefix(ENV_PREFIX)?;
            if name.is_empty() {
                return None;
            }
            Some((name.to_owned(), value.into_string().ok()?))
        }))
    }

    /// Secrets from explicit name/value pairs (configuration files, tests).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Secrets {
            values: pairs.into_iter().collect(),
        }
    }

    /// The value of the secret `name`, if it is set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The names of all known secrets, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A masker that hides every one of these secrets' values.
    pub fn masker(&self) -> Masker {
        Masker::new(self.values.values().cloned())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Replaces every known secret value in text with `***`.
#[derive(Clone, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        // An empty value would "match" everywhere; it protects nothing, so it is ignored.
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        values.sort();
        values.dedup();
        Masker { values }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by `***`; borrowed when nothing matched.
    ///
    /// All occurrences of all secrets are found in the original text first and overlapping or
    /// touching ones are merged before replacing: replacing one secret at a time would leave
    /// the rest of a second secret visible when two secrets overlap (`abcdef` and `defghi` in
    /// `abcdefghi`).
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.values.is_empty() || text.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for value in &self.values {
            let mut from = 0;
            while let Some(pos) = text[from..].find(value.as_str()) {
                let start = from + pos;
                spans.push((start, start + value.len()));
                // Step one character, not the whole match, so overlapping occurrences of the
                // same secret (`aa` in `aaa`) are all found.
                let step = text[start..].chars().next().map_or(1, char::len_utf8);
                from = start + step;
            }
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in spans {
            match current {
                Some((_, cur_end)) if start <= cur_end => {
                    current = current.map(|(s, e)| (s, e.max(end)));
                }
                _ => {
                    if let Some((s, e)) = current {
                        out.push_str(&text[copied..s]);
                        out.push_str(MASK);
                        copied = e;
                    }
                    current = Some((start, end));
                }
            }
        }
        if let Some((s, e)) = current {
            out.push_str(&text[copied..s]);
            out.push_str(MASK);
            copied = e;
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// Masks every string inside a JSON value in place: strings, array items, object values
    /// and object keys, at any depth.
    pub fn mask_json(&self, value: &mut Value) {
        if self.values.is_empty() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Cow::Owned(masked) = self.mask(text) {
                    *text = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.mask_json(item)),
            Value::Object(map) => {
                map.values_mut().for_each(|item| self.mask_json(item));
                // Keys are rarely secret; rebuild the map (keeping its order) only when one is.
                if map
                    .keys()
                    .any(|key| matches!(self.mask(key), Cow::Owned(_)))
                {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(key, item)| (self.mask(&key).into_owned(), item))
                        .collect();
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the values themselves.
        f.debug_struct("Masker")
            .field("secrets", &self.values.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn masker(values: &[&str]) -> Masker {
        Masker::new(values.iter().map(|v| v.to_string()))
    }

    #[test]
    fn no_secrets_borrows_without_copying() {
        let text = "nothing to see";
        assert!(matches!(Masker::default().mask(text), Cow::Borrowed(_)));
        assert!(matches!(masker(&["hunter2"]).mask(text), Cow::Borrowed(_)));
    }

    #[test]
    fn masks_every_occurrence() {
        let m = masker(&["hunter2"]);
        assert_eq!(m.mask("pw=hunter2, again hunter2"), "pw=***, again ***");
    }

    #[test]
    fn overlapping_secrets_are_masked_whole() {
        let m = masker(&["abcdef", "defghi"]);
        assert_eq!(m.mask("x abcdefghi y"), "x *** y");
        // One secret containing another.
        let m = masker(&["token", "token-long-version"]);
        assert_eq!(m.mask("a token-long-version b token"), "a *** b ***");
        // Overlapping occurrences of the same secret.
        assert_eq!(masker(&["aa"]).mask("baaab"), "b***b");
        // Touching occurrences become one mask: the boundary between them is not revealed.
        assert_eq!(masker(&["ab", "cd"]).mask("abcd"), "***");
    }

    #[test]
    fn multibyte_text_is_handled() {
        let m = masker(&["clé"]);
        assert_eq!(m.mask("la clé, éé clé"), "la ***, éé ***");
    }

    #[test]
    fn empty_secret_values_are_ignored() {
        let m = masker(&["", ""]);
        assert!(m.is_empty());
        assert_eq!(m.mask("abc"), "abc");
        let secrets = Secrets::from_pairs([("EMPTY".to_string(), String::new())]);
        assert_eq!(secrets.masker().mask("abc"), "abc");
    }

    #[test]
    fn masks_secrets_inside_json() {
        let m = masker(&["s3cr3t"]);
        let mut value = json!({
            "url": "https://x/?key=s3cr3t",
            "list": [1, "s3cr3t", {"deep": "a s3cr3t b"}],
            "s3cr3t": true,
            "n": 5
        });
        m.mask_json(&mut value);
        assert_eq!(
            value,
            json!({
                "url": "https://x/?key=***",
                "list": [1, "***", {"deep": "a *** b"}],
                "***": true,
                "n": 5
            })
        );
        // Key order survives the rebuild.
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["url", "list", "***", "n"]);
    }

    #[test]
    fn credentials_are_secrets_and_the_server_s_own_variables() {
        assert!(is_credential("SLUICE_SECRET_OPENAI_KEY"));
        assert!(is_credential("SLUICE_ADMIN_PASSWORD"));
        assert!(is_credential("SLUICE_DATABASE_URL"));
        assert!(!is_credential("SLUICE_WORKFLOWS"));
        assert!(!is_credential("PATH"));
    }

    #[test]
    fn wiping_zeroes_only_credential_entries() {
        let mut block =
            b"PATH=/bin\0SLUICE_SECRET_A=s3cr3t\0HOME=/root\0SLUICE_API_TOKEN=t\0".to_vec();
        let start = block.as_mut_ptr() as usize;
        // SAFETY: the block is a live local buffer nothing else reads.
        unsafe { wipe_credentials(start, start + block.len()) };
        let kept: Vec<&[u8]> = block
            .split(|b| *b == 0)
            .filter(|entry| !entry.is_empty())
            .collect();
        assert_eq!(kept, [b"PATH=/bin".as_slice(), b"HOME=/root".as_slice()]);
    }

    #[test]
    fn the_exec_time_environment_is_found() {
        let (start, end) = exec_time_environment().expect("Linux reports env_start/env_end");
        assert!(start < end);
    }

    #[test]
    fn secrets_lookup_and_debug_hides_values() {
        let secrets = Secrets::from_pairs([("API_KEY".to_string(), "k-123".to_string())]);
        assert_eq!(secrets.get("API_KEY"), Some("k-123"));
        assert_eq!(secrets.get("OTHER"), None);
        assert!(!format!("{secrets:?}").contains("k-123"));
        assert!(!format!("{:?}", secrets.masker()).contains("k-123"));
        assert_eq!(secrets.masker().mask("key k-123"), "key ***");
    }
}
