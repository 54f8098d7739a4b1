use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn error_var(vars: &[(&str, &str)]) -> String {
    config(vars).expect_err("the configuration is invalid").var
}

#[test]
fn no_configuration_is_a_single_member_cluster_on_localhost() {
    let cfg = config(&[("PATH", "/bin"), ("OTEL_SERVICE_NAME", "x")]).unwrap();
    assert_eq!(cfg.node_id, 1);
    assert_eq!(cfg.client_listen.to_string(), "127.0.0.1:7070");
    assert_eq!(
        cfg.start,
        Start::Bootstrap(BTreeMap::from([(1, "127.0.0.1:7071".to_string())]))
    );
    assert_eq!(cfg.data_dir, PathBuf::from("./reinado-data"));
    assert_eq!(cfg.election_ticks, 5);
    assert!(!cfg.fault_injection);
}

#[test]
fn a_three_node_configuration_parses() {
    let cfg = config(&[
        ("REINADO_NODE_ID", "2"),
        ("REINADO_CLIENT_ADDR", "0.0.0.0:7070"),
        ("REINADO_PEER_ADDR", "0.0.0.0:7071"),
        ("REINADO_ADVERTISE_CLIENT_ADDR", "node2:7070"),
        ("REINADO_ADVERTISE_PEER_ADDR", "node2:7071"),
        ("REINADO_PEERS", "1=node1:7071, 2=node2:7071,3=node3:7071"),
        ("REINADO_FAULT_INJECTION", "true"),
        ("REINADO_JOIN", ""),
    ])
    .unwrap();
    let Start::Bootstrap(peers) = cfg.start else {
        panic!("bootstraps")
    };
    assert_eq!(peers.len(), 3);
    assert_eq!(peers[&3], "node3:7071");
    assert!(cfg.fault_injection);
}

#[test]
fn a_node_with_only_a_join_address_joins() {
    let cfg = config(&[("REINADO_NODE_ID", "4"), ("REINADO_JOIN", "127.0.0.1:7000")]).unwrap();
    assert_eq!(cfg.start, Start::Join("127.0.0.1:7000".to_string()));
}

#[test]
fn a_stateful_set_pod_bootstraps_when_listed_and_joins_when_not() {
    let pod = |name: &str| {
        let advertise = format!("{name}.reinado-node:7071");
        config(&[
            ("HOSTNAME", name),
            ("REINADO_NODE_ID", "ordinal"),
            ("REINADO_CLIENT_ADDR", "0.0.0.0:7070"),
            ("REINADO_PEER_ADDR", "0.0.0.0:7071"),
            ("REINADO_ADVERTISE_CLIENT_ADDR", "x:7070"),
            ("REINADO_ADVERTISE_PEER_ADDR", advertise.as_str()),
            (
                "REINADO_PEERS",
                "1=reinado-node-0.reinado-node:7071,2=reinado-node-1.reinado-node:7071",
            ),
            ("REINADO_JOIN", "reinado-proxy:7000"),
        ])
        .unwrap()
    };
    let first = pod("reinado-node-0");
    assert_eq!(first.node_id, 1);
    assert!(matches!(first.start, Start::Bootstrap(ref p) if p.len() == 2));
    let added = pod("reinado-node-3");
    assert_eq!(added.node_id, 4);
    assert_eq!(added.start, Start::Join("reinado-proxy:7000".to_string()));
}

#[test]
fn every_mistake_names_its_variable() {
    assert_eq!(error_var(&[("REINADO_PEERZ", "1=a:1")]), "REINADO_PEERZ");
    assert!(
        config(&[("REINADO_PEERZ", "1=a:1")])
            .unwrap_err()
            .to_string()
            .contains("did you mean REINADO_PEERS")
    );
    assert_eq!(error_var(&[("REINADO_NODE_ID", "abc")]), "REINADO_NODE_ID");
    assert_eq!(error_var(&[("REINADO_NODE_ID", "0")]), "REINADO_NODE_ID");
    assert_eq!(
        error_var(&[("REINADO_CLIENT_ADDR", "localhost")]),
        "REINADO_CLIENT_ADDR"
    );
    assert_eq!(
        error_var(&[("REINADO_CLIENT_ADDR", "0.0.0.0:7070")]),
        "REINADO_ADVERTISE_CLIENT_ADDR"
    );
    assert_eq!(error_var(&[("REINADO_PEERS", "1=x")]), "REINADO_PEERS");
    assert_eq!(
        error_var(&[("REINADO_PEERS", "2=a:1,3=b:1")]),
        "REINADO_PEERS",
        "this node is not listed"
    );
    assert_eq!(
        error_var(&[("REINADO_NODE_ID", "ordinal"), ("HOSTNAME", "node")]),
        "REINADO_NODE_ID"
    );
    assert_eq!(
        error_var(&[
            ("REINADO_NODE_ID", "4"),
            ("REINADO_PEERS", "1=127.0.0.1:7071"),
            ("REINADO_JOIN", "a")
        ]),
        "REINADO_JOIN"
    );
    assert_eq!(
        error_var(&[("REINADO_ELECTION_TIMEOUT_MS", "75")]),
        "REINADO_ELECTION_TIMEOUT_MS"
    );
    assert_eq!(
        error_var(&[("REINADO_FAULT_INJECTION", "yes")]),
        "REINADO_FAULT_INJECTION"
    );
    assert_eq!(
        error_var(&[("REINADO_MAX_REQUEST_BYTES", "1000")]),
        "REINADO_MAX_REQUEST_BYTES"
    );
    for (name, value) in [
        ("REINADO_QUOTA_BYTES", "0"),
        ("REINADO_QUOTA_BYTES", "2199023255552"),
        ("REINADO_SESSION_TTL_MS", "0"),
        ("REINADO_MAX_SESSIONS", "0"),
        ("REINADO_WATCH_HISTORY_BYTES", "0"),
        ("REINADO_SNAPSHOT_CATCHUP_BYTES", "2147483648"),
    ] {
        assert_eq!(error_var(&[(name, value)]), name, "{name}={value}");
    }
}

#[test]
fn every_variable_has_a_default_that_parses_and_is_in_the_help() {
    let help = help();
    for v in VARIABLES {
        assert!(help.contains(v.name), "{} missing from --help", v.name);
        // Setting each variable to its own default changes nothing and is accepted.
        if !v.default.is_empty() {
            config(&[(v.name, v.default)]).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        }
    }
}

#[test]
fn the_readme_documents_every_variable() {
    let readme = include_str!("../../../../README.md");
    for v in VARIABLES {
        let row = format!("| `{}` | `{}` |", v.name, v.default);
        let row_empty = format!("| `{}` | |", v.name);
        assert!(
            readme.contains(&row) || (v.default.is_empty() && readme.contains(&row_empty)),
            "README.md has no table row `{row}` for {}",
            v.name
        );
    }
}

#[test]
fn the_clis_variables_are_skipped_and_a_typo_is_still_refused() {
    let shell = [
        ("REINADO_ENDPOINTS", "127.0.0.1:7000"),
        ("REINADO_OUTPUT", "json"),
        ("REINADO_TIMEOUT_MS", "500"),
    ];
    assert_eq!(config(&shell).unwrap().node_id, 1);
    assert_eq!(error_var(&[("REINADO_ENDPOINT", "x")]), "REINADO_ENDPOINT");
}
