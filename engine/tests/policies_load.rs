use tregov_engine::PolicyBundle;

#[test]
fn the_default_policies_validate_in_strict_mode() {
    let bundle = match PolicyBundle::embedded() {
        Ok(b) => b,
        Err(e) => panic!("{:?}", miette::Report::new(e)),
    };
    assert!(bundle.meta.len() > 30, "{}", bundle.meta.len());
    assert!(bundle.warnings.is_empty(), "{:?}", bundle.warnings);
}
