//! What the page says, read from the descriptors: each file's services, messages and
//! enums with the comments `source_code_info` attaches to them, types resolved (a map
//! field is `map<K, V>`, not a repeated entry message).

use std::collections::HashMap;
use std::fmt;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::source_code_info::Location;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet, ServiceDescriptorProto,
};

/// One `.proto` file as the page presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDoc {
    /// The file's name under the include root (`supervisor/v1/tasks.proto`).
    pub name: String,
    /// Its package (`supervisor.v1`).
    pub package: String,
    /// The comments before `syntax` and `package`.
    pub comment: String,
    /// Its services, in declaration order.
    pub services: Vec<ServiceDoc>,
    /// Its messages, nested ones after their parent, map entries left out.
    pub messages: Vec<MessageDoc>,
    /// Its enums, nested ones included.
    pub enums: Vec<EnumDoc>,
}

/// A service and its RPCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDoc {
    /// Its name (`TaskService`).
    pub name: String,
    /// Its fully qualified name, without the leading dot (the anchor).
    pub full_name: String,
    /// Its comment.
    pub comment: String,
    /// Its RPCs, in declaration order.
    pub methods: Vec<MethodDoc>,
}

/// One RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodDoc {
    /// Its name (`SubmitTask`).
    pub name: String,
    /// Its comment.
    pub comment: String,
    /// The request type's fully qualified name, without the leading dot.
    pub input: String,
    /// The response type's fully qualified name, without the leading dot.
    pub output: String,
    /// The client sends a stream of requests.
    pub client_streaming: bool,
    /// The server answers with a stream of responses.
    pub server_streaming: bool,
}

/// A message: its fields and oneofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDoc {
    /// Its name within the file's package (`Task`, `Outer.Inner` when nested).
    pub name: String,
    /// Its fully qualified name, without the leading dot (the anchor).
    pub full_name: String,
    /// Its comment.
    pub comment: String,
    /// Its fields, in declaration order.
    pub fields: Vec<FieldDoc>,
    /// Its oneofs (not those proto3 makes for `optional` fields).
    pub oneofs: Vec<OneofDoc>,
}

/// One field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDoc {
    /// Its name.
    pub name: String,
    /// Its number.
    pub number: i32,
    /// Its type.
    pub ty: FieldType,
    /// Its label: repeated, map, optional, member of a oneof.
    pub label: FieldLabel,
    /// Its comment.
    pub comment: String,
    /// Marked `deprecated = true`.
    pub deprecated: bool,
}

/// The type of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A scalar (`string`, `uint64`...).
    Scalar(&'static str),
    /// A message or enum, by fully qualified name without the leading dot.
    Named(String),
    /// `map<key, value>`.
    Map(Box<FieldType>, Box<FieldType>),
}

/// How a field is labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldLabel {
    /// A singular field.
    Plain,
    /// `repeated`.
    Repeated,
    /// A `map<..>` field.
    Map,
    /// proto3 `optional` (presence tracked).
    Optional,
    /// proto2 `required`.
    Required,
    /// A member of the named oneof.
    Oneof(String),
}

/// A oneof of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneofDoc {
    /// Its name.
    pub name: String,
    /// Its comment.
    pub comment: String,
    /// The names of its fields.
    pub fields: Vec<String>,
}

/// An enum and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumDoc {
    /// Its name within the file's package (`TaskType`, `Outer.Kind` when nested).
    pub name: String,
    /// Its fully qualified name, without the leading dot (the anchor).
    pub full_name: String,
    /// Its comment.
    pub comment: String,
    /// Its values, in declaration order.
    pub values: Vec<ValueDoc>,
}

/// One value of an enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueDoc {
    /// Its name.
    pub name: String,
    /// Its number.
    pub number: i32,
    /// Its comment.
    pub comment: String,
}

/// Field numbers of `descriptor.proto`, which make up the paths of `source_code_info`.
mod tag {
    pub const FILE_PACKAGE: i32 = 2;
    pub const FILE_MESSAGE: i32 = 4;
    pub const FILE_ENUM: i32 = 5;
    pub const FILE_SERVICE: i32 = 6;
    pub const FILE_SYNTAX: i32 = 12;
    pub const MESSAGE_FIELD: i32 = 2;
    pub const MESSAGE_NESTED: i32 = 3;
    pub const MESSAGE_ENUM: i32 = 4;
    pub const MESSAGE_ONEOF: i32 = 8;
    pub const ENUM_VALUE: i32 = 2;
    pub const SERVICE_METHOD: i32 = 2;
}

/// The comments of one file, by the path of the element they belong to.
struct Comments<'a>(HashMap<&'a [i32], &'a Location>);

impl<'a> Comments<'a> {
    fn of_file(file: &'a FileDescriptorProto) -> Self {
        let locations = file
            .source_code_info
            .iter()
            .flat_map(|info| &info.location)
            .map(|location| (location.path.as_slice(), location));
        Comments(locations.collect())
    }

    /// The element's leading and trailing comments, cleaned up, as paragraphs.
    fn of(&self, path: &[i32]) -> String {
        let Some(location) = self.0.get(path) else {
            return String::new();
        };
        let parts = [&location.leading_comments, &location.trailing_comments];
        join_paragraphs(parts.into_iter().flatten().map(|c| clean_comment(c)))
    }

    /// The comments heading the file: those detached above and attached to `syntax` and
    /// `package`.
    fn of_header(&self) -> String {
        let mut parts = Vec::new();
        for path in [[tag::FILE_SYNTAX], [tag::FILE_PACKAGE]] {
            if let Some(location) = self.0.get(path.as_slice()) {
                parts.extend(
                    location
                        .leading_detached_comments
                        .iter()
                        .map(|c| clean_comment(c)),
                );
                parts.extend(location.leading_comments.iter().map(|c| clean_comment(c)));
            }
        }
        join_paragraphs(parts)
    }
}

fn join_paragraphs(parts: impl IntoIterator<Item = String>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A comment as protoc records it (`" Reads a task.\n"`), without the space after `//`
/// (the indentation all its lines share), trailing blanks or surrounding empty lines.
fn clean_comment(raw: &str) -> String {
    let lines: Vec<&str> = raw.lines().map(str::trim_end).collect();
    let indent = lines
        .iter()
        .filter(|line| !line.is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let lines: Vec<&str> = lines
        .iter()
        .map(|line| line.get(indent..).unwrap_or(""))
        .collect();
    lines.join("\n").trim_matches('\n').to_string()
}

/// The page's model of every file in `set`, in the set's order.
pub fn model(set: &FileDescriptorSet) -> Vec<FileDoc> {
    let map_entries: HashMap<String, &DescriptorProto> = set
        .file
        .iter()
        .flat_map(|file| {
            let mut found = Vec::new();
            collect_map_entries(&package_prefix(file), &file.message_type, &mut found);
            found
        })
        .collect();
    set.file
        .iter()
        .map(|file| file_doc(file, &map_entries))
        .collect()
}

/// `.package` (the prefix of the file's fully qualified names, with the leading dot).
fn package_prefix(file: &FileDescriptorProto) -> String {
    if file.package().is_empty() {
        String::new()
    } else {
        format!(".{}", file.package())
    }
}

fn collect_map_entries<'a>(
    scope: &str,
    messages: &'a [DescriptorProto],
    out: &mut Vec<(String, &'a DescriptorProto)>,
) {
    for message in messages {
        let full = format!("{scope}.{}", message.name());
        if message.options.as_ref().is_some_and(|o| o.map_entry()) {
            out.push((full.clone(), message));
        }
        collect_map_entries(&full, &message.nested_type, out);
    }
}

fn file_doc(
    file: &FileDescriptorProto,
    map_entries: &HashMap<String, &DescriptorProto>,
) -> FileDoc {
    let comments = Comments::of_file(file);
    let prefix = package_prefix(file);
    let services = file
        .service
        .iter()
        .enumerate()
        .map(|(i, service)| {
            service_doc(service, &[tag::FILE_SERVICE, index(i)], &prefix, &comments)
        })
        .collect();
    let mut doc = FileDoc {
        name: file.name().to_string(),
        package: file.package().to_string(),
        comment: comments.of_header(),
        services,
        messages: Vec::new(),
        enums: Vec::new(),
    };
    let scope = Scope {
        name: "",
        full_name: &prefix,
        comments: &comments,
        map_entries,
    };
    for (i, message) in file.message_type.iter().enumerate() {
        scope.message(message, vec![tag::FILE_MESSAGE, index(i)], &mut doc);
    }
    for (i, enumeration) in file.enum_type.iter().enumerate() {
        let path = [tag::FILE_ENUM, index(i)];
        doc.enums.push(scope.enumeration(enumeration, &path));
    }
    doc
}

/// A path index: descriptors never hold anywhere near `i32::MAX` elements.
fn index(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

/// Strips the leading dot of a fully qualified name.
fn unqualified(type_name: &str) -> String {
    type_name.trim_start_matches('.').to_string()
}

fn service_doc(
    service: &ServiceDescriptorProto,
    path: &[i32],
    prefix: &str,
    comments: &Comments,
) -> ServiceDoc {
    let methods = service
        .method
        .iter()
        .enumerate()
        .map(|(i, method)| MethodDoc {
            name: method.name().to_string(),
            comment: comments.of(&[path, &[tag::SERVICE_METHOD, index(i)]].concat()),
            input: unqualified(method.input_type()),
            output: unqualified(method.output_type()),
            client_streaming: method.client_streaming(),
            server_streaming: method.server_streaming(),
        })
        .collect();
    ServiceDoc {
        name: service.name().to_string(),
        full_name: unqualified(&format!("{prefix}.{}", service.name())),
        comment: comments.of(path),
        methods,
    }
}

/// Where messages and enums are declared: the file, or a message nesting them.
struct Scope<'a> {
    /// The name within the package (`""` for the file, `Outer` inside a message).
    name: &'a str,
    /// The fully qualified name, with the leading dot.
    full_name: &'a str,
    comments: &'a Comments<'a>,
    map_entries: &'a HashMap<String, &'a DescriptorProto>,
}

impl Scope<'_> {
    fn qualify(&self, name: &str) -> (String, String) {
        let local = if self.name.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.name)
        };
        (local, format!("{}.{name}", self.full_name))
    }

    /// Adds `message` (unless it is a map entry) and what it nests to `doc`.
    fn message(&self, message: &DescriptorProto, path: Vec<i32>, doc: &mut FileDoc) {
        if message.options.as_ref().is_some_and(|o| o.map_entry()) {
            return;
        }
        let (name, full_name) = self.qualify(message.name());
        let oneof_name = |i: i32| {
            usize::try_from(i)
                .ok()
                .and_then(|i| message.oneof_decl.get(i))
                .map(|o| o.name().to_string())
                .unwrap_or_default()
        };
        let fields: Vec<FieldDoc> = message
            .field
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let field_path = [&path[..], &[tag::MESSAGE_FIELD, index(i)]].concat();
                let (ty, label) = match self.map_types(field) {
                    Some(map) => (map, FieldLabel::Map),
                    None => (field_type(field), field_label(field, oneof_name)),
                };
                FieldDoc {
                    name: field.name().to_string(),
                    number: field.number(),
                    ty,
                    label,
                    comment: self.comments.of(&field_path),
                    deprecated: field.options.as_ref().is_some_and(|o| o.deprecated()),
                }
            })
            .collect();
        let oneofs = message
            .oneof_decl
            .iter()
            .enumerate()
            .filter_map(|(i, oneof)| {
                let members: Vec<&FieldDescriptorProto> = message
                    .field
                    .iter()
                    .filter(|f| f.oneof_index == Some(index(i)) && !f.proto3_optional())
                    .collect();
                // A proto3 `optional` field sits alone in a synthetic oneof: not shown.
                (!members.is_empty()).then(|| OneofDoc {
                    name: oneof.name().to_string(),
                    comment: self
                        .comments
                        .of(&[&path[..], &[tag::MESSAGE_ONEOF, index(i)]].concat()),
                    fields: members.iter().map(|f| f.name().to_string()).collect(),
                })
            })
            .collect();
        doc.messages.push(MessageDoc {
            name: name.clone(),
            full_name: unqualified(&full_name),
            comment: self.comments.of(&path),
            fields,
            oneofs,
        });
        let nested = Scope {
            name: &name,
            full_name: &full_name,
            ..*self
        };
        for (i, inner) in message.nested_type.iter().enumerate() {
            nested.message(
                inner,
                [&path[..], &[tag::MESSAGE_NESTED, index(i)]].concat(),
                doc,
            );
        }
        for (i, inner) in message.enum_type.iter().enumerate() {
            let inner_path = [&path[..], &[tag::MESSAGE_ENUM, index(i)]].concat();
            doc.enums.push(nested.enumeration(inner, &inner_path));
        }
    }

    /// `map<key, value>` when `field` is a map field.
    fn map_types(&self, field: &FieldDescriptorProto) -> Option<FieldType> {
        if field.label() != Label::Repeated || field.r#type() != Type::Message {
            return None;
        }
        let entry = self.map_entries.get(field.type_name())?;
        let part = |number| entry.field.iter().find(|f| f.number() == number);
        Some(FieldType::Map(
            Box::new(field_type(part(1)?)),
            Box::new(field_type(part(2)?)),
        ))
    }

    fn enumeration(&self, enumeration: &EnumDescriptorProto, path: &[i32]) -> EnumDoc {
        let (name, full_name) = self.qualify(enumeration.name());
        let values = enumeration
            .value
            .iter()
            .enumerate()
            .map(|(i, value)| ValueDoc {
                name: value.name().to_string(),
                number: value.number(),
                comment: self
                    .comments
                    .of(&[path, &[tag::ENUM_VALUE, index(i)]].concat()),
            })
            .collect();
        EnumDoc {
            name,
            full_name: unqualified(&full_name),
            comment: self.comments.of(path),
            values,
        }
    }
}

fn field_type(field: &FieldDescriptorProto) -> FieldType {
    let scalar = match field.r#type() {
        Type::Message | Type::Enum | Type::Group => {
            return FieldType::Named(unqualified(field.type_name()));
        }
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    };
    FieldType::Scalar(scalar)
}

fn field_label(field: &FieldDescriptorProto, oneof_name: impl Fn(i32) -> String) -> FieldLabel {
    if field.proto3_optional() {
        return FieldLabel::Optional;
    }
    if let Some(i) = field.oneof_index {
        return FieldLabel::Oneof(oneof_name(i));
    }
    match field.label() {
        Label::Repeated => FieldLabel::Repeated,
        Label::Required => FieldLabel::Required,
        Label::Optional => FieldLabel::Plain,
    }
}

/// An element of the protos that has no comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undocumented {
    /// The file declaring it.
    pub file: String,
    /// What it is: `service`, `rpc`, `message`, `field`, `oneof`, `enum` or `value`.
    pub kind: &'static str,
    /// Its name, qualified by its parent (`TaskService.SubmitTask`, `Task.id`).
    pub name: String,
}

impl fmt::Display for Undocumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.file, self.kind, self.name)
    }
}

/// Every service, RPC, message, field, oneof, enum and enum value of `files` without a
/// comment, in page order.
pub fn undocumented(files: &[FileDoc]) -> Vec<Undocumented> {
    let mut out = Vec::new();
    for file in files {
        let mut note = |kind, name: String, comment: &str| {
            if comment.is_empty() {
                out.push(Undocumented {
                    file: file.name.clone(),
                    kind,
                    name,
                });
            }
        };
        for service in &file.services {
            note("service", service.name.clone(), &service.comment);
            for method in &service.methods {
                note(
                    "rpc",
                    format!("{}.{}", service.name, method.name),
                    &method.comment,
                );
            }
        }
        for message in &file.messages {
            note("message", message.name.clone(), &message.comment);
            for field in &message.fields {
                note(
                    "field",
                    format!("{}.{}", message.name, field.name),
                    &field.comment,
                );
            }
            for oneof in &message.oneofs {
                note(
                    "oneof",
                    format!("{}.{}", message.name, oneof.name),
                    &oneof.comment,
                );
            }
        }
        for enumeration in &file.enums {
            note("enum", enumeration.name.clone(), &enumeration.comment);
            for value in &enumeration.values {
                note(
                    "value",
                    format!("{}.{}", enumeration.name, value.name),
                    &value.comment,
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_docs::test_protos::demo;

    #[test]
    fn the_model_carries_every_comment_to_its_element() {
        let files = model(&demo());
        assert_eq!(files.len(), 1);
        let file = &files[0];
        assert_eq!(file.comment, "The demo API: things and their kinds.");
        let service = &file.services[0];
        assert_eq!(service.full_name, "demo.v1.ThingService");
        assert_eq!(service.comment, "Makes and follows things.");
        assert_eq!(service.methods[0].comment, "Makes a thing.");
        assert_eq!(service.methods[0].input, "demo.v1.MakeThingRequest");
        assert!(service.methods[1].server_streaming);
        assert!(!service.methods[1].client_streaming);

        let request = &file.messages[0];
        assert_eq!(request.comment, "Asks for a thing.");
        let field = |name: &str| {
            request
                .fields
                .iter()
                .find(|f| f.name == name)
                .expect("the field")
        };
        assert_eq!(
            field("name").comment,
            "Its name: 1 to 64 bytes of\na-z; see `name | id`."
        );
        assert_eq!(field("kind").comment, "Unspecified means small.");
        assert_eq!(field("parts").label, FieldLabel::Map);
        assert_eq!(
            field("parts").ty,
            FieldType::Map(
                Box::new(FieldType::Scalar("string")),
                Box::new(FieldType::Named("demo.v1.Thing".into()))
            )
        );
        assert_eq!(field("tags").label, FieldLabel::Repeated);
        assert_eq!(field("size").label, FieldLabel::Optional);
        assert_eq!(field("hand").label, FieldLabel::Oneof("origin".into()));
        assert_eq!(field("hand").comment, "Made by hand.");
        // The synthetic oneof of `optional size` is not one.
        assert_eq!(request.oneofs.len(), 1);
        assert_eq!(request.oneofs[0].fields, ["hand", "at"]);

        // Map entries are not messages of the page; nested messages follow their parent.
        let names: Vec<&str> = file.messages.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["MakeThingRequest", "Thing", "Thing.Inner"]);
        assert!(file.messages[2].fields[0].deprecated);
        assert_eq!(file.enums[0].values[1].comment, "A big one.");
    }

    #[test]
    fn elements_without_a_comment_are_listed() {
        let missing: Vec<String> = undocumented(&model(&demo()))
            .iter()
            .map(ToString::to_string)
            .collect();
        let file = "demo/v1/demo.proto";
        let expected = [
            "rpc ThingService.WatchThings",
            "field MakeThingRequest.parts",
            "field MakeThingRequest.tags",
            "field MakeThingRequest.size",
            "field MakeThingRequest.at",
            "oneof MakeThingRequest.origin",
            "message Thing",
            "field Thing.inner",
            "field Thing.Inner.ok",
            "value Kind.KIND_UNSPECIFIED",
        ]
        .map(|item| format!("{file}: {item}"));
        assert_eq!(missing, expected);
    }

    #[test]
    fn comments_lose_the_space_after_the_slashes_but_keep_indentation() {
        assert_eq!(
            clean_comment(" Reads.\n   indented\n"),
            "Reads.\n  indented"
        );
        assert_eq!(clean_comment("\n Text\n\n"), "Text");
    }
}
