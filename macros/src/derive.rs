//! `#[derive(Stage)]`: a fieldless enum whose variants are stages.

use heck::ToSnakeCase;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, Path};

use crate::args::Args;
use crate::expand::{Name, call_site};

/// `#[stage(name = "…")]` on a variant, `#[stage(crate = path)]` on the enum.
fn stage_attr(
    attrs: &[syn::Attribute],
    on_enum: bool,
) -> syn::Result<(Option<LitStr>, Option<Path>)> {
    let (mut name, mut krate) = (None, None);
    for attr in attrs.iter().filter(|a| a.path().is_ident("stage")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") && !on_enum {
                name = Some(meta.value()?.parse::<LitStr>()?);
                Ok(())
            } else if meta.path.is_ident("crate") && on_enum {
                krate = Some(meta.value()?.call(Path::parse_mod_style)?);
                Ok(())
            } else if on_enum {
                Err(meta.error("expected `crate = path` here; name variants with #[stage(name = \"…\")] on the variant"))
            } else {
                Err(meta.error("expected `name = \"…\"`"))
            }
        })?;
    }
    Ok((name, krate))
}

pub(crate) fn derive_stage(input: DeriveInput) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "#[derive(laptime::Stage)] goes on a fieldless enum, one variant per stage",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(laptime::Stage)] needs an enum without generic parameters",
        ));
    }
    let (_, krate) = stage_attr(&input.attrs, true)?;
    let args = Args {
        krate,
        ..Args::default()
    };
    let krate = args.krate();
    let mut variants = Vec::new();
    let mut names: Vec<(String, proc_macro2::Span)> = Vec::new();
    for v in &data.variants {
        if !matches!(v.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(
                v,
                "a stage variant carries no fields: #[derive(laptime::Stage)] needs a fieldless enum",
            ));
        }
        let (name, _) = stage_attr(&v.attrs, false)?;
        let name = name
            .unwrap_or_else(|| LitStr::new(&v.ident.to_string().to_snake_case(), v.ident.span()));
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == name.value()) {
            let mut e = syn::Error::new(
                name.span(),
                format!(
                    "two variants name the stage {:?}: rename one with #[stage(name = \"…\")]",
                    name.value()
                ),
            );
            e.combine(syn::Error::new(*first, "the first one is here"));
            return Err(e);
        }
        names.push((name.value(), name.span()));
        variants.push((&v.ident, name));
    }
    let ident = &input.ident;
    let idents: Vec<_> = variants.iter().map(|(v, _)| *v).collect();
    let lits: Vec<_> = variants.iter().map(|(_, n)| n).collect();
    let sites = variants
        .iter()
        .map(|(_, n)| call_site(&args, &Name::Fixed(quote!(#n)), None));
    Ok(quote! {
        impl #krate::IntoStage for #ident {
            #[inline]
            fn into_stage(self) -> ::core::option::Option<#krate::Stage> {
                match self {
                    #(Self::#idents => #krate::IntoStage::into_stage(#sites),)*
                }
            }
        }

        impl #krate::IntoStageQuery for #ident {
            fn find_in(self, snapshot: &#krate::Snapshot) -> ::core::option::Option<#krate::Stage> {
                #krate::IntoStageQuery::find_in(#krate::StageEnum::stage_name(&self), snapshot)
            }
        }

        impl #krate::StageEnum for #ident {
            const ALL: &'static [Self] = &[#(Self::#idents),*];

            fn stage_name(&self) -> &'static str {
                match self {
                    #(Self::#idents => #lits,)*
                }
            }
        }
    })
}
