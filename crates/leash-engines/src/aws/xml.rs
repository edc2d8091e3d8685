//! Reading AWS query-protocol answers (IAM, STS): the text of elements by name.
//!
//! The answers are small and flat enough that "the text of every element named X" is
//! all the engine needs (`AccessKeyId`, `Arn`, `PolicyArn`, `Code`, …). Entity and
//! character references are resolved. No DTDs, no external entities: quick-xml does not
//! fetch or expand them.

use quick_xml::Reader;
use quick_xml::events::Event;

/// The text of every element whose local name is `tag`, in document order.
pub(crate) fn texts(xml: &str, tag: &str) -> Result<Vec<String>, String> {
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut depth_in = 0usize;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                if current.is_some() {
                    depth_in += 1;
                } else if e.local_name().as_ref() == tag {
                    current = Some(String::new());
                    depth_in = 0;
                }
            }
            Event::End(_) if current.is_some() => {
                if depth_in == 0 {
                    if let Some(t) = current.take() {
                        out.push(t);
                    }
                } else {
                    depth_in -= 1;
                }
            }
            Event::Empty(e) if current.is_none() && e.local_name().as_ref() == tag => {
                out.push(String::new());
            }
            Event::Text(t) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(c) = current.as_mut() {
                    let name = r.into_inner();
                    match resolve(&name) {
                        Some(ch) => c.push(ch),
                        None => return Err(format!("unknown entity &{name};")),
                    }
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

fn resolve(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            return char::from_u32(code);
        }
    })
}

/// The text of the first element named `tag`.
pub(crate) fn first(xml: &str, tag: &str) -> Result<Option<String>, String> {
    Ok(texts(xml, tag)?.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_found_by_name_with_references_resolved() {
        let xml = r#"<?xml version="1.0"?>
<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s/k+1</SecretAccessKey></Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/a&amp;b&#64;c</Arn></AssumedRoleUser>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;
        assert_eq!(first(xml, "AccessKeyId").unwrap().unwrap(), "ASIAX");
        assert_eq!(first(xml, "SecretAccessKey").unwrap().unwrap(), "s/k+1");
        assert_eq!(
            first(xml, "Arn").unwrap().unwrap(),
            "arn:aws:sts::1:assumed-role/r/a&b@c"
        );
        assert_eq!(first(xml, "Missing").unwrap(), None);
        let list = "<r><member><PolicyArn>a</PolicyArn></member><member><PolicyArn>b</PolicyArn></member><IsTruncated/></r>";
        assert_eq!(texts(list, "PolicyArn").unwrap(), vec!["a", "b"]);
        assert!(texts("<a>&bogus;</a>", "a").is_err());
    }
}
