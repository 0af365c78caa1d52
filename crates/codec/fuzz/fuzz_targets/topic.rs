#![no_main]

use libfuzzer_sys::fuzz_target;
use thingmq_codec::topic::{matches, parse_shared, validate_filter, validate_name};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // Split the input into a filter and a name so matching sees pairs of valid inputs.
    let (filter, name) = s.split_once('\n').unwrap_or((s, s));
    let filter_ok = validate_filter(filter).is_ok();
    let name_ok = validate_name(name).is_ok();
    let _ = parse_shared(filter);
    if filter_ok && name_ok {
        let m = matches(filter, name);
        // A name without wildcards read as a filter matches exactly itself.
        if filter == name {
            assert!(m, "{name:?} does not match itself");
        }
        if filter == "#" && !name.starts_with('$') {
            assert!(m, "# does not match {name:?}");
        }
    }
});
