//! The arguments every instrumentation macro shares: `name = "…"`, `deadline = "200ms"`,
//! `sample = 0.1`, `labels(k = "v", …)`, `outcome`, `crate = path`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitStr, Path, Token};

/// Which arguments a macro takes (`measure_block!` names its stage positionally; `measure_all`
/// names each function after itself).
#[derive(Clone, Copy)]
pub(crate) struct Accepts {
    pub(crate) name: bool,
    pub(crate) outcome: bool,
}

#[derive(Default, Clone)]
pub(crate) struct Args {
    pub(crate) name: Option<LitStr>,
    /// Nanoseconds.
    pub(crate) deadline: Option<u64>,
    pub(crate) sample: Option<f64>,
    pub(crate) labels: Vec<(Ident, LitStr)>,
    pub(crate) outcome: bool,
    pub(crate) krate: Option<Path>,
}

const EXPECTED: &str = "expected `name = \"…\"`, `deadline = \"200ms\"`, `sample = 0.1`, `labels(key = \"value\", …)`, `outcome` or `crate = path`";

impl Args {
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
                let content;
                syn::parenthesized!(content in input);
                while !content.is_empty() {
                    let k = Ident::parse_any(&content)?;
                    content.parse::<Token![=]>()?;
                    let v = content.parse::<LitStr>().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "a label value is a string literal: verb = \"post\"",
                        )
                    })?;
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
            }
            "outcome" if accepts.outcome => {
                if self.outcome {
                    return Err(duplicate());
                }
                self.outcome = true;
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
            other => {
                return Err(syn::Error::new(
                    span,
                    format!("unknown argument `{other}`: {EXPECTED}"),
                ));
            }
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

/// `"200ms"`, `"1.5s"`, `"250us"` / `"250µs"`, `"800ns"`: a positive whole number of nanoseconds.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let hint = "write a number and a unit (ns, us, µs, ms, s), e.g. \"200ms\" or \"1.5s\"";
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: {hint}"))?;
    let (number, unit) = text.split_at(split);
    let unit_ns: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return Err(format!("{text:?} has an unknown unit {unit:?}: {hint}")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(format!("{text:?} is not a number: {hint}"));
    }
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u128>()
            .map_err(|_| format!("{text:?} is too large"))
    };
    let scale = 10u128
        .checked_pow(u32::try_from(fraction.len()).unwrap_or(u32::MAX))
        .ok_or_else(|| format!("{text:?} has too many decimals"))?;
    let frac_ns = digits(fraction)? * unit_ns;
    if !frac_ns.is_multiple_of(scale) {
        return Err(format!("{text:?} is not a whole number of nanoseconds"));
    }
    let ns = digits(whole)?
        .checked_mul(unit_ns)
        .and_then(|w| w.checked_add(frac_ns / scale))
        .and_then(|ns| u64::try_from(ns).ok())
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if ns == 0 {
        return Err(format!("{text:?} is zero: a deadline must be positive"));
    }
    Ok(ns)
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

    #[test]
    fn durations_are_exact_or_refused() {
        assert_eq!(parse_duration("200ms"), Ok(200_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("250us"), Ok(250_000));
        assert_eq!(parse_duration("250µs"), Ok(250_000));
        assert_eq!(parse_duration("0.001ms"), Ok(1_000));
        assert_eq!(parse_duration("7ns"), Ok(7));
        for bad in [
            "",
            "ms",
            "200",
            "200 ms",
            "1.5ns",
            "0ms",
            "1..2s",
            "2h",
            "-1s",
            "99999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
