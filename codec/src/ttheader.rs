//! TTHeader (spec §1): the header representation, its well-known keys, and the
//! encoder/decoder of the variable header-info area.
//!
//! The 14-byte prefix and the framing around it are handled by the frame decoder and
//! encoder; this module turns the header-info region (PROTOCOL ID, transforms, info blocks,
//! padding) into a [`TtHeader`] and back. A decoded header keeps the received area and indexes
//! its keys and values, so decoding copies no key or value and touches no reference count.

use bytes::Bytes;

use crate::error::CodecError;
use crate::linkbuf::ChunkWriter;

/// TTHeader magic, the u16 at frame offset 4.
pub const TTHEADER_MAGIC: u16 = 0x1000;
/// Flag bit set by the Kitex mux client (HeaderFlagSupportOutOfOrder).
pub const FLAG_SUPPORT_OUT_OF_ORDER: u16 = 0x0001;
/// Flag bit marking TTHeader *streaming* frames; never set on unary frames.
pub const FLAG_STREAMING: u16 = 0x0002;
/// Size of the fixed prefix: LENGTH, MAGIC, FLAGS, SEQUENCE NUMBER, HEADER SIZE.
pub const PREFIX_LEN: usize = 14;
/// Largest header-info area we encode (spec §1.3: stay ≤ 64 KiB for older peers).
pub const MAX_ENCODED_HEADER_SIZE: usize = 65536;

/// Header-info block ids (spec §1.2).
pub mod info_id {
    /// Padding byte (no body).
    pub const PADDING: u8 = 0x00;
    /// String key-value block.
    pub const KEY_VALUE: u8 = 0x01;
    /// Integer key-value block.
    pub const INT_KEY_VALUE: u8 = 0x10;
    /// ACL token (a single string).
    pub const ACL_TOKEN: u8 = 0x11;
}

/// TTHeader PROTOCOL ID values (spec §1.2). The payload codec is still sniffed (§2.3):
/// Kitex sends 0x00 even for Kitex Protobuf.
pub mod protocol_id {
    /// Thrift binary (also the default and Kitex's fallback for protobuf).
    pub const THRIFT_BINARY: u8 = 0x00;
    /// Thrift CompactV2 (fbthrift); accepted for compatibility only.
    pub const THRIFT_COMPACT_V2: u8 = 0x03;
    /// Kitex Protobuf.
    pub const KITEX_PROTOBUF: u8 = 0x04;
    /// Thrift struct (TTHeader streaming).
    pub const THRIFT_STRUCT: u8 = 0x10;
    /// Protobuf struct (TTHeader streaming).
    pub const PROTOBUF_STRUCT: u8 = 0x11;
    /// Every id the decoder accepts (Kitex's set; 0x02 Apache Compact is rejected).
    pub const ACCEPTED: [u8; 5] = [
        THRIFT_BINARY,
        THRIFT_COMPACT_V2,
        KITEX_PROTOBUF,
        THRIFT_STRUCT,
        PROTOBUF_STRUCT,
    ];
}

/// Well-known TTHeader keys.
pub mod keys {
    /// Integer keys of INFO_INTKEYVALUE (spec §1.4; GOPKG metakey.go iota list).
    pub mod int {
        /// MeshVersion.
        pub const MESH_VERSION: u16 = 0;
        /// TransportType: `"framed"` or `"unframed"`.
        pub const TRANSPORT_TYPE: u16 = 1;
        /// LogID.
        pub const LOG_ID: u16 = 2;
        /// FromService (caller service name).
        pub const FROM_SERVICE: u16 = 3;
        /// FromCluster.
        pub const FROM_CLUSTER: u16 = 4;
        /// FromIDC.
        pub const FROM_IDC: u16 = 5;
        /// ToService (callee service name).
        pub const TO_SERVICE: u16 = 6;
        /// ToCluster.
        pub const TO_CLUSTER: u16 = 7;
        /// ToIDC.
        pub const TO_IDC: u16 = 8;
        /// ToMethod.
        pub const TO_METHOD: u16 = 9;
        /// Env.
        pub const ENV: u16 = 10;
        /// DestAddress.
        pub const DEST_ADDRESS: u16 = 11;
        /// RPCTimeout in ms, decimal text.
        pub const RPC_TIMEOUT: u16 = 12;
        /// ReadTimeout.
        pub const READ_TIMEOUT: u16 = 13;
        /// RingHashKey.
        pub const RING_HASH_KEY: u16 = 14;
        /// DDPTag.
        pub const DDP_TAG: u16 = 15;
        /// WithMeshHeader (Volo writes `"3"`).
        pub const WITH_MESH_HEADER: u16 = 16;
        /// ConnectTimeout in ms.
        pub const CONNECT_TIMEOUT: u16 = 17;
        /// SpanContext.
        pub const SPAN_CONTEXT: u16 = 18;
        /// ShortConnection.
        pub const SHORT_CONNECTION: u16 = 19;
        /// FromMethod.
        pub const FROM_METHOD: u16 = 20;
        /// StressTag.
        pub const STRESS_TAG: u16 = 21;
        /// MsgType: decimal text from Kitex, one raw byte from Volo.
        pub const MSG_TYPE: u16 = 22;
        /// HTTPContentType.
        pub const HTTP_CONTENT_TYPE: u16 = 23;
        /// RawRingHashKey.
        pub const RAW_RING_HASH_KEY: u16 = 24;
        /// LBType.
        pub const LB_TYPE: u16 = 25;
        /// ClusterShardID.
        pub const CLUSTER_SHARD_ID: u16 = 26;
        /// FrameType (streaming).
        pub const FRAME_TYPE: u16 = 27;
    }

    /// String keys of INFO_KEYVALUE (spec §1.5).
    pub mod str {
        /// Prefix of transient metainfo (one hop).
        pub const TRANSIT_PREFIX: &str = "RPC_TRANSIT_";
        /// Prefix of persistent metainfo (whole chain).
        pub const PERSIST_PREFIX: &str = "RPC_PERSIST_";
        /// Prefix of backward metainfo as Volo sends it (Kitex sends keys unprefixed).
        pub const BACKWARD_PREFIX: &str = "RPC_BACKWARD_";
        /// IDL service name.
        pub const IDL_SERVICE_NAME: &str = "isn";
        /// Remote/real IP:port.
        pub const REMOTE_IP: &str = "rip";
        /// Connection ready to reset: any non-empty value means "don't reuse".
        pub const CONN_RESET: &str = "crrst";
        /// Business status code, decimal int32 text.
        pub const BIZ_STATUS: &str = "biz-status";
        /// Business error message.
        pub const BIZ_MESSAGE: &str = "biz-message";
        /// Business error extra, a JSON object of string→string.
        pub const BIZ_EXTRA: &str = "biz-extra";
        /// Optional CRC32C of the payload.
        pub const CRC32C: &str = "crc32c";
        /// Key Kitex maps the ACL_TOKEN block to.
        pub const GDPR_TOKEN: &str = "RPC_TRANSIT_gdpr-token";
    }
}

/// Parses a TTHeader integer value written either as ASCII decimal (Kitex, and what we
/// write) or as one raw byte (Volo's MsgType, key 22). Empty or malformed → `None`.
pub fn parse_int_value(value: &[u8]) -> Option<i64> {
    match value {
        [] => None,
        [b] if !b.is_ascii_digit() => Some(i64::from(*b)),
        _ => std::str::from_utf8(value).ok()?.parse().ok(),
    }
}

/// Where an entry's key or value lies in [`TtHeader`]'s byte store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }
}

/// Which block an entry belongs to, and its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKey {
    Int(u16),
    Str(Span),
    AclToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: EntryKey,
    value: Span,
}

/// The bytes entries point into: the received header-info area as it arrived, or, once a
/// header is built or changed, an owned buffer the setters append to.
#[derive(Clone)]
enum Store {
    Received(Bytes),
    Built(Vec<u8>),
}

impl Store {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Received(b) => b,
            Self::Built(v) => v,
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::Built(Vec::new())
    }
}

/// Decoded (or to-be-encoded) TTHeader metadata.
///
/// Keys keep the order in which they were received (or set); repeated blocks are merged
/// into the same lists. Lookups return the last occurrence of a key, like Kitex's map.
///
/// A decoded header keeps the received header-info area (one [`Bytes`], no copy) and an index
/// of where each key and value lies in it, so decoding takes no reference count per key or
/// value and one allocation for the index. Setters copy the (short) keys and values into an
/// owned buffer instead.
#[derive(Clone, Default)]
pub struct TtHeader {
    /// FLAGS field. Replies should write 0.
    pub flags: u16,
    /// SEQUENCE NUMBER as received. The encoder writes the frame's seq id instead.
    pub seq_id: i32,
    /// PROTOCOL ID (see [`protocol_id`]).
    pub protocol_id: u8,
    store: Store,
    entries: Vec<Entry>,
}

impl PartialEq for TtHeader {
    /// Same fields and the same entries (by content) in the same order within each block.
    fn eq(&self, other: &Self) -> bool {
        self.flags == other.flags
            && self.seq_id == other.seq_id
            && self.protocol_id == other.protocol_id
            && self.acl_token() == other.acl_token()
            && self.int_kvs().eq(other.int_kvs())
            && self.str_kvs().eq(other.str_kvs())
    }
}

impl Eq for TtHeader {}

impl std::fmt::Debug for TtHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_struct("TtHeader")
            .field("flags", &self.flags)
            .field("seq_id", &self.seq_id)
            .field("protocol_id", &self.protocol_id)
            .field(
                "int_kvs",
                &self
                    .int_kvs()
                    .map(|(k, v)| (k, text(v)))
                    .collect::<Vec<_>>(),
            )
            .field(
                "str_kvs",
                &self
                    .str_kvs()
                    .map(|(k, v)| (text(k), text(v)))
                    .collect::<Vec<_>>(),
            )
            .field("acl_token", &self.acl_token().map(text))
            .finish()
    }
}

impl TtHeader {
    /// An empty header (protocol id 0, flags 0, no keys).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header with room for `entries` entries holding `bytes` bytes of keys and
    /// values, so building it allocates twice at most.
    pub fn with_capacity(entries: usize, bytes: usize) -> Self {
        Self {
            store: Store::Built(Vec::with_capacity(bytes)),
            entries: Vec::with_capacity(entries),
            ..Self::default()
        }
    }

    fn slice(&self, span: Span) -> &[u8] {
        &self.store.bytes()[span.range()]
    }

    /// INFO_INTKEYVALUE entries, in order.
    pub fn int_kvs(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.entries.iter().filter_map(|e| match e.key {
            EntryKey::Int(k) => Some((k, self.slice(e.value))),
            _ => None,
        })
    }

    /// INFO_KEYVALUE entries, in order.
    pub fn str_kvs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries.iter().filter_map(|e| match e.key {
            EntryKey::Str(k) => Some((self.slice(k), self.slice(e.value))),
            _ => None,
        })
    }

    /// Whether the header has no INFO_KEYVALUE entry.
    pub fn has_str_kvs(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.key, EntryKey::Str(_)))
    }

    /// Number of entries of all kinds (int and string key-values, ACL token).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the header has no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// ACL_TOKEN block (Kitex's `RPC_TRANSIT_gdpr-token`).
    pub fn acl_token(&self) -> Option<&[u8]> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == EntryKey::AclToken)
            .map(|e| self.slice(e.value))
    }

    fn find_int(&self, key: u16) -> Option<Span> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == EntryKey::Int(key))
            .map(|e| e.value)
    }

    fn find_str(&self, key: &[u8]) -> Option<Span> {
        self.entries
            .iter()
            .rev()
            .find(|e| matches!(e.key, EntryKey::Str(k) if self.slice(k) == key))
            .map(|e| e.value)
    }

    /// `span` as [`Bytes`]: a slice of the received frame (no copy) or a copy of built bytes.
    fn to_bytes(&self, span: Span) -> Bytes {
        match &self.store {
            Store::Received(b) => b.slice(span.range()),
            Store::Built(v) => Bytes::copy_from_slice(&v[span.range()]),
        }
    }

    /// Value of integer key `key`.
    pub fn int_kv(&self, key: u16) -> Option<&[u8]> {
        self.find_int(key).map(|s| self.slice(s))
    }

    /// [`TtHeader::int_kv`] as [`Bytes`] (a slice of the received frame when decoded).
    pub fn int_kv_bytes(&self, key: u16) -> Option<Bytes> {
        self.find_int(key).map(|s| self.to_bytes(s))
    }

    /// Value of integer key `key` parsed with [`parse_int_value`].
    pub fn int_kv_number(&self, key: u16) -> Option<i64> {
        self.int_kv(key).and_then(parse_int_value)
    }

    /// Value of string key `key`.
    pub fn str_kv(&self, key: &[u8]) -> Option<&[u8]> {
        self.find_str(key).map(|s| self.slice(s))
    }

    /// [`TtHeader::str_kv`] as [`Bytes`] (a slice of the received frame when decoded).
    pub fn str_kv_bytes(&self, key: &[u8]) -> Option<Bytes> {
        self.find_str(key).map(|s| self.to_bytes(s))
    }

    /// The owned store setters append to; a received header's bytes are copied over once.
    fn built(&mut self) -> &mut Vec<u8> {
        if let Store::Received(b) = &self.store {
            self.store = Store::Built(b.to_vec());
        }
        match &mut self.store {
            Store::Built(v) => v,
            Store::Received(_) => unreachable!("converted above"),
        }
    }

    /// Appends `bytes` to the store. Lengths past a u16 are kept (the encoder refuses them
    /// with [`CodecError::HeaderFieldTooLong`]); a store past 4 GiB is a caller bug.
    fn store_bytes(&mut self, bytes: &[u8]) -> Span {
        let v = self.built();
        let start = u32::try_from(v.len()).expect("TTHeader store under 4 GiB");
        let len = u32::try_from(bytes.len()).expect("TTHeader value under 4 GiB");
        v.extend_from_slice(bytes);
        Span { start, len }
    }

    /// Appends integer key `key` without looking for an earlier value: for building a fresh
    /// header.
    pub fn push_int_kv(&mut self, key: u16, value: &[u8]) {
        let value = self.store_bytes(value);
        self.entries.push(Entry {
            key: EntryKey::Int(key),
            value,
        });
    }

    /// Appends string key `key` without looking for an earlier value: for building a fresh
    /// header.
    pub fn push_str_kv(&mut self, key: &[u8], value: &[u8]) {
        let key = self.store_bytes(key);
        let value = self.store_bytes(value);
        self.entries.push(Entry {
            key: EntryKey::Str(key),
            value,
        });
    }

    /// Sets integer key `key`, replacing earlier values.
    pub fn set_int_kv(&mut self, key: u16, value: impl AsRef<[u8]>) {
        self.entries.retain(|e| e.key != EntryKey::Int(key));
        self.push_int_kv(key, value.as_ref());
    }

    /// Sets integer key `key` to `value` written as ASCII decimal (what Kitex writes).
    pub fn set_int_kv_number(&mut self, key: u16, value: i64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut n = value.unsigned_abs();
        loop {
            i -= 1;
            buf[i] = DIGITS[(n % 10) as usize];
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if value < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        self.set_int_kv(key, &buf[i..]);
    }

    /// Sets string key `key`, replacing earlier values.
    pub fn set_str_kv(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = key.as_ref();
        let store = self.store.bytes();
        self.entries
            .retain(|e| !matches!(e.key, EntryKey::Str(k) if &store[k.range()] == key));
        self.push_str_kv(key, value.as_ref());
    }

    /// Sets the ACL_TOKEN block, replacing an earlier one; `None` removes it.
    pub fn set_acl_token(&mut self, token: Option<&[u8]>) {
        self.entries.retain(|e| e.key != EntryKey::AclToken);
        if let Some(t) = token {
            let value = self.store_bytes(t);
            self.entries.push(Entry {
                key: EntryKey::AclToken,
                value,
            });
        }
    }

    /// Decodes the header-info area (`4 × HEADER SIZE` bytes at frame offset 14).
    pub fn decode_info(info: Bytes, flags: u16, seq_id: i32) -> Result<Self, CodecError> {
        Self::decode_info_within(info, flags, seq_id, usize::MAX)
    }

    /// Index memory one decoded key-value entry takes.
    pub const ENTRY_INDEX_BYTES: usize = size_of::<Entry>();

    /// [`TtHeader::decode_info`], refusing headers whose key-value index would take more than
    /// `max_index_bytes` of memory ([`CodecError::TooManyHeaderEntries`]). The frame decoder
    /// passes its frame limit, so decoding never allocates more than the limit for the index.
    pub fn decode_info_within(
        info: Bytes,
        flags: u16,
        seq_id: i32,
        max_index_bytes: usize,
    ) -> Result<Self, CodecError> {
        let max_entries = max_index_bytes / Self::ENTRY_INDEX_BYTES;
        let mut entries: Vec<Entry> = Vec::new();
        let check_entries = |entries: &Vec<Entry>, more: usize| {
            let n = entries.len() + more;
            if n > max_entries {
                Err(CodecError::TooManyHeaderEntries {
                    entries: n,
                    limit: max_entries,
                })
            } else {
                Ok(())
            }
        };
        let mut r = Reader { buf: &info, pos: 0 };
        let protocol_id = r.u8("protocol id")?;
        if !protocol_id::ACCEPTED.contains(&protocol_id) {
            return Err(CodecError::UnknownProtocolId(protocol_id));
        }
        let n_transforms = r.u8("transform count")?;
        for _ in 0..n_transforms {
            let id = r.u8("transform id")?;
            if id != 0 {
                return Err(CodecError::UnsupportedTransform(id));
            }
        }
        while r.remaining() > 0 {
            match r.u8("info id")? {
                info_id::PADDING => {}
                info_id::KEY_VALUE => {
                    let count = r.u16("string kv count")? as usize;
                    check_count(count, 4, r.remaining())?;
                    check_entries(&entries, count)?;
                    entries.reserve(count);
                    for _ in 0..count {
                        let k = r.str("string key")?;
                        let value = r.str("string value")?;
                        entries.push(Entry {
                            key: EntryKey::Str(k),
                            value,
                        });
                    }
                }
                info_id::INT_KEY_VALUE => {
                    let count = r.u16("int kv count")? as usize;
                    check_count(count, 4, r.remaining())?;
                    check_entries(&entries, count)?;
                    entries.reserve(count);
                    for _ in 0..count {
                        let k = r.u16("int key")?;
                        let value = r.str("int value")?;
                        entries.push(Entry {
                            key: EntryKey::Int(k),
                            value,
                        });
                    }
                }
                info_id::ACL_TOKEN => {
                    check_entries(&entries, 1)?;
                    let value = r.str("acl token")?;
                    entries.retain(|e| e.key != EntryKey::AclToken);
                    entries.push(Entry {
                        key: EntryKey::AclToken,
                        value,
                    });
                }
                other => return Err(CodecError::UnknownInfoId(other)),
            }
        }
        Ok(Self {
            flags,
            seq_id,
            protocol_id,
            store: Store::Received(info),
            entries,
        })
    }

    /// Appends the header-info area, padded to a multiple of 4, and returns its length.
    /// Block order follows Kitex: ACL token, string KVs, int KVs (each only if present).
    pub fn encode_info(&self, w: &mut ChunkWriter) -> Result<usize, CodecError> {
        let start = w.buf_offset();
        w.put_u8(self.protocol_id);
        w.put_u8(0); // no transforms
        if let Some(token) = self.acl_token() {
            w.put_u8(info_id::ACL_TOKEN);
            put_str(w, token, "acl token")?;
        }
        let (mut n_str, mut n_int) = (0, 0);
        for e in &self.entries {
            match e.key {
                EntryKey::Str(_) => n_str += 1,
                EntryKey::Int(_) => n_int += 1,
                EntryKey::AclToken => {}
            }
        }
        if n_str > 0 {
            w.put_u8(info_id::KEY_VALUE);
            w.put_u16(count_u16(n_str)?);
            for (k, v) in self.str_kvs() {
                put_str(w, k, "string key")?;
                put_str(w, v, "string value")?;
            }
        }
        if n_int > 0 {
            w.put_u8(info_id::INT_KEY_VALUE);
            w.put_u16(count_u16(n_int)?);
            for (k, v) in self.int_kvs() {
                w.put_u16(k);
                put_str(w, v, "int value")?;
            }
        }
        let unpadded = w.buf_offset() - start;
        let padded = unpadded.div_ceil(4) * 4;
        if padded > MAX_ENCODED_HEADER_SIZE {
            return Err(CodecError::HeaderTooLarge(padded));
        }
        w.put_slice(&[0u8; 3][..padded - unpadded]);
        Ok(padded)
    }
}

const DIGITS: [u8; 10] = *b"0123456789";

fn check_count(count: usize, min_entry: usize, available: usize) -> Result<(), CodecError> {
    let needed = count.saturating_mul(min_entry);
    if needed > available {
        return Err(CodecError::Truncated {
            what: "kv entries",
            needed,
            available,
        });
    }
    Ok(())
}

/// A cursor over the header-info area that hands out [`Span`]s instead of slices.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        self.need(1, what)?;
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        self.need(2, what)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }

    fn str(&mut self, what: &'static str) -> Result<Span, CodecError> {
        let len = self.u16(what)?;
        self.need(usize::from(len), what)?;
        let start = u32::try_from(self.pos).map_err(|_| CodecError::HeaderFieldTooLong {
            what,
            len: self.pos,
        })?;
        self.pos += usize::from(len);
        Ok(Span {
            start,
            len: u32::from(len),
        })
    }
}

fn count_u16(n: usize) -> Result<u16, CodecError> {
    u16::try_from(n).map_err(|_| CodecError::HeaderFieldTooLong {
        what: "kv count",
        len: n,
    })
}

fn put_str(w: &mut ChunkWriter, s: &[u8], what: &'static str) -> Result<(), CodecError> {
    let len = u16::try_from(s.len())
        .map_err(|_| CodecError::HeaderFieldTooLong { what, len: s.len() })?;
    w.put_u16(len);
    w.put_slice(s);
    Ok(())
}
