//! The arguments every instrumentation macro shares: `name = "…"`, `deadline = "200ms"`,
//! `sample = 0.1`, `labels(k = "v", …)`, `outcome`, `crate = path`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitStr, Path, Token};

/// Which arguments a macro takes (`measure_block!` names its stage positionally; `measure_all`
/// names each function after itself).
#[derive(Clone, Copy)]
pub(crate) struct Accepts {
    pub(crate) name: bool,
    pub(crate) outcome: bool,
    /// `polls`: only `#[measure]` itself, which may sit on an `async fn`.
    pub(crate) polls: bool,
}

#[derive(Default, Clone)]
pub(crate) struct Args {
    pub(crate) name: Option<LitStr>,
    /// Nanoseconds.
    pub(crate) deadline: Option<u64>,
    pub(crate) sample: Option<f64>,
    pub(crate) labels: Vec<(Ident, LabelArg)>,
    pub(crate) outcome: bool,
    /// `polls`: an `async fn`'s busy time, polls and wake-to-poll delays besides its wall time.
    pub(crate) polls: bool,
    pub(crate) krate: Option<Path>,
}

/// A label's value: a string literal (a static label), or an expression evaluated on each call
/// (`labels(pair = symbol)`), which makes the call site a family with one series per value.
#[derive(Clone)]
pub(crate) enum LabelArg {
    Literal(LitStr),
    Runtime(Box<Expr>),
}

const EXPECTED: &str = "expected `name = \"…\"`, `deadline = \"200ms\"`, `sample = 0.1`, `labels(key = \"value\", …)`, `outcome`, `polls` or `crate = path`";

impl Args {
    /// Whether a label takes its value on each call: the site is then a family.
    pub(crate) fn has_runtime_labels(&self) -> bool {
        self.labels
            .iter()
            .any(|(_, v)| matches!(v, LabelArg::Runtime(_)))
    }

    /// Refuses what a family call site cannot do yet, naming the way around it.
    pub(crate) fn check_runtime_labels(&self, span: Span, named: bool) -> syn::Result<()> {
        if !self.has_runtime_labels() {
            return Ok(());
        }
        let refuse = |what: &str| Err(syn::Error::new(span, what.to_owned()));
        if !named {
            return refuse(
                "a label from an argument makes a family: name it with `name = \"…\"` (a method's default name depends on `Self`)",
            );
        }
        if self.outcome {
            return refuse(
                "`outcome` with a label from an argument is not supported: add the outcome as a label value yourself, or use laptime::family! and record into the series",
            );
        }
        if self.deadline.is_some() || self.sample.is_some() {
            return refuse(
                "`deadline` and `sample` with a label from an argument are not supported: set them on the series (Stage::set_deadline, Stage::set_sampling_rate)",
            );
        }
        Ok(())
    }

    /// The crate path the expansion names: `::laptime` unless `crate = …` says otherwise.
    pub(crate) fn krate(&self) -> proc_macro2::TokenStream {
        match &self.krate {
            Some(path) => quote::quote!(#path),
            None => quote::quote!(::laptime),
        }
    }

    /// Parses comma-separated arguments until the input ends or, with `until_brace`, a `{` starts
    /// the measured block.
    pub(crate) fn parse_list(
        input: ParseStream,
        accepts: Accepts,
        until_brace: bool,
    ) -> syn::Result<Args> {
        let mut args = Args::default();
        while !(input.is_empty() || until_brace && input.peek(syn::token::Brace)) {
            if until_brace && !input.peek(Ident::peek_any) {
                return Err(input.error(
                    "expected an argument or the measured block: measure_block!(\"stage_emit\", { … })",
                ));
            }
            args.parse_one(input, accepts)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }

    fn parse_one(&mut self, input: ParseStream, accepts: Accepts) -> syn::Result<()> {
        let key = Ident::parse_any(input).map_err(|e| syn::Error::new(e.span(), EXPECTED))?;
        let span = key.span();
        let duplicate = || syn::Error::new(span, format!("`{key}` is given twice: keep one"));
        match key.to_string().as_str() {
            "name" if accepts.name => {
                if self.name.is_some() {
                    return Err(duplicate());
                }
                input.parse::<Token![=]>()?;
                self.name = Some(input.parse::<LitStr>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`name` takes a string literal: name = \"stage_spread\"",
                    )
                })?);
            }
            "deadline" => {
                if self.deadline.is_some() {
                    return Err(duplicate());
                }
                input.parse::<Token![=]>()?;
                let lit = input.parse::<LitStr>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`deadline` takes a string literal: deadline = \"200ms\"",
                    )
                })?;
                let ns = parse_duration(&lit.value()).map_err(|why| {
                    syn::Error::new(lit.span(), format!("malformed deadline: {why}"))
                })?;
                self.deadline = Some(ns);
            }
            "sample" => {
                if self.sample.is_some() {
                    return Err(duplicate());
                }
                input.parse::<Token![=]>()?;
                self.sample = Some(parse_rate(input)?);
            }
            "labels" => {
                if !self.labels.is_empty() {
                    return Err(duplicate());
                }
                self.parse_labels(input, span)?;
            }
            "outcome" if accepts.outcome => {
                if self.outcome {
                    return Err(duplicate());
                }
                self.outcome = true;
            }
            "polls" if accepts.polls => {
                if self.polls {
                    return Err(duplicate());
                }
                self.polls = true;
            }
            "crate" => {
                if self.krate.is_some() {
                    return Err(duplicate());
                }
                input.parse::<Token![=]>()?;
                self.krate = Some(input.call(Path::parse_mod_style)?);
            }
            "name" => {
                return Err(syn::Error::new(
                    span,
                    "`name` is not taken here: this macro names its stages itself",
                ));
            }
            "outcome" => {
                return Err(syn::Error::new(
                    span,
                    "`outcome` is not taken here: put `#[laptime::measure(outcome)]` on the function that returns a `Result`",
                ));
            }
            "polls" => {
                return Err(syn::Error::new(
                    span,
                    "`polls` is not taken here: it times an `async fn`'s polls; put `#[laptime::measure(polls)]` on the `async fn`",
                ));
            }
            other => {
                return Err(syn::Error::new(
                    span,
                    format!("unknown argument `{other}`: {EXPECTED}"),
                ));
            }
        }
        Ok(())
    }

    /// `labels(k = "v", k2 = expr)`: each value a literal or an expression evaluated per call;
    /// at least one label, none twice. `span` is the `labels` key's, for the empty-list error.
    fn parse_labels(&mut self, input: ParseStream, span: Span) -> syn::Result<()> {
        let content;
        syn::parenthesized!(content in input);
        while !content.is_empty() {
            let k = Ident::parse_any(&content)?;
            content.parse::<Token![=]>()?;
            let v = if content.peek(LitStr) {
                LabelArg::Literal(content.parse::<LitStr>()?)
            } else {
                LabelArg::Runtime(Box::new(content.parse::<Expr>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "a label value is a string literal (verb = \"post\") or an expression evaluated on each call (pair = symbol)",
                    )
                })?))
            };
            if self.labels.iter().any(|(k2, _)| *k2 == k) {
                return Err(syn::Error::new(
                    k.span(),
                    format!("label `{k}` is given twice: keep one"),
                ));
            }
            self.labels.push((k, v));
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        if self.labels.is_empty() {
            return Err(syn::Error::new(
                span,
                "`labels()` is empty: give labels or drop it",
            ));
        }
        Ok(())
    }
}

/// `sample = 0.1`: a rate in [0, 1].
fn parse_rate(input: ParseStream) -> syn::Result<f64> {
    let lit: syn::Lit = input.parse()?;
    let (rate, span) = match &lit {
        syn::Lit::Float(f) => (f.base10_parse::<f64>()?, f.span()),
        syn::Lit::Int(i) => (i.base10_parse::<u8>()? as f64, i.span()),
        other => {
            return Err(syn::Error::new(
                other.span(),
                "`sample` takes a number in [0, 1]: sample = 0.1",
            ));
        }
    };
    if !(0.0..=1.0).contains(&rate) {
        return Err(syn::Error::new(
            span,
            format!("`sample = {rate}` is outside [0, 1]: give the fraction of calls to keep"),
        ));
    }
    Ok(rate)
}

/// `"200ms"`, `"1.5s"`, `"250us"` / `"250µs"`, `"800ns"`, `"2m"`, `"1h"`: a positive whole number
/// of nanoseconds, in the grammar laptime's configuration file uses too (`laptime_duration`).
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    match laptime_duration::parse_nanos(text)? {
        0 => Err(format!("{text:?} is zero: a deadline must be positive")),
        ns => Ok(ns),
    }
}

/// The arguments of an attribute (`#[measure(…)]`, `#[measure_all(…)]`).
pub(crate) fn parse_attr(tokens: proc_macro2::TokenStream, accepts: Accepts) -> syn::Result<Args> {
    syn::parse::Parser::parse2(
        |input: ParseStream| Args::parse_list(input, accepts, false),
        tokens,
    )
}

/// `measure_block!("stage", args…, { block })` or `measure_block!(Stage::Variant, { block })`.
pub(crate) struct BlockInput {
    /// A string literal (a call-site stage) or any expression that is `IntoStage`.
    pub(crate) stage: syn::Expr,
    pub(crate) args: Args,
    pub(crate) block: syn::Block,
}

impl Parse for BlockInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected a stage and a block: measure_block!(\"stage_emit\", { … })",
            ));
        }
        let stage: syn::Expr = input.parse()?;
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                "expected the measured block after the stage: measure_block!(\"stage_emit\", { … })",
            ));
        }
        input.parse::<Token![,]>()?;
        let accepts = Accepts {
            name: false,
            outcome: true,
            polls: false,
        };
        let args = Args::parse_list(input, accepts, true)?;
        if !input.peek(syn::token::Brace) {
            return Err(input
                .error("expected the measured block last: measure_block!(\"stage_emit\", { … })"));
        }
        let block: syn::Block = input.parse()?;
        let _ = input.parse::<Option<Token![,]>>()?;
        if !input.is_empty() {
            return Err(input.error("nothing may follow the measured block"));
        }
        Ok(BlockInput { stage, args, block })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    /// The grammar is tested in `laptime_duration`; a deadline must also be positive.
    #[test]
    fn a_deadline_is_a_positive_duration() {
        assert_eq!(parse_duration("200ms"), Ok(200_000_000));
        assert_eq!(parse_duration("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000_000_000));
        assert!(
            parse_duration("0ms")
                .unwrap_err()
                .contains("must be positive")
        );
        assert!(
            parse_duration("200 ms")
                .unwrap_err()
                .contains("unknown unit")
        );
    }
}
