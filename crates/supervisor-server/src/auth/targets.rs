//! The ids a call names, for the audit log, read from its request message without
//! knowing its type: the descriptor set says, per method, which top-level string fields
//! are named `id`, `node_id` or `name`, and a small protobuf reader picks them out of the
//! request's bytes. Nothing else of the request (prompts, keys) is ever read.

use std::collections::HashMap;

use prost::Message as _;

/// Field names that identify what a call acts on.
const TARGET_FIELDS: &[&str] = &["id", "node_id", "name", "tenant"];

/// Per full method path, the field numbers of its request's target fields.
#[derive(Debug, Default)]
pub struct Targets(HashMap<String, Vec<u32>>);

impl Targets {
    /// Reads the API's descriptor set.
    pub fn from_descriptors() -> Targets {
        let Ok(fds) = prost_types::FileDescriptorSet::decode(supervisor_proto::FILE_DESCRIPTOR_SET)
        else {
            return Targets::default();
        };
        let mut messages: HashMap<String, Vec<u32>> = HashMap::new();
        for file in &fds.file {
            let package = file.package();
            for message in &file.message_type {
                let fields = message
                    .field
                    .iter()
                    .filter(|f| {
                        f.r#type() == prost_types::field_descriptor_proto::Type::String
                            && TARGET_FIELDS.contains(&f.name())
                    })
                    .map(|f| f.number() as u32)
                    .collect();
                messages.insert(format!(".{package}.{}", message.name()), fields);
            }
        }
        let mut methods = HashMap::new();
        for file in &fds.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let fields = messages
                        .get(method.input_type())
                        .cloned()
                        .unwrap_or_default();
                    methods.insert(path, fields);
                }
            }
        }
        Targets(methods)
    }

    /// The target ids in `body` (one gRPC frame of method `path`'s request).
    pub fn of(&self, path: &str, body: &[u8]) -> Vec<String> {
        let Some(fields) = self.0.get(path).filter(|f| !f.is_empty()) else {
            return Vec::new();
        };
        // gRPC frame: compressed flag, 4-byte big-endian length, the message.
        let Some(message) = body.get(5..) else {
            return Vec::new();
        };
        if body.first() != Some(&0) {
            return Vec::new();
        }
        strings(message, fields)
    }
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Non-empty top-level string fields numbered `fields`, in order; stops at the first
/// malformed byte.
fn strings(message: &[u8], fields: &[u32]) -> Vec<String> {
    let mut found = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let Some(tag) = varint(message, &mut at) else {
            break;
        };
        let (number, wire) = ((tag >> 3) as u32, tag & 7);
        match wire {
            0 => {
                if varint(message, &mut at).is_none() {
                    break;
                }
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let Some(len) = varint(message, &mut at).and_then(|l| usize::try_from(l).ok())
                else {
                    break;
                };
                let Some(value) = at.checked_add(len).and_then(|end| message.get(at..end)) else {
                    break;
                };
                at += len;
                if fields.contains(&number)
                    && let Ok(text) = std::str::from_utf8(value)
                    && !text.is_empty()
                {
                    found.push(text.chars().take(128).collect());
                }
            }
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use supervisor_proto::v1;

    fn frame(message: &impl prost::Message) -> Vec<u8> {
        let bytes = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
        out
    }

    #[test]
    fn ids_are_read_from_any_request_and_nothing_else() {
        let targets = Targets::from_descriptors();
        let cancel = v1::CancelTaskRequest {
            id: "0192-abc".into(),
            reason: "not needed".into(),
        };
        assert_eq!(
            targets.of("/supervisor.v1.TaskService/CancelTask", &frame(&cancel)),
            ["0192-abc"]
        );
        let drain = v1::DrainNodeRequest {
            node_id: "w1".into(),
        };
        assert_eq!(
            targets.of("/supervisor.v1.ClusterService/DrainNode", &frame(&drain)),
            ["w1"]
        );
        // A submit names nothing yet: its prompt is never read.
        let submit = v1::SubmitTaskRequest {
            prompt: "secret plans".into(),
            ..Default::default()
        };
        assert!(
            targets
                .of("/supervisor.v1.TaskService/SubmitTask", &frame(&submit))
                .is_empty()
        );
        assert!(
            targets
                .of(
                    "/supervisor.v1.TaskService/CancelTask",
                    b"\x00\x00\x00\x00\x05\xff\xff"
                )
                .is_empty()
        );
    }
}
