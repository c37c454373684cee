//! Metainfo propagation (Kitex/Volo `metainfo`): key-value pairs that travel with a call.
//!
//! - *transient* values go one hop: client → server, as TTHeader string keys `RPC_TRANSIT_<k>`;
//! - *persistent* values go along the whole chain: `RPC_PERSIST_<k>`, and a server that calls
//!   further forwards them ([`Metainfo::forward`]);
//! - *backward* values go server → client in the reply. We send them with the `RPC_BACKWARD_`
//!   prefix (Volo's form) and accept both that and Kitex's unprefixed keys on read (spec §1.5).

use ringrpc_codec::keys::str as keys;
use ringrpc_codec::TtHeader;

/// Metainfo of one call, in either direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metainfo {
    /// One-hop values.
    pub transient: Vec<(String, String)>,
    /// Whole-chain values.
    pub persistent: Vec<(String, String)>,
}

impl Metainfo {
    /// Empty metainfo.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.transient.is_empty() && self.persistent.is_empty()
    }

    /// Adds a one-hop value.
    pub fn with_transient(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.transient.push((k.into(), v.into()));
        self
    }

    /// Adds a whole-chain value.
    pub fn with_persistent(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.persistent.push((k.into(), v.into()));
        self
    }

    /// The one-hop value of `k`.
    pub fn transient(&self, k: &str) -> Option<&str> {
        find(&self.transient, k)
    }

    /// The whole-chain value of `k`.
    pub fn persistent(&self, k: &str) -> Option<&str> {
        find(&self.persistent, k)
    }

    /// What a server passes on when it calls further: persistent values only.
    pub fn forward(&self) -> Self {
        Self {
            transient: Vec::new(),
            persistent: self.persistent.clone(),
        }
    }

    /// Writes the values into a request header with their prefixes.
    pub fn write_request(&self, header: &mut TtHeader) {
        for (k, v) in &self.transient {
            header.set_str_kv(format!("{}{k}", keys::TRANSIT_PREFIX), v.clone());
        }
        for (k, v) in &self.persistent {
            header.set_str_kv(format!("{}{k}", keys::PERSIST_PREFIX), v.clone());
        }
    }

    /// Reads the prefixed values of a request header.
    pub fn read_request(header: &TtHeader) -> Self {
        let mut m = Self::default();
        for (k, v) in header.str_kvs() {
            if let Some(name) = strip(k, keys::TRANSIT_PREFIX) {
                m.transient.push((name, lossy(v)));
            } else if let Some(name) = strip(k, keys::PERSIST_PREFIX) {
                m.persistent.push((name, lossy(v)));
            }
        }
        m
    }
}

/// Values a server sends back to its caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backward(pub Vec<(String, String)>);

impl Backward {
    /// Adds a value.
    pub fn push(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.0.push((k.into(), v.into()));
    }

    /// The value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        find(&self.0, k)
    }

    /// Writes the values into a reply header with the `RPC_BACKWARD_` prefix.
    pub fn write_reply(&self, header: &mut TtHeader) {
        for (k, v) in &self.0 {
            header.set_str_kv(format!("{}{k}", keys::BACKWARD_PREFIX), v.clone());
        }
    }

    /// Reads backward values from a reply header: prefixed keys (Volo, ringrpc) and Kitex's
    /// unprefixed ones, leaving out the keys the protocol itself uses.
    pub fn read_reply(header: &TtHeader) -> Self {
        let mut out = Self::default();
        for (k, v) in header.str_kvs() {
            if let Some(name) = strip(k, keys::BACKWARD_PREFIX) {
                out.0.push((name, lossy(v)));
            } else if !is_protocol_key(k) {
                out.0.push((lossy(k), lossy(v)));
            }
        }
        out
    }
}

fn is_protocol_key(k: &[u8]) -> bool {
    const RESERVED: [&str; 8] = [
        keys::CONN_RESET,
        keys::BIZ_STATUS,
        keys::BIZ_MESSAGE,
        keys::BIZ_EXTRA,
        keys::CRC32C,
        keys::IDL_SERVICE_NAME,
        keys::REMOTE_IP,
        keys::GDPR_TOKEN,
    ];
    RESERVED.iter().any(|r| r.as_bytes() == k)
        || k.starts_with(keys::TRANSIT_PREFIX.as_bytes())
        || k.starts_with(keys::PERSIST_PREFIX.as_bytes())
}

fn find<'a>(list: &'a [(String, String)], k: &str) -> Option<&'a str> {
    list.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

fn strip(k: &[u8], prefix: &str) -> Option<String> {
    k.strip_prefix(prefix.as_bytes())
        .map(|n| String::from_utf8_lossy(n).into_owned())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip_keeps_prefixes_apart() {
        let m = Metainfo::new()
            .with_transient("a", "1")
            .with_persistent("b", "2");
        let mut h = TtHeader::new();
        m.write_request(&mut h);
        assert_eq!(h.str_kv(b"RPC_TRANSIT_a"), Some(&b"1"[..]));
        assert_eq!(h.str_kv(b"RPC_PERSIST_b"), Some(&b"2"[..]));
        let back = Metainfo::read_request(&h);
        assert_eq!(back, m);
        assert_eq!(back.forward().transient("a"), None);
        assert_eq!(back.forward().persistent("b"), Some("2"));
    }

    #[test]
    fn backward_accepts_prefixed_and_kitex_plain_keys() {
        let mut h = TtHeader::new();
        h.set_str_kv("RPC_BACKWARD_x", "1");
        h.set_str_kv("y", "2");
        h.set_str_kv("crrst", "1");
        let b = Backward::read_reply(&h);
        assert_eq!(b.get("x"), Some("1"));
        assert_eq!(b.get("y"), Some("2"));
        assert_eq!(b.get("crrst"), None);
    }
}
