//! What a bench client sends its requests through: Reinado's own API (a [`Client`], with its failover,
//! request ids and retries) or etcd's v3 KV API (one long-lived channel, one attempt per request), so one
//! load generator measures Reinado and etcd side by side.

use clap::ValueEnum;
use reinado_client::channel::{ChannelOptions, endpoint};
use reinado_client::{Client, ClientError, ClientOptions};
use reinado_proto::etcd::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, kv_client::KvClient,
    request_op,
};
use reinado_proto::v1::Consistency;
use tonic::transport::Channel;

/// The API the benchmark speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// Reinado's own (`reinado.v1.Kv`), through the client library.
    Reinado,
    /// etcd's v3 KV (Put, Range, Txn), which Reinado nodes and etcd both serve.
    Etcd,
}

/// One bench client's connection.
#[derive(Clone)]
pub enum Target {
    /// Reinado's API, failing over between the endpoints.
    Reinado(Client),
    /// etcd's KV API on one endpoint.
    Etcd(KvClient<Channel>),
}

impl Target {
    /// A connection for bench client `i` of `endpoints`: each starts at a different endpoint so connections
    /// and reads spread; each has its own channels.
    pub fn new(api: Api, endpoints: &[String], i: usize) -> Result<Target, ClientError> {
        let mut e = endpoints.to_vec();
        e.rotate_left(i % endpoints.len());
        match api {
            Api::Reinado => Ok(Target::Reinado(Client::new(e, ClientOptions::default())?)),
            Api::Etcd => {
                let opts = ClientOptions::default();
                let channel = endpoint(&e[0], ChannelOptions::default())
                    .map_err(|err| ClientError::Local(format!("bad endpoint `{}`: {err}", e[0])))?
                    .timeout(opts.timeout)
                    .connect_lazy();
                Ok(Target::Etcd(KvClient::new(channel)))
            }
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: Vec<u8>, value: &[u8]) -> Result<(), ClientError> {
        match self {
            Target::Reinado(c) => c.put(&key, value).await.map(drop),
            Target::Etcd(kv) => {
                let req = PutRequest {
                    key,
                    value: value.to_vec(),
                    ..PutRequest::default()
                };
                kv.put(req)
                    .await
                    .map(drop)
                    .map_err(|s| ClientError::from_status(&s))
            }
        }
    }

    /// Reads `key` (an absent key is a success: the read was served).
    pub async fn get(&mut self, key: Vec<u8>, consistency: Consistency) -> Result<(), ClientError> {
        match self {
            Target::Reinado(c) => c.get(&key, consistency).await.map(drop),
            Target::Etcd(kv) => {
                let req = RangeRequest {
                    key,
                    serializable: consistency == Consistency::Serializable,
                    ..RangeRequest::default()
                };
                kv.range(req)
                    .await
                    .map(drop)
                    .map_err(|s| ClientError::from_status(&s))
            }
        }
    }

    /// Compare-and-swap: sets `key` to `new` if its value is `expected` (`None`: if it does not exist);
    /// whether it swapped.
    pub async fn cas(
        &mut self,
        key: Vec<u8>,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, ClientError> {
        match self {
            Target::Reinado(c) => c.cas(&key, expected, &new).await.map(|r| r.succeeded),
            Target::Etcd(kv) => {
                let txn = etcd_cas(key, expected, new);
                kv.txn(txn)
                    .await
                    .map(|r| r.into_inner().succeeded)
                    .map_err(|s| ClientError::from_status(&s))
            }
        }
    }
}

/// etcd's compare-and-swap: compare the value (or version 0 for an absent key), then put.
fn etcd_cas(key: Vec<u8>, expected: Option<&[u8]>, new: Vec<u8>) -> TxnRequest {
    let (target, union) = match expected {
        Some(v) => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(v.to_vec()),
        ),
        None => (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(0),
        ),
    };
    let compare = Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.clone(),
        target_union: Some(union),
        ..Compare::default()
    };
    let put = PutRequest {
        key,
        value: new,
        ..PutRequest::default()
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        failure: vec![],
    }
}
