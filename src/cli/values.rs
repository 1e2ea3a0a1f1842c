//! Flag values from the domain's own enums: their names come from one place (strum's
//! kebab-case names, the same as `result.json` and scenario files use), their help from the
//! variants' doc comments, so the domain never names clap.

use std::str::FromStr;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use strum::{EnumMessage, VariantArray};

/// A parser that offers (and `--help` lists) every variant of `T`.
pub fn values<T>() -> impl TypedValueParser<Value = T>
where
    T: VariantArray + EnumMessage + FromStr + Into<&'static str> + Copy + Send + Sync + 'static,
{
    let possible = T::VARIANTS.iter().map(|variant| {
        let name: &'static str = (*variant).into();
        let value = PossibleValue::new(name);
        match variant.get_documentation() {
            Some(help) => value.help(help.trim()),
            None => value,
        }
    });
    PossibleValuesParser::new(possible).map(|name: String| match name.parse::<T>() {
        Ok(value) => value,
        Err(_) => unreachable!("clap offers only the variants' own names"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::StrategyKind;

    #[test]
    fn every_variant_round_trips_through_its_flag_name() {
        for kind in StrategyKind::VARIANTS {
            let name: &'static str = (*kind).into();
            assert_eq!(name, kind.name());
            assert_eq!(name.parse::<StrategyKind>().ok(), Some(*kind));
        }
    }
}
