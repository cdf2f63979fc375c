//! Rewriting one function: the call-site statics and the guard around its body.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::visit::Visit;
use syn::{Block, Ident, ReturnType, Signature};

use crate::args::{Args, LabelArg};

/// What a call site's stage is named.
pub(crate) enum Name {
    /// A `&'static str` expression: `"stage_spread"`, `concat!(module_path!(), "::spread")`.
    Fixed(TokenStream),
    /// A method's default name, `module::Type::method`, with `Type` taken from `Self` on the first
    /// call (`#[measure]` sees the method, not its `impl` block). The string is the method's name
    /// (with a [`Name::suffixed`] suffix).
    Method(String),
}

impl Name {
    /// The name with `suffix` appended (`.busy`: `stage.busy`, `module::Type::method.busy`).
    pub(crate) fn suffixed(&self, suffix: &str) -> Name {
        match self {
            Name::Fixed(name) => Name::Fixed(quote!(::core::concat!(#name, #suffix))),
            Name::Method(method) => Name::Method(format!("{method}{suffix}")),
        }
    }
}

/// `{ static SITE: CallSite = CallSite::new(..); &SITE }`: the stage handle a call site resolves
/// once (for [`Name::Method`], once per `Self` type). `outcome` adds the `outcome` label.
pub(crate) fn call_site(args: &Args, name: &Name, outcome: Option<&str>) -> TokenStream {
    let krate = args.krate();
    if args.has_runtime_labels()
        && let Name::Fixed(name) = name
    {
        return family_site(args, name);
    }
    let keys = args.labels.iter().map(|(k, _)| k.to_string());
    let values = args.labels.iter().map(|(_, v)| match v {
        LabelArg::Literal(lit) => lit.to_token_stream(),
        // Refused before expansion (`Args::check_runtime_labels`); a literal in its place keeps
        // the expansion well-formed.
        LabelArg::Runtime(_) => quote!("_"),
    });
    let outcome = outcome.map(|o| quote!(("outcome", #o),));
    let labels = quote!(&[#((#keys, #values),)* #outcome]);
    let deadline = args.deadline.unwrap_or(0);
    let sample = match args.sample {
        Some(rate) => quote!(::core::option::Option::Some(#rate)),
        None => quote!(::core::option::Option::None),
    };
    let site = |name: &TokenStream| quote!(#krate::__private::CallSite::new(#name, #labels, #deadline, #sample));
    match name {
        Name::Fixed(name) => {
            let site = site(name);
            quote! {{
                static __LAPTIME_SITE: #krate::__private::CallSite = #site;
                &__LAPTIME_SITE
            }}
        }
        Name::Method(method) => {
            let template = site(&default_name(std::slice::from_ref(method)));
            quote! {{
                static __LAPTIME_SITE: #krate::__private::MethodSite =
                    #krate::__private::MethodSite::new(::core::module_path!(), #method, #template);
                __LAPTIME_SITE.of(::core::any::type_name::<Self>())
            }}
        }
    }
}

/// The series of a family call site (`labels(pair = symbol)`): the family, declared once in a
/// static, and this call's values (literals as they are, expressions borrowed), resolved by the
/// family's lock-free lookup on every call. An `Option<Stage>`: `None` when the family cannot
/// be declared (its name is a stage's), as a site past the stage cap records nothing.
fn family_site(args: &Args, name: &TokenStream) -> TokenStream {
    let krate = args.krate();
    let keys = args.labels.iter().map(|(k, _)| k.to_string());
    let values = args.labels.iter().map(|(_, v)| match v {
        LabelArg::Literal(lit) => quote!(&#lit as &dyn #krate::LabelValue),
        LabelArg::Runtime(expr) => quote!(&(#expr) as &dyn #krate::LabelValue),
    });
    quote! {{
        static __LAPTIME_FAMILY: #krate::__private::FamilySite =
            #krate::__private::FamilySite::new(#name, &[#(#keys),*]);
        __LAPTIME_FAMILY.series(&[#(#values),*])
    }}
}

/// A local the user's code cannot see (mixed-site hygiene).
pub(crate) fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// Refuses what cannot be timed, whatever the `enable` feature says. (Stage names, labels and
/// `outcome`'s `Result` are checked by the expansion itself, so only a build with `enable` checks
/// those.)
pub(crate) fn check_signature(sig: &Signature, args: &Args, named: bool) -> syn::Result<()> {
    args.check_runtime_labels(sig.ident.span(), named)?;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new_spanned(
            constness,
            "#[laptime::measure] cannot time a `const fn`: it may run at compile time, where there is no clock. Remove `const`, or time its callers",
        ));
    }
    if args.polls && sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "`polls` times the polls of an `async fn`: this function is not async (drop `polls`)",
        ));
    }
    if args.outcome && matches!(sig.output, ReturnType::Default) {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "`outcome` needs a function that returns a `Result`: this one returns `()`",
        ));
    }
    Ok(())
}

/// The body of `sig` with `block` timed as `name`.
pub(crate) fn instrument(
    args: &Args,
    sig: &Signature,
    block: &Block,
    name: &Name,
) -> syn::Result<Block> {
    // With `polls` four call sites read the labels: each expression is evaluated once, into a
    // local all four read, as it is for a call without `polls`.
    let (bind_labels, bound);
    let args = if args.polls && args.has_runtime_labels() {
        (bind_labels, bound) = bind_runtime_labels(args);
        &bound
    } else {
        bind_labels = TokenStream::new();
        args
    };
    let krate = args.krate();
    let span = local("__laptime_span");
    let out = local("__laptime_out");
    let ok = call_site(args, name, args.outcome.then_some("ok"));
    // The body's statements go into the expansion's own braces: the body's block kept whole as
    // the tail of another block trips `unused_braces` in the caller's crate on one-line bodies
    // (`fn one(x: u32) -> u32 { x * 2 }`), and rustc's suggested fix does not compile.
    let stmts = &block.stmts;
    let body = quote!({ #(#stmts)* });
    let tokens = match (sig.asyncness.is_some(), args.outcome) {
        (false, false) => quote! {{
            let #span = #krate::start(#ok);
            #(#stmts)*
        }},
        (false, true) => {
            let err = call_site(args, name, Some("err"));
            // A closure, so `return` and `?` in the body still yield a value to classify.
            let arrow = nameable_return(sig).map(|ty| quote!(-> #ty));
            quote! {{
                let #span = #krate::__private::OutcomeSpan::start(#ok, #err);
                #[allow(clippy::redundant_closure_call)]
                let #out = (move || #arrow #body)();
                #span.finish(&#out);
                #out
            }}
        }
        (true, outcome) => {
            // The body runs as an inner future, so `return` and `?` end it, not the function:
            // the span is finished only when the body completes; dropped earlier, it is
            // cancelled.
            let (start, finish) = if outcome {
                let err = call_site(args, name, Some("err"));
                (
                    quote!(#krate::__private::OutcomeSpan::start_async(#ok, #err)),
                    quote!(#span.finish(&#out)),
                )
            } else {
                (
                    quote!(#krate::__private::AsyncSpan::start(#ok)),
                    quote!(#span.finish()),
                )
            };
            let hint = nameable_return(sig).map(|ty| {
                // Names the inner future's output for type inference (`?` converts errors into
                // it); never runs.
                quote! {
                    #[allow(unreachable_code, clippy::diverging_sub_expression, clippy::empty_loop, clippy::let_unit_value, clippy::needless_return)]
                    if false {
                        let __laptime_never: #ty = loop {};
                        return __laptime_never;
                    }
                }
            });
            let body = quote!(async move { #hint #(#stmts)* });
            let run = if args.polls {
                // The body pinned on this call's own frame and polled through the timer: no
                // allocation, no unsafe.
                let timer = local("__laptime_polls");
                let inner = local("__laptime_body");
                // The deadline is the whole call's: a poll or a delay is not judged by it.
                let parts = Args {
                    deadline: None,
                    ..args.clone()
                };
                let [busy, poll, woken] = [".busy", ".poll", ".wake_to_poll"]
                    .map(|s| call_site(&parts, &name.suffixed(s), None));
                quote! {
                    let mut #timer = #krate::__private::PollTimer::new(#busy, #poll, #woken);
                    let mut #inner = ::core::pin::pin!(#body);
                    let #out = ::core::future::poll_fn(|cx| #timer.poll(#inner.as_mut(), cx)).await;
                    #timer.finish();
                }
            } else {
                quote!(let #out = #body.await;)
            };
            quote! {{
                #bind_labels
                let #span = #start;
                #run
                #finish;
                #out
            }}
        }
    };
    syn::parse2(tokens)
}

/// `let` statements evaluating each label from an argument once, and `args` with those labels
/// reading the locals instead.
fn bind_runtime_labels(args: &Args) -> (TokenStream, Args) {
    let krate = args.krate();
    let mut bound = args.clone();
    let mut lets = TokenStream::new();
    for (i, (_, value)) in bound.labels.iter_mut().enumerate() {
        if let LabelArg::Runtime(expr) = value {
            let id = local(&format!("__laptime_label_{i}"));
            lets.extend(quote!(let #id: &dyn #krate::LabelValue = &(#expr);));
            **expr = syn::parse_quote!(*#id);
        }
    }
    (lets, bound)
}

/// The declared return type, unless it cannot be written in a `let` or a closure (`impl Trait`).
fn nameable_return(sig: &Signature) -> Option<TokenStream> {
    match &sig.output {
        ReturnType::Default => Some(quote!(())),
        ReturnType::Type(_, ty) => {
            let mut finder = ImplTraitFinder(false);
            finder.visit_type(ty);
            (!finder.0).then(|| ty.to_token_stream())
        }
    }
}

struct ImplTraitFinder(bool);

impl<'ast> Visit<'ast> for ImplTraitFinder {
    fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
        self.0 = true;
    }
}

/// `concat!(module_path!(), "::", path…)`: the default stage name of a function.
pub(crate) fn default_name(path: &[String]) -> TokenStream {
    let tail = format!("::{}", path.join("::"));
    quote!(::core::concat!(::core::module_path!(), #tail))
}
