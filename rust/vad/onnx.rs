//! A minimal ONNX file reader: the nodes, attributes and tensors of a graph and its subgraphs.
//!
//! An ONNX file is one protobuf message (`ModelProto` in `onnx.proto`). This
//! decodes the few fields the native Silero engine needs, borrowing strings
//! and tensor bytes from the file, and skips every other field by its wire
//! type. It is not a general ONNX loader: there is no type checking, no
//! external data and no sparse tensors.

use thiserror::Error;

/// Subgraphs nest this deep at most (Silero's go four levels down); a deeper
/// file is refused rather than recursed into.
const MAX_DEPTH: usize = 32;

/// `TensorProto.DataType.FLOAT`.
pub(crate) const FLOAT: i32 = 1;

/// A file that is not a well-formed protobuf message of the shape expected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("malformed ONNX file at byte {offset}: {what}")]
pub(crate) struct OnnxError {
    offset: usize,
    what: String,
}

/// The decoded model: its main graph.
#[derive(Debug)]
pub(crate) struct Model<'a> {
    pub graph: Graph<'a>,
}

/// A graph: its nodes in file order and its initializers.
#[derive(Debug, Default)]
pub(crate) struct Graph<'a> {
    pub nodes: Vec<Node<'a>>,
    pub initializers: Vec<Tensor<'a>>,
}

/// One node: operator, input and output value names, attributes.
#[derive(Debug, Default)]
pub(crate) struct Node<'a> {
    pub op_type: &'a str,
    pub inputs: Vec<&'a str>,
    pub outputs: Vec<&'a str>,
    pub attributes: Vec<Attribute<'a>>,
}

/// One attribute; only the kinds of value the engine reads are kept.
#[derive(Debug, Default)]
pub(crate) struct Attribute<'a> {
    pub name: &'a str,
    pub int: Option<i64>,
    pub ints: Vec<i64>,
    pub string: &'a [u8],
    pub tensor: Option<Tensor<'a>>,
    pub graphs: Vec<Graph<'a>>,
}

/// A tensor whose data is still the file's bytes.
#[derive(Debug, Default)]
pub(crate) struct Tensor<'a> {
    pub name: &'a str,
    pub dims: Vec<i64>,
    pub data_type: i32,
    /// `raw_data`, or a packed `float_data`: little-endian values.
    bytes: &'a [u8],
    /// `float_data` written one field per value (unpacked).
    floats: Vec<f32>,
    external: bool,
}

impl Tensor<'_> {
    /// Number of elements its dims describe, or None if a dim is negative or
    /// the product overflows.
    pub fn len(&self) -> Option<usize> {
        self.dims.iter().try_fold(1_usize, |n, &d| {
            usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
        })
    }

    /// The values of a float tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, String> {
        if self.data_type != FLOAT {
            return Err(format!(
                "tensor {:?} has data type {}, not float",
                self.name, self.data_type
            ));
        }
        if self.external {
            return Err(format!(
                "tensor {:?} keeps its data in another file",
                self.name
            ));
        }
        let values: Vec<f32> = if self.floats.is_empty() {
            let (chunks, rest) = self.bytes.as_chunks::<4>();
            if !rest.is_empty() {
                return Err(format!("tensor {:?} has a partial float", self.name));
            }
            chunks.iter().map(|b| f32::from_le_bytes(*b)).collect()
        } else {
            self.floats.clone()
        };
        match self.len() {
            Some(n) if n == values.len() => Ok(values),
            _ => Err(format!(
                "tensor {:?} has dims {:?} but {} values",
                self.name,
                self.dims,
                values.len()
            )),
        }
    }
}

/// Decode an ONNX model from the bytes of its file.
pub(crate) fn parse(bytes: &[u8]) -> Result<Model<'_>, OnnxError> {
    let mut graph = None;
    let mut r = Reader::new(bytes, 0);
    while let Some((field, value)) = r.next()? {
        // ModelProto.graph
        if field == 7 {
            graph = Some(parse_graph(&r.sub(value)?, 0)?);
        }
    }
    let graph = graph.ok_or_else(|| OnnxError {
        offset: 0,
        what: "no graph: not an ONNX model".to_owned(),
    })?;
    Ok(Model { graph })
}

fn parse_graph<'a>(r: &Reader<'a>, depth: usize) -> Result<Graph<'a>, OnnxError> {
    if depth > MAX_DEPTH {
        return Err(r.error("subgraphs nested too deep"));
    }
    let mut graph = Graph::default();
    let mut r = r.clone();
    while let Some((field, value)) = r.next()? {
        match field {
            1 => graph.nodes.push(parse_node(&r.sub(value)?, depth)?),
            5 => graph.initializers.push(parse_tensor(&r.sub(value)?)?),
            _ => {}
        }
    }
    Ok(graph)
}

fn parse_node<'a>(r: &Reader<'a>, depth: usize) -> Result<Node<'a>, OnnxError> {
    let mut node = Node::default();
    let mut r = r.clone();
    while let Some((field, value)) = r.next()? {
        match field {
            1 => node.inputs.push(r.string(value)?),
            2 => node.outputs.push(r.string(value)?),
            4 => node.op_type = r.string(value)?,
            5 => node
                .attributes
                .push(parse_attribute(&r.sub(value)?, depth)?),
            _ => {}
        }
    }
    Ok(node)
}

fn parse_attribute<'a>(r: &Reader<'a>, depth: usize) -> Result<Attribute<'a>, OnnxError> {
    let mut attr = Attribute::default();
    let mut r = r.clone();
    while let Some((field, value)) = r.next()? {
        match field {
            1 => attr.name = r.string(value)?,
            3 => attr.int = Some(r.varint_of(value)? as i64),
            4 => attr.string = r.bytes(value)?,
            5 => attr.tensor = Some(parse_tensor(&r.sub(value)?)?),
            6 | 11 => attr.graphs.push(parse_graph(&r.sub(value)?, depth + 1)?),
            8 => r.push_varints(value, &mut attr.ints)?,
            _ => {}
        }
    }
    Ok(attr)
}

fn parse_tensor<'a>(r: &Reader<'a>) -> Result<Tensor<'a>, OnnxError> {
    let mut tensor = Tensor::default();
    let mut r = r.clone();
    while let Some((field, value)) = r.next()? {
        match field {
            1 => r.push_varints(value, &mut tensor.dims)?,
            2 => tensor.data_type = r.varint_of(value)? as i32,
            4 => match value {
                Value::Fixed32(bits) => tensor.floats.push(f32::from_bits(bits)),
                _ => tensor.bytes = r.bytes(value)?,
            },
            8 => tensor.name = r.string(value)?,
            9 => tensor.bytes = r.bytes(value)?,
            // data_location: 1 = EXTERNAL
            14 => tensor.external = r.varint_of(value)? == 1,
            _ => {}
        }
    }
    Ok(tensor)
}

/// One field's value, by wire type.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8], usize),
    Fixed32(u32),
}

/// A cursor over one message's bytes; `base` is where they start in the
/// file, for error messages.
#[derive(Debug, Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn error(&self, what: &str) -> OnnxError {
        OnnxError {
            offset: self.base + self.pos,
            what: what.to_owned(),
        }
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], OnnxError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.error("field runs past the end of its message"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next field, or None at the end of the message.
    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, OnnxError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| self.error("length does not fit in memory"))?;
                let start = self.base + self.pos;
                Value::Bytes(self.take(len)?, start)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => return Err(self.error("unsupported protobuf wire type")),
        };
        Ok(Some((key >> 3, value)))
    }

    /// A reader over an embedded message.
    fn sub(&self, value: Value<'a>) -> Result<Reader<'a>, OnnxError> {
        match value {
            Value::Bytes(bytes, start) => Ok(Reader::new(bytes, start)),
            _ => Err(self.error("expected an embedded message")),
        }
    }

    fn bytes(&self, value: Value<'a>) -> Result<&'a [u8], OnnxError> {
        match value {
            Value::Bytes(bytes, _) => Ok(bytes),
            _ => Err(self.error("expected a length-delimited field")),
        }
    }

    fn string(&self, value: Value<'a>) -> Result<&'a str, OnnxError> {
        std::str::from_utf8(self.bytes(value)?).map_err(|_| self.error("string is not UTF-8"))
    }

    fn varint_of(&self, value: Value<'a>) -> Result<u64, OnnxError> {
        match value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.error("expected a varint")),
        }
    }

    /// A repeated int64 field, packed or one value per field.
    fn push_varints(&self, value: Value<'a>, out: &mut Vec<i64>) -> Result<(), OnnxError> {
        match value {
            Value::Varint(v) => out.push(v as i64),
            Value::Bytes(bytes, start) => {
                let mut packed = Reader::new(bytes, start);
                while packed.pos < bytes.len() {
                    out.push(packed.varint()? as i64);
                }
            }
            _ => return Err(self.error("expected int64 values")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3 | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn int_field(number: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3, &mut out);
        varint(v, &mut out);
        out
    }

    /// A model with one Constant node holding a 2x2 float tensor, packed dims.
    fn model() -> Vec<u8> {
        let mut dims = Vec::new();
        varint(2, &mut dims);
        varint(2, &mut dims);
        let data: Vec<u8> = [1.0_f32, -2.0, 0.5, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let tensor = [
            field(1, &dims),
            int_field(2, 1),
            field(8, b"w"),
            field(9, &data),
        ]
        .concat();
        let attr = [field(1, b"value"), field(5, &tensor)].concat();
        let node = [field(2, b"w_out"), field(4, b"Constant"), field(5, &attr)].concat();
        let graph = [field(1, &node), field(2, b"main")].concat();
        [int_field(1, 8), field(7, &graph)].concat()
    }

    #[test]
    fn reads_a_constant_tensor() {
        let bytes = model();
        let m = parse(&bytes).unwrap();
        let node = &m.graph.nodes[0];
        assert_eq!(node.op_type, "Constant");
        assert_eq!(node.outputs, ["w_out"]);
        let t = node.attributes[0].tensor.as_ref().unwrap();
        assert_eq!((t.name, t.dims.as_slice()), ("w", &[2, 2][..]));
        assert_eq!(t.to_f32().unwrap(), [1.0, -2.0, 0.5, 4.0]);
    }

    #[test]
    fn unpacked_floats_and_negative_ints() {
        let mut tensor = [int_field(1, 2), int_field(2, 1)].concat();
        for v in [0.25_f32, 3.0] {
            varint(4 << 3 | 5, &mut tensor);
            tensor.extend_from_slice(&v.to_le_bytes());
        }
        let attr = [field(1, b"pads"), int_field(8, (-1_i64) as u64)].concat();
        let node = [field(5, &attr), field(5, &[field(5, &tensor)].concat())].concat();
        let bytes = field(7, &field(1, &node));
        let m = parse(&bytes).unwrap();
        let attrs = &m.graph.nodes[0].attributes;
        assert_eq!(attrs[0].ints, [-1]);
        assert_eq!(
            attrs[1].tensor.as_ref().unwrap().to_f32().unwrap(),
            [0.25, 3.0]
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let bytes = model();
        for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse(b"not a model").is_err());
        assert!(parse(&[]).is_err());
        // A varint that never ends.
        let mut endless = vec![0x08];
        endless.extend([0xff; 12]);
        assert!(parse(&endless).is_err());
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let tensor = Tensor {
            name: "w",
            dims: vec![3],
            data_type: FLOAT,
            bytes: &[0; 8],
            ..Tensor::default()
        };
        assert!(tensor.to_f32().unwrap_err().contains("dims"));
        let external = Tensor {
            external: true,
            ..tensor
        };
        assert!(external.to_f32().is_err());
    }
}
