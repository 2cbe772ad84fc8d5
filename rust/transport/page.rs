//! The browser client served at `GET /`: one self-contained page (HTML, CSS and JavaScript; no build step, no CDN).
//!
//! `page/index.html` is compiled into the binary. The server fills in what
//! the page must know before it talks to it (whether it must ask for a key,
//! whether WebRTC is on, whether turn detection is available).

use serde_json::Value;

const PAGE: &str = include_str!("page/index.html");
/// Where the page reads its settings from: a JavaScript expression.
const CONFIG_SLOT: &str = "/*S2S_CONFIG*/null";

/// The page with `config` (a JSON object of plain values) filled in.
pub fn html(config: &Value) -> String {
    PAGE.replacen(CONFIG_SLOT, &config.to_string(), 1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_page_is_self_contained_and_configured() {
        let page = html(&json!({"auth": true, "webrtc": false}));
        assert!(page.contains(r#"{"auth":true,"webrtc":false}"#));
        assert!(!page.contains(CONFIG_SLOT));
        // No external resource: everything is inline.
        for needle in ["src=\"http", "href=\"http", "src='http", "@import", "<link"] {
            assert!(!page.contains(needle), "the page loads {needle}");
        }
    }
}
