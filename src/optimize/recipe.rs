//! The recipe as the optimizer names it. The types are the API's
//! ([`crate::crd::recipe`]), which sits below the optimizer; this module
//! only keeps the `optimize::recipe::...` paths of the CLI (`main.rs`) and
//! the quantizer working while those files are split by others. New code
//! imports from `crate::crd::recipe`.

pub use crate::crd::recipe::{
    CalibrationMethod, Convert, ConvertFormat, Merge, MergeMode, Metric, NameMap, Norm, Pass,
    Prune, PruneMethod, Quantize, QuantizeMode, Recipe, RecipeError, Validation,
};
