//! The data dir's identity: which cluster and node it belongs to. Written once, atomically, when the data dir
//! is first used; checked at every start, so a node pointed at another node's or another cluster's data
//! refuses to start instead of corrupting both.

use reinado_raft::NodeId;
use std::io::Write;
use std::path::Path;

const FILE: &str = "identity";

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data dir belongs to someone else.
    #[error(
        "the data dir {dir} belongs to cluster `{cluster}` node {node}, but this is cluster `{want_cluster}` node {want_node}: refusing to start (point REINADO_DATA_DIR elsewhere, or fix REINADO_CLUSTER_ID / REINADO_NODE_ID)"
    )]
    Mismatch {
        /// The data dir.
        dir: String,
        /// The cluster it belongs to.
        cluster: String,
        /// The node it belongs to.
        node: NodeId,
        /// This node's cluster.
        want_cluster: String,
        /// This node's id.
        want_node: NodeId,
    },
    /// The identity file is unreadable.
    #[error("{path}: {why}")]
    Unreadable {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Checks that `dir` belongs to (`cluster`, `node`), claiming it if it is new.
pub fn check_or_claim(dir: &Path, cluster: &str, node: NodeId) -> Result<(), IdentityError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (found_cluster, found_node) =
                parse(&text).ok_or_else(|| IdentityError::Unreadable {
                    path: path.display().to_string(),
                    why:
                        "not a Reinado identity file (expected `cluster=...` and `node=...` lines)"
                            .into(),
                })?;
            if found_cluster != cluster || found_node != node {
                return Err(IdentityError::Mismatch {
                    dir: dir.display().to_string(),
                    cluster: found_cluster,
                    node: found_node,
                    want_cluster: cluster.to_string(),
                    want_node: node,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => claim(dir, cluster, node),
        Err(e) => Err(io(&path)(e)),
    }
}

fn parse(text: &str) -> Option<(String, NodeId)> {
    let mut cluster = None;
    let mut node = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("cluster", v)) => cluster = Some(v.trim().to_string()),
            Some(("node", v)) => node = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some((cluster?, node?))
}

/// Writes the identity file: temp file, fsync, rename, fsync the directory.
fn claim(dir: &Path, cluster: &str, node: NodeId) -> Result<(), IdentityError> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    writeln!(f, "cluster={cluster}\nnode={node}").map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    let path = dir.join(FILE);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_claimed_once_and_refused_to_others() {
        let dir = tempfile::tempdir().unwrap();
        check_or_claim(dir.path(), "alpha", 1).unwrap();
        check_or_claim(dir.path(), "alpha", 1).unwrap();
        let err = check_or_claim(dir.path(), "alpha", 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("belongs to cluster `alpha` node 1"),
            "{err}"
        );
        let err = check_or_claim(dir.path(), "beta", 1).unwrap_err();
        assert!(matches!(err, IdentityError::Mismatch { .. }));
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        let err = check_or_claim(dir.path(), "alpha", 1).unwrap_err();
        assert!(matches!(err, IdentityError::Unreadable { .. }));
    }
}
