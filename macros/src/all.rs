//! `#[measure_all]`: every function of an `impl` block or inline module, minus `#[skip]`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Attribute, ImplItem, Item, ItemImpl, Type};

use crate::args::Args;
use crate::expand::{Name, check_signature, default_name, instrument};

fn last_segment_is(attr: &Attribute, name: &str) -> bool {
    attr.path().segments.last().is_some_and(|s| s.ident == name)
}

/// Takes `#[skip]` off, and says whether it was there.
fn take_skip(attrs: &mut Vec<Attribute>) -> bool {
    let before = attrs.len();
    attrs.retain(|a| !last_segment_is(a, "skip"));
    attrs.len() != before
}

/// Whether a function is left alone: skipped, already `#[measure]`d (its own arguments win), or
/// `const` (it may run at compile time, where there is no clock).
fn leave_alone(attrs: &mut Vec<Attribute>, sig: &syn::Signature) -> bool {
    let skipped = take_skip(attrs);
    skipped || sig.constness.is_some() || attrs.iter().any(|a| last_segment_is(a, "measure"))
}

fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Reference(r) => type_name(&r.elem),
        Type::Paren(p) => type_name(&p.elem),
        Type::Group(g) => type_name(&g.elem),
        _ => None,
    }
}

fn instrument_impl(args: &Args, block: &mut ItemImpl, enabled: bool) -> syn::Result<()> {
    let owner = type_name(&block.self_ty);
    for item in &mut block.items {
        let ImplItem::Fn(f) = item else { continue };
        if leave_alone(&mut f.attrs, &f.sig) {
            continue;
        }
        check_signature(&f.sig, args, true)?;
        if enabled {
            let path: Vec<String> = owner
                .iter()
                .cloned()
                .chain([f.sig.ident.to_string()])
                .collect();
            f.block = instrument(args, &f.sig, &f.block, &Name::Fixed(default_name(&path)))?;
        }
    }
    Ok(())
}

pub(crate) fn measure_all(
    args: &Args,
    item: TokenStream,
    enabled: bool,
) -> syn::Result<TokenStream> {
    let mut item: Item = syn::parse2(item)?;
    if args.has_runtime_labels() {
        return Err(syn::Error::new_spanned(
            &item,
            "#[laptime::measure_all] takes static labels only (verb = \"post\"): put #[laptime::measure(labels(pair = symbol))] on the functions that have the argument",
        ));
    }
    match &mut item {
        Item::Impl(block) => instrument_impl(args, block, enabled)?,
        Item::Mod(module) => {
            let Some((_, items)) = &mut module.content else {
                return Err(syn::Error::new_spanned(
                    &*module,
                    "#[laptime::measure_all] needs an inline module (`mod name { … }`); for a module in its own file, put it on that file's impl blocks or #[laptime::measure] on its functions",
                ));
            };
            for item in items {
                match item {
                    Item::Fn(f) => {
                        if leave_alone(&mut f.attrs, &f.sig) {
                            continue;
                        }
                        check_signature(&f.sig, args, true)?;
                        if enabled {
                            let name = Name::Fixed(default_name(&[f.sig.ident.to_string()]));
                            *f.block = instrument(args, &f.sig, &f.block, &name)?;
                        }
                    }
                    Item::Impl(block) => instrument_impl(args, block, enabled)?,
                    _ => {}
                }
            }
        }
        other => {
            return Err(syn::Error::new_spanned(
                &*other,
                "#[laptime::measure_all] goes on an `impl` block or an inline module; for one function use #[laptime::measure]",
            ));
        }
    }
    Ok(item.into_token_stream())
}
