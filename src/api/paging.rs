//! Page sizes and page tokens, the same for every list call. A token is the
//! position after the last row of a page, `<number>:<text>`, base64url:
//! opaque to callers, checked when it comes back.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use base64::Engine;

use crate::core::validate::FieldError;

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// `page_size`: 0 means the default; more than the maximum is refused.
pub fn page_size(requested: u32) -> Result<usize, FieldError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(FieldError::new(
            "page_size",
            format!("{n} is more than the maximum {MAX_PAGE_SIZE}"),
        )),
        n => Ok(n as usize),
    }
}

pub fn encode_token(number: i64, text: &str) -> String {
    TOKEN.encode(format!("{number}:{text}"))
}

/// `page_token`: empty means the first page.
pub fn decode_token(token: &str) -> Result<Option<(i64, String)>, FieldError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || FieldError::new("page_token", "is not a token from a previous response");
    let bytes = TOKEN.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (number, rest) = text.split_once(':').ok_or_else(invalid)?;
    Ok(Some((
        number.parse().map_err(|_| invalid())?,
        rest.to_owned(),
    )))
}
