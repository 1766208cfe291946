//! The steering page served at `/`: one self-contained HTML file (inline CSS and JavaScript, no
//! CDN), a chat box whose answers stream from `/v1/chat/completions`, and the λ control (a
//! slider for two objectives, a point in a triangle for three, number boxes otherwise) whose
//! value is sent as `preference` with every request.

/// The page.
pub(crate) const PAGE: &str = include_str!("page.html");
