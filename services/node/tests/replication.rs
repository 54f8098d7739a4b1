//! Three real `reinado-node` processes on loopback: writes through the leader, linearizable reads served by
//! followers, and the redirect a follower answers a write with.

use reinado_client::harness::LocalCluster;
use reinado_proto::v1::kv_client::KvClient;
use reinado_proto::v1::{Consistency, GetRequest, PutRequest, Role};
use std::time::Duration;

const ELECTION: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_through_the_leader_and_followers_serve_linearizable_reads() {
    let mut cluster = LocalCluster::start(3, &[]);
    let leader = cluster.wait_leader(ELECTION).await;
    let client = cluster.client();
    for i in 0..20 {
        let key = format!("k{i}");
        client.put(key.as_bytes(), b"v").await.unwrap();
    }
    let put = client.put(b"last", b"value").await.unwrap();

    for (&id, node) in &cluster.nodes {
        let mut kv = KvClient::connect(format!("http://{}", node.client_addr))
            .await
            .unwrap();
        let resp = kv
            .get(GetRequest {
                key: b"last".to_vec(),
                consistency: Consistency::Linearizable as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let header = resp.header.unwrap();
        assert_eq!(header.member_id, id, "node {id} served its own read");
        assert!(header.revision >= put.revision);
        assert_eq!(
            resp.kv.unwrap().value,
            b"value",
            "node {id} (leader {leader})"
        );
    }

    let st = cluster.statuses().await;
    for s in st.values() {
        assert_eq!(s.leader_id, leader);
        assert_eq!(s.members.len(), 3);
        assert!(s.commit >= put.revision);
    }
    assert_eq!(st[&leader].role, Role::Leader as i32);
    let leader_addr = cluster.nodes[&leader].client_addr.clone();
    assert!(
        st[&leader]
            .members
            .iter()
            .all(|m| m.match_index > 0 && m.voter),
        "the leader reports its followers' progress: {:?}",
        st[&leader].members
    );

    let follower = cluster.nodes.values().find(|n| n.id != leader).unwrap();
    let mut kv = KvClient::connect(format!("http://{}", follower.client_addr))
        .await
        .unwrap();
    let err = kv
        .put(PutRequest {
            key: b"x".to_vec(),
            value: b"y".to_vec(),
            request_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let md = err.metadata();
    assert_eq!(
        md.get("reinado-leader-id").unwrap(),
        leader.to_string().as_str()
    );
    assert_eq!(md.get("reinado-leader-addr").unwrap(), leader_addr.as_str());
    assert!(
        err.message().contains("not the leader"),
        "{}",
        err.message()
    );
}
