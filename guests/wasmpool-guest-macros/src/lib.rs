//! The `#[task]` attribute of the wasmpool guest SDK.
//!
//! Use it through the SDK, as `wasmpool_guest::task`; the code it generates calls
//! into `::wasmpool_guest`, so the guest crate must depend on `wasmpool-guest`.
//!
//! ```ignore
//! #[wasmpool_guest::task]
//! fn wordcount(input: WcIn) -> WcOut { /* ... */ }
//! ```
//!
//! keeps `wordcount` as it is and adds
//!
//! ```ignore
//! #[doc(hidden)]
//! #[unsafe(export_name = "wasmpool.task.wordcount")]
//! pub extern "C" fn __wasmpool_task_wordcount(ptr: i32, len: i32) -> i64 {
//!     ::wasmpool_guest::__run::<_, _, _>(ptr, len, wordcount)
//! }
//! ```
//!
//! (for a return type spelled `Result<T, E>`, the second type argument is `T`).
//!
//! `#[task(name = "other")]` exports the task as `wasmpool.task.other` instead.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, FnArg, GenericArgument, ItemFn, LitStr, PathArguments, ReturnType, Type,
};

/// The prefix of every task export, defined once by the ABI crate (a proc-macro crate uses
/// it like any dependency, at expansion time).
use wasmpool_abi::TASK_EXPORT_PREFIX;

/// Exports a function as a wasmpool task.
///
/// The function must take exactly one argument, the task input, of a type that
/// implements `serde::de::DeserializeOwned`, and return either a type that
/// implements `serde::Serialize` or a `Result<T, E>` whose `T` implements `Serialize`
/// and whose `E` implements `Display` (an `Err` becomes a task error carrying
/// `E`'s `Display` text). It cannot be `async`, `unsafe`, `extern`, or generic.
///
/// A return type is treated as success-or-error when its last path segment is
/// spelled `Result` (`Result<T, E>`, `std::io::Result<T>`, `anyhow::Result<T>`...).
///
/// The task is exported as `wasmpool.task.<function name>`; `#[task(name = "x")]`
/// exports it as `wasmpool.task.x`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut name: Option<LitStr> = None;
    let attr_parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            if name.is_some() {
                return Err(meta.error("duplicate `name` argument"));
            }
            name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("unsupported #[task] argument; the only one is `name = \"...\"`"))
        }
    });
    parse_macro_input!(attr with attr_parser);
    let func = parse_macro_input!(item as ItemFn);

    match expand(name, &func) {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            // Keep the function itself so that the error above is the only one.
            let mut tokens = err.to_compile_error();
            func.to_tokens(&mut tokens);
            tokens.into()
        }
    }
}

fn expand(name: Option<LitStr>, func: &ItemFn) -> syn::Result<TokenStream2> {
    let sig = &func.sig;
    if let Some(t) = &sig.asyncness {
        return Err(syn::Error::new(
            t.span(),
            "#[task] functions cannot be async: a task runs to completion inside one \
             call of a wasm export",
        ));
    }
    if let Some(t) = &sig.unsafety {
        return Err(syn::Error::new(
            t.span(),
            "#[task] functions cannot be unsafe: the host calls them with arbitrary input",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            "#[task] functions must use the Rust ABI: remove the `extern`; #[task] \
             generates the `extern \"C\"` export itself",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "#[task] functions cannot be generic: the exported task needs one concrete \
             input type and one concrete output type",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(
            v.span(),
            "#[task] functions cannot be variadic",
        ));
    }
    if sig.inputs.len() != 1 {
        let span = match sig.inputs.iter().nth(1) {
            Some(extra) => extra.span(),
            None => sig.paren_token.span.join(),
        };
        return Err(syn::Error::new(
            span,
            format!(
                "#[task] functions take exactly one argument, the decoded task input, \
                 found {}; put several values in a struct (or take `()` for no input)",
                sig.inputs.len()
            ),
        ));
    }
    match &sig.inputs[0] {
        FnArg::Receiver(r) => {
            return Err(syn::Error::new(
                r.span(),
                "#[task] functions cannot take `self`: use a free function",
            ));
        }
        FnArg::Typed(arg) => {
            if let Type::ImplTrait(t) = &*arg.ty {
                return Err(syn::Error::new(
                    t.span(),
                    "#[task] functions cannot be generic: the input needs a concrete type, \
                     not `impl Trait`",
                ));
            }
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Type::ImplTrait(t) = &**ty {
            return Err(syn::Error::new(
                t.span(),
                "#[task] functions need a concrete return type, not `impl Trait`",
            ));
        }
    }

    let ident = &sig.ident;
    let export_name = match &name {
        Some(lit) => {
            let value = lit.value();
            if value.is_empty() {
                return Err(syn::Error::new(lit.span(), "the task name cannot be empty"));
            }
            format!("{TASK_EXPORT_PREFIX}{value}")
        }
        None => format!("{TASK_EXPORT_PREFIX}{}", ident.unraw()),
    };
    let export_name = LitStr::new(
        &export_name,
        name.as_ref().map_or(ident.span(), LitStr::span),
    );
    let wrapper = format_ident!("__wasmpool_task_{}", ident.unraw());
    let output = output_type(&sig.output);

    let export = quote! {
        #[doc(hidden)]
        #[allow(non_snake_case)]
        #[unsafe(export_name = #export_name)]
        pub extern "C" fn #wrapper(ptr: i32, len: i32) -> i64 {
            ::wasmpool_guest::__run::<_, #output, _>(ptr, len, #ident)
        }
    };
    Ok(quote! {
        #func
        #export
    })
}

/// The success type `O` of a task returning `R`, for `__run::<I, O, R>`: the first type
/// argument of a return type spelled `...::Result<O, ...>`, otherwise `_` (inferred: `R`
/// itself). Naming it is what makes `Result<T, E>` mean "T or an error" even when
/// `Result<T, E>` is itself `Serialize`.
fn output_type(ret: &ReturnType) -> TokenStream2 {
    if let ReturnType::Type(_, ty) = ret {
        if let Type::Path(p) = &**ty {
            if p.qself.is_none() {
                if let Some(last) = p.path.segments.last() {
                    if last.ident == "Result" {
                        if let PathArguments::AngleBracketed(args) = &last.arguments {
                            if let Some(GenericArgument::Type(ok)) = args.args.first() {
                                return ok.to_token_stream();
                            }
                        }
                    }
                }
            }
        }
    }
    quote!(_)
}
