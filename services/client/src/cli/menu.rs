//! `reinado menu`: an interactive menu for people who do not know the commands yet (in the spirit of the
//! original client: 1 to write, 2 to read, ...). Each choice asks for what it needs and runs the same code as
//! the command it stands for.

use super::output::{Out, text};
use super::{ConsistencyArg, Format};
use reinado_client::Client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};

const MENU: &str = "
  1) write a key          2) read a key           3) delete a key
  4) list keys            5) compare-and-swap     6) cluster status
  7) read the log         8) watch a prefix       0) quit
";

struct Prompt {
    lines: Lines<BufReader<Stdin>>,
}

impl Prompt {
    /// Asks `question`; `None` at end of input.
    async fn ask(&mut self, question: &str) -> Option<String> {
        let mut stdout = tokio::io::stdout();
        let _ = stdout.write_all(question.as_bytes()).await;
        let _ = stdout.flush().await;
        self.lines
            .next_line()
            .await
            .ok()
            .flatten()
            .map(|l| l.trim().to_string())
    }
}

pub async fn run(client: &Client) -> u8 {
    let out = Out::new(Format::Table);
    let mut p = Prompt {
        lines: BufReader::new(tokio::io::stdin()).lines(),
    };
    println!("Reinado — talking to {}", client.endpoints().join(", "));
    loop {
        println!("{MENU}");
        let Some(choice) = p.ask("choose: ").await else {
            return 0;
        };
        match choice.as_str() {
            "1" => {
                let (Some(k), Some(v)) = (p.ask("key: ").await, p.ask("value: ").await) else {
                    return 0;
                };
                super::kv::put(client, &out, &k, &v).await;
            }
            "2" => {
                let Some(k) = p.ask("key: ").await else {
                    return 0;
                };
                match client
                    .get(k.as_bytes(), ConsistencyArg::Linearizable.into())
                    .await
                {
                    Ok(r) => match r.kv {
                        Some(kv) => println!(
                            "{k} = {}  (version {}, revision {})",
                            text(&kv.value),
                            kv.version,
                            kv.mod_revision
                        ),
                        None => println!("{k} does not exist"),
                    },
                    Err(e) => println!("error: {e}"),
                }
            }
            "3" => {
                let Some(k) = p.ask("key: ").await else {
                    return 0;
                };
                super::kv::del(client, &out, &k).await;
            }
            "4" => {
                let Some(prefix) = p.ask("prefix (empty for all): ").await else {
                    return 0;
                };
                let q = super::kv::RangeArgs {
                    prefix: Some(prefix),
                    start: None,
                    end: None,
                    limit: 50,
                    keys_only: false,
                    consistency: ConsistencyArg::Linearizable,
                };
                super::kv::range(client, &out, q).await;
            }
            "5" => {
                let Some(k) = p.ask("key: ").await else {
                    return 0;
                };
                let Some(expect) = p
                    .ask("expected value (empty: the key must not exist): ")
                    .await
                else {
                    return 0;
                };
                let Some(new) = p.ask("new value: ").await else {
                    return 0;
                };
                let expect = (!expect.is_empty()).then_some(expect);
                super::kv::cas(client, &out, &k, expect.as_deref(), &new).await;
            }
            "6" => {
                super::cluster::status(client, &out).await;
            }
            "7" => {
                let Some(i) = p.ask("log index: ").await else {
                    return 0;
                };
                match i.parse() {
                    Ok(i) => {
                        super::kv::log(client, &out, i).await;
                    }
                    Err(_) => println!("`{i}` is not an index"),
                }
            }
            "8" => {
                let Some(prefix) = p.ask("prefix: ").await else {
                    return 0;
                };
                println!("watching `{prefix}` for 10 seconds...");
                super::kv::watch(client, &out, prefix, true, 0, 0, 10).await;
            }
            "0" | "q" | "quit" | "exit" => return 0,
            "" => {}
            other => println!("`{other}` is not on the menu"),
        }
    }
}
