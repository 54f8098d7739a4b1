//! How results and errors are shown: aligned tables for people, JSON for scripts.

use super::Format;
use reinado_client::ClientError;
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;

/// Exit code: the compare-and-swap did not swap.
pub const NOT_SWAPPED: u8 = 7;
/// Exit code: the process `health` checked answered, but is not serving.
pub const NOT_SERVING: u8 = 8;

/// The output of one command.
pub struct Out {
    format: Format,
}

impl Out {
    pub fn new(format: Format) -> Self {
        Out { format }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints a result: `json` for scripts, or `human` for people.
    pub fn show(&self, json: Value, human: impl FnOnce() -> String) {
        match self.format {
            Format::Json => println!("{json}"),
            Format::Table => {
                let text = human();
                if !text.is_empty() {
                    println!("{text}");
                }
            }
        }
    }

    /// Prints an error; returns its exit code.
    pub fn error(&self, e: &ClientError) -> u8 {
        let code = e.exit_code();
        match self.format {
            Format::Json => println!("{}", json!({ "error": e.to_string(), "exit_code": code })),
            Format::Table => eprintln!("reinado: {e}"),
        }
        code
    }

    /// Awaits `fut`; in table mode, says so when the answer takes a while (an election, most likely), so the
    /// user knows the client is retrying rather than stuck.
    pub async fn patiently<T>(&self, fut: impl Future<Output = T>) -> T {
        if self.is_json() {
            return fut.await;
        }
        tokio::pin!(fut);
        tokio::select! {
            v = &mut fut => return v,
            _ = tokio::time::sleep(Duration::from_millis(1500)) => {}
        }
        eprintln!("no answer yet: the cluster may be electing a leader; retrying...");
        fut.await
    }
}

/// Lays out rows under headers, columns aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// Bytes as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "ROLE"],
            &[
                vec!["1".into(), "leader".into()],
                vec!["22".into(), "follower".into()],
            ],
        );
        assert_eq!(t, "ID  ROLE\n1   leader\n22  follower");
    }
}
