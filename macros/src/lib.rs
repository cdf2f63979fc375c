//! The instrumentation macros of [laptime](https://docs.rs/laptime). Use them through the `laptime`
//! crate (`#[laptime::measure]`, `laptime::measure_block!`, `#[laptime::measure_all]`,
//! `#[derive(laptime::Stage)]`), where they are documented with examples.
//!
//! Without the `enable` feature (which `laptime`'s own `enable` feature turns on) every macro
//! still parses its arguments and refuses what cannot be timed, then leaves its input as written;
//! the checks the expansion makes at compile time (stage names and labels, `outcome`'s `Result`)
//! happen only with it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proc_macro::TokenStream;
use quote::{ToTokens, quote};
use syn::{ImplItemFn, Item, TraitItemFn};

mod all;
mod args;
mod derive;
mod expand;

use args::{Accepts, BlockInput};
use expand::{Name, call_site, check_signature, default_name, instrument, local};

const ENABLED: bool = cfg!(feature = "enable");

/// Times every call of a function, method or `async fn` as one stage. See `laptime::measure`.
#[proc_macro_attribute]
pub fn measure(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match measure_fn(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        // Keep the function, so the error is the only one reported.
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #item).into()
        }
    }
}

fn measure_fn(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let accepts = Accepts {
        name: true,
        outcome: true,
        polls: true,
    };
    let args = args::parse_attr(attr, accepts)?;
    // A method (a function with a receiver) is named after `Self`'s type too, so two impls of
    // one trait method are two series. Without a receiver the macro cannot tell an associated
    // function from a free one (`Self` would not compile in a free function): both are named
    // `module::function` (docs/measure.md).
    let name = |sig: &syn::Signature| match &args.name {
        Some(lit) => Name::Fixed(quote!(#lit)),
        None if sig.receiver().is_some() => Name::Method(sig.ident.to_string()),
        None => Name::Fixed(default_name(&[sig.ident.to_string()])),
    };
    // A family's name is fixed: given, or a free function's own.
    let named = |sig: &syn::Signature| args.name.is_some() || sig.receiver().is_none();
    if let Ok(mut f) = syn::parse2::<syn::ItemFn>(item.clone()) {
        check_signature(&f.sig, &args, named(&f.sig))?;
        if ENABLED {
            *f.block = instrument(&args, &f.sig, &f.block, &name(&f.sig))?;
        }
        return Ok(f.into_token_stream());
    }
    // Not a free function: an impl method with `default`, or a trait method.
    if let Ok(mut f) = syn::parse2::<ImplItemFn>(item.clone()) {
        check_signature(&f.sig, &args, named(&f.sig))?;
        if ENABLED {
            f.block = instrument(&args, &f.sig, &f.block, &name(&f.sig))?;
        }
        return Ok(f.into_token_stream());
    }
    if let Ok(mut f) = syn::parse2::<TraitItemFn>(item.clone()) {
        check_signature(&f.sig, &args, named(&f.sig))?;
        let Some(block) = &f.default else {
            return Err(syn::Error::new_spanned(
                &f.sig,
                "#[laptime::measure] needs a body to time: put it on the trait's implementations",
            ));
        };
        if ENABLED {
            f.default = Some(instrument(&args, &f.sig, block, &name(&f.sig))?);
        }
        return Ok(f.into_token_stream());
    }
    let message = "#[laptime::measure] goes on a function, method or `async fn`; for a block use laptime::measure_block!, for every method of an impl block #[laptime::measure_all]";
    Err(match syn::parse2::<Item>(item) {
        Ok(other) => syn::Error::new_spanned(other, message),
        Err(_) => syn::Error::new(proc_macro2::Span::call_site(), message),
    })
}

/// Times a block as one stage and evaluates to its value. See `laptime::measure_block`.
#[proc_macro]
pub fn measure_block(input: TokenStream) -> TokenStream {
    let input = match syn::parse::<BlockInput>(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error().into(),
    };
    match measure_block_expand(input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn measure_block_expand(input: BlockInput) -> syn::Result<proc_macro2::TokenStream> {
    let BlockInput { stage, args, block } = input;
    let literal = match &stage {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Some(lit.clone()),
        _ => None,
    };
    if literal.is_none()
        && (args.deadline.is_some()
            || args.sample.is_some()
            || !args.labels.is_empty()
            || args.outcome)
    {
        return Err(syn::Error::new_spanned(
            &stage,
            "`deadline`, `sample`, `labels` and `outcome` make a call-site stage: name it with a string literal",
        ));
    }
    args.check_runtime_labels(syn::spanned::Spanned::span(&stage), true)?;
    if !ENABLED {
        return Ok(block.into_token_stream());
    }
    let krate = args.krate();
    let span = local("__laptime_span");
    let out = local("__laptime_out");
    // The block's statements go into the expansion's own block: wrapping the block whole would
    // trip `unused_braces` in the caller's crate for `{ expr }`.
    let stmts = &block.stmts;
    Ok(match literal {
        None => quote! {{
            let #span = #krate::start(#stage);
            #(#stmts)*
        }},
        Some(name) if args.outcome => {
            let name = Name::Fixed(quote!(#name));
            let ok = call_site(&args, &name, Some("ok"));
            let err = call_site(&args, &name, Some("err"));
            quote! {{
                let #span = #krate::__private::OutcomeSpan::start(#ok, #err);
                let #out = { #(#stmts)* };
                #span.finish(&#out);
                #out
            }}
        }
        Some(name) => {
            let site = call_site(&args, &Name::Fixed(quote!(#name)), None);
            quote! {{
                let #span = #krate::start(#site);
                #(#stmts)*
            }}
        }
    })
}

/// Times every function of an `impl` block or inline module. See `laptime::measure_all`.
#[proc_macro_attribute]
pub fn measure_all(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let accepts = Accepts {
        name: false,
        outcome: false,
        polls: false,
    };
    let result = args::parse_attr(attr.into(), accepts)
        .and_then(|args| all::measure_all(&args, item.clone(), ENABLED));
    match result {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #item).into()
        }
    }
}

/// Leaves a function out of `#[measure_all]`. On its own it does nothing.
#[proc_macro_attribute]
pub fn skip(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let e = syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[laptime::skip] takes no arguments",
        );
        let item = proc_macro2::TokenStream::from(item);
        let e = e.to_compile_error();
        return quote!(#e #item).into();
    }
    item
}

/// Makes a fieldless enum's variants stages. See `laptime::Stage`.
#[proc_macro_derive(Stage, attributes(stage))]
pub fn derive_stage(input: TokenStream) -> TokenStream {
    match syn::parse::<syn::DeriveInput>(input).and_then(derive::derive_stage) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
