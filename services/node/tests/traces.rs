//! Traces: nodes export over OTLP to an in-test receiver, which gets the election and leader-change spans,
//! and a request's spans (client, node server span, commit, apply) share one trace id.

use reinado_client::harness::LocalCluster;
use reinado_client::otlp_sink::{OtlpSink, ReceivedSpan};
use std::time::Duration;
use tracing::Instrument;

const WAIT: Duration = Duration::from_secs(20);

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_leader_changes_and_requests_reach_the_trace_receiver() {
    let sink = OtlpSink::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoint = sink.endpoint();
    let telemetry =
        reinado_client::telemetry::init_with("trace-test", "warn", Some(&endpoint)).unwrap();
    let mut cluster = LocalCluster::start(
        3,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let first = cluster.wait_leader(WAIT).await;
    let client = cluster.client();
    let span = tracing::info_span!("test.put", otel.kind = "client");
    async { client.put(b"traced", b"1").await.unwrap() }
        .instrument(span)
        .await;
    // The leader exports its spans of the request within its batch delay; then a second election: kill it.
    let exported = sink
        .wait_for(WAIT, |spans| named(spans, "raft.apply").len() == 1)
        .await;
    assert!(exported, "{:#?}", sink.spans());
    cluster.node(first).process.kill();
    let second = cluster.wait_leader(WAIT).await;
    for node in cluster.nodes.values_mut() {
        if node.process.is_running() {
            assert_eq!(node.process.terminate(Duration::from_secs(10)), Some(0));
        }
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let found = sink
        .wait_for(WAIT, |spans| {
            let test = named(spans, "test.put");
            let Some(root) = test.first() else {
                return false;
            };
            let in_trace: Vec<&str> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .map(|s| s.name.as_str())
                .collect();
            in_trace.contains(&"reinado.v1.Kv/Put")
                && in_trace.contains(&"raft.commit")
                && in_trace.contains(&"raft.apply")
                && named(spans, "raft.leader_change")
                    .iter()
                    .any(|s| s.attributes.get("new_leader") == Some(&second.to_string()))
        })
        .await;
    let spans = sink.spans();
    assert!(
        found,
        "spans received: {:#?}",
        spans
            .iter()
            .map(|s| (&s.service, &s.name))
            .collect::<Vec<_>>()
    );

    let root = named(&spans, "test.put")[0];
    let server = spans
        .iter()
        .find(|s| s.name == "reinado.v1.Kv/Put" && s.trace_id == root.trace_id)
        .unwrap();
    assert_eq!(
        server.parent_span_id, root.span_id,
        "the node's span continues the client's"
    );
    assert_eq!(server.service, "reinado-node");
    let won: Vec<_> = named(&spans, "raft.election")
        .into_iter()
        .filter(|s| s.attributes.get("outcome").map(String::as_str) == Some("won"))
        .collect();
    assert!(won.len() >= 2, "two elections were won: {won:#?}");
    assert!(
        won.iter().all(
            |s| s.attributes.contains_key("term") && s.attributes.contains_key("votes_granted")
        )
    );
    let change = named(&spans, "raft.leader_change")
        .into_iter()
        .find(|s| s.attributes.get("new_leader") == Some(&second.to_string()))
        .unwrap();
    assert!(change.attributes.contains_key("old_leader") && change.attributes.contains_key("term"));
}
