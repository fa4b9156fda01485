//! `tractor crd`: both CustomResourceDefinitions as YAML.

use anyhow::Context as _;

pub fn run() -> anyhow::Result<()> {
    print!("{}", tractor::crd::crds_yaml().context("rendering the CRDs")?);
    Ok(())
}
