//! The expansions as token text, and the errors each stage reports through them.

use super::*;
use quote::quote;

fn expand(
    f: fn(TokenStream, TokenStream) -> TokenStream,
    a: TokenStream,
    i: TokenStream,
) -> String {
    f(a, i).to_string()
}

#[test]
fn cached_expansion_shape() {
    let out = expand(
        cached,
        quote!(key = "user:{id}:{u.name}", ttl = 300, jitter = 30),
        quote!(
            pub async fn get(id: u64, u: &User) -> Result<Option<User>, E> {
                Ok(None)
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("__private :: ResOpt"), "{out}");
    assert!(out.contains("__cache_k . part (& id)"), "{out}");
    assert!(out.contains("__cache_k . part (& u . name)"), "{out}");
    assert!(out.contains("__cache_k . lit (\"user:\")"), "{out}");
    assert!(out.contains("ttl_secs : 300"), "{out}");
    assert!(out.contains("jitter_secs : 30"), "{out}");
    assert!(
        out.contains(":: cache_runtime :: __private :: global ()"),
        "{out}"
    );
}

#[test]
fn plain_check_only_for_inferred_plain() {
    let item = quote!(
        async fn get(id: u64) -> Answer {
            todo!()
        }
    );
    let out = expand(cached, quote!(key = "a:{id}", ttl = 5), item.clone());
    assert!(
        out.contains("expect_plain (:: cache_runtime :: __private :: Probe :: < Answer >"),
        "{out}"
    );
    for returns in ["plain", "result"] {
        let out = expand(
            cached,
            quote!(key = "a:{id}", ttl = 5, returns = #returns),
            item.clone(),
        );
        assert!(!out.contains("expect_plain"), "{returns}: {out}");
    }
    let out = expand(
        cached,
        quote!(key = "a:{id}", ttl = 5),
        quote!(
            async fn get(id: u64) -> ApiResult<u64> {
                todo!()
            }
        ),
    );
    assert!(!out.contains("expect_plain"), "{out}");
    assert!(out.contains("__private :: Res ,"), "{out}");
}

#[test]
fn cached_method_with_cache_expr() {
    let out = expand(
        cached,
        quote!(
            key = "o:{self.shop}:{id}",
            ttl = 5,
            cache = self.cache,
            crate = ::rt
        ),
        quote!(
            async fn get(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("part (& self . shop)"), "{out}");
    assert!(
        out.contains(":: rt :: __private :: handle (& (self . cache))"),
        "{out}"
    );
    assert!(!out.contains("cache_runtime"), "{out}");
}

#[test]
fn errors_keep_original_fn() {
    let item = quote!(
        fn get(id: u64) -> u64 {
            id
        }
    );
    let out = expand(cached, quote!(key = "u:{idd}", ttl = 0), item.clone());
    assert!(out.starts_with(&item.to_string()), "{out}");
    assert_eq!(out.matches("compile_error").count(), 3, "{out}");
    assert!(out.contains("requires an `async fn`"), "{out}");
    assert!(out.contains("did you mean `id`?"), "{out}");
}

#[test]
fn destructured_params() {
    let out = expand(
        cached,
        quote!(key = "p:{a}:{b}:{x}", ttl = 5),
        quote!(
            async fn get((a, b): (u32, u32), P { x, .. }: P) -> u64 {
                1
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
}

#[test]
fn invalidates_expansion() {
    let out = expand(
        invalidates,
        quote!("user:{id}", "users:list"),
        quote!(
            async fn rename(id: u64) -> Result<(), E> {
                Ok(())
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(
        out.contains("succeeded :: < :: cache_runtime :: __private :: Res"),
        "{out}"
    );
    assert!(out.contains("__cache_k . lit (\"users:list\")"), "{out}");
}

/// What `#[async_trait]` 0.1.92 makes of
/// `async fn get(&self, id: u64) -> Result<Option<String>, E> { .. }`.
fn async_trait_item(body_tail: TokenStream) -> TokenStream {
    quote!(
        fn get<'life0, 'async_trait>(
            &'life0 self,
            id: u64,
        ) -> ::core::pin::Pin<
            Box<
                dyn ::core::future::Future<Output = Result<Option<String>, E>>
                    + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            #body_tail
        }
    )
}

#[test]
fn async_trait_shape() {
    let item = async_trait_item(quote!(Box::pin(async move {
        if let ::core::option::Option::Some(__ret) =
            ::core::option::Option::None::<Result<Option<String>, E>>
        {
            #[allow(unreachable_code)]
            return __ret;
        }
        let __self = self;
        let id = id;
        let __ret: Result<Option<String>, E> = { Ok(Some(__self.name.clone())) };
        #[allow(unreachable_code)]
        __ret
    })));
    let out = expand(
        cached,
        quote!(key = "u:{self.tenant}:{id}", ttl = 5, cache = self.cache),
        item.clone(),
    );
    assert!(!out.contains("compile_error"), "{out}");
    let (sig, body) = out.split_once("Box :: pin (async move {").expect(&out);
    assert!(!sig.contains("__CACHE_SPEC"), "{out}");
    assert!(body.contains("__CACHE_SPEC"), "{out}");
    assert!(body.contains("part (& self . tenant)"), "{out}");
    assert!(body.contains("handle (& (self . cache))"), "{out}");
    assert!(
        body.contains("ResOpt , Result < Option < String > , E >"),
        "{out}"
    );
    assert!(
        body.contains("# [allow (unused_variables)] let id = id ;"),
        "{out}"
    );

    let out = expand(invalidates, quote!("u:{id}"), item);
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("Box :: pin (async move {"), "{out}");
    assert!(
        out.contains("succeeded :: < :: cache_runtime :: __private :: ResOpt"),
        "{out}"
    );
}

#[test]
fn not_async_trait_shape() {
    // Right return type, but the body is not `Box::pin(async ..)`.
    for tail in [
        quote!(Box::pin(ready(Ok(None)))),
        quote!(Box::new(async move { Ok(None) })),
        quote!(let f = Box::pin(async move { Ok(None) }); f),
        quote!(Box::pin(async move { Ok(None) });),
    ] {
        let out = expand(
            cached,
            quote!(key = "u:{id}", ttl = 5),
            async_trait_item(tail),
        );
        assert!(out.contains("requires an `async fn`"), "{out}");
    }
    // `Box::pin(async ..)` but not a boxed future type.
    let out = expand(
        cached,
        quote!(key = "u:{id}", ttl = 5),
        quote!(
            fn get(id: u64) -> Box<dyn Future<Output = u64>> {
                Box::pin(async move { id })
            }
        ),
    );
    assert!(out.contains("requires an `async fn`"), "{out}");
}

#[test]
fn not_a_fn() {
    let out = expand(
        cached,
        quote!(key = "a", ttl = 1),
        quote!(
            struct S;
        ),
    );
    assert!(out.contains("can only be applied"), "{out}");
    assert!(out.starts_with("struct S ;"), "{out}");
}

#[test]
fn tags_and_cache_if_without_refresh() {
    let out = expand(
        cached,
        quote!(
            key = "user:{id}",
            ttl = 60,
            tags = ["org:{user.org}", "users"],
            cache_if = is_active
        ),
        quote!(
            async fn get(id: u64, user: User) -> Option<User> {
                Some(user)
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("__private :: cached :: <"), "{out}");
    assert!(!out.contains("cached_refresh"), "{out}");
    assert!(
        out.contains(":: core :: option :: Option :: Some (is_active)"),
        "{out}"
    );
    // Tags are rendered in the load closure, before the body's block.
    let (before, after) = out.split_once("move || (").expect(&out);
    assert!(!before.contains("lit (\"org:\")"), "{out}");
    // The registered description lists the tag templates.
    assert!(
        before.contains("tags : & [\"org:{user.org}\" , \"users\"]"),
        "{out}"
    );
    let (tags, body) = after.split_once("async move").expect(&out);
    assert!(tags.starts_with(":: std :: vec :: Vec :: from (["), "{out}");
    assert!(tags.contains("__cache_k . part (& user . org)"), "{out}");
    assert!(tags.contains("__cache_k . lit (\"users\")"), "{out}");
    assert!(body.contains("Some (user)"), "{out}");
    assert!(out.contains("stale_secs : 0"), "{out}");
    assert!(out.contains("early_refresh : 0.0"), "{out}");
    assert!(out.contains("timeout_ms : 0"), "{out}");

    let out = expand(
        cached,
        quote!(key = "user:{id}", ttl = 60),
        quote!(
            async fn get(id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(
        out.contains("move || (:: std :: vec :: Vec :: new () , async move"),
        "{out}"
    );
    assert!(out.contains("Option :: None"), "{out}");
}

#[test]
fn refresh_expansion() {
    let out = expand(
        cached,
        quote!(
            key = "user:{region}:{id}",
            ttl = 60,
            stale = 30,
            early_refresh = 1.0,
            timeout_ms = 200,
            tags = ["region:{region}"]
        ),
        quote!(
            pub async fn get<'a>(region: &'a str, id: u64, mut n: u32, only_key: u8) -> String {
                n += 1;
                format!("{region}/{n}/{}", id)
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("__private :: cached_refresh :: <"), "{out}");
    assert!(out.contains("stale_secs : 30"), "{out}");
    assert!(out.contains("early_refresh : 1.0"), "{out}");
    assert!(out.contains("timeout_ms : 200"), "{out}");
    // `mut` moves from the signature to the block's binding.
    let (sig, rest) = out.split_once('{').expect(&out);
    assert!(sig.contains("n : u32"), "{sig}");
    assert!(!sig.contains("mut"), "{sig}");
    // The closure is not `move`: it borrows the parameters to render the tags and
    // make the copies.
    let (_, closure) = rest.split_once("|| {").expect(&out);
    let (copies, block) = closure.split_once("async move").expect(&out);
    assert!(
        copies
            .contains("let __cache_own_region = :: std :: borrow :: ToOwned :: to_owned (region)"),
        "{copies}"
    );
    assert!(
        copies.contains("let __cache_arg_id = :: core :: clone :: Clone :: clone (& id)"),
        "{copies}"
    );
    assert!(copies.contains("__cache_arg_n"), "{copies}");
    // Only the key uses `only_key`: not copied.
    assert!(!copies.contains("only_key"), "{copies}");
    assert!(
        block.contains(
            "let region : & '_ str = :: core :: borrow :: Borrow :: borrow (& __cache_own_region)"
        ),
        "{block}"
    );
    assert!(block.contains("let id = __cache_arg_id ;"), "{block}");
    assert!(block.contains("let mut n = __cache_arg_n ;"), "{block}");
}

#[test]
fn refresh_method_replaces_self() {
    let out = expand(
        cached,
        quote!(
            key = "u:{self.tenant}:{id}",
            ttl = 60,
            stale = 5,
            cache = self.cache
        ),
        quote!(
            async fn get(&self, id: u64) -> String {
                format!("{}/{}", self.tenant, self::helper(Self::X, id))
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    // The key and the handle read the real `self`, before the body.
    assert!(out.contains("part (& self . tenant)"), "{out}");
    assert!(out.contains("handle (& (self . cache))"), "{out}");
    assert!(
        out.contains("let __cache_self = :: core :: clone :: Clone :: clone (self) ;"),
        "{out}"
    );
    assert!(
        out.contains("let __cache_this : & Self = & __cache_self ;"),
        "{out}"
    );
    assert!(
        out.contains("__cache_this . tenant , self :: helper (Self :: X , id)"),
        "{out}"
    );

    // A body without `self` does not clone the receiver.
    let out = expand(
        cached,
        quote!(key = "u:{self.tenant}:{id}", ttl = 60, stale = 5),
        quote!(
            async fn get(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(!out.contains("__cache_self"), "{out}");

    // `mut self` by value: cloned, and owned by the block.
    let out = expand(
        cached,
        quote!(key = "u:{id}", ttl = 60, stale = 5),
        quote!(
            async fn take(mut self, id: u64) -> u64 {
                self.n += id;
                self.n
            }
        ),
    );
    assert!(out.contains("async fn take (self , id : u64)"), "{out}");
    assert!(out.contains("clone (& self)"), "{out}");
    assert!(
        out.contains("let mut __cache_this = __cache_self ;"),
        "{out}"
    );
}

#[test]
fn refresh_errors() {
    let errors = |args: TokenStream, item: TokenStream| -> Vec<String> {
        let out = expand(cached, args, item);
        out.split("compile_error !")
            .skip(1)
            .map(|s| s.to_string())
            .collect()
    };
    let e = errors(
        quote!(key = "u:{id}", ttl = 60, stale = 5, timeout_ms = 9),
        quote!(
            async fn get(&mut self, id: u64, buf: &mut Vec<u8>, (a, b): (u8, u8)) -> u64 {
                buf.push(a + b);
                self.n
            }
        ),
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("cannot take `&mut self`"), "{e:?}");
    assert!(e[0].contains("`stale` and `timeout_ms`"), "{e:?}");
    assert!(
        e[0].contains("needs owned copies of the arguments"),
        "{e:?}"
    );
    assert!(e[1].contains("parameter `buf: &mut Vec<u8>`"), "{e:?}");
    assert!(e[2].contains("destructured parameter `(a, b)`"), "{e:?}");
    assert!(e[2].contains("`arg: (u8, u8)`"), "{e:?}");

    // The same parameters are fine when the body does not use them.
    let e = errors(
        quote!(key = "u:{a}", ttl = 60, early_refresh = 1.0),
        quote!(
            async fn get(&mut self, buf: &mut Vec<u8>, (a, b): (u8, u8)) -> u64 {
                1
            }
        ),
    );
    assert!(e.is_empty(), "{e:?}");

    let e = errors(
        quote!(key = "u:{id}", ttl = 60, stale = 5),
        quote!(
            async fn get(id: u64, name: Option<&str>, label: &impl Display) -> String {
                format!("{id}{name:?}{label}")
            }
        ),
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("`name: Option<&str>`"), "{e:?}");
    assert!(e[0].contains("still borrows"), "{e:?}");
    assert!(e[1].contains("`label: &impl ..`"), "{e:?}");
}

#[test]
fn refresh_on_async_trait_runs_on_owned_copies() {
    let item = async_trait_item(quote!(Box::pin(async move {
        let __self = self;
        let id = id;
        let __ret: Result<Option<String>, E> = { Ok(None) };
        #[allow(unreachable_code)]
        __ret
    })));
    let out = expand(
        cached,
        quote!(key = "u:{id}", ttl = 5, stale = 10),
        item.clone(),
    );
    // The refresh entry point, with the receiver and the parameter copied for the block.
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("cached_refresh"), "{out}");
    assert!(out.contains("let __cache_self"), "{out}");
    assert!(out.contains("let __cache_arg_id"), "{out}");
    // Tags are fine there.
    let out = expand(
        cached,
        quote!(key = "u:{id}", ttl = 5, tags = ["t:{id}"]),
        item,
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("Vec :: from (["), "{out}");
}

#[test]
fn key_fn_and_typed_invalidation() {
    let out = expand(
        cached,
        quote!(key = "user:{id}:{name}", ttl = 60),
        quote!(
            pub async fn get_user(mut id: u64, db: &Db, name: &str) -> u64 {
                id
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    let (_, key_fn) = out.split_once("fn __cache_key_get_user").expect(&out);
    assert!(
        key_fn.starts_with(" (id : & u64 , name : & str) -> :: std :: string :: String {"),
        "{key_fn}"
    );
    // `id` is already a reference there; `name` was one.
    assert!(key_fn.contains("__cache_k . part (id)"), "{key_fn}");
    assert!(key_fn.contains("__cache_k . part (& name)"), "{key_fn}");
    assert!(out.contains("pub fn __cache_key_get_user"), "{out}");
    assert!(out.contains("CACHED_POLICIES"), "{out}");
    assert!(out.contains("template : \"user:{id}:{name}\""), "{out}");

    // A method without a visibility (maybe in a trait impl) gets none.
    let out = expand(
        cached,
        quote!(key = "u:{self.t}:{id}", ttl = 60),
        quote!(
            async fn get(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(!out.contains("__cache_key_get"), "{out}");
    assert!(out.contains("CACHED_POLICIES"), "{out}");

    let out = expand(
        invalidates,
        quote!(get_user(u.id, &u.name), Self::profile(7), "x"),
        quote!(
            async fn save(&self, u: &User) {}
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(
        out.contains("__cache_key_get_user (& (u . id) , & (& u . name))"),
        "{out}"
    );
    assert!(
        out.contains("Self :: __cache_key_profile (& self , & (7))"),
        "{out}"
    );
    assert!(
        out.contains("call : \"get_user(u.id, &u.name)\" , path : \"get_user\""),
        "{out}"
    );
    assert!(out.contains("INVALIDATE_POLICIES"), "{out}");
    assert!(out.contains("[:: std :: string :: String ; 3]"), "{out}");
}

#[test]
fn invalidates_with_tags() {
    let out = expand(
        invalidates,
        quote!("user:{id}", tags = ["org:{org}", "users"]),
        quote!(
            async fn moved(id: u64, org: u64) -> Result<(), E> {
                Ok(())
            }
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(
        out.contains("let __cache_keys : [:: std :: string :: String ; 1] = ["),
        "{out}"
    );
    assert!(
        out.contains("let __cache_tags : [:: std :: string :: String ; 2] = ["),
        "{out}"
    );
    assert!(out.contains("& __cache_keys , & __cache_tags"), "{out}");

    let out = expand(
        invalidates,
        quote!(tags = ["users"]),
        quote!(
            async fn wipe() {}
        ),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(
        out.contains("let __cache_keys : [:: std :: string :: String ; 0] = [] ;"),
        "{out}"
    );

    let out = expand(
        invalidates,
        quote!("u:{id}", tags = ["org:{org}"]),
        quote!(
            async fn moved(id: u64, org_id: u64) {}
        ),
    );
    assert!(
        out.contains("unknown parameter `org` in tag template"),
        "{out}"
    );
}
