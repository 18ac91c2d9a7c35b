//! HTML escaping for the emulator's pages — and for demo pages that embed the values a
//! verification flow hands around (the examples use it rather than keep a copy).

/// Escapes text for HTML text and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The pages' icon (a white check mark on blue), as SVG: the emulator serves it at
/// `/favicon.ico`, and its pages and the examples' link it as a data URL, so a browser asks
/// for nothing that is not there.
pub const FAVICON_SVG: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'>\
<rect width='32' height='32' rx='7' fill='#3056d3'/><path d='M9 16.5l5 5 9-10' fill='none' \
stroke='#fff' stroke-width='3.5' stroke-linecap='round' stroke-linejoin='round'/></svg>";

/// `<link rel="icon" …>` with [`FAVICON_SVG`] as a data URL, for a page's `<head>`.
pub fn favicon_link() -> String {
    let data = FAVICON_SVG
        .replace('%', "%25")
        .replace('#', "%23")
        .replace('<', "%3C")
        .replace('>', "%3E")
        .replace('"', "%22");
    format!(r#"<link rel="icon" type="image/svg+xml" href="data:image/svg+xml,{data}">"#)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            super::escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
