//! The HTTP APIs: Cairn's native one and the Stratos 4.1 compatible subset.

pub mod native;
pub mod stratos;

use axum::http::StatusCode;

use crate::platform::PlatformError;

/// The HTTP status for a refusal.
pub fn status_of(error: &PlatformError) -> StatusCode {
    match error {
        PlatformError::Invalid(_) => StatusCode::BAD_REQUEST,
        PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
        PlatformError::Conflict(_) => StatusCode::CONFLICT,
        PlatformError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A request body as text; anything but UTF-8 is refused with the reason.
pub fn body_text(body: &[u8]) -> Result<&str, PlatformError> {
    std::str::from_utf8(body)
        .map_err(|e| PlatformError::invalid_body(None, "", format!("not UTF-8 text: {e}")))
}
