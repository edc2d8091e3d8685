//! Kubernetes resource quantities (`250m`, `0.5`, `64Mi`, `1e3`), checked the way the
//! API server parses them: a non-negative decimal number and one optional suffix —
//! binary (`Ki` … `Ei`), decimal (`n u m k M G T P E`) or an exponent (`e3`, `E-2`).

/// Whether `s` is a valid non-negative quantity.
pub(crate) fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix('+').unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        _ => {
            let Some(exp) = suffix.strip_prefix(['e', 'E']) else {
                return false;
            };
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_quantity;

    #[test]
    fn kubernetes_quantities() {
        for ok in [
            "250m", "0.5", "1", "64Mi", "1G", "1e3", "1.5Gi", ".5", "2E-2", "+1",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "ten", "10mb", "-1", "1..2", "Mi", "1MiB", "1 m", "1e", ".",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
