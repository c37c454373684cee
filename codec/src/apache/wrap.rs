//! Generic `_args` and `_result` structs for single-parameter Thrift methods.
//!
//! On the wire a Thrift call's body is an `<Method>_args` struct whose field *i* is parameter
//! *i*, and a reply's body a `<Method>_result` struct whose field 0 is the return value (spec
//! §2.1). Apache Thrift's Rust generator keeps those structs private, so code that brings its own
//! IDL wraps its request and response types in these instead: [`Args1`] for a method taking one
//! parameter (the Kitex convention: one request struct), [`SuccessResult`] for its reply.

use thrift::protocol::{
    field_id, TFieldIdentifier, TInputProtocol, TOutputProtocol, TSerializable, TStructIdentifier,
    TType,
};

/// The args struct of a method with one parameter, field id 1, of struct type `T`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args1<T>(pub T);

impl<T: TSerializable> TSerializable for Args1<T> {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        i.read_struct_begin()?;
        let mut value = None;
        loop {
            let f = i.read_field_begin()?;
            if f.field_type == TType::Stop {
                break;
            }
            match (field_id(&f)?, f.field_type) {
                (1, TType::Struct) => value = Some(T::read_from_in_protocol(i)?),
                _ => i.skip(f.field_type)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        value.map(Self).ok_or_else(|| missing("args field 1"))
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("args"))?;
        o.write_field_begin(&TFieldIdentifier::new("req", TType::Struct, 1))?;
        self.0.write_to_out_protocol(o)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

/// The result struct of a method returning struct type `T` (field 0, `success`). Declared
/// exceptions (fields 1..n) are skipped on read; a result without field 0 is an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SuccessResult<T>(pub T);

impl<T: TSerializable> TSerializable for SuccessResult<T> {
    fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<Self> {
        i.read_struct_begin()?;
        let mut value = None;
        loop {
            let f = i.read_field_begin()?;
            if f.field_type == TType::Stop {
                break;
            }
            match (field_id(&f)?, f.field_type) {
                (0, TType::Struct) => value = Some(T::read_from_in_protocol(i)?),
                _ => i.skip(f.field_type)?,
            }
            i.read_field_end()?;
        }
        i.read_struct_end()?;
        value
            .map(Self)
            .ok_or_else(|| missing("result field 0 (success)"))
    }

    fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_struct_begin(&TStructIdentifier::new("result"))?;
        o.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
        self.0.write_to_out_protocol(o)?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()
    }
}

fn missing(what: &str) -> thrift::Error {
    thrift::Error::Protocol(thrift::ProtocolError::new(
        thrift::ProtocolErrorKind::InvalidData,
        format!("missing {what}"),
    ))
}
