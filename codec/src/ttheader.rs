//! TTHeader (spec §1): the header representation, its well-known keys, and the
//! encoder/decoder of the variable header-info area.
//!
//! The 14-byte prefix and the framing around it are handled by the frame decoder and
//! encoder; this module turns the header-info region (PROTOCOL ID, transforms, info blocks,
//! padding) into a [`TtHeader`] and back. Decoded keys and values are [`Bytes`] slices of
//! the received frame, so decoding copies no key or value.

use bytes::{Buf, Bytes};

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

/// Decoded (or to-be-encoded) TTHeader metadata.
///
/// Keys keep the order in which they were received (or set); repeated blocks are merged
/// into the same lists. Lookups return the last occurrence of a key, like Kitex's map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TtHeader {
    /// FLAGS field. Replies should write 0.
    pub flags: u16,
    /// SEQUENCE NUMBER as received. The encoder writes the frame's seq id instead.
    pub seq_id: i32,
    /// PROTOCOL ID (see [`protocol_id`]).
    pub protocol_id: u8,
    /// INFO_INTKEYVALUE entries.
    pub int_kvs: Vec<(u16, Bytes)>,
    /// INFO_KEYVALUE entries.
    pub str_kvs: Vec<(Bytes, Bytes)>,
    /// ACL_TOKEN block (Kitex's `RPC_TRANSIT_gdpr-token`).
    pub acl_token: Option<Bytes>,
}

impl TtHeader {
    /// An empty header (protocol id 0, flags 0, no keys).
    pub fn new() -> Self {
        Self::default()
    }

    /// Value of integer key `key`.
    pub fn int_kv(&self, key: u16) -> Option<&Bytes> {
        self.int_kvs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Value of integer key `key` parsed with [`parse_int_value`].
    pub fn int_kv_number(&self, key: u16) -> Option<i64> {
        self.int_kv(key).and_then(|v| parse_int_value(v))
    }

    /// Value of string key `key`.
    pub fn str_kv(&self, key: &[u8]) -> Option<&Bytes> {
        self.str_kvs
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    /// Sets integer key `key`, replacing earlier values.
    pub fn set_int_kv(&mut self, key: u16, value: impl Into<Bytes>) {
        self.int_kvs.retain(|(k, _)| *k != key);
        self.int_kvs.push((key, value.into()));
    }

    /// Sets integer key `key` to `value` written as ASCII decimal (what Kitex writes).
    pub fn set_int_kv_number(&mut self, key: u16, value: i64) {
        let v: Bytes = match value {
            0..=9 => Bytes::from_static(&DIGITS[value as usize..value as usize + 1]),
            _ => Bytes::from(value.to_string()),
        };
        self.set_int_kv(key, v);
    }

    /// Sets string key `key`, replacing earlier values.
    pub fn set_str_kv(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        let key = key.into();
        self.str_kvs.retain(|(k, _)| *k != key);
        self.str_kvs.push((key, value.into()));
    }

    /// Decodes the header-info area (`4 × HEADER SIZE` bytes at frame offset 14).
    pub fn decode_info(info: Bytes, flags: u16, seq_id: i32) -> Result<Self, CodecError> {
        Self::decode_info_within(info, flags, seq_id, usize::MAX)
    }

    /// Index memory one decoded key-value entry takes (the larger of the two entry kinds).
    pub const ENTRY_INDEX_BYTES: usize = size_of::<(Bytes, Bytes)>();

    /// [`TtHeader::decode_info`], refusing headers whose key-value index would take more than
    /// `max_index_bytes` of memory ([`CodecError::TooManyHeaderEntries`]). The frame decoder
    /// passes its frame limit, so decoding never allocates more than the limit for the index.
    pub fn decode_info_within(
        mut info: Bytes,
        flags: u16,
        seq_id: i32,
        max_index_bytes: usize,
    ) -> Result<Self, CodecError> {
        let max_entries = max_index_bytes / Self::ENTRY_INDEX_BYTES;
        let check_entries = |h: &Self, more: usize| {
            let entries = h.str_kvs.len() + h.int_kvs.len() + more;
            if entries > max_entries {
                Err(CodecError::TooManyHeaderEntries {
                    entries,
                    limit: max_entries,
                })
            } else {
                Ok(())
            }
        };
        let protocol_id = take_u8(&mut info, "protocol id")?;
        if !protocol_id::ACCEPTED.contains(&protocol_id) {
            return Err(CodecError::UnknownProtocolId(protocol_id));
        }
        let n_transforms = take_u8(&mut info, "transform count")?;
        for _ in 0..n_transforms {
            let id = take_u8(&mut info, "transform id")?;
            if id != 0 {
                return Err(CodecError::UnsupportedTransform(id));
            }
        }
        let mut header = Self {
            flags,
            seq_id,
            protocol_id,
            ..Self::default()
        };
        while info.has_remaining() {
            match info.get_u8() {
                info_id::PADDING => {}
                info_id::KEY_VALUE => {
                    let count = take_u16(&mut info, "string kv count")? as usize;
                    check_count(count, 4, info.remaining())?;
                    check_entries(&header, count)?;
                    header.str_kvs.reserve(count);
                    for _ in 0..count {
                        let k = take_str(&mut info, "string key")?;
                        let v = take_str(&mut info, "string value")?;
                        header.str_kvs.push((k, v));
                    }
                }
                info_id::INT_KEY_VALUE => {
                    let count = take_u16(&mut info, "int kv count")? as usize;
                    check_count(count, 4, info.remaining())?;
                    check_entries(&header, count)?;
                    header.int_kvs.reserve(count);
                    for _ in 0..count {
                        let k = take_u16(&mut info, "int key")?;
                        let v = take_str(&mut info, "int value")?;
                        header.int_kvs.push((k, v));
                    }
                }
                info_id::ACL_TOKEN => header.acl_token = Some(take_str(&mut info, "acl token")?),
                other => return Err(CodecError::UnknownInfoId(other)),
            }
        }
        Ok(header)
    }

    /// Appends the header-info area, padded to a multiple of 4, and returns its length.
    /// Block order follows Kitex: ACL token, string KVs, int KVs (each only if present).
    pub fn encode_info(&self, w: &mut ChunkWriter) -> Result<usize, CodecError> {
        let start = w.buf_offset();
        w.put_u8(self.protocol_id);
        w.put_u8(0); // no transforms
        if let Some(token) = &self.acl_token {
            w.put_u8(info_id::ACL_TOKEN);
            put_str(w, token, "acl token")?;
        }
        if !self.str_kvs.is_empty() {
            w.put_u8(info_id::KEY_VALUE);
            w.put_u16(count_u16(self.str_kvs.len())?);
            for (k, v) in &self.str_kvs {
                put_str(w, k, "string key")?;
                put_str(w, v, "string value")?;
            }
        }
        if !self.int_kvs.is_empty() {
            w.put_u8(info_id::INT_KEY_VALUE);
            w.put_u16(count_u16(self.int_kvs.len())?);
            for (k, v) in &self.int_kvs {
                w.put_u16(*k);
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

fn take_u8(b: &mut Bytes, what: &'static str) -> Result<u8, CodecError> {
    if b.remaining() < 1 {
        return Err(CodecError::Truncated {
            what,
            needed: 1,
            available: 0,
        });
    }
    Ok(b.get_u8())
}

fn take_u16(b: &mut Bytes, what: &'static str) -> Result<u16, CodecError> {
    if b.remaining() < 2 {
        return Err(CodecError::Truncated {
            what,
            needed: 2,
            available: b.remaining(),
        });
    }
    Ok(b.get_u16())
}

fn take_str(b: &mut Bytes, what: &'static str) -> Result<Bytes, CodecError> {
    let len = take_u16(b, what)? as usize;
    if b.remaining() < len {
        return Err(CodecError::Truncated {
            what,
            needed: len,
            available: b.remaining(),
        });
    }
    Ok(b.split_to(len))
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
