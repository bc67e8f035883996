//! The benches' command lines: `--flag value`, `--flag=value`, `--switch`, `-h` / `--help`.

use anyhow::{Result, bail};

/// Reads `args`: each of `switches` stands alone, each of `valued` takes one value (with `_`
/// digit separators removed). Returns the flags in order, a switch with an empty value, or
/// `None` after printing `usage` for `--help`.
pub fn read(
    args: impl IntoIterator<Item = String>,
    switches: &[&str],
    valued: &[&str],
    usage: &str,
) -> Result<Option<Vec<(String, String)>>> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{usage}");
            return Ok(None);
        }
        if switches.contains(&flag.as_str()) && inline.is_none() {
            out.push((flag, String::new()));
            continue;
        }
        if !valued.contains(&flag.as_str()) {
            bail!("unknown argument {arg:?}\n\n{usage}");
        }
        let Some(value) = inline.or_else(|| it.next()) else {
            bail!("{flag} needs a value\n\n{usage}");
        };
        out.push((flag, value.replace('_', "")));
    }
    Ok(Some(out))
}
