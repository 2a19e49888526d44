//! Static assets of the interactive charts, embedded in the binary: the vendored uPlot
//! (`static/vendor/uplot`, MIT, see `static/vendor/README.md`) and `static/charts.js`, which
//! upgrades the server-rendered SVG charts. Same origin, so the CSP `script-src 'self'` and
//! `style-src 'self'` allow them; no CDN.

use axum::http::header;
use axum::response::IntoResponse;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const CACHE: &str = "public, max-age=3600";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, CACHE),
        ],
        body,
    )
}

/// `/static/vendor/uplot/uPlot.iife.min.js`
pub async fn uplot_js() -> impl IntoResponse {
    asset(
        JS,
        include_str!("../../../static/vendor/uplot/uPlot.iife.min.js"),
    )
}

/// `/static/vendor/uplot/uPlot.min.css`
pub async fn uplot_css() -> impl IntoResponse {
    asset(
        CSS,
        include_str!("../../../static/vendor/uplot/uPlot.min.css"),
    )
}

/// `/static/charts.js`
pub async fn charts_js() -> impl IntoResponse {
    asset(JS, include_str!("../../../static/charts.js"))
}
