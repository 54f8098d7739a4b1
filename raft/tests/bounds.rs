//! Bounded by bytes: a leader whose followers cannot keep up holds at most `max_uncommitted_bytes` of
//! uncommitted entries; beyond them a proposal is refused, retryable, and taken again once they catch up.

mod harness;

use harness::Network;
use reinado_raft::*;

#[test]
fn a_leader_cut_off_from_its_followers_holds_a_bounded_number_of_bytes() {
    let mut net = Network::with_config(3, |cfg| cfg.max_uncommitted_bytes = 10_000);
    net.elect(1);
    net.propose(1, b"a=1").unwrap();
    let commit = net.status(1).commit;
    net.isolate(2);
    net.isolate(3);
    let value = vec![b'v'; 1000];
    let mut taken = 0;
    let refusal = loop {
        match net.raft_mut(1).propose(value.clone()) {
            Ok(_) => taken += 1,
            Err(e) => break e,
        }
        assert!(taken < 100, "no bound");
    };
    assert!(
        matches!(refusal, Error::UncommittedFull { bytes, max: 10_000 } if bytes <= 10_000),
        "{refusal:?}"
    );
    assert!(refusal.to_string().contains("retry"), "{refusal}");
    assert!(taken >= 9, "only {taken} taken");
    let held = net.status(1).last_index - commit;
    assert!(held <= 11, "{held} entries held");

    // One entry is always taken, however large, when nothing is pending.
    let mut net1 = Network::with_config(1, |cfg| cfg.max_uncommitted_bytes = 10);
    net1.elect(1);
    assert!(net1.propose(1, &[0; 100]).is_ok());

    // Once the followers are back the entries commit and proposals are taken again.
    net.heal();
    net.tick_all(5);
    assert!(net.status(1).commit > commit);
    assert!(net.propose(1, &value).is_ok());
}
