//! JSON-RPC 2.0 as stellar-rpc speaks it (creachadair/jrpc2 behind its `jhttp` bridge): one
//! request object or a batch (an array) in a `POST` body; a response object per call that has an
//! `id` (notifications get none); errors as `{"code","message"}` objects with the standard codes.

use serde::Serialize;
use serde_json::{Value, json};

/// The only version marker accepted.
pub const VERSION: &str = "2.0";

/// Invalid JSON.
pub const PARSE_ERROR: i32 = -32700;
/// Not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// The parameters do not fit the method.
pub const INVALID_PARAMS: i32 = -32602;
/// The server failed.
pub const INTERNAL_ERROR: i32 = -32603;
/// A provider's rate limit (the `-32005` "limit exceeded" of EIP-1474, which RPC providers
/// use in the body of their HTTP 429): not stellar-rpc's own, which has no rate limit.
pub const LIMIT_EXCEEDED: i32 = -32005;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RpcError {
    /// One of the codes above.
    pub code: i32,
    /// What went wrong, in stellar-rpc's words where it has them.
    pub message: String,
    /// More detail (jrpc2 lists the extra fields of a request here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// `-32700`: the body is not JSON (jrpc2's `errInvalidRequest`).
    pub fn parse_error() -> Self {
        RpcError::new(PARSE_ERROR, "invalid request value")
    }

    /// `-32600` with `message`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        RpcError::new(INVALID_REQUEST, message)
    }

    /// `-32601`, as jrpc2 words it.
    pub fn method_not_found() -> Self {
        RpcError::new(METHOD_NOT_FOUND, "method not found")
    }

    /// `-32602` with `message`.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError::new(INVALID_PARAMS, message)
    }

    /// `-32603` with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        RpcError::new(INTERNAL_ERROR, message)
    }

    /// A provider's rate limit.
    pub fn limit_exceeded() -> Self {
        RpcError::new(LIMIT_EXCEEDED, "rate limit exceeded")
    }
}

/// One valid call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The request id; `None` for a notification (answered with nothing).
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The parameters (`None` when absent or `null`).
    pub params: Option<Value>,
}

/// One element of a request body.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A call to dispatch.
    Call(Call),
    /// An invalid request: answered with this error under this id (`null` if it had none).
    Invalid {
        /// The id to answer under.
        id: Value,
        /// Why it is invalid.
        error: RpcError,
    },
}

/// A request body: its messages, and whether it was a batch (an array).
#[derive(Clone, Debug, PartialEq)]
pub struct Body {
    /// The messages in order.
    pub messages: Vec<Message>,
    /// Sent as an array.
    pub batch: bool,
}

/// Parses a request body as jrpc2's `ParseRequests` does: a body that is not JSON at all is
/// the one error (its HTTP bridge then answers a bare 500 with the error's text); anything else
/// is one message, or a batch of them (an empty batch has none), each checked on its own.
pub fn parse_body(bytes: &[u8]) -> Result<Body, RpcError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| RpcError::parse_error())?;
    Ok(match value {
        Value::Array(items) => Body {
            messages: items.iter().map(parse_message).collect(),
            batch: true,
        },
        value => Body {
            messages: vec![parse_message(&value)],
            batch: false,
        },
    })
}

/// Checks one request object (jrpc2's `jmessage.parseJSON` rules and messages).
pub fn parse_message(value: &Value) -> Message {
    let Value::Object(object) = value else {
        return Message::Invalid {
            id: Value::Null,
            error: RpcError::new(PARSE_ERROR, "request is not a JSON object"),
        };
    };
    let raw_id = object.get("id").cloned().unwrap_or(Value::Null);
    let id_valid = matches!(raw_id, Value::Null | Value::String(_) | Value::Number(_));
    let answer_id = if id_valid {
        raw_id.clone()
    } else {
        Value::Null
    };
    let invalid = |error: RpcError| Message::Invalid {
        id: answer_id.clone(),
        error,
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some(VERSION) {
        return invalid(RpcError::invalid_request("invalid version marker"));
    }
    if !id_valid {
        return invalid(RpcError::invalid_request("invalid request ID"));
    }
    let method = match object.get("method") {
        Some(Value::String(method)) => method.clone(),
        Some(_) => return invalid(RpcError::new(PARSE_ERROR, "invalid method name")),
        None => String::new(),
    };
    if method.is_empty() {
        return invalid(RpcError::invalid_request("empty method name"));
    }
    let params = match object.get("params") {
        None | Some(Value::Null) => None,
        Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params.clone()),
        Some(_) => {
            return invalid(RpcError::invalid_request(
                "parameters must be array or object",
            ));
        }
    };
    let extra: Vec<&String> = object
        .keys()
        .filter(|key| !matches!(key.as_str(), "jsonrpc" | "id" | "method" | "params"))
        .collect();
    if !extra.is_empty() {
        let mut error = RpcError::invalid_request("extra fields in request");
        error.data = Some(json!(extra));
        return invalid(error);
    }
    Message::Call(Call {
        id: (!raw_id.is_null()).then_some(raw_id),
        method,
        params,
    })
}

/// A success response.
pub fn success(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": VERSION, "id": id, "result": result })
}

/// An error response.
pub fn failure(id: &Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": VERSION, "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_parse_error_and_a_bad_element_only_fails_itself() {
        assert_eq!(
            parse_body(b"{nope").err().map(|e| e.code),
            Some(PARSE_ERROR)
        );
        let scalar = parse_body(b"42").unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(&scalar.messages[..],
            [Message::Invalid { id: Value::Null, error }] if error.code == PARSE_ERROR));
        let empty = parse_body(b"[]").unwrap_or_else(|e| panic!("{e:?}"));
        assert!(empty.messages.is_empty());
        let body = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"getHealth"},{"jsonrpc":"1.0","id":2,"method":"x"},{"jsonrpc":"2.0","id":3,"method":"x","extra":1}]"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(body.batch);
        assert!(matches!(&body.messages[0], Message::Call(call) if call.method == "getHealth"));
        assert!(matches!(&body.messages[1],
            Message::Invalid { id, error } if *id == json!(2) && error.code == INVALID_REQUEST));
        assert!(matches!(&body.messages[2],
            Message::Invalid { error, .. } if error.data == Some(json!(["extra"]))));
    }

    #[test]
    fn a_request_without_an_id_is_a_notification() {
        let message = parse_message(&json!({"jsonrpc": "2.0", "method": "getHealth"}));
        assert!(matches!(message, Message::Call(Call { id: None, .. })));
        let message = parse_message(&json!({"jsonrpc": "2.0", "id": [1], "method": "getHealth"}));
        assert!(matches!(message,
            Message::Invalid { id: Value::Null, error } if error.message == "invalid request ID"));
    }
}
