//! Compile-time behaviour of `#[require_certified]`: what compiles, and the exact error for
//! every attribute mistake (the `.stderr` files next to the fail cases).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
