//! Configuration from `REINADO_*` environment variables, the same way in every Reinado binary: one table of
//! [`Variable`]s (name, default, meaning) is the source for `--help`, the README and the defaults; `envy` does
//! the parsing; a `REINADO_*` variable that is not in the table is refused, naming it and the closest known
//! one, so a typo stops the program instead of being ignored.

use serde::de::DeserializeOwned;

/// A variable a program reads: name, default, meaning.
#[derive(Clone, Copy, Debug)]
pub struct Variable {
    /// The environment variable.
    pub name: &'static str,
    /// Its default, as text (empty: none).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// The variables the `reinado` CLI reads. The servers skip them, so that one shell can run a node or proxy
/// and the CLI with its settings exported (a `reinado` test checks the list against the CLI's arguments).
pub const CLI_VARIABLES: &[&str] = &["REINADO_ENDPOINTS", "REINADO_OUTPUT", "REINADO_TIMEOUT_MS"];

/// A [`Variable`] (for tables in `const` context).
pub const fn var(name: &'static str, default: &'static str, help: &'static str) -> Variable {
    Variable {
        name,
        default,
        help,
    }
}

/// A configuration error, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {why}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: String,
    /// What is wrong with it.
    pub why: String,
}

/// A [`ConfigError`].
pub fn bad(var: &str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_string(),
        why: why.into(),
    }
}

/// The default of `name` in `table`. Panics if `name` is not there (a bug in the table).
pub fn default_of(table: &[Variable], name: &str) -> String {
    table
        .iter()
        .find(|v| v.name == name)
        .map(|v| v.default.to_string())
        .unwrap_or_else(|| panic!("{name} is not in the variable table"))
}

/// Parses the `REINADO_*` variables among `vars` into `T` (whose fields are the names without the prefix, in
/// lower case, and whose `Default` supplies the defaults). Unknown `REINADO_*` names are refused, but for the
/// CLI's ([`CLI_VARIABLES`], skipped unless `table` has them); empty values count as unset. `program` names
/// the binary in the hint.
pub fn parse<T: DeserializeOwned>(
    table: &[Variable],
    program: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("REINADO_"))
        .filter(|(k, _)| {
            !CLI_VARIABLES.contains(&k.as_str()) || table.iter().any(|v| v.name == k.as_str())
        })
        .collect();
    for (name, _) in &vars {
        if !table.iter().any(|v| v.name == name) {
            let closest = table
                .iter()
                .min_by_key(|v| edit_distance(v.name, name))
                .map(|v| v.name)
                .unwrap_or_default();
            return Err(bad(
                name,
                format!(
                    "unknown variable (did you mean {closest}?); `{program} --help` lists them all"
                ),
            ));
        }
    }
    let set = vars.into_iter().filter(|(_, v)| !v.trim().is_empty());
    envy::prefixed("REINADO_")
        .from_iter(set)
        .map_err(envy_error)
}

/// The `Environment` part of `--help`: every variable with its default and meaning.
pub fn help_table(table: &[Variable]) -> String {
    let mut out = String::new();
    for v in table {
        let default = if v.default.is_empty() {
            "(none)"
        } else {
            v.default
        };
        out.push_str(&format!("  {} = {}\n      {}\n", v.name, default, v.help));
    }
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn envy_error(e: envy::Error) -> ConfigError {
    match e {
        envy::Error::MissingValue(field) => bad(&var_name(field), "missing"),
        envy::Error::Custom(msg) => {
            // envy says "... while parsing value 'x' provided by <field>".
            let var = msg
                .split_once(" provided by ")
                .map(|(_, field)| var_name(field.trim()))
                .unwrap_or_else(|| "REINADO_*".to_string());
            bad(&var, msg)
        }
    }
}

fn var_name(field: &str) -> String {
    format!(
        "REINADO_{}",
        field.trim_start_matches("REINADO_").to_uppercase()
    )
}

/// Checks `host:port` (a host name or address, and a non-zero port).
pub fn check_host_port(name: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !ok {
        return Err(bad(name, format!("`{value}` is not host:port")));
    }
    Ok(())
}

/// Parses an IP:port to listen on.
pub fn parse_listen(name: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.trim().parse().map_err(|_| {
        bad(
            name,
            format!("`{value}` is not an IP:port to listen on (e.g. 0.0.0.0:7000)"),
        )
    })
}

/// Parses a comma-separated list of `host:port`, at least one.
pub fn parse_addrs(name: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let addrs: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        return Err(bad(name, "lists no address"));
    }
    for a in &addrs {
        check_host_port(name, a)?;
    }
    Ok(addrs)
}

/// Fails unless `v` is positive.
pub fn positive(name: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(bad(name, "must be positive"));
    }
    Ok(())
}
