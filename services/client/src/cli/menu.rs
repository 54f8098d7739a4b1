//! `reinado menu`: an interactive menu for people who do not know the commands yet (in the spirit of the
//! original client: 1 to write, 2 to read, ...). Each choice asks for what it needs and runs the same code as
//! the command it stands for.

use super::coord;
use super::output::{Out, text};
use super::{ConsistencyArg, Format};
use reinado_client::Client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};

const MENU: &str = "
  1) write a key          2) read a key           3) delete a key
  4) list keys            5) compare-and-swap     6) cluster status
  7) read the log         8) watch a prefix       9) take a lock
 10) elect a leader       0) quit
";

/// The session lease's TTL for the menu's lock and election, as the commands' default.
const SESSION_TTL_S: i64 = 10;

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

/// Completes when the user presses Enter (or input ends).
async fn enter(p: &mut Prompt) {
    let _ = p.lines.next_line().await;
}

/// Takes the lock `name`, runs `cmd` with `sh -c` while holding it, or holds until Enter.
async fn lock(client: &Client, out: &Out, p: &mut Prompt, name: &str, cmd: String) {
    let etcd = reinado_client::EtcdClient::new(client.clone());
    if cmd.is_empty() {
        println!("waiting for the lock; once held, press Enter to unlock");
        coord::lock(
            &etcd,
            out,
            name,
            SESSION_TTL_S,
            coord::Holding::Until(enter(p)),
        )
        .await;
    } else {
        let run = vec!["sh".to_string(), "-c".to_string(), cmd];
        let then = coord::Holding::<std::future::Ready<()>>::Run(run);
        coord::lock(&etcd, out, name, SESSION_TTL_S, then).await;
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
            "9" => {
                let Some(name) = p.ask("lock name: ").await else {
                    return 0;
                };
                let Some(cmd) = p
                    .ask("shell command to run while holding it (empty: hold until Enter): ")
                    .await
                else {
                    return 0;
                };
                lock(client, &out, &mut p, &name, cmd).await;
            }
            "10" => {
                let (Some(name), Some(proposal)) = (
                    p.ask("election name: ").await,
                    p.ask("your proposal: ").await,
                ) else {
                    return 0;
                };
                let etcd = reinado_client::EtcdClient::new(client.clone());
                let c = coord::Candidacy {
                    name: &name,
                    proposal: &proposal,
                    ttl_s: SESSION_TTL_S,
                };
                println!("campaigning; once elected, press Enter to resign");
                coord::elect(&etcd, &out, c, enter(&mut p)).await;
            }
            "0" | "q" | "quit" | "exit" => return 0,
            "" => {}
            other => println!("`{other}` is not on the menu"),
        }
    }
}
