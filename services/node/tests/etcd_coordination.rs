//! etcd's Lock and Election services, served by the cluster, driven with the generated clients through a
//! follower of three nodes: turns taken in order of creation, the fencing token growing, a holder whose lease
//! is revoked losing the lock to the next waiter, an election's leader, proclamations, observation and
//! resignation, and etcd's errors.

use reinado_client::harness::LocalCluster;
use reinado_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, RangeRequest, kv_client::KvClient,
    lease_client::LeaseClient,
};
use reinado_proto::etcd::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
    election_client::ElectionClient,
};
use reinado_proto::etcd::v3lockpb::{LockRequest, UnlockRequest, lock_client::LockClient};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(15);

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    let resp = LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("a lease")
        .into_inner();
    resp.id
}

async fn create_revision(ch: &Channel, key: &[u8]) -> Option<i64> {
    let resp = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("a range")
        .into_inner();
    resp.kvs.first().map(|kv| kv.create_revision)
}

async fn follower_channel(cluster: &mut LocalCluster) -> Channel {
    let (_, follower) = cluster.wait_follower(WAIT).await;
    let addr = format!("http://{}", cluster.nodes[&follower].client_addr);
    Channel::from_shared(addr).unwrap().connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_taken_in_turn_and_pass_on_when_the_holder_goes() {
    let mut cluster = LocalCluster::start(3, &[]);
    let ch = follower_channel(&mut cluster).await;
    let mut locks = LockClient::new(ch.clone());
    let (a, b, c) = (
        grant(&ch, 60).await,
        grant(&ch, 60).await,
        grant(&ch, 60).await,
    );

    let lock = |lease| LockRequest {
        name: b"jobs".to_vec(),
        lease,
    };
    let first = locks.lock(lock(a)).await.unwrap().into_inner().key;
    assert_eq!(first, format!("jobs/{a:x}").into_bytes());
    let mut waiter = LockClient::new(ch.clone());
    let second = tokio::spawn(async move { waiter.lock(lock(b)).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !second.is_finished(),
        "the second contender waits for the first"
    );
    locks
        .unlock(UnlockRequest { key: first.clone() })
        .await
        .unwrap();
    let second = tokio::time::timeout(WAIT, second)
        .await
        .expect("the second contender gets the lock once the first unlocks")
        .unwrap()
        .unwrap()
        .into_inner()
        .key;
    let token = create_revision(&ch, &second).await.unwrap();

    // A third waits; the holder's lease is revoked (its process gone): the lock passes on, its token larger.
    let mut waiter = LockClient::new(ch.clone());
    let third = tokio::spawn(async move { waiter.lock(lock(c)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished());
    LeaseClient::new(ch.clone())
        .lease_revoke(LeaseRevokeRequest { id: b })
        .await
        .unwrap();
    let third = tokio::time::timeout(WAIT, third)
        .await
        .expect("the lock passes on when the holder's lease goes")
        .unwrap()
        .unwrap()
        .into_inner()
        .key;
    assert_eq!(create_revision(&ch, &second).await, None);
    assert!(create_revision(&ch, &third).await.unwrap() > token);

    // A waiter whose own lease goes while it waits gets an error, not the lock.
    let d = grant(&ch, 60).await;
    let mut waiter = LockClient::new(ch.clone());
    let fourth = tokio::spawn(async move { waiter.lock(lock(d)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    LeaseClient::new(ch.clone())
        .lease_revoke(LeaseRevokeRequest { id: d })
        .await
        .unwrap();
    let refused = tokio::time::timeout(WAIT, fourth)
        .await
        .expect("the waiter is told")
        .unwrap()
        .expect_err("its key is gone");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    let no_lease = locks.lock(lock(0)).await.expect_err("a lock needs a lease");
    assert_eq!(no_lease.code(), Code::InvalidArgument);
    let unknown = locks.lock(lock(12345)).await.expect_err("an unknown lease");
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(unknown.message(), "etcdserver: requested lease not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_has_one_leader_whose_proposal_observers_follow() {
    let mut cluster = LocalCluster::start(3, &[]);
    let ch = follower_channel(&mut cluster).await;
    let mut election = ElectionClient::new(ch.clone());
    let name = b"fleet".to_vec();
    let none = election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .expect_err("nobody campaigns yet");
    assert_eq!(
        (none.code(), none.message()),
        (Code::Unknown, "election: no leader")
    );

    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    let campaign = |lease, value: &str| CampaignRequest {
        name: name.clone(),
        lease,
        value: value.as_bytes().to_vec(),
    };
    let alpha: LeaderKey = election
        .campaign(campaign(a, "alpha"))
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    let mut observe = election
        .observe(LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut next_value = async || {
        let resp = tokio::time::timeout(WAIT, observe.message())
            .await
            .expect("an observation")
            .unwrap()
            .unwrap();
        String::from_utf8(resp.kv.unwrap().value).unwrap()
    };
    assert_eq!(next_value().await, "alpha");

    let mut other = ElectionClient::new(ch.clone());
    let second = campaign(b, "beta");
    let beta = tokio::spawn(async move { other.campaign(second).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!beta.is_finished(), "one leader at a time");

    election
        .proclaim(ProclaimRequest {
            leader: Some(alpha.clone()),
            value: b"alpha-2".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(next_value().await, "alpha-2");
    let leader = election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leader.kv.unwrap().value, b"alpha-2");

    election
        .resign(ResignRequest {
            leader: Some(alpha.clone()),
        })
        .await
        .unwrap();
    let beta = tokio::time::timeout(WAIT, beta)
        .await
        .expect("the next campaigner leads once the leader resigns")
        .unwrap()
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    assert!(beta.rev > alpha.rev);
    assert_eq!(next_value().await, "beta");

    let stale = election
        .proclaim(ProclaimRequest {
            leader: Some(alpha),
            value: b"late".to_vec(),
        })
        .await
        .expect_err("a resigned leader proclaims nothing");
    assert_eq!(
        (stale.code(), stale.message()),
        (Code::FailedPrecondition, "election: not leader")
    );
}
