//! Key templates: `"user:{id}"`, `"order:{self.shop}:{order.id}"`, `"{{literal}}"`.
//!
//! Parsing is a pure function over the template text ([`parse`]) that returns
//! segments or a list of [`TemplateError`]s with byte ranges into the text.
//! Checking placeholder names against the function's parameters is a second
//! pure step ([`check_names`]). [`Template::from_lit`] ties both to a
//! `LitStr` and turns the ranges into spans.

use std::ops::Range;

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::LitStr;

use crate::alphabet::{PART_CHARS, is_part_char};
use crate::suggest::did_you_mean;

/// Keys starting with this (after the namespace) are the runtime's tag member sets.
pub(crate) const RESERVED_PREFIX: &str = "!tag:";

/// What a template renders: the entry's key, or one of its tags. Both
/// follow the same rules; only the wording of the messages differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `key = ".."` of `#[cached]`, the templates of `#[invalidates]`.
    Key,
    /// `tags = [..]`.
    Tag,
}

impl Kind {
    /// `"key"` or `"tag"`.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Tag => "tag",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Kind::Key => "\"user:{id}\"",
            Kind::Tag => "\"org:{org_id}\"",
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal text, with `{{` / `}}` already unescaped.
    Lit(String),
    /// A `{...}` placeholder.
    Part(Placeholder),
}

/// A `{root.field.field}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placeholder {
    /// The parameter (or `self`) the placeholder starts from, as written
    /// (a raw identifier keeps its `r#`).
    pub root: String,
    /// Field accesses after the root: identifiers or tuple indexes.
    pub fields: Vec<String>,
    /// Byte range of the whole placeholder, braces included, in the template text.
    pub range: Range<usize>,
}

impl Placeholder {
    /// Byte range of the root name in the template text.
    pub(crate) fn root_range(&self) -> Range<usize> {
        let start = self.range.start + 1;
        start..start + self.root.len()
    }

    /// The placeholder as written between its braces, e.g. `user.id`.
    pub(crate) fn path(&self) -> String {
        let mut s = self.root.clone();
        for f in &self.fields {
            s.push('.');
            s.push_str(f);
        }
        s
    }

    /// The placeholder as written, e.g. `{user.id}`.
    pub(crate) fn display(&self) -> String {
        format!("{{{}}}", self.path())
    }
}

/// An error at a byte range of the template text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    /// Byte range in the template text the error is about.
    pub range: Range<usize>,
    /// The message shown to the user.
    pub message: String,
}

impl TemplateError {
    fn new(range: Range<usize>, message: impl Into<String>) -> Self {
        TemplateError {
            range,
            message: message.into(),
        }
    }
}

/// Parses template text into segments. Returns every error found, not only
/// the first.
pub(crate) fn parse(text: &str, kind: Kind) -> Result<Vec<Segment>, Vec<TemplateError>> {
    let mut errors = Vec::new();
    let noun = kind.noun();
    if text.is_empty() {
        errors.push(TemplateError::new(
            0..0,
            format!(
                "empty {noun} template: a {noun} needs at least a literal prefix or a \
                 placeholder, e.g. {}",
                kind.example()
            ),
        ));
        return Err(errors);
    }

    if kind == Kind::Key && text.starts_with(RESERVED_PREFIX) {
        errors.push(TemplateError::new(
            0..RESERVED_PREFIX.len(),
            format!(
                "key templates may not start with `{RESERVED_PREFIX}`: that prefix is reserved \
                 for the member sets of tags (use `tags = [..]` and `Cache::invalidate_tag`)"
            ),
        ));
    }

    let mut segments: Vec<Segment> = Vec::new();
    let mut lit = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                lit.push('{');
                i += 2;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                lit.push('}');
                i += 2;
            }
            b'}' => {
                errors.push(TemplateError::new(
                    i..i + 1,
                    format!(
                        "unmatched `}}` in {noun} template: write `}}}}` for a literal `}}`, \
                         or add the `{{` that opens the placeholder"
                    ),
                ));
                i += 1;
            }
            b'{' => {
                let start = i;
                // The placeholder ends at the next `}`; a `{` before it means
                // this one was never closed.
                let rest = &text[start + 1..];
                let close = rest.find('}');
                let reopen = rest.find('{');
                match (close, reopen) {
                    (Some(c), r) if r.is_none_or(|r| r > c) => {
                        let end = start + 1 + c + 1;
                        let inner = &text[start + 1..end - 1];
                        match parse_placeholder(inner, start..end, kind) {
                            Ok(p) => {
                                if !lit.is_empty() {
                                    segments.push(Segment::Lit(std::mem::take(&mut lit)));
                                }
                                segments.push(Segment::Part(p));
                            }
                            Err(e) => errors.push(e),
                        }
                        i = end;
                    }
                    _ => {
                        errors.push(TemplateError::new(
                            start..start + 1,
                            format!(
                                "unclosed `{{` in {noun} template: close the placeholder with \
                                 `}}`, or write `{{{{` for a literal `{{`"
                            ),
                        ));
                        i = start + 1;
                    }
                }
            }
            _ => {
                let c = text[i..].chars().next().expect("in bounds");
                lit.push(c);
                i += c.len_utf8();
            }
        }
    }
    if !lit.is_empty() {
        segments.push(Segment::Lit(lit));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    check_separators(&segments, kind, &mut errors);
    if errors.is_empty() {
        Ok(segments)
    } else {
        Err(errors)
    }
}

/// Two placeholders need a literal between them that contains a character an
/// encoded part never contains, so the rendering stays injective.
fn check_separators(segments: &[Segment], kind: Kind, errors: &mut Vec<TemplateError>) {
    let noun = kind.noun();
    let mut prev: Option<&Placeholder> = None;
    let mut between: Option<&str> = None;
    for seg in segments {
        match seg {
            Segment::Lit(s) => between = Some(s),
            Segment::Part(p) => {
                if let Some(prev) = prev {
                    match between {
                        None => errors.push(TemplateError::new(
                            prev.range.start..p.range.end,
                            format!(
                                "placeholders `{}` and `{}` have no separator between them, \
                                 so different arguments could render the same {noun} \
                                 (\"1\" + \"23\" = \"12\" + \"3\"); put a separator such as `:` \
                                 between them: `{}:{}`",
                                prev.display(),
                                p.display(),
                                prev.display(),
                                p.display()
                            ),
                        )),
                        Some(sep) if sep.chars().all(is_part_char) => {
                            errors.push(TemplateError::new(
                                prev.range.end..p.range.start,
                                format!(
                                    "the separator `{sep}` between `{}` and `{}` consists only of \
                                     characters that an encoded key part may contain \
                                     ([{PART_CHARS}]), so different arguments could render the \
                                     same {noun}; use a separator with another character, such as \
                                     `:` (e.g. `{}:{}`)",
                                    prev.display(),
                                    p.display(),
                                    prev.display(),
                                    p.display()
                                ),
                            ));
                        }
                        Some(_) => {}
                    }
                }
                prev = Some(p);
                between = None;
            }
        }
    }
}

fn parse_placeholder(
    inner: &str,
    range: Range<usize>,
    kind: Kind,
) -> Result<Placeholder, TemplateError> {
    if inner.is_empty() {
        return Err(TemplateError::new(
            range,
            format!(
                "empty placeholder `{{}}` in {} template: name a parameter, e.g. `{{id}}`, \
                 or write `{{{{}}}}` for literal braces",
                kind.noun()
            ),
        ));
    }
    let invalid = |why: &str| {
        TemplateError::new(
            range.clone(),
            format!(
                "invalid placeholder `{{{inner}}}`: {why}; a placeholder is a parameter name \
                 optionally followed by fields, e.g. `{{id}}`, `{{user.id}}` or `{{self.shop}}`"
            ),
        )
    };
    if inner.chars().any(char::is_whitespace) {
        return Err(invalid("remove the whitespace"));
    }
    let mut parts = inner.split('.');
    let root = parts.next().unwrap_or_default();
    if root.is_empty() {
        return Err(invalid("it must start with a parameter name"));
    }
    if !is_ident(root) {
        return Err(invalid(&format!("`{root}` is not an identifier")));
    }
    let mut fields = Vec::new();
    for f in parts {
        if f.is_empty() {
            return Err(invalid("empty field name"));
        }
        if f.bytes().all(|b| b.is_ascii_digit()) {
            if f.len() > 1 && f.starts_with('0') {
                return Err(invalid(&format!("`{f}` is not a tuple index")));
            }
        } else if !is_ident(f) {
            return Err(invalid(&format!("`{f}` is not a field name")));
        } else if f == "self" || f == "Self" || f == "super" || f == "crate" {
            return Err(invalid(&format!("`{f}` cannot be a field name")));
        } else if is_keyword(f) {
            return Err(invalid(&format!("`{f}` is a keyword; write `r#{f}`")));
        }
        fields.push(f.to_string());
    }
    if root != "self" && is_keyword(root) {
        return Err(invalid(&format!(
            "`{root}` is a keyword; a parameter with this name is written `r#{root}`"
        )));
    }
    Ok(Placeholder {
        root: root.to_string(),
        fields,
        range,
    })
}

/// Whether `s` lexes as exactly one identifier (raw identifiers included).
fn is_ident(s: &str) -> bool {
    let first = s.strip_prefix("r#").unwrap_or(s).chars().next();
    // Quick reject before asking the lexer: it also rejects lifetimes etc.
    if !first.is_some_and(|c| c == '_' || c.is_alphabetic()) {
        return false;
    }
    if s == "_" || matches!(s, "r#self" | "r#Self" | "r#super" | "r#crate" | "r#_") {
        return false;
    }
    match s.parse::<TokenStream>() {
        Ok(ts) => {
            let mut it = ts.into_iter();
            matches!((it.next(), it.next()), (Some(TokenTree::Ident(id)), None) if id == s)
        }
        Err(_) => false,
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "as" | "async"
            | "await"
            | "break"
            | "const"
            | "continue"
            | "crate"
            | "dyn"
            | "else"
            | "enum"
            | "extern"
            | "false"
            | "fn"
            | "for"
            | "if"
            | "impl"
            | "in"
            | "let"
            | "loop"
            | "match"
            | "mod"
            | "move"
            | "mut"
            | "pub"
            | "ref"
            | "return"
            | "self"
            | "Self"
            | "static"
            | "struct"
            | "super"
            | "trait"
            | "true"
            | "type"
            | "unsafe"
            | "use"
            | "where"
            | "while"
            | "abstract"
            | "become"
            | "box"
            | "do"
            | "final"
            | "macro"
            | "override"
            | "priv"
            | "try"
            | "typeof"
            | "unsized"
            | "virtual"
            | "yield"
            | "gen"
    )
}

/// What a template may refer to: the function's parameter names and whether
/// it has a `self` receiver.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Parameter names as written (`r#type` keeps its prefix).
    pub names: Vec<String>,
    /// Whether the function has a `self` receiver.
    pub has_self: bool,
    /// The function's name, for messages.
    pub fn_name: String,
}

/// Checks each placeholder's root against the function's parameters.
pub(crate) fn check_names(segments: &[Segment], scope: &Scope, kind: Kind) -> Vec<TemplateError> {
    let mut errors = Vec::new();
    for seg in segments {
        let Segment::Part(p) = seg else { continue };
        if p.root == "self" {
            if !scope.has_self {
                errors.push(TemplateError::new(
                    p.root_range(),
                    format!(
                        "`{}` refers to `self`, but `{}` has no `self` receiver; \
                         use a parameter instead, or make it a method taking `&self`",
                        p.display(),
                        scope.fn_name
                    ),
                ));
            }
            continue;
        }
        if scope.names.iter().any(|n| n == &p.root) {
            continue;
        }
        let mut msg = format!(
            "unknown parameter `{}` in {} template: `{}` has no parameter of that name",
            p.root,
            kind.noun(),
            scope.fn_name
        );
        let mut candidates: Vec<&str> = scope.names.iter().map(String::as_str).collect();
        if scope.has_self {
            candidates.push("self");
        }
        if let Some(best) = did_you_mean(&p.root, &candidates) {
            msg.push_str(&format!("; did you mean `{best}`?"));
        } else if candidates.is_empty() {
            msg.push_str(" (it has no parameters)");
        } else {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            msg.push_str(&format!("; its parameters are {}", list.join(", ")));
        }
        errors.push(TemplateError::new(p.root_range(), msg));
    }
    errors
}

/// A template parsed from a string literal and checked against a scope.
#[derive(Clone)]
pub(crate) struct Template {
    /// The literal as written; its span is used for generated code.
    pub lit: LitStr,
    /// The parsed segments.
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses and checks `lit`; every error is turned into a `syn::Error`
    /// spanned at the offending part of the literal where the compiler
    /// allows it, else at the whole literal.
    pub(crate) fn from_lit(
        lit: &LitStr,
        scope: &Scope,
        kind: Kind,
    ) -> Result<Template, Vec<syn::Error>> {
        let text = lit.value();
        let result = parse(&text, kind).and_then(|segments| {
            let errors = check_names(&segments, scope, kind);
            if errors.is_empty() {
                Ok(segments)
            } else {
                Err(errors)
            }
        });
        match result {
            Ok(segments) => Ok(Template {
                lit: lit.clone(),
                segments,
            }),
            Err(errors) => Err(errors
                .into_iter()
                .map(|e| syn::Error::new(subspan(lit, &text, e.range), e.message))
                .collect()),
        }
    }

    /// The span for generated code and errors about placeholder `p`.
    ///
    /// It has the macro's call-site hygiene (names resolve as written by the
    /// user) but is located at the placeholder, so type errors point there,
    /// while rustc does not offer "fixes" that would rewrite the template.
    pub(crate) fn span_of(&self, p: &Placeholder) -> Span {
        Span::call_site().located_at(subspan(&self.lit, &self.lit.value(), p.range.clone()))
    }
}

/// The placeholder roots of `templates` (the parameters the generated code names).
pub(crate) fn roots<'a>(templates: impl IntoIterator<Item = &'a Template>) -> Vec<String> {
    templates
        .into_iter()
        .flat_map(|t| &t.segments)
        .filter_map(|s| match s {
            Segment::Part(p) => Some(p.root.clone()),
            Segment::Lit(_) => None,
        })
        .collect()
}

/// Maps a byte range of the literal's value to a span inside the literal.
///
/// Only possible when the source text of the literal has no escapes (so
/// value offsets equal source offsets after the opening quote), and only on
/// compilers where `Literal::subspan` works (nightly); otherwise the span of
/// the whole literal.
fn subspan(lit: &LitStr, value: &str, range: Range<usize>) -> Span {
    let token = lit.token();
    let repr = token.to_string();
    let prefix = if repr.starts_with('"') {
        (!repr.contains('\\')).then_some(1)
    } else if let Some(rest) = repr.strip_prefix('r') {
        let hashes = rest.len() - rest.trim_start_matches('#').len();
        Some(1 + hashes + 1)
    } else {
        None
    };
    match prefix {
        Some(p) if range.end <= value.len() && range.start <= range.end => {
            let end = if range.is_empty() {
                range.end + 1
            } else {
                range.end
            };
            token
                .subspan(p + range.start..p + end)
                .unwrap_or_else(|| lit.span())
        }
        _ => lit.span(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key templates, the common case of the tests below.
    fn parse(text: &str) -> Result<Vec<Segment>, Vec<TemplateError>> {
        super::parse(text, Kind::Key)
    }

    fn check_names(segments: &[Segment], scope: &Scope) -> Vec<TemplateError> {
        super::check_names(segments, scope, Kind::Key)
    }

    fn lit(s: &str) -> Segment {
        Segment::Lit(s.to_string())
    }

    fn part(root: &str, fields: &[&str], range: Range<usize>) -> Segment {
        Segment::Part(Placeholder {
            root: root.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            range,
        })
    }

    fn errs(text: &str) -> Vec<TemplateError> {
        parse(text).expect_err(text)
    }

    fn one_err(text: &str) -> TemplateError {
        let e = errs(text);
        assert_eq!(e.len(), 1, "{text}: {e:?}");
        e.into_iter().next().unwrap()
    }

    #[test]
    fn literal_only() {
        assert_eq!(parse("users:list").unwrap(), vec![lit("users:list")]);
    }

    #[test]
    fn simple_placeholder() {
        assert_eq!(
            parse("user:{id}").unwrap(),
            vec![lit("user:"), part("id", &[], 5..9)]
        );
    }

    #[test]
    fn placeholder_only() {
        assert_eq!(parse("{id}").unwrap(), vec![part("id", &[], 0..4)]);
    }

    #[test]
    fn field_paths_and_self() {
        assert_eq!(
            parse("o:{self.shop.id}:{order.0}:{r#type}").unwrap(),
            vec![
                lit("o:"),
                part("self", &["shop", "id"], 2..16),
                lit(":"),
                part("order", &["0"], 17..26),
                lit(":"),
                part("r#type", &[], 27..35),
            ]
        );
    }

    #[test]
    fn escaped_braces() {
        assert_eq!(
            parse("{{lit}}:{id}:}}{{").unwrap(),
            vec![lit("{lit}:"), part("id", &[], 8..12), lit(":}{")]
        );
        // Escaped braces count as a separator.
        assert!(parse("{a}{{{b}").is_ok());
    }

    #[test]
    fn unicode_literal_text() {
        assert_eq!(
            parse("ключ→{id}").unwrap(),
            vec![lit("ключ→"), part("id", &[], 11..15)]
        );
    }

    #[test]
    fn empty_template() {
        let e = one_err("");
        assert!(e.message.contains("empty key template"));
    }

    #[test]
    fn unclosed_brace() {
        let e = one_err("user:{id");
        assert_eq!(e.range, 5..6);
        assert!(e.message.contains("unclosed `{`"), "{}", e.message);
        let e = one_err("user:{a{b}");
        assert_eq!(e.range, 5..6);
    }

    #[test]
    fn unmatched_close_brace() {
        let e = one_err("user:id}");
        assert_eq!(e.range, 7..8);
        assert!(e.message.contains("unmatched `}`"), "{}", e.message);
    }

    #[test]
    fn all_brace_errors_reported() {
        assert_eq!(errs("a}b{c").len(), 2);
    }

    #[test]
    fn empty_placeholder() {
        let e = one_err("user:{}");
        assert_eq!(e.range, 5..7);
        assert!(e.message.contains("empty placeholder"));
    }

    #[test]
    fn invalid_placeholders() {
        for t in [
            "{1abc}",
            "{a-b}",
            "{a..b}",
            "{a.}",
            "{.a}",
            "{ a }",
            "{a.b c}",
            "{_}",
            "{a.01}",
            "{'a}",
            "{a.type}",
            "{fn}",
            "{a.self}",
            "{r#self}",
            "{a.r#crate}",
            "{a::b}",
            "{a[0]}",
        ] {
            let e = one_err(t);
            assert!(
                e.message.contains("invalid placeholder"),
                "{t}: {}",
                e.message
            );
            assert_eq!(e.range, 0..t.len(), "{t}");
        }
    }

    #[test]
    fn adjacent_placeholders() {
        let e = one_err("k:{a}{b}");
        assert_eq!(e.range, 2..8);
        assert!(e.message.contains("no separator"), "{}", e.message);
    }

    #[test]
    fn ambiguous_separators() {
        for t in ["{a}x{b}", "{a}.{b}", "{a}_1{b}", "{a}%{b}", "{a}~{b}"] {
            let e = one_err(t);
            assert_eq!(e.range, 3..t.len() - 3, "{t}");
            assert!(e.message.contains("separator"), "{t}: {}", e.message);
        }
        for t in ["{a}:{b}", "{a}-{b}", "{a}x:y{b}", "{a}/{b}", "x{a}y:{b}z"] {
            assert!(parse(t).is_ok(), "{t}");
        }
    }

    fn scope(names: &[&str], has_self: bool) -> Scope {
        Scope {
            names: names.iter().map(|s| s.to_string()).collect(),
            has_self,
            fn_name: "f".into(),
        }
    }

    #[test]
    fn names_checked() {
        let segs = parse("u:{id}:{user.name}").unwrap();
        assert!(check_names(&segs, &scope(&["id", "user"], false)).is_empty());
        let e = check_names(&segs, &scope(&["idd", "user"], false));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].range, 3..5);
        assert!(
            e[0].message.contains("did you mean `idd`?"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn unknown_name_lists_parameters() {
        let segs = parse("u:{zzz}").unwrap();
        let e = check_names(&segs, &scope(&["id", "user"], false));
        assert!(e[0].message.contains("`id`, `user`"), "{}", e[0].message);
        let e = check_names(&segs, &scope(&[], false));
        assert!(e[0].message.contains("no parameters"), "{}", e[0].message);
    }

    #[test]
    fn self_needs_receiver() {
        let segs = parse("u:{self.id}").unwrap();
        assert!(check_names(&segs, &scope(&[], true)).is_empty());
        let e = check_names(&segs, &scope(&["id"], false));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].message.contains("no `self` receiver"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn tag_messages() {
        let e = super::parse("", Kind::Tag).unwrap_err();
        assert!(e[0].message.contains("empty tag template"), "{e:?}");
        assert!(e[0].message.contains("\"org:{org_id}\""), "{e:?}");
        let e = super::parse("org:{a}{b}", Kind::Tag).unwrap_err();
        assert!(e[0].message.contains("the same tag"), "{e:?}");
        let e = super::parse("org:{", Kind::Tag).unwrap_err();
        assert!(
            e[0].message.contains("unclosed `{` in tag template"),
            "{e:?}"
        );
        let segs = super::parse("org:{org_idd}", Kind::Tag).unwrap();
        let e = super::check_names(&segs, &scope(&["org_id"], false), Kind::Tag);
        assert!(
            e[0].message
                .starts_with("unknown parameter `org_idd` in tag template"),
            "{e:?}"
        );
        assert!(e[0].message.contains("did you mean `org_id`?"), "{e:?}");
        // Key messages are unchanged.
        let e = parse("user:{").unwrap_err();
        assert!(e[0].message.contains("in key template"), "{e:?}");
    }
}
