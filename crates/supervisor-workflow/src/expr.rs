//! The condition language of `needs: [{ step, when: '...' }]`: small, typed and safe.
//!
//! A condition decides whether a step runs, from the outcomes of the steps before it. It
//! must never run code, loop or surprise, so the language is a fixed grammar with no
//! functions and no arithmetic:
//!
//! ```text
//! or    := and ("||" and)*
//! and   := not ("&&" not)*
//! not   := "!" not | cmp
//! cmp   := value (("==" | "!=" | "contains" | "startswith" | "<" | "<=" | ">" | ">=") value)?
//! value := string | number | true | false | path | "(" or ")"
//! path  := steps.<id>.(status|output|attempts) | vars.<name>
//! ```
//!
//! Strings are in double quotes with `\"` and `\\` escapes; numbers are 64-bit integers
//! (an optional `-` then digits). Values are typed: `status`, `output` and variables are
//! strings, `attempts` is a number. `==`/`!=` compare values of one type, `contains` and
//! `startswith` take strings, `<`, `<=`, `>`, `>=` take numbers, and `!`, `&&`, `||` take
//! booleans; a whole condition must be a boolean. Mixing types is an error — found by
//! [`Expression::check`] at validation time, and reported (never a panic) by
//! [`Expression::eval`] should it happen at run time.
//!
//! At run time a step that never produced a value reads as documented on
//! [`Context`]: output `""`, attempts `0`, status `pending`.
//!
//! Input is bounded ([`MAX_EXPR_BYTES`], [`MAX_EXPR_DEPTH`]) so a hostile definition cannot
//! make the parser or evaluator recurse without limit.

use std::fmt;

use crate::context::{Context, Ref, StepField, StepStatus};

/// Longest condition accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 4096;
/// Deepest nesting of `(` and `!` accepted.
pub const MAX_EXPR_DEPTH: usize = 32;

/// A value in a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A 64-bit integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Value {
    /// The value's type.
    pub fn ty(&self) -> Type {
        match self {
            Value::Str(_) => Type::String,
            Value::Int(_) => Type::Number,
            Value::Bool(_) => Type::Boolean,
        }
    }
}

/// The type of a value in a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Text.
    String,
    /// A 64-bit integer.
    Number,
    /// True or false.
    Boolean,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::String => "a string",
            Type::Number => "a number",
            Type::Boolean => "a boolean",
        })
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Contains,
    StartsWith,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Contains => "contains",
            CmpOp::StartsWith => "startswith",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A node of the syntax tree, with the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    offset: usize,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Lit(Value),
    Path(Ref),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Cmp(Box<Node>, CmpOp, Box<Node>),
}

/// A condition that failed to parse: where and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: expected {expected}, found {found}")]
pub struct ParseError {
    /// Byte offset into the condition.
    pub offset: usize,
    /// What the parser expected there.
    pub expected: String,
    /// What it found instead.
    pub found: String,
}

/// A well-formed condition that is wrong before it ever runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Values of the wrong type are combined.
    #[error("at byte {offset}: {message}")]
    Type {
        /// Byte offset of the offending part.
        offset: usize,
        /// What is wrong and how to write it instead.
        message: String,
    },
    /// A status is compared with a name no step status has, so the comparison is constant.
    #[error(
        "at byte {offset}: {given:?} is not a step status; use one of pending, running, succeeded, failed, cancelled, skipped"
    )]
    UnknownStatus {
        /// Byte offset of the string.
        offset: usize,
        /// The string given.
        given: String,
    },
}

/// A condition that could not be evaluated at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Values of the wrong type met (only possible for a condition that was not checked).
    #[error("at byte {offset}: {message}")]
    Type {
        /// Byte offset of the offending part.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// The context has no such variable.
    #[error("unknown variable vars.{0}")]
    UnknownVar(String),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    root: Node,
}

impl Expression {
    /// Parses a condition, reporting the first syntax error with its byte offset.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        if source.len() > MAX_EXPR_BYTES {
            return Err(ParseError {
                offset: MAX_EXPR_BYTES,
                expected: format!("a condition of at most {MAX_EXPR_BYTES} bytes"),
                found: format!("{} bytes", source.len()),
            });
        }
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            end: source.len(),
        };
        let root = parser.or(0)?;
        match parser.peek() {
            None => Ok(Expression {
                source: source.to_string(),
                root,
            }),
            Some((offset, tok)) => Err(ParseError {
                offset: *offset,
                expected: "an operator, `&&`, `||` or the end of the condition".into(),
                found: tok.describe(),
            }),
        }
    }

    /// The text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every reference, in order of appearance, without repeats.
    pub fn refs(&self) -> Vec<Ref> {
        let mut out = Vec::new();
        collect_refs(&self.root, &mut out);
        out
    }

    /// Checks types and status names without a run: the errors a condition would
    /// otherwise only show when it is evaluated.
    pub fn check(&self) -> Result<(), CheckError> {
        match check_node(&self.root)? {
            Type::Boolean => Ok(()),
            other => Err(CheckError::Type {
                offset: self.root.offset,
                message: format!(
                    "a condition must be true or false, but this is {other}; compare it, e.g. steps.<id>.output contains \"text\""
                ),
            }),
        }
    }

    /// The condition's value if it references nothing (`false`, `!true`, `1 == 2`...).
    pub fn constant(&self) -> Option<bool> {
        if !self.refs().is_empty() {
            return None;
        }
        struct Empty;
        impl Context for Empty {
            fn var(&self, _: &str) -> Option<&str> {
                None
            }
            fn step_output(&self, _: &str) -> Option<&str> {
                None
            }
        }
        self.eval(&Empty).ok()
    }

    /// Evaluates the condition. `&&` and `||` short-circuit, left to right.
    pub fn eval(&self, ctx: &(impl Context + ?Sized)) -> Result<bool, EvalError> {
        match eval_node(&self.root, ctx)? {
            Value::Bool(b) => Ok(b),
            other => Err(EvalError::Type {
                offset: self.root.offset,
                message: format!("a condition must be true or false, not {}", other.ty()),
            }),
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn collect_refs(node: &Node, out: &mut Vec<Ref>) {
    match &node.kind {
        Kind::Lit(_) => {}
        Kind::Path(r) => {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        Kind::Not(inner) => collect_refs(inner, out),
        Kind::And(items) | Kind::Or(items) => items.iter().for_each(|n| collect_refs(n, out)),
        Kind::Cmp(a, _, b) => {
            collect_refs(a, out);
            collect_refs(b, out);
        }
    }
}

fn path_type(r: &Ref) -> Type {
    match r {
        Ref::Var(_) => Type::String,
        Ref::Step { field, .. } => match field {
            StepField::Status | StepField::Output => Type::String,
            StepField::Attempts => Type::Number,
        },
    }
}

/// Describes a node for messages: the path itself, or its type.
fn describe(node: &Node, ty: Type) -> String {
    match &node.kind {
        Kind::Path(r) => format!("`{r}` is {ty}"),
        Kind::Lit(Value::Str(s)) => format!("{s:?} is {ty}"),
        Kind::Lit(Value::Int(n)) => format!("{n} is {ty}"),
        _ => format!("this is {ty}"),
    }
}

fn check_node(node: &Node) -> Result<Type, CheckError> {
    let type_err = |offset: usize, message: String| CheckError::Type { offset, message };
    match &node.kind {
        Kind::Lit(v) => Ok(v.ty()),
        Kind::Path(r) => Ok(path_type(r)),
        Kind::Not(inner) => {
            let t = check_node(inner)?;
            if t != Type::Boolean {
                return Err(type_err(
                    inner.offset,
                    format!("`!` takes a boolean, but {}", describe(inner, t)),
                ));
            }
            Ok(Type::Boolean)
        }
        Kind::And(items) | Kind::Or(items) => {
            let op = if matches!(node.kind, Kind::And(_)) {
                "&&"
            } else {
                "||"
            };
            for item in items {
                let t = check_node(item)?;
                if t != Type::Boolean {
                    return Err(type_err(
                        item.offset,
                        format!("`{op}` takes booleans, but {}", describe(item, t)),
                    ));
                }
            }
            Ok(Type::Boolean)
        }
        Kind::Cmp(a, op, b) => {
            let (ta, tb) = (check_node(a)?, check_node(b)?);
            let want = match op {
                CmpOp::Eq | CmpOp::Ne => None,
                CmpOp::Contains | CmpOp::StartsWith => Some(Type::String),
                CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => Some(Type::Number),
            };
            match want {
                Some(want) => {
                    for (n, t) in [(a, ta), (b, tb)] {
                        if t != want {
                            return Err(type_err(
                                n.offset,
                                format!(
                                    "`{}` compares {}s, but {}",
                                    op.as_str(),
                                    type_noun(want),
                                    describe(n, t)
                                ),
                            ));
                        }
                    }
                }
                None => {
                    if ta != tb {
                        return Err(type_err(
                            b.offset,
                            format!(
                                "`{}` compares values of one type, but {} and {}",
                                op.as_str(),
                                describe(a, ta),
                                describe(b, tb)
                            ),
                        ));
                    }
                    check_status_literal(a, b)?;
                    check_status_literal(b, a)?;
                }
            }
            Ok(Type::Boolean)
        }
    }
}

fn type_noun(t: Type) -> &'static str {
    match t {
        Type::String => "string",
        Type::Number => "number",
        Type::Boolean => "boolean",
    }
}

/// `steps.x.status == "faild"` can never hold: reject status names that do not exist.
fn check_status_literal(path: &Node, lit: &Node) -> Result<(), CheckError> {
    if let (
        Kind::Path(Ref::Step {
            field: StepField::Status,
            ..
        }),
        Kind::Lit(Value::Str(s)),
    ) = (&path.kind, &lit.kind)
        && StepStatus::from_name(s).is_none()
    {
        return Err(CheckError::UnknownStatus {
            offset: lit.offset,
            given: s.clone(),
        });
    }
    Ok(())
}

fn resolve(r: &Ref, ctx: &(impl Context + ?Sized)) -> Result<Value, EvalError> {
    Ok(match r {
        Ref::Var(name) => Value::Str(
            ctx.var(name)
                .ok_or_else(|| EvalError::UnknownVar(name.clone()))?
                .to_string(),
        ),
        Ref::Step { step, field } => match field {
            StepField::Status => Value::Str(
                ctx.step_status(step)
                    .unwrap_or(StepStatus::Pending)
                    .as_str()
                    .to_string(),
            ),
            StepField::Output => Value::Str(ctx.step_output(step).unwrap_or_default().to_string()),
            StepField::Attempts => Value::Int(i64::from(ctx.step_attempts(step).unwrap_or(0))),
        },
    })
}

fn eval_node(node: &Node, ctx: &(impl Context + ?Sized)) -> Result<Value, EvalError> {
    let type_err = |offset: usize, message: String| EvalError::Type { offset, message };
    let boolean = |n: &Node, v: Value, what: &str| match v {
        Value::Bool(b) => Ok(b),
        other => Err(type_err(
            n.offset,
            format!("{what} takes booleans, not {}", other.ty()),
        )),
    };
    match &node.kind {
        Kind::Lit(v) => Ok(v.clone()),
        Kind::Path(r) => resolve(r, ctx),
        Kind::Not(inner) => Ok(Value::Bool(!boolean(inner, eval_node(inner, ctx)?, "`!`")?)),
        Kind::And(items) => {
            for item in items {
                if !boolean(item, eval_node(item, ctx)?, "`&&`")? {
                    return Ok(Value::Bool(false));
                }
            }
            Ok(Value::Bool(true))
        }
        Kind::Or(items) => {
            for item in items {
                if boolean(item, eval_node(item, ctx)?, "`||`")? {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        Kind::Cmp(a, op, b) => {
            let (va, vb) = (eval_node(a, ctx)?, eval_node(b, ctx)?);
            let mismatch = |va: &Value, vb: &Value| {
                type_err(
                    b.offset,
                    format!(
                        "`{}` cannot compare {} with {}",
                        op.as_str(),
                        va.ty(),
                        vb.ty()
                    ),
                )
            };
            let result = match op {
                CmpOp::Eq | CmpOp::Ne => {
                    if va.ty() != vb.ty() {
                        return Err(mismatch(&va, &vb));
                    }
                    (va == vb) == (*op == CmpOp::Eq)
                }
                CmpOp::Contains | CmpOp::StartsWith => match (&va, &vb) {
                    (Value::Str(x), Value::Str(y)) => {
                        if *op == CmpOp::Contains {
                            x.contains(y.as_str())
                        } else {
                            x.starts_with(y.as_str())
                        }
                    }
                    _ => return Err(mismatch(&va, &vb)),
                },
                CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => match (&va, &vb) {
                    (Value::Int(x), Value::Int(y)) => match op {
                        CmpOp::Lt => x < y,
                        CmpOp::Le => x <= y,
                        CmpOp::Gt => x > y,
                        _ => x >= y,
                    },
                    _ => return Err(mismatch(&va, &vb)),
                },
            };
            Ok(Value::Bool(result))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Or,
    And,
    Not,
    Op(CmpOp),
    LParen,
    RParen,
    Str(String),
    Int(i64),
    True,
    False,
    Path(Ref),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Or => "`||`".into(),
            Tok::And => "`&&`".into(),
            Tok::Not => "`!`".into(),
            Tok::Op(op) => format!("`{}`", op.as_str()),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Int(n) => format!("the number {n}"),
            Tok::True => "`true`".into(),
            Tok::False => "`false`".into(),
            Tok::Path(r) => format!("`{r}`"),
        }
    }
}

const VALUE_EXPECTED: &str = "a string, a number, true, false, a path (steps.<id>.status|output|attempts or vars.<name>) or `(`";

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |offset: usize, expected: &str, found: String| ParseError {
        offset,
        expected: expected.to_string(),
        found,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |s: &str| src[i..].starts_with(s);
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'|' if two("||") => {
                out.push((start, Tok::Or));
                i += 2;
            }
            b'&' if two("&&") => {
                out.push((start, Tok::And));
                i += 2;
            }
            b'=' if two("==") => {
                out.push((start, Tok::Op(CmpOp::Eq)));
                i += 2;
            }
            b'!' if two("!=") => {
                out.push((start, Tok::Op(CmpOp::Ne)));
                i += 2;
            }
            b'<' if two("<=") => {
                out.push((start, Tok::Op(CmpOp::Le)));
                i += 2;
            }
            b'>' if two(">=") => {
                out.push((start, Tok::Op(CmpOp::Ge)));
                i += 2;
            }
            b'!' => {
                out.push((start, Tok::Not));
                i += 1;
            }
            b'<' => {
                out.push((start, Tok::Op(CmpOp::Lt)));
                i += 1;
            }
            b'>' => {
                out.push((start, Tok::Op(CmpOp::Gt)));
                i += 1;
            }
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b'|' => return Err(err(start, "`||`", "a single `|`".into())),
            b'&' => return Err(err(start, "`&&`", "a single `&`".into())),
            b'=' => return Err(err(start, "`==`", "a single `=`".into())),
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(ch) = src[i..].chars().next() else {
                        return Err(err(i, "a closing `\"`", "the end of the condition".into()));
                    };
                    match ch {
                        '"' => {
                            i += 1;
                            break;
                        }
                        '\\' => match src[i + 1..].chars().next() {
                            Some(e @ ('"' | '\\')) => {
                                s.push(e);
                                i += 2;
                            }
                            Some(other) => {
                                return Err(err(
                                    i,
                                    "`\\\"` or `\\\\` (the only escapes)",
                                    format!("`\\{other}`"),
                                ));
                            }
                            None => {
                                return Err(err(
                                    i + 1,
                                    "an escaped `\"` or `\\`",
                                    "the end of the condition".into(),
                                ));
                            }
                        },
                        _ => {
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let text = &src[start..i];
                if text == "-" {
                    return Err(err(start, "a number after `-`", found_at(src, i)));
                }
                if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'.') {
                    return Err(err(
                        i,
                        "an integer (decimals are not supported)",
                        found_at(src, i),
                    ));
                }
                let n = text
                    .parse::<i64>()
                    .map_err(|_| err(start, "an integer within 64 bits", format!("`{text}`")))?;
                out.push((start, Tok::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-' | b'.'))
                {
                    i += 1;
                }
                let word = &src[start..i];
                let tok = match word {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    "contains" => Tok::Op(CmpOp::Contains),
                    "startswith" => Tok::Op(CmpOp::StartsWith),
                    _ => Tok::Path(Ref::parse(word).map_err(|message| {
                        let head = word.split('.').next().unwrap_or_default();
                        let why = message
                            .strip_prefix(&format!("`{word}`: "))
                            .unwrap_or(&message);
                        ParseError {
                            offset: start,
                            expected: VALUE_EXPECTED.into(),
                            found: if head == "vars" || head == "steps" {
                                format!("`{word}` ({why})")
                            } else {
                                format!("`{word}`")
                            },
                        }
                    })?),
                };
                out.push((start, tok));
            }
            _ => {
                return Err(err(start, VALUE_EXPECTED, found_at(src, start)));
            }
        }
    }
    Ok(out)
}

/// Describes the character at `i` for an error message.
fn found_at(src: &str, i: usize) -> String {
    match src.get(i..).and_then(|s| s.chars().next()) {
        Some(c) => format!("{c:?}"),
        None => "the end of the condition".into(),
    }
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Tok)> {
        self.tokens.get(self.pos)
    }

    fn next_offset(&self) -> usize {
        self.peek().map_or(self.end, |(o, _)| *o)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end of the condition".into(), |(_, t)| t.describe())
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek().is_some_and(|(_, t)| t == tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn deeper(&self, depth: usize) -> Result<usize, ParseError> {
        if depth >= MAX_EXPR_DEPTH {
            return Err(ParseError {
                offset: self.next_offset(),
                expected: format!("at most {MAX_EXPR_DEPTH} levels of `(` and `!`"),
                found: "deeper nesting".into(),
            });
        }
        Ok(depth + 1)
    }

    fn or(&mut self, depth: usize) -> Result<Node, ParseError> {
        let offset = self.next_offset();
        let mut items = vec![self.and(depth)?];
        while self.eat(&Tok::Or) {
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Node {
                offset,
                kind: Kind::Or(items),
            }
        })
    }

    fn and(&mut self, depth: usize) -> Result<Node, ParseError> {
        let offset = self.next_offset();
        let mut items = vec![self.not(depth)?];
        while self.eat(&Tok::And) {
            items.push(self.not(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Node {
                offset,
                kind: Kind::And(items),
            }
        })
    }

    fn not(&mut self, depth: usize) -> Result<Node, ParseError> {
        let offset = self.next_offset();
        if self.eat(&Tok::Not) {
            let inner = self.not(self.deeper(depth)?)?;
            return Ok(Node {
                offset,
                kind: Kind::Not(Box::new(inner)),
            });
        }
        self.cmp(depth)
    }

    fn cmp(&mut self, depth: usize) -> Result<Node, ParseError> {
        let offset = self.next_offset();
        let left = self.value(depth)?;
        let op = match self.peek() {
            Some((_, Tok::Op(op))) => *op,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.value(depth)?;
        Ok(Node {
            offset,
            kind: Kind::Cmp(Box::new(left), op, Box::new(right)),
        })
    }

    fn value(&mut self, depth: usize) -> Result<Node, ParseError> {
        let offset = self.next_offset();
        let Some((_, tok)) = self.tokens.get(self.pos).cloned() else {
            return Err(ParseError {
                offset,
                expected: VALUE_EXPECTED.into(),
                found: self.found(),
            });
        };
        let kind = match tok {
            Tok::Str(s) => Kind::Lit(Value::Str(s)),
            Tok::Int(n) => Kind::Lit(Value::Int(n)),
            Tok::True => Kind::Lit(Value::Bool(true)),
            Tok::False => Kind::Lit(Value::Bool(false)),
            Tok::Path(r) => Kind::Path(r),
            Tok::LParen => {
                self.pos += 1;
                let inner = self.or(self.deeper(depth)?)?;
                if !self.eat(&Tok::RParen) {
                    return Err(ParseError {
                        offset: self.next_offset(),
                        expected: "`)` or an operator".into(),
                        found: self.found(),
                    });
                }
                return Ok(inner);
            }
            _ => {
                return Err(ParseError {
                    offset,
                    expected: VALUE_EXPECTED.into(),
                    found: self.found(),
                });
            }
        };
        self.pos += 1;
        Ok(Node { offset, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::MapContext;

    fn ctx() -> MapContext {
        MapContext::default()
            .var("env", "prod")
            .step("review", StepStatus::Failed, "", 3)
            .step(
                "fix",
                StepStatus::Succeeded,
                "LGTM but REJECT the rename",
                1,
            )
    }

    fn eval(src: &str) -> bool {
        let e = Expression::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        e.check().unwrap_or_else(|e| panic!("{src}: {e}"));
        e.eval(&ctx()).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn truth_table_of_the_logic_operators() {
        for (a, b) in [(false, false), (false, true), (true, false), (true, true)] {
            assert_eq!(eval(&format!("{a} && {b}")), a && b, "{a} && {b}");
            assert_eq!(eval(&format!("{a} || {b}")), a || b, "{a} || {b}");
            assert_eq!(eval(&format!("!{a}")), !a);
            assert!(eval(&format!("!({a} && {b}) == (!{a} || !{b})")));
        }
        // && binds tighter than ||.
        assert!(eval("true || false && false"));
        assert!(!eval("(true || false) && false"));
        assert!(eval("!!true"));
    }

    #[test]
    fn comparisons_over_step_values_and_vars() {
        let cases = [
            (r#"steps.review.status == "failed""#, true),
            (r#"steps.review.status != "failed""#, false),
            (r#"steps.fix.output contains "REJECT""#, true),
            (r#"steps.fix.output contains "reject""#, false),
            (r#"steps.fix.output startswith "LGTM""#, true),
            (r#"steps.fix.output startswith "REJECT""#, false),
            ("steps.review.attempts >= 3", true),
            ("steps.review.attempts > 3", false),
            ("steps.review.attempts < 4", true),
            ("steps.review.attempts <= 2", false),
            ("steps.review.attempts == 3", true),
            ("-1 < 0", true),
            (r#"vars.env == "prod""#, true),
            (r#""a \"quoted\" \\ text" contains "\"quoted\"""#, true),
            (
                r#"steps.review.status == "failed" || steps.review.output contains "REJECT""#,
                true,
            ),
            // Missing values: output "", attempts 0, status pending.
            (r#"steps.other.output == """#, true),
            ("steps.other.attempts == 0", true),
            (r#"steps.other.status == "pending""#, true),
        ];
        for (src, want) in cases {
            assert_eq!(eval(src), want, "{src}");
        }
    }

    #[test]
    fn parse_errors_carry_the_offset_and_what_was_expected() {
        let cases = [
            ("", 0, "a string"),
            ("true &&", 7, "a string"),
            ("steps.a.status = \"x\"", 15, "`==`"),
            ("(true", 5, "`)`"),
            ("true true", 5, "an operator"),
            ("\"open", 5, "closing"),
            ("\"bad \\n\"", 5, "escapes"),
            ("steps.a.outputs == \"\"", 0, "a string"),
            ("step.a.output", 0, "a path"),
            ("1.5 > 1", 1, "decimals"),
            ("99999999999999999999 > 1", 0, "64 bits"),
            ("true | false", 5, "`||`"),
            ("@", 0, "a string"),
            ("== 1", 0, "a string"),
        ];
        for (src, offset, expected) in cases {
            let e = Expression::parse(src).expect_err(src);
            assert_eq!(e.offset, offset, "{src}: {e}");
            assert!(e.expected.contains(expected), "{src}: {e}");
        }
        let e = Expression::parse("step.a.output").expect_err("bad path");
        assert!(e.to_string().contains("step.a.output"), "{e}");
    }

    #[test]
    fn input_length_and_nesting_are_bounded() {
        let long = format!("\"{}\" == \"\"", "x".repeat(MAX_EXPR_BYTES));
        assert!(Expression::parse(&long).is_err());
        let deep_ok = format!("{}true{}", "(".repeat(31), ")".repeat(31));
        assert!(Expression::parse(&deep_ok).is_ok());
        let too_deep = format!("{}true{}", "(".repeat(33), ")".repeat(33));
        let e = Expression::parse(&too_deep).expect_err("too deep");
        assert!(e.expected.contains("levels"), "{e}");
        let nots = format!("{}true", "!".repeat(100));
        assert!(Expression::parse(&nots).is_err());
        // A long flat chain is fine: it is a list, not a deep tree.
        let chain = vec!["true"; 500].join(" || ");
        assert!(eval(&chain));
    }

    #[test]
    fn type_errors_are_found_before_running() {
        let cases = [
            (r#"steps.a.attempts == "3""#, "one type"),
            ("steps.a.output < 3", "numbers"),
            ("steps.a.attempts contains \"1\"", "strings"),
            ("steps.a.output", "true or false"),
            ("!steps.a.output", "`!` takes a boolean"),
            ("true && 1", "`&&` takes booleans"),
            ("vars.x > 1", "`vars.x` is a string"),
        ];
        for (src, msg) in cases {
            let e = Expression::parse(src).expect(src);
            let err = e.check().expect_err(src);
            assert!(err.to_string().contains(msg), "{src}: {err}");
        }
        let e = Expression::parse(r#"steps.a.status == "faild""#).expect("parses");
        assert!(matches!(
            e.check(),
            Err(CheckError::UnknownStatus { offset: 18, .. })
        ));
    }

    #[test]
    fn type_errors_at_run_time_are_errors_not_panics() {
        let e = Expression::parse(r#"steps.fix.attempts == "1""#).expect("parses");
        assert!(matches!(e.eval(&ctx()), Err(EvalError::Type { .. })));
        let e = Expression::parse("vars.missing == \"x\"").expect("parses");
        assert_eq!(e.eval(&ctx()), Err(EvalError::UnknownVar("missing".into())));
        // Short-circuit: the right side is never evaluated.
        let e = Expression::parse("true || vars.missing == \"x\"").expect("parses");
        assert_eq!(e.eval(&ctx()), Ok(true));
    }

    #[test]
    fn refs_and_constants() {
        let e = Expression::parse(
            r#"steps.a.status == "failed" || (steps.a.output contains vars.x && steps.b.attempts > 1)"#,
        )
        .expect("parses");
        let refs: Vec<String> = e.refs().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "steps.a.status",
                "steps.a.output",
                "vars.x",
                "steps.b.attempts"
            ]
        );
        assert_eq!(
            Expression::parse("false").map(|e| e.constant()),
            Ok(Some(false))
        );
        assert_eq!(
            Expression::parse("!(1 == 1)").map(|e| e.constant()),
            Ok(Some(false))
        );
        assert_eq!(
            Expression::parse("true").map(|e| e.constant()),
            Ok(Some(true))
        );
        assert_eq!(
            Expression::parse("steps.a.attempts > 0").map(|e| e.constant()),
            Ok(None)
        );
    }
}
