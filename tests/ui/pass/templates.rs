#![deny(warnings)]

use cache_runtime::{KeyPart, cached};

pub struct Tenant {
    pub id: u64,
    pub region: Region,
}

pub struct Region {
    pub code: String,
}

pub struct Sku(pub u32);

impl KeyPart for Sku {
    fn write_key_part(&self, out: &mut String) {
        self.0.write_key_part(out);
    }
}

#[cached(key = "user:{tenant.id}:{tenant.region.code}", ttl = 60)]
async fn field_path(tenant: &Tenant) -> u64 {
    tenant.id
}

#[cached(key = "pair:{pair.0}-{pair.1}", ttl = 60)]
async fn tuple_fields(pair: (u32, String)) -> String {
    pair.1
}

#[cached(key = "{{literal}}:{id}:}}{{", ttl = 60)]
async fn braces(id: u64) -> u64 {
    id
}

#[cached(key = "static", ttl = 60)]
async fn no_placeholders() -> u64 {
    1
}

#[cached(key = "{id}", ttl = 60)]
async fn only_placeholder(id: Option<u64>) -> u64 {
    id.unwrap_or(0)
}

#[cached(key = "sku:{sku}/{name}", ttl = 60)]
async fn custom_keypart(sku: Sku, name: &str) -> String {
    format!("{}{name}", sku.0)
}

#[cached(key = "ascii→{id}→ключ", ttl = 60)]
async fn unicode_literal(id: i64) -> i64 {
    id
}

#[cached(key = "destructured:{a}:{b}", ttl = 60)]
async fn destructured((a, b): (u32, u32)) -> u32 {
    a + b
}

#[cached(key = "raw:{r#type}", ttl = 60)]
async fn raw_ident(r#type: &str) -> String {
    r#type.to_owned()
}

#[cached(key = "mut:{n}", ttl = 60)]
async fn mut_param(mut n: u32) -> u32 {
    n += 1;
    n
}

fn main() {
    let t = Tenant {
        id: 1,
        region: Region { code: "eu".into() },
    };
    let _ = field_path(&t);
    let _ = tuple_fields((1, "a".into()));
    let _ = braces(1);
    let _ = no_placeholders();
    let _ = only_placeholder(None);
    let _ = custom_keypart(Sku(1), "n");
    let _ = unicode_literal(-1);
    let _ = destructured((1, 2));
    let _ = raw_ident("t");
    let _ = mut_param(1);
}
